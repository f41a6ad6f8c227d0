// Replica eligibility and selection (see the header).
#include "pgrouter/routing/router.hpp"

namespace pgrouter::routing {

bool replica_eligible(const BackendHealth& replica, const BackendHealth* primary,
                      const control::RoutingConfig& cfg, uint64_t required_lsn) {
  if (!replica.up.load(std::memory_order_relaxed) || !replica.probed.load(std::memory_order_relaxed))
    return false;
  if (!replica.in_recovery.load(std::memory_order_relaxed))
    return false;  // promoted or misconfigured: not a replica
  if (replica.replay_paused.load(std::memory_order_relaxed)) return false;
  if (cfg.max_lag_time.count() > 0 &&
      replica.replay_lag_ms.load(std::memory_order_relaxed) > cfg.max_lag_time.count())
    return false;
  uint64_t at = replica.lsn.load(std::memory_order_relaxed);
  if (required_lsn != 0 && at < required_lsn) return false;
  if (cfg.max_lag_bytes > 0 && primary && primary->probed.load(std::memory_order_relaxed)) {
    uint64_t head = primary->lsn.load(std::memory_order_relaxed);
    if (head > at && head - at > uint64_t(cfg.max_lag_bytes)) return false;
  }
  return true;
}

bool held_by_read_your_writes(const std::vector<const BackendHealth*>& replicas, const BackendHealth* primary,
                              const control::RoutingConfig& cfg, uint64_t required_lsn) {
  if (required_lsn == 0) return false;
  bool eligible_otherwise = false;
  for (const auto* h : replicas) {
    if (!h) continue;
    if (replica_eligible(*h, primary, cfg, required_lsn)) return false;
    if (replica_eligible(*h, primary, cfg, 0)) eligible_otherwise = true;
  }
  return eligible_otherwise;
}

int find_primary(const std::vector<const BackendHealth*>& backends) {
  int best = -1;
  uint32_t best_timeline = 0;
  bool tie = false;
  for (size_t i = 0; i < backends.size(); ++i) {
    const BackendHealth* h = backends[i];
    if (!h || !h->up.load(std::memory_order_relaxed) || !h->probed.load(std::memory_order_relaxed) ||
        h->in_recovery.load(std::memory_order_relaxed))
      continue;
    uint32_t tl = h->timeline.load(std::memory_order_relaxed);
    if (best < 0 || tl > best_timeline) {
      best = int(i);
      best_timeline = tl;
      tie = false;
    } else if (tl == best_timeline) {
      tie = true;
    }
  }
  return tie ? kAmbiguousPrimary : best;
}

int pick_replica(control::ReplicaStrategy strategy, const std::vector<Candidate>& candidates, uint64_t& rr,
                 std::mt19937& rng) {
  int n = int(candidates.size()), eligible = 0;
  for (auto& c : candidates) eligible += c.eligible;
  if (eligible == 0) return -1;
  switch (strategy) {
    case control::ReplicaStrategy::round_robin:
      for (int tries = 0; tries < n; ++tries) {
        int i = int(rr++ % uint64_t(n));
        if (candidates[size_t(i)].eligible) return i;
      }
      return -1;
    case control::ReplicaStrategy::random: {
      int k = int(rng() % uint32_t(eligible));
      for (int i = 0; i < n; ++i)
        if (candidates[size_t(i)].eligible && k-- == 0) return i;
      return -1;
    }
    case control::ReplicaStrategy::least_outstanding: {
      int best = -1;
      for (int i = 0; i < n; ++i) {
        if (!candidates[size_t(i)].eligible) continue;
        // Ties go round robin so an idle set of replicas still shares the load.
        if (best < 0 || candidates[size_t(i)].outstanding < candidates[size_t(best)].outstanding) best = i;
      }
      int ties = 0;
      for (auto& c : candidates) ties += c.eligible && c.outstanding == candidates[size_t(best)].outstanding;
      if (ties > 1) {
        int k = int(rr++ % uint64_t(ties));
        for (int i = 0; i < n; ++i)
          if (candidates[size_t(i)].eligible &&
              candidates[size_t(i)].outstanding == candidates[size_t(best)].outstanding && k-- == 0)
            return i;
      }
      return best;
    }
    case control::ReplicaStrategy::weighted: {
      int64_t total = 0;
      for (auto& c : candidates)
        if (c.eligible) total += c.weight;
      if (total <= 0) return -1;  // every eligible replica has weight 0
      int64_t k = int64_t(rng() % uint64_t(total));
      for (int i = 0; i < n; ++i) {
        if (!candidates[size_t(i)].eligible) continue;
        k -= candidates[size_t(i)].weight;
        if (k < 0) return i;
      }
      return -1;
    }
  }
  return -1;
}

}  // namespace pgrouter::routing
