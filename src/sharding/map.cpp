// strategy: map: keys pinned to shards (single keys, lists, inclusive integer ranges), the others placed by
// the fallback strategy. Pins are tried in the order written; the first that names a key places it.
#include <fmt/format.h>

#include <limits>
#include <unordered_map>
#include <vector>

#include "strategies.hpp"

namespace pgrouter::sharding {
namespace {

class MapStrategy final : public Strategy {
 public:
  MapStrategy(const control::ShardingConfig& config, size_t shards)
      : fallback_(config.fallback == control::ShardStrategy::consistent ? make_consistent_strategy(shards)
                                                                        : make_hash_strategy(shards)) {
    for (size_t i = 0; i < config.pins.size(); ++i) {
      const auto& pin = config.pins[i];
      size_t shard = pin.shard < fallback_->shards() ? pin.shard : 0;  // validated config: never clamped
      for (const auto& text : pin.keys) {
        // Keyed by the value's canonical text, so ' 42' and '+42' find the pin written 42.
        if (auto key = parse_text(text, config.key_type))
          exact_.try_emplace(to_text(*key), Placement{i, shard});
      }
      if (pin.from && pin.to) ranges_.push_back({i, *pin.from, *pin.to, shard});
    }
  }

  size_t shard_of(const KeyValue& key) const override {
    size_t best_pin = std::numeric_limits<size_t>::max(), shard = 0;
    if (auto it = exact_.find(to_text(key)); it != exact_.end()) {
      best_pin = it->second.pin;
      shard = it->second.shard;
    }
    bool integer = key.type != KeyType::text && key.type != KeyType::uuid;
    if (integer) {
      for (const auto& range : ranges_) {
        if (range.pin >= best_pin) break;
        if (key.integer >= range.from && key.integer <= range.to) return range.shard;
      }
    }
    if (best_pin != std::numeric_limits<size_t>::max()) return shard;
    return fallback_->shard_of(key);
  }
  size_t shards() const override { return fallback_->shards(); }
  std::string describe() const override {
    return fmt::format("map({} keys, {} ranges, fallback {})", exact_.size(), ranges_.size(),
                       fallback_->describe());
  }

 private:
  struct Placement {
    size_t pin, shard;
  };
  struct Range {
    size_t pin;
    int64_t from, to;
    size_t shard;
  };
  std::shared_ptr<const Strategy> fallback_;
  std::unordered_map<std::string, Placement> exact_;
  std::vector<Range> ranges_;
};

}  // namespace

std::shared_ptr<const Strategy> make_map_strategy(const control::ShardingConfig& config, size_t shards) {
  return std::make_shared<MapStrategy>(config, shards);
}

}  // namespace pgrouter::sharding
