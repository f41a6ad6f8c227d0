// Whether pgrouter can serve every configured database, for /readyz: each shard needs a primary that the
// health probes find reachable. A shard nothing probes (one fixed primary, no replicas) counts as servable.
#pragma once
#include <string>

#include "pgrouter/control/config.hpp"
#include "pgrouter/routing/health.hpp"

namespace pgrouter::routing {

// Empty when every shard of every database has its primary; else what is missing, e.g.
// "database app shard 0: primary db1:5432 is down; database b shard 1: no host is the primary".
std::string unserved(const control::Config& config, HealthMonitor& health);

}  // namespace pgrouter::routing
