// A worker-local pool of server connections for one (database, user): idle list (LIFO, so warm
// connections are reused), a bounded FIFO of waiting clients with a timeout, reset on return.
// Pools are per worker so that checkout/checkin never take a lock shared between threads. The
// configured size is one budget for all workers of a (database, user), kept in a PoolGroup of atomics:
// a worker may open servers while the group is under pool.size. A slot moves to where it is needed: a
// client that has waited a short while asks the other workers to close an idle server, and a worker
// whose server comes back gives its slot (closing the server) to another worker that has more than twice
// as many clients waiting per server (see Pool::starving_peer).
#pragma once
#include <deque>
#include <atomic>
#include <list>
#include <vector>
#include <map>
#include <memory>
#include <optional>

#include "pgrouter/net/batch_clock.hpp"
#include "pgrouter/util/strings.hpp"
#include "pgrouter/control/config.hpp"
#include "pgrouter/control/stats.hpp"
#include "pgrouter/pool/server_connection.hpp"
#include "pgrouter/routing/health.hpp"

namespace pgrouter::pool {

class Pool;

// What the pools of one (database, user) share across workers: only atomics, touched when a server
// is opened or closed and when a client starts or stops waiting, never per query.
struct PoolGroup {
  explicit PoolGroup(size_t workers) : members(workers) {
    for (auto& m : members) m.store(nullptr);
  }
  std::atomic<int> servers{0};              // open or opening, over all workers
  std::atomic<int> waiting{0};              // clients waiting, over all workers
  std::vector<std::atomic<Pool*>> members;  // index = worker
};

struct PoolSettings {
  ServerTarget target;
  control::PoolConfig config;
  int max_servers = 1;                             // config.size: the budget of the whole group
  int min_servers = 0;                             // this worker's share of config.min_size
  std::shared_ptr<routing::BackendHealth> health;  // the backend's probed state (routing)
  int weight = 1;                                  // replica weight (routing.strategy: weighted)
  control::PoolLabels labels;  // its per-pool series (already folded by metrics.max_pools)
};

class Pool {
 public:
  // A client in line for a server: acquire()'s, or a session's own, kept with it so that waiting costs no
  // coroutine frame (ClientSession::client_to_server waits on `wake` itself; see wait_in_line). Linked
  // into the pool's queue by its own pointers: joining the queue allocates nothing.
  struct Waiter {
    Waiter() = default;
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;
    ~Waiter();  // leaves the queue it is in
    // Woken for a reason: a server handed over, a slot offered, timed out, or the pool gone.
    bool done() const { return conn || slot || !queued || timed_out || gone; }
    net::Wakeup wake;
    std::unique_ptr<ServerConnection> conn;  // handed over by release()
    bool slot = false;                       // a slot was freed: try to open a connection
    bool queued = false;
    bool timed_out = false;
    bool gone = false;             // the pool was destroyed: nothing of it may be touched
    Clock::time_point started;     // when the client began to wait (pool_wait)
    Clock::time_point deadline;    // pool.queue_timeout
    Clock::time_point next_steal;  // when to ask the other workers for a slot (again)
    std::chrono::milliseconds backoff{0};
    Pool* pool = nullptr;  // whose queue it is in, while queued
    Waiter* prev = nullptr;
    Waiter* next = nullptr;
  };

  // readiness: the worker's (its io_context runs the pool), through which a client waiting for a server is
  // handed one (see Waiter).
  Pool(net::Readiness& readiness, PoolSettings settings, control::WorkerStats& stats,
       std::shared_ptr<PoolGroup> group, int worker);
  ~Pool();
  // Replaces the settings (config reload). A different target retires every connection opened for
  // the old one: idle ones now, attached ones when their clients give them back.
  void update(PoolSettings settings);
  const PoolSettings& settings() const { return settings_; }
  // This pool's per-pool series on this worker (for the session's per-query counts).
  control::PoolStats& pool_stats() { return *pstats_; }
  // "host:port" of the backend, as logs and messages name it.
  std::string target_name() const { return util::host_port(settings_.target.host, settings_.target.port); }

  // A logged-in server for exclusive use, or nullptr with err set (53300 when the queue is full or
  // the wait timed out; the server's own error when login failed).
  // woken: a Waiter that wait_in_line() queued and that was woken without a server (a slot offered, a
  // timeout): acquire goes on from there (first in line for the slot, or the timeout's error).
  awaitable<std::unique_ptr<ServerConnection>> acquire(ServerError& err, Waiter* woken = nullptr);
  // When the client must wait (no idle server, as take_idle() just found; no slot it may open; room in the
  // queue), puts w in line and returns true: the caller waits on w.wake until w.done(), then takes
  // handed() or, failing that, calls acquire(err, &w) (unless w.gone: the pool is no more). False: call
  // acquire(), which opens a server or refuses.
  bool wait_in_line(Waiter& w);
  // After w.done(): the server handed to w (w leaves the line), or nullptr (w stays as it is, for acquire).
  std::unique_ptr<ServerConnection> handed(Waiter& w);
  // acquire() when an idle server is there (the common case in a warm pool), without a coroutine; nullptr
  // otherwise (then acquire()).
  std::unique_ptr<ServerConnection> take_idle() { return take_idle(net::BatchClock::now()); }
  // Gives a server back. clean=false closes it (it broke, or its state is unknown); otherwise it is
  // reset with the reset query (and ROLLBACK first if a transaction is open) before reuse.
  void release(std::unique_ptr<ServerConnection> conn, bool clean);
  // Periodic upkeep: closes idle connections past idle_timeout/max_lifetime, opens up to min_servers.
  void maintain(Clock::time_point now);
  // A slot of the group's budget may be free (another worker closed a server, a larger pool): a waiting
  // client here may open a server now.
  void on_slot_freed();
  // A client waits on another worker while the budget is used: close one idle server here, if any.
  void give_up_idle();
  // One of this pool's servers went away (shutdown, restart, crash): its idle siblings were told the same,
  // but their sockets may not say so yet, so none is lent again.
  void close_idle();

