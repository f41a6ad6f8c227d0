// The prepared statements pgrouter created on one server connection under transaction pooling, by
// their server-side names, least recently used first out. Bounded by pool.prepared_statements_cache:
// when full, the least recently used one is closed on the server to make room. Each may carry the
// identity of its result columns (desc), as a Describe of it found them when it was prepared here.
#pragma once
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

namespace pgrouter::pool {

class ServerStatements {
 public:
  // True if the server has `name`; marks it most recently used.
  bool use(const std::string& name) {
    auto it = map_.find(name);
    if (it == map_.end()) return false;
    lru_.splice(lru_.begin(), lru_, it->second.at);
    return true;
  }
  bool contains(const std::string& name) const { return map_.count(name) > 0; }
  // Records `name` as prepared; returns the name to close on the server to stay within capacity
  // (empty when nothing needs closing).
  std::string insert(const std::string& name, size_t capacity) {
    if (use(name)) return {};
    lru_.push_front(name);
    map_[name] = Entry{lru_.begin()};
    if (capacity == 0 || map_.size() <= capacity) return {};
    std::string victim = std::move(lru_.back());
    lru_.pop_back();
    map_.erase(victim);
    return victim;
  }
  // Puts back a statement whose eviction did not happen (its Close was skipped after an error).
  void restore(const std::string& name) {
    if (map_.count(name)) return;
    lru_.push_back(name);
    map_[name] = Entry{std::prev(lru_.end())};
  }
  // use() that also gives the copy's result columns' identity (0: not known); null if the server lacks it.
  const uint64_t* use_desc(const std::string& name) {
    auto it = map_.find(name);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.at);
    return &it->second.desc;
  }
  // The result columns' identity of `name` here (0: not known; see TxnTracker's kNoRows and desc_of()).
  uint64_t desc(const std::string& name) const {
    auto it = map_.find(name);
    return it == map_.end() ? 0 : it->second.desc;
  }
  void set_desc(const std::string& name, uint64_t desc) {
    if (auto it = map_.find(name); it != map_.end()) it->second.desc = desc;
  }
  void erase(const std::string& name) {
    auto it = map_.find(name);
    if (it == map_.end()) return;
    lru_.erase(it->second.at);
    map_.erase(it);
  }
  void clear() {
    unnamed_owner = 0;
    lru_.clear();
    map_.clear();
  }
  // The server refused one of its statements with "cached plan must not change result type" (a table changed
  // under it): pgrouter forgets them all, so each is prepared again at its next use, after a Close of the old
  // one (close_first) since the server still has it.
  void forget_stale() {
    lru_.clear();
    map_.clear();
    close_first = true;
  }
  size_t size() const { return map_.size(); }
  // The server may hold statements pgrouter no longer tracks: close a name before preparing it.
  bool close_first = false;
  // Which client last parsed the unnamed statement here (0 = none / unknown).
  uint64_t unnamed_owner = 0;

 private:
  struct Entry {
    std::list<std::string>::iterator at;
    uint64_t desc = 0;
  };
  std::list<std::string> lru_;
  std::unordered_map<std::string, Entry> map_;
};

}  // namespace pgrouter::pool
