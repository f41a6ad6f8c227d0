// The answers of auth_query, per worker, kept for a while so that a burst of logins of one user runs the
// query once: found secrets for auth_cache_seconds, "no such user" for auth_negative_cache_seconds.
#pragma once
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>

namespace pgrouter::session {

class AuthCache {
 public:
  using Clock = std::chrono::steady_clock;
  struct Answer {
    bool found = false;
    std::string secret;  // when found
  };

  explicit AuthCache(size_t max_entries = 10000) : max_entries_(max_entries) {}

  // The answer for (database, user) if one is kept and has not expired at `now`.
  std::optional<Answer> get(const std::string& database, const std::string& user, Clock::time_point now) {
    auto it = entries_.find(key(database, user));
    if (it == entries_.end()) return std::nullopt;
    if (now >= it->second.expires) {
      entries_.erase(it);
      return std::nullopt;
    }
    return it->second.answer;
  }

  // Keeps an answer until now + found_ttl (found) or now + missing_ttl (not found); a ttl of 0 keeps nothing.
  void put(const std::string& database, const std::string& user, Answer answer, Clock::time_point now,
           Clock::duration found_ttl, Clock::duration missing_ttl) {
    auto ttl = answer.found ? found_ttl : missing_ttl;
    if (ttl <= Clock::duration::zero()) return;
    if (entries_.size() >= max_entries_) drop_expired(now);
    // Still full of live entries (a flood of made-up user names): start over rather than grow.
    if (entries_.size() >= max_entries_) entries_.clear();
    entries_[key(database, user)] = {std::move(answer), now + ttl};
  }

  void clear() { entries_.clear(); }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Answer answer;
    Clock::time_point expires;
  };
  static std::string key(const std::string& database, const std::string& user) {
    std::string k = database;
    k += '\0';
    k += user;
    return k;
  }
  void drop_expired(Clock::time_point now) {
    for (auto it = entries_.begin(); it != entries_.end();)
      it = now >= it->second.expires ? entries_.erase(it) : std::next(it);
  }
  size_t max_entries_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace pgrouter::session
