// The rows of each SHOW command, from the workers' snapshots, the config, the stats and the health probes.
#pragma once
#include <vector>

#include "pgrouter/admin/controls.hpp"
#include "pgrouter/admin/result_set.hpp"
#include "pgrouter/admin/snapshot.hpp"
#include "pgrouter/control/config.hpp"
#include "pgrouter/control/stats.hpp"
#include "pgrouter/routing/health.hpp"

namespace pgrouter::admin {

// One row per (database, user, shard, backend) pool, summed over workers.
ResultSet show_pools(const std::vector<WorkerSnapshot>& parts);
ResultSet show_clients(const std::vector<WorkerSnapshot>& parts);
ResultSet show_servers(const std::vector<WorkerSnapshot>& parts);
// One row per database shard.
ResultSet show_databases(const control::Config& config, const Controls& controls,
                         const std::vector<WorkerSnapshot>& parts);
// One row for the whole process: the per-worker counters are not kept per database.
ResultSet show_stats(const control::Stats& stats);
ResultSet show_config(const control::Config& config);
ResultSet show_version();
// One row per database shard backend, with the health monitor's view of it.
ResultSet show_backends(const control::Config& config, routing::HealthMonitor& health);

}  // namespace pgrouter::admin
