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

PoolLabels other_pool_labels(std::string role) {
  return {"other", "other", "other", "other", std::move(role)};
}

PoolLabels PoolLabelTable::admit(const PoolLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  if (admitted_.count(labels)) return labels;
  if (admitted_.size() >= limit_) return other_pool_labels(labels.role);
  admitted_.insert(labels);
  return labels;
}

void PoolLabelTable::set_limit(size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  limit_ = limit;
}

PoolStats& WorkerStats::pool_stats(const PoolLabels& labels) {
  std::lock_guard<std::mutex> lock(pools_mu_);
  auto& block = pools_[labels];
  if (!block) block = std::make_unique<PoolStats>();
  return *block;
}

std::vector<std::pair<PoolLabels, const PoolStats*>> WorkerStats::pool_stats_snapshot() const {
  std::lock_guard<std::mutex> lock(pools_mu_);
  std::vector<std::pair<PoolLabels, const PoolStats*>> out;
  out.reserve(pools_.size());
  for (const auto& [labels, block] : pools_) out.emplace_back(labels, block.get());
  return out;
}

Stats::Stats(size_t worker_count) {
  workers.reserve(worker_count);
  for (size_t i = 0; i < worker_count; ++i) workers.push_back(std::make_unique<WorkerStats>());
}

}  // namespace pgrouter::control
