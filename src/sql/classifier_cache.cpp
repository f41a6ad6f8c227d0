// ClassifierCache: the per-worker LRU of statement classifications (see
// include/pgrouter/sql/classifier_cache.hpp); the literal shaper that keys statements by their shape is in
// statement_shape.cpp.
#include "pgrouter/sql/classifier_cache.hpp"

#include <xxhash.h>

#include <algorithm>

#include "pgrouter/sql/session_features.hpp"

namespace pgrouter::sql {

ClassifierCache::ClassifierCache(size_t capacity, std::function<bool(std::string_view)> is_read_only_function)
    : capacity_(std::max<size_t>(capacity, 1)), is_read_only_function_(std::move(is_read_only_function)) {}

void ClassifierCache::unlink(uint32_t i) {
  Entry& e = entries_[i];
  (e.newer == none ? newest_ : entries_[e.newer].older) = e.older;
  (e.older == none ? oldest_ : entries_[e.older].newer) = e.newer;
  e.newer = e.older = none;
}

void ClassifierCache::push_newest(uint32_t i) {
  entries_[i].older = newest_;
  entries_[i].newer = none;
  if (newest_ != none) entries_[newest_].newer = i;
  newest_ = i;
  if (oldest_ == none) oldest_ = i;
}

const Classification& ClassifierCache::get(std::string_view sql) {
  auto hit = [this](uint32_t i) -> const Classification& {
    ++hits_;
    if (i != newest_) {
      unlink(i);
      push_newest(i);
    }
    return entries_[i].value;
  };
  XXH128_hash_t text = XXH3_128bits(sql.data(), sql.size());
  Exact& seen = exact_[size_t(text.low64) & (kExact - 1)];
  if (seen.used && seen.text_low == text.low64 && seen.text_high == text.high64)
    if (auto it = index_.find(seen.key); it != index_.end()) return hit(it->second);
  // Statements that differ only in their literals (a query sent with its values inlined, as pgbench -M simple
  // and most ORMs without server-side binding do) classify alike: they share one entry, keyed by their shape
  // with integer and plain string literals replaced. Anything the shaping does not handle plainly is keyed
  // exactly.
  bool shaped = shape_of(sql, shape_);
  XXH128_hash_t h = shaped ? XXH3_128bits_withSeed(shape_.data(), shape_.size(), 1) : text;
  Key key{h.low64, h.high64};
  seen = Exact{text.low64, text.high64, key, true};
  if (auto it = index_.find(key); it != index_.end()) return hit(it->second);
  ++misses_;
  uint32_t slot;
  if (entries_.size() < capacity_) {
    slot = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
  } else {
    slot = oldest_;
    unlink(slot);
    index_.erase(entries_[slot].key);
  }
  entries_[slot].key = key;
  entries_[slot].value = classify(sql, is_read_only_function_);
  // Shape-mates share the entry: the lexical check runs on the shape (words inside literals are not
  // features).
  entries_[slot].value.session_plain = session_feature(shaped ? std::string_view(shape_) : sql).empty();
  index_.emplace(key, slot);
  push_newest(slot);
  return entries_[slot].value;
}

void ClassifierCache::clear() {
  entries_.clear();
  index_.clear();
  newest_ = oldest_ = none;
}

}  // namespace pgrouter::sql
