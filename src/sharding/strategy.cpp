// make_strategy: the strategy a database's validated `sharding:` section names.
#include "pgrouter/sharding/strategy.hpp"

#include "strategies.hpp"

namespace pgrouter::sharding {

std::shared_ptr<const Strategy> make_strategy(const control::ShardingConfig& config, size_t shards) {
  switch (config.strategy) {
    case control::ShardStrategy::hash:
      return make_hash_strategy(shards);
    case control::ShardStrategy::consistent:
      return make_consistent_strategy(shards);
    case control::ShardStrategy::map:
      return make_map_strategy(config, shards);
  }
  return make_hash_strategy(shards);
}

}  // namespace pgrouter::sharding
