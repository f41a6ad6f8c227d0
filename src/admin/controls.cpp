// The admin console's shared state (see the header).
#include "pgrouter/admin/controls.hpp"

namespace pgrouter::admin {

void Controls::pause(const std::string& db) {
  std::lock_guard lock(mu_);
  if (db.empty())
    all_paused_ = true;
  else
    paused_.insert(db);
  publish_paused();
}

std::string Controls::resume(const std::string& db) {
  std::lock_guard lock(mu_);
  if (db.empty()) {
    all_paused_ = false;
    paused_.clear();
  } else if (all_paused_) {
    return "every database is paused (PAUSE without a name): RESUME without a name";
  } else if (!paused_.erase(db)) {
    return "database \"" + db + "\" is not paused";
  }
  publish_paused();
  return {};
}

bool Controls::paused_slow(std::string_view db) const {
  std::lock_guard lock(mu_);
  return all_paused_ || paused_.count(db);
}

void Controls::publish_paused() { any_paused_.store(all_paused_ || !paused_.empty()); }

void Controls::disable(const std::string& db) {
  std::lock_guard lock(mu_);
  disabled_.insert(db);
  any_disabled_.store(true);
}

void Controls::enable(const std::string& db) {
  std::lock_guard lock(mu_);
  disabled_.erase(db);
  any_disabled_.store(!disabled_.empty());
}

bool Controls::disabled_slow(std::string_view db) const {
  std::lock_guard lock(mu_);
  return disabled_.count(db) > 0;
}

}  // namespace pgrouter::admin
