// The savepoints and SET LOCALs a transaction across shards replays on a shard it reaches late (see the
// header).
#include "pgrouter/session/txn_replay.hpp"

#include <cstddef>

namespace pgrouter::session {

size_t TxnReplay::find(std::string_view savepoint) const {
  for (size_t i = steps_.size(); i-- > 0;)
    if (!steps_[i].savepoint.empty() && steps_[i].savepoint == savepoint) return i;
  return steps_.size();
}

bool TxnReplay::apply(const sql::SavepointCommand& cmd, std::string_view sql) {
  using Kind = sql::SavepointCommand::Kind;
  if (cmd.kind == Kind::savepoint) {
    steps_.push_back({std::string(sql), cmd.name});
    return true;
  }
  size_t at = find(cmd.name);
  if (at == steps_.size()) return false;
  if (cmd.kind == Kind::rollback_to) {
    steps_.resize(at + 1);
    return true;
  }
  // RELEASE: the savepoints from `at` on end; the SET LOCALs made inside them stay in the transaction.
  std::vector<Step> kept(steps_.begin(), steps_.begin() + std::ptrdiff_t(at));
  for (size_t i = at; i < steps_.size(); ++i)
    if (steps_[i].savepoint.empty()) kept.push_back(std::move(steps_[i]));
  steps_ = std::move(kept);
  return true;
}

}  // namespace pgrouter::session
