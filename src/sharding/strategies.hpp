// The strategies behind sharding::make_strategy, one file each (private to src/sharding and the unit tests).
#pragma once
#include <memory>

#include "pgrouter/control/config.hpp"
#include "pgrouter/sharding/strategy.hpp"

namespace pgrouter::sharding {

// hash.cpp: shard i holds the keys whose partition_hash leaves remainder i, as a PostgreSQL table
// PARTITION BY HASH with modulus `shards` puts them in partition i.
std::shared_ptr<const Strategy> make_hash_strategy(size_t shards);

// consistent.cpp: jump consistent hash over partition_hash: going from n to n + 1 shards moves only the
// keys the new shard takes, about 1/(n + 1) of them.
std::shared_ptr<const Strategy> make_consistent_strategy(size_t shards);
// Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014): the bucket of `key` among
// `buckets` (> 0).
size_t jump_consistent_hash(uint64_t key, size_t buckets);

// map.cpp: config.pins first, then config.fallback (hash or consistent) for the keys they do not name.
std::shared_ptr<const Strategy> make_map_strategy(const control::ShardingConfig& config, size_t shards);

}  // namespace pgrouter::sharding
