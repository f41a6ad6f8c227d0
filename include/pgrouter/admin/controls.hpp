// What the admin console changes for every worker: databases paused (no server for a new transaction) or
// disabled (no new login), and the control plane's reload and drain, which main() plugs in. Read by workers
// on each transaction start and login, so the common case (nothing paused or disabled) is one relaxed atomic
// load.
#pragma once
#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "pgrouter/control/config.hpp"

namespace pgrouter::admin {

// Whether clients asking for database `name` get the admin console: admin.database, or "pgbouncer" (what
// PgBouncer's tools ask for), unless a database of that name is configured.
inline bool is_console_database(const control::Config& config, std::string_view name) {
  return (name == config.admin.database || name == "pgbouncer") && !config.find_database(name);
}

class Controls {
 public:
  // PAUSE/RESUME: db empty = every database. resume() returns an error message, or empty when done.
  void pause(const std::string& db);
  std::string resume(const std::string& db);
  bool paused(std::string_view db) const {
    return any_paused_.load(std::memory_order_relaxed) && paused_slow(db);
  }
  // DISABLE/ENABLE one database.
  void disable(const std::string& db);
  void enable(const std::string& db);
  bool disabled(std::string_view db) const {
    return any_disabled_.load(std::memory_order_relaxed) && disabled_slow(db);
  }

  // Set by main() before the workers start. reload: runs a reload (as SIGHUP) on the control thread and then
  // calls done(ok, message) there. shutdown: starts the drain (as SIGTERM) on the control thread.
  std::function<void(std::function<void(bool, std::string)> done)> reload;
  std::function<void()> shutdown;

 private:
  bool paused_slow(std::string_view db) const;
  bool disabled_slow(std::string_view db) const;
  void publish_paused();  // any_paused_ from the sets (mu_ held)
  std::atomic<bool> any_paused_{false};
  std::atomic<bool> any_disabled_{false};
  mutable std::mutex mu_;
  bool all_paused_ = false;
  std::set<std::string, std::less<>> paused_, disabled_;
};

}  // namespace pgrouter::admin
