// The servers of shard legs running a client's statement right now: what a CancelRequest of that client
// reaches besides its attached server (ClientSession::forward_cancel).
#pragma once
#include <algorithm>
#include <vector>

namespace pgrouter::pool {
class ServerConnection;
}

namespace pgrouter::session {

// A server is in it from the send of the client's statement until that statement's answer is complete, and
// always leaves it before it goes back to its pool: a cancel must never reach a server that may be serving
// someone else. (Pointers only: the legs own their servers.)
class RunningLegs {
 public:
  void add(pool::ServerConnection* server) {
    if (server && std::find(servers_.begin(), servers_.end(), server) == servers_.end())
      servers_.push_back(server);
  }
  void remove(const pool::ServerConnection* server) {
    servers_.erase(std::remove(servers_.begin(), servers_.end(), server), servers_.end());
  }
  bool empty() const { return servers_.empty(); }
  bool contains(const pool::ServerConnection* server) const {
    return std::find(servers_.begin(), servers_.end(), server) != servers_.end();
  }
  const std::vector<pool::ServerConnection*>& servers() const { return servers_; }

 private:
  std::vector<pool::ServerConnection*> servers_;
};

}  // namespace pgrouter::session
