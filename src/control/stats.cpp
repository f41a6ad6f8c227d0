// Per-worker statistics: the error-by-SQLSTATE table (the only part that is not a plain atomic) and the Stats
// owner.
#include "pgrouter/control/stats.hpp"

#include <string_view>
#include <utility>

namespace pgrouter::control {

void WorkerStats::count_error(std::string_view sqlstate, bool raised_by_pgrouter) {
  std::lock_guard<std::mutex> lock(errors_mu_);
  ++errors_[std::make_pair(std::string(sqlstate), raised_by_pgrouter)];
}

std::map<std::pair<std::string, bool>, uint64_t> WorkerStats::errors_snapshot() const {
  std::lock_guard<std::mutex> lock(errors_mu_);
  return errors_;
}

Stats::Stats(size_t worker_count) {
  workers.reserve(worker_count);
  for (size_t i = 0; i < worker_count; ++i) workers.push_back(std::make_unique<WorkerStats>());
}

}  // namespace pgrouter::control
