// A worker-local pool of server connections for one (database, user): idle list (LIFO, so warm
// connections are reused), a bounded FIFO of waiting clients with a timeout, reset on return.
// Pools are per worker so that checkout/checkin never take a lock shared between threads; the
// configured size is split evenly across workers.
#pragma once
#include <deque>
#include <list>
#include <map>
#include <memory>

#include "pgrouter/control/config.hpp"
#include "pgrouter/control/stats.hpp"
#include "pgrouter/pool/server_connection.hpp"

namespace pgrouter::pool {

struct PoolSettings {
  ServerTarget target;
  control::PoolConfig config;
  int max_servers = 1;  // this worker's share of config.size
  int min_servers = 0;  // this worker's share of config.min_size
};

class Pool {
 public:
  Pool(asio::any_io_executor ex, PoolSettings settings, control::WorkerStats& stats);
  ~Pool();
  // Replaces the settings (config reload). A different target retires every connection opened for
  // the old one: idle ones now, attached ones when their clients give them back.
  void update(PoolSettings settings);
  const PoolSettings& settings() const { return settings_; }

  // A logged-in server for exclusive use, or nullptr with err set (53300 when the queue is full or
  // the wait timed out; the server's own error when login failed).
  awaitable<std::unique_ptr<ServerConnection>> acquire(ServerError& err);
  // Gives a server back. clean=false closes it (it broke, or its state is unknown); otherwise it is
  // reset with the reset query (and ROLLBACK first if a transaction is open) before reuse.
  void release(std::unique_ptr<ServerConnection> conn, bool clean);
  // Periodic upkeep: closes idle connections past idle_timeout/max_lifetime, opens up to min_servers.
  void maintain(Clock::time_point now);

  // ParameterStatus of the last server this pool logged into: what a transaction-pooled client is
  // welcomed with, so its login needs no server.
  const std::map<std::string, std::string>& welcome_params() const { return welcome_params_; }
  int total() const { return total_; }
  size_t idle() const { return idle_.size(); }
  size_t waiting() const { return waiters_.size(); }

 private:
  struct Waiter;
  awaitable<void> reset_and_return(std::unique_ptr<ServerConnection> conn);
  awaitable<void> open_spare();
  void hand_over(std::unique_ptr<ServerConnection> conn);  // to a waiter, else to the idle list
  void close(std::unique_ptr<ServerConnection> conn);       // frees a slot and wakes a waiter for it
  bool expired(const ServerConnection& c, Clock::time_point now) const;

  asio::any_io_executor ex_;
  PoolSettings settings_;
  control::WorkerStats& stats_;
  uint64_t generation_ = 1;
  int total_ = 0;  // open, opening or resetting
  std::deque<std::unique_ptr<ServerConnection>> idle_;
  std::list<Waiter*> waiters_;
  std::map<std::string, std::string> welcome_params_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace pgrouter::pool
