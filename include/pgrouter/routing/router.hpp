// Read/write splitting decisions, as pure functions of the backends' health (health.hpp) so they are unit
// tested without sockets: which replicas may take a read, and which one gets it.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "pgrouter/control/config.hpp"
#include "pgrouter/routing/health.hpp"

namespace pgrouter::routing {

// A replica may take a read when it answered its last probe, is in recovery and replaying, its replay is
// within routing.max_lag_time, it is within routing.max_lag_bytes of the primary (not checked when no
// primary is known: primary null or unprobed), and it has replayed at least required_lsn
// (read-your-writes; 0 = none).
bool replica_eligible(const BackendHealth& replica, const BackendHealth* primary,
                      const control::RoutingConfig& cfg, uint64_t required_lsn);

// Read-your-writes is what keeps a read off the replicas: none of them has replayed required_lsn, but some
// would be eligible without it (so waiting for replay may help; routing.read_your_writes_wait).
bool held_by_read_your_writes(const std::vector<const BackendHealth*>& replicas, const BackendHealth* primary,
                              const control::RoutingConfig& cfg, uint64_t required_lsn);

// role: auto: which of a shard's backends is the primary now: up, answered its last probe, not in
// recovery, and on the newest timeline of those (a promoted replica wins over a primary that was not
// stopped). -1 when none is; kAmbiguousPrimary when two are on the same newest timeline (two unrelated
// primaries: writes go nowhere rather than to the wrong one).
constexpr int kAmbiguousPrimary = -2;
int find_primary(const std::vector<const BackendHealth*>& backends);

struct Candidate {
  bool eligible = false;
  int weight = 1;
  int outstanding = 0;  // servers of this replica attached to clients (this worker)
};

// Index of the chosen candidate, or -1 when none is eligible. rr is the round-robin cursor.
int pick_replica(control::ReplicaStrategy strategy, const std::vector<Candidate>& candidates, uint64_t& rr,
                 std::mt19937& rng);

}  // namespace pgrouter::routing
