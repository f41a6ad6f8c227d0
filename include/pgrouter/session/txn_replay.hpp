// What a shard reached late by a transaction across shards must run after its BEGIN to stand where the
// transaction's other shards stand: the savepoints open now and the SET LOCALs made, in the order they were
// made, kept as PostgreSQL keeps them. RELEASE s ends s and the savepoints after it, and what was set inside
// them stays; ROLLBACK TO s undoes everything after s (SET LOCALs too) and keeps s. Pure.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "pgrouter/sql/savepoint.hpp"

namespace pgrouter::session {

class TxnReplay {
 public:
  struct Step {
    std::string sql;        // the client's statement, run again as it is
    std::string savepoint;  // the savepoint it makes (as PostgreSQL names it); empty for a SET LOCAL
  };
  const std::vector<Step>& steps() const { return steps_; }
  // A savepoint statement that succeeded; false (nothing changed) when a RELEASE or ROLLBACK TO names no
  // savepoint of the stack, which PostgreSQL refuses with 3B001.
  bool apply(const sql::SavepointCommand& cmd, std::string_view sql);
  void set_local(std::string_view sql) { steps_.push_back({std::string(sql), {}}); }
  bool has(std::string_view savepoint) const { return find(savepoint) != steps_.size(); }
  // The transaction ended: nothing to replay.
  void forget_steps() { steps_.clear(); }
  // Some statement of this kind went where pgrouter cannot tell whether it ran (pipelined behind an
  // unanswered request, among other statements of a Query): the steps may be wrong until the session is
  // between transactions with nothing in flight (clear()).
  void mark_unknown() { unknown_ = true; }
  bool unknown() const { return unknown_; }
  void clear() {
    steps_.clear();
    unknown_ = false;
  }

 private:
  size_t find(std::string_view savepoint) const;  // the latest step making it, else steps_.size()
  std::vector<Step> steps_;
  bool unknown_ = false;
};

}  // namespace pgrouter::session
