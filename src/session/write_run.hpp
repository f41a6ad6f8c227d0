// Private header: a cross-shard write in progress (client_two_phase.cpp runs statements,
// client_copy_across.cpp runs COPY FROM): its legs, what they answered, and the client's answer or error.
#pragma once
#include <string>
#include <vector>

#include "pgrouter/session/client_session.hpp"
#include "pgrouter/session/insert_split.hpp"
#include "pgrouter/sharding/shard_map.hpp"
#include "shard_leg.hpp"

namespace pgrouter::session {

// Whether a leg's part wrote (was given a transaction id), as the probe sent behind its statement said.
enum class PartWrote : char { unknown, no, yes };

struct ClientSession::WriteRun {
  const ScatterRequest& req;
  const sharding::Need& need;
  std::vector<ShardLeg> legs;
  InsertSplit split;                   // an INSERT split by rows: each leg's statement, in the legs' order
  std::vector<ScatterRequest> shares;  // ... as requests (views into split)
  std::string gid;
  std::vector<std::string> parameters;         // each leg's ParameterDescription (Describe S)
  std::string description;                     // the first leg's RowDescription (RETURNING), empty for NoData
  std::vector<std::vector<std::string>> rows;  // each leg's DataRows, as messages
  size_t row_bytes = 0;
  std::vector<std::string> tags;
  std::vector<PartWrote> wrote;  // each leg's, when its statement's answer carried it (else asked at commit)
  std::string error;             // what the client gets instead of the answer (an ErrorResponse body)
  bool begun = false;  // the legs are a coordinated transaction's parts: no BEGIN, no commit of its own
  WriteRun(const ScatterRequest& r, const sharding::Need& n) : req(r), need(n) {}
  void fail(std::string body) {
    if (error.empty()) error = std::move(body);
  }
  bool splits() const { return !need.row_shards.empty(); }
  const ScatterRequest& request(size_t leg) const { return splits() ? shares[leg] : req; }
};

}  // namespace pgrouter::session
