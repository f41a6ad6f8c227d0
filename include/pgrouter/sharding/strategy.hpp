// Which shard owns a key: one small interface, one file per strategy (hash.cpp, consistent.cpp, map.cpp).
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "pgrouter/sharding/key.hpp"

namespace pgrouter::control {
struct ShardingConfig;
}

namespace pgrouter::sharding {

class Strategy {
 public:
  virtual ~Strategy() = default;
  // The shard (0-based, < shards()) that owns `key`. `key.type` is the configured key type.
  virtual size_t shard_of(const KeyValue& key) const = 0;
  virtual size_t shards() const = 0;
  virtual std::string describe() const = 0;  // for logs and EXPLAIN: "hash(modulus 2)", ...
};

// The strategy a database's `sharding:` section names, over `shards` shards. Validated config only.
std::shared_ptr<const Strategy> make_strategy(const control::ShardingConfig& config, size_t shards);

}  // namespace pgrouter::sharding
