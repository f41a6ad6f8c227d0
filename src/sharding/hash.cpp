// strategy: hash: the remainder of PostgreSQL's partition hash, so each shard can hold its rows in (or be
// checked against) a PARTITION BY HASH table with the same modulus.
#include <fmt/format.h>

#include "strategies.hpp"

namespace pgrouter::sharding {
namespace {

class HashStrategy final : public Strategy {
 public:
  explicit HashStrategy(size_t shards) : shards_(shards) {}
  size_t shard_of(const KeyValue& key) const override { return partition_hash(key) % shards_; }
  size_t shards() const override { return shards_; }
  std::string describe() const override { return fmt::format("hash(modulus {})", shards_); }

 private:
  size_t shards_;
};

}  // namespace

std::shared_ptr<const Strategy> make_hash_strategy(size_t shards) {
  return std::make_shared<HashStrategy>(shards == 0 ? 1 : shards);
}

}  // namespace pgrouter::sharding