  // ParameterStatus of the last server this pool logged into: what a transaction-pooled client is
  // welcomed with, so its login needs no server.
  const std::map<std::string, std::string>& welcome_params() const { return welcome_params_; }
  // The same, each as its ParameterStatus message (name, message), built once per change: a welcome
  // is copied, not encoded, per login.
  const std::vector<std::pair<std::string, std::string>>& welcome_messages() const {
    return welcome_messages_;
  }
  // A server opened for a target a reload has since replaced: closed when its client gives it back (the
  // console's close_needed, what WAIT_CLOSE waits for).
  bool retired(const ServerConnection& c) const { return c.generation != generation_; }
  int total() const { return total_; }
  int attached() const { return total_ - int(idle_.size()); }  // lent to clients (or being opened/reset)
  size_t idle() const { return idle_.size(); }
  size_t waiting() const { return waiters_.size(); }
  // For the admin console: the idle servers, and when the first client in line started waiting.
  const std::deque<std::unique_ptr<ServerConnection>>& idle_servers() const { return idle_; }
  std::optional<Clock::time_point> first_wait_started() const {
    return waiters_.empty() ? std::nullopt : std::optional(waiters_.front()->started);
  }

 private:
  // How long a client waits for a server of its own worker before other workers are asked to give
  // up an idle one (moving its slot).
  static constexpr std::chrono::milliseconds kStealAfter{20};
  awaitable<void> reset_and_return(std::unique_ptr<ServerConnection> conn);
  awaitable<void> release_after_cancels(ServerConnection* parked);
  awaitable<void> open_spare();
  std::unique_ptr<ServerConnection> take_idle(Clock::time_point started);
  void hand_over(std::unique_ptr<ServerConnection> conn);  // to a waiter, else to the idle list
  void close(std::unique_ptr<ServerConnection> conn);      // frees a slot and wakes a waiter for it
  bool expired(const ServerConnection& c, Clock::time_point now) const;
  // A server goes to a client: the wait into pool_wait (both series), the checkout counted, its time kept
  // (ServerConnection::checked_out, where a transaction-pooled transaction starts).
  void lend(ServerConnection& c, Clock::time_point started, Clock::time_point now = net::BatchClock::now());
  void idle_changed(int64_t delta);  // servers_idle, total and per pool
  void total_changed(int delta);     // total_ and what is published of it
  // Moves this pool's gauges to the series of new labels (a reload changed its backend).
  void relabel(const control::PoolLabels& labels);
  bool reserve_slot();  // takes one server slot from the group budget, if any is left
  // Gives it back: to the pool of another worker that needs it more (starving_peer), else to a waiter here,
  // else to any worker with waiters.
  void release_slot();
  // Another worker's pool with more than twice as many waiting clients per server as this one (which holds
  // `mine` servers, counting the one being given back; its next waiter counts too). Without it, a worker
  // left with no server (its slots went to the other worker when it had no waiter) would get one back only
  // when the other worker's queue is empty, never under sustained load. nullptr when none; one atomic load
  // when no other worker has waiters.
  Pool* starving_peer(int mine);
  void publish_load();  // load_ from total_ and waiters_
  void wake_one_for_slot();
  void enqueue(Waiter& w, bool first);
  void leave_line(Waiter& w);  // after a wait: no longer counted as waiting, out of the queue
  // After a wait without a server handed over: first_in_line for a slot offered, else err (timed out).
  std::unique_ptr<ServerConnection> finish_wait(Waiter& w, ServerError& err, bool& first_in_line);
  // The queue, first in line first (FIFO; push_front for a waiter keeping its place).
  struct Line {
    Waiter* head = nullptr;
    Waiter* tail = nullptr;
    size_t n = 0;
    bool empty() const { return n == 0; }
    size_t size() const { return n; }
    Waiter* front() const { return head; }
    void push_back(Waiter* w);
    void push_front(Waiter* w);
    void remove(Waiter* w);
  };
  // One timer for all waiters: their queue timeouts and when to ask other workers for a slot. Armed
  // for the earliest of those; a waiter handed a server needs no timer of its own.
  void arm_sweep(Clock::time_point at);
  void sweep();

  asio::any_io_executor ex_;
  net::Readiness& readiness_;
  asio::steady_timer sweep_timer_;
  Clock::time_point sweep_at_ = Clock::time_point::max();  // when the armed sweep runs (max: not armed)
  uint64_t sweep_generation_ = 0;
  std::shared_ptr<PoolGroup> group_;
  int worker_;
  PoolSettings settings_;
  control::WorkerStats& stats_;
  control::PoolStats* pstats_;
  uint64_t generation_ = 1;
  int total_ = 0;  // open, opening or resetting
  std::deque<std::unique_ptr<ServerConnection>> idle_;
  struct Parked {
    std::unique_ptr<ServerConnection> conn;
    bool clean;
  };
  std::list<Parked> parked_;  // given back with a cancel still on its way to the server
  Line waiters_;
  // total_ << 32 | waiters_.size(), stored when either changes; read by the other workers' starving_peer().
  std::atomic<uint64_t> load_{0};
  std::map<std::string, std::string> welcome_params_;
  std::vector<std::pair<std::string, std::string>> welcome_messages_;
  void set_welcome(const std::map<std::string, std::string>& params);
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace pgrouter::pool
