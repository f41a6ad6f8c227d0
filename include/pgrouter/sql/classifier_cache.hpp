// The per-worker cache of statement classifications (classifier.hpp's classify(), memoised).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pgrouter/sql/classifier.hpp"

namespace pgrouter::sql {

// Bounded LRU of classifications keyed by a 128-bit hash (XXH3), one per worker thread (no locks). A single
// SELECT/WITH/INSERT/UPDATE/DELETE/VALUES/TABLE statement is keyed by its shape (integer and plain string
// literals replaced, comments and identifiers kept), so texts that differ only in inlined values are parsed
// once; anything else by its exact text. Classifications depend on the function list, so a reload builds a
// new cache.
class ClassifierCache {
 public:
  explicit ClassifierCache(size_t capacity, std::function<bool(std::string_view)> is_read_only_function = {});

  // The classification of `sql`; the reference is valid until the next get() or clear().
  const Classification& get(std::string_view sql);
  void clear();
  size_t size() const { return entries_.size(); }
  size_t capacity() const { return capacity_; }
  size_t hits() const { return hits_; }
  size_t misses() const { return misses_; }
  // The text `sql` is keyed by, with literals replaced ('\x01' a string, '\x02' an integer), into `out`;
  // false when it is keyed exactly instead (not a plain query or DML statement, several statements, E'' or
  // dollar quotes, a backslash in a string, control characters, an unterminated comment or identifier).
  static bool shape_of(std::string_view sql, std::string& out);

 private:
  struct Key {
    uint64_t low, high;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return k.low; }  // already uniformly distributed
  };
  static constexpr uint32_t none = UINT32_MAX;
  struct Entry {
    Key key;
    Classification value;
    uint32_t newer = none, older = none;
  };
  void unlink(uint32_t i);
  void push_newest(uint32_t i);

  size_t capacity_;
  std::function<bool(std::string_view)> is_read_only_function_;
  std::vector<Entry> entries_;  // grows to capacity_, then the oldest slot is reused
  std::unordered_map<Key, uint32_t, KeyHash> index_;
  uint32_t newest_ = none, oldest_ = none;
  size_t hits_ = 0, misses_ = 0;
  std::string shape_;  // reused by get()
  // Texts seen lately, keyed exactly, to their entry's key: the same text again (a prepared or unnamed
  // extended-protocol statement, a query without literals) skips the shaping pass over the text.
  // Direct-mapped; a text whose entry was evicted falls through to the shaping.
  struct Exact {
    uint64_t text_low = 0, text_high = 0;
    Key key{0, 0};
    bool used = false;
  };
  static constexpr size_t kExact = 256;
  std::vector<Exact> exact_ = std::vector<Exact>(kExact);
};

}  // namespace pgrouter::sql
