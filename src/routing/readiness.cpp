// Readiness of the configured databases from the probes' findings (see the header).
#include "pgrouter/routing/readiness.hpp"

#include <vector>

#include "pgrouter/routing/router.hpp"

namespace pgrouter::routing {

namespace {

// Why the shard cannot take writes now, or empty.
std::string shard_problem(const control::ShardConfig& shard, HealthMonitor& health) {
  if (shard.auto_roles) {
    std::vector<std::shared_ptr<BackendHealth>> kept;
    std::vector<const BackendHealth*> backends;
    for (size_t i = 0; i < shard.backends(); ++i) {
      kept.push_back(health.get(shard.backend(i).host, shard.backend(i).port));
      backends.push_back(kept.back().get());
    }
    int primary = find_primary(backends);
    if (primary == kAmbiguousPrimary) return "two hosts claim to be the primary";
    return primary < 0 ? "no host is the primary" : "";
  }
  auto h = health.get(shard.primary.host, shard.primary.port);
  if (h->up.load(std::memory_order_relaxed)) return "";
  return "primary " + h->name + " is down";
}

}  // namespace

std::string unserved(const control::Config& config, HealthMonitor& health) {
  std::string out;
  for (const auto& db : config.databases)
    for (size_t s = 0; s < db.shards.size(); ++s) {
      std::string problem = shard_problem(db.shards[s], health);
      if (problem.empty()) continue;
      if (!out.empty()) out += "; ";
      out += "database " + db.name + " shard " + std::to_string(s) + ": " + problem;
    }
  return out;
}

}  // namespace pgrouter::routing
