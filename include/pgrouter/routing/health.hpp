// What pgrouter knows about each backend, from its own probes: up or down, primary or replica, how far
// its WAL is (the primary's current LSN, a replica's replayed LSN) and whether replay is paused. A probe
// thread (libpq, one connection per backend, kept open) refreshes it every routing.probe_interval; the
// workers read it lock-free (atomics) when they route a transaction, and mark a backend down at once
// when connecting to it fails (the next successful probe brings it back: a half-open circuit).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pgrouter/control/config.hpp"

namespace pgrouter::routing {

using SteadyMs = int64_t;  // milliseconds on the steady clock
SteadyMs steady_ms();

struct BackendHealth {
  std::string name;                 // host:port
  std::atomic<bool> up{true};       // optimistic until a probe or a connect fails
  std::atomic<bool> probed{false};  // at least one probe answered
  std::atomic<bool> in_recovery{false};
  std::atomic<bool> replay_paused{false};
  std::atomic<uint64_t> lsn{
      0};  // pg_current_wal_insert_lsn() on a primary, pg_last_wal_replay_lsn() on a replica
  std::atomic<uint32_t> timeline{
      0};  // a primary's WAL timeline (0 on a replica): after a promotion, the newest wins
  // A replica's replay delay in ms: 0 when it has replayed all it received, else the age of the last
  // transaction it replayed (now() - pg_last_xact_replay_timestamp()). 0 on a primary.
  std::atomic<int64_t> replay_lag_ms{0};
  std::atomic<SteadyMs> probe_sent{0};  // when the query of the last answered probe was sent
  std::atomic<uint64_t> probes_failed{0};
  std::atomic<uint64_t> ejections{0};
  void mark_down() {
    if (up.exchange(false)) ejections.fetch_add(1, std::memory_order_relaxed);
  }
};

class HealthMonitor {
 public:
  HealthMonitor();
  ~HealthMonitor();
  // The backends to probe and how, from a config (called at start and on every reload).
  void update(const control::Config& config);
  // The shared state of a backend (created on first ask; stable for the life of the monitor).
  std::shared_ptr<BackendHealth> get(const std::string& host, uint16_t port);
  std::vector<std::shared_ptr<BackendHealth>> all();
  void start();
  void stop();

 private:
  struct Target {
    std::string conninfo;
    std::shared_ptr<BackendHealth> health;
    void* conn = nullptr;  // PGconn*
  };
  void loop();
  void probe(Target& t);

  std::mutex mu_;         // targets_, interval_, stopping_ (held by the probe loop)
  std::mutex health_mu_;  // health_ (workers look backends up here)
  std::condition_variable cv_;
  bool stopping_ = false;
  std::chrono::milliseconds interval_{500};
  std::map<std::string, std::shared_ptr<BackendHealth>> health_;  // by host:port
  std::map<std::string, Target> targets_;                         // by conninfo
  std::thread thread_;
};

}  // namespace pgrouter::routing
