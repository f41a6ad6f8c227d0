// strategy: consistent: jump consistent hash over PostgreSQL's partition hash. Adding a shard moves about
// 1/(n + 1) of the keys, all of them to the new shard, where strategy: hash would move about n/(n + 1).
#include <fmt/format.h>

#include "strategies.hpp"

namespace pgrouter::sharding {

size_t jump_consistent_hash(uint64_t key, size_t buckets) {
  // Each step is a jump to the next bucket count at which the key would move; the key's bucket is the last
  // jump below `buckets`. The linear congruential step is the paper's 64-bit generator.
  int64_t bucket = -1, next = 0;
  while (next < int64_t(buckets)) {
    bucket = next;
    key = key * 2862933555777941757ULL + 1;
    next = int64_t(double(bucket + 1) * (double(int64_t(1) << 31) / double((key >> 33) + 1)));
  }
  return size_t(bucket);
}

namespace {

class ConsistentStrategy final : public Strategy {
 public:
  explicit ConsistentStrategy(size_t shards) : shards_(shards) {}
  size_t shard_of(const KeyValue& key) const override {
    return jump_consistent_hash(partition_hash(key), shards_);
  }
  size_t shards() const override { return shards_; }
  std::string describe() const override { return fmt::format("consistent({} shards)", shards_); }

 private:
  size_t shards_;
};

}  // namespace

std::shared_ptr<const Strategy> make_consistent_strategy(size_t shards) {
  return std::make_shared<ConsistentStrategy>(shards == 0 ? 1 : shards);
}

}  // namespace pgrouter::sharding
