// A worker thread: its own io_context, its own SO_REUSEPORT listener, client sessions and server
// pools. Nothing here is shared with other workers except the Runtime's atomics.
#pragma once
#include <atomic>
#include <map>
#include <mutex>
#include <memory>
#include <random>
#include <thread>
#include <tuple>
#include <unordered_map>

#include <boost/intrusive/list.hpp>

#include "pgrouter/admin/controls.hpp"
#include "pgrouter/control/takeover.hpp"
#include "pgrouter/asio.hpp"
#include "pgrouter/control/config.hpp"
#include "pgrouter/control/stats.hpp"
#include "pgrouter/control/userlist.hpp"
#include "pgrouter/net/readiness.hpp"
#include "pgrouter/net/tls.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/protocol/scram.hpp"
#include "pgrouter/routing/health.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/session/auth_cache.hpp"
#include "pgrouter/sharding/shard_map.hpp"
#include "pgrouter/sql/classifier_cache.hpp"

namespace pgrouter {

namespace session {
class ClientSession;
}

class Worker;

// A client still logging in, on its worker's list of logins to cut off at their deadline (one timer per
// worker for all of them: a login costs no timer of its own). Unlinks itself when destroyed.
struct LoginWatch
    : boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
  session::ClientSession* session = nullptr;
  std::chrono::steady_clock::time_point deadline;
};

// What all workers share: read-mostly or atomic.
struct Runtime {
  std::vector<std::unique_ptr<Worker>> workers;
  std::shared_ptr<control::Stats> stats;
  std::atomic<int> clients{0};        // connected clients over all workers, for listen.max_client_conn
  std::string mock_secret;            // random per process: fake SCRAM salts for unknown users
  routing::HealthMonitor health;      // backend probes for read/write splitting
  ::pgrouter::admin::Controls admin;  // the admin console's PAUSE/DISABLE state, reload and shutdown
  // The process this one took over (--takeover), while it serves its last clients: cancel keys not ours.
  control::takeover::Predecessor predecessor;

  // The cross-worker budget of one (database, user, shard, backend) pool; created once, on a worker's first
  // use. Backend 0 is the shard's primary, 1..n its replicas: each has its own budget of pool.size.
  std::shared_ptr<pool::PoolGroup> pool_group(const std::string& db, const std::string& user, int shard,
                                              int backend) {
    std::lock_guard lock(groups_mu_);
    auto& g = groups_[{db, user, shard, backend}];
    if (!g) g = std::make_shared<pool::PoolGroup>(workers.size());
    return g;
  }

 private:
  std::mutex groups_mu_;
  std::map<std::tuple<std::string, std::string, int, int>, std::shared_ptr<pool::PoolGroup>> groups_;
};

class Worker {
 public:
  Worker(Runtime& rt, int index, std::shared_ptr<const control::Config> config,
         std::shared_ptr<net::ssl::context> tls);
  ~Worker();
  // Binds a listener (SO_REUSEPORT so every worker has its own accept queue); throws on failure.
  void listen(const std::string& host, uint16_t port);
  // Accepts on a listening socket a predecessor handed over (control/takeover.hpp); throws on failure.
  void adopt(int fd);
  // The listeners' descriptors, for a successor (fixed between listen()/adopt() and the first close).
  const std::vector<int>& listener_fds() const { return listener_fds_; }
  // A successor accepts on the listeners now: close them here, keep serving the clients (on any thread).
  void stop_accepting();
  void start();  // runs the io_context on a new thread
  // SIGTERM: closes the listener and, until stop(), ends each client as soon as it is idle (ClientSession::
  // end_if_idle_at_shutdown); the control thread calls stop() once Runtime::clients is 0 or time is up.
  void drain();
  void stop();  // closes the listener and stops the loop; join() waits for the thread
  void join();
  // Called on the control thread: the new snapshot is applied on this worker's thread between events.
  void publish(std::shared_ptr<const control::Config> config, std::shared_ptr<net::ssl::context> tls);

  asio::io_context& io() { return io_; }
  // The worker's thread has stopped or is stopping.
  bool stopping() const { return phase_ == Phase::stopping; }
  bool draining() const { return phase_ == Phase::draining; }
  net::Readiness& readiness() { return readiness_; }
  int index() const { return index_; }
  Runtime& runtime() { return rt_; }
  control::WorkerStats& stats() { return stats_; }
  const std::shared_ptr<const control::Config>& config() const { return config_; }
  const std::shared_ptr<net::ssl::context>& tls() const { return tls_; }

  // The pool for (database, user) on a shard's backend (0 = the shard's primary, i = its replica i-1);
  // created on first use.
  pool::Pool& pool_for(const control::DatabaseConfig& db, const control::UserConfig& user, int shard = 0,
                       int backend = 0);
  // Statement classification for read/write splitting, cached per worker (rebuilt on reload).
  sql::ClassifierCache& classifier() { return *classifier_; }
  // A sharded database's shard map for this worker's config snapshot (a session keeps the one its
  // transaction started with across a reload).
  std::shared_ptr<sharding::ShardMap> shard_map(const control::DatabaseConfig& db);
  std::mt19937& rng() { return rng_; }
  uint64_t& round_robin() { return rr_; }
  // Scratch for a routing decision (ClientSession::choose_backend, which does not suspend): one vector
  // per worker, not an allocation per transaction.
  std::vector<routing::Candidate>& candidates() { return candidates_; }

  // Cancel keys: the pid pgrouter hands out encodes the worker index, so a CancelRequest arriving on
  // any worker is posted to the one that owns the session.
  uint32_t register_session(session::ClientSession* s, uint32_t& secret);
  void unregister_session(uint32_t pid);
  session::ClientSession* find_session(uint32_t pid) {
    auto it = sessions_.find(pid);
    return it == sessions_.end() ? nullptr : it->second;
  }
  static int worker_of_pid(uint32_t pid) { return int(pid >> 24) - 1; }
  // The admin console's view (admin/snapshot.cpp), on this worker's thread only.
  const std::unordered_map<uint32_t, session::ClientSession*>& sessions() const { return sessions_; }
  const std::map<std::tuple<std::string, std::string, int, int>, std::unique_ptr<pool::Pool>>& pools() const {
    return pools_;
  }
  // The SCRAM verifier for a user configured with a plaintext password. Its salt is derived like an
  // unknown user's mock salt (stable per user, keyed by the process secret), so two logins cannot tell
  // a real user from a missing one, and PBKDF2 runs once per password, not once per login.
  const protocol::scram::Verifier& scram_verifier_for(const control::UserConfig& user);
  // Users and databases not in the config (docs/AUTH.md). auth_file's secret for a user (the file re-read
  // when it changed; nullptr: none), the worker's auth_query answers, the entry a fallback ("*") database
  // gives a database name (null without one), and a found user's server credentials, adopted by the pools of
  // (db, user) when they change.
  const std::string* userlist_secret(const std::string& user);
  session::AuthCache& auth_cache() { return auth_cache_; }
  std::shared_ptr<const control::DatabaseConfig> fallback_database(const std::string& name);
  void adopt_user(const control::DatabaseConfig& db, std::shared_ptr<const control::UserConfig> user);
  uint64_t next_session_id() { return (uint64_t(index_) << 48) | ++session_counter_; }
  // listen.client_login_timeout: w's session is cut off (ClientSession::login_timed_out) unless it is
  // unwatched (unwatch_login, or destroyed) first.
  void watch_login(LoginWatch& w, std::chrono::steady_clock::duration timeout);
  static void unwatch_login(LoginWatch& w) {
    if (w.is_linked()) w.unlink();
  }

 private:
  struct Listener {
    explicit Listener(asio::io_context& io) : acceptor(io) {}
    tcp::acceptor acceptor;
    net::SocketReadiness ready;  // acceptor's descriptor in readiness_
  };
  Listener& add_listener();
  void configure_listener(Listener& l);
  awaitable<void> accept_loop(Listener& l);
  awaitable<void> maintenance_loop();
  awaitable<void> drain_loop();
  awaitable<void> recovery_round();  // two-phase recovery (worker 0), one round at a time
  bool recovering_ = false;
  pool::Clock::time_point next_recovery_{};
  void close_listeners();
  pool::PoolSettings settings_for(const control::DatabaseConfig& db, const control::UserConfig& user,
                                  int shard, int backend) const;
  void build_classifier();

  Runtime& rt_;
  int index_;
  control::WorkerStats& stats_;
  // One thread runs it, and every socket, acceptor and timer on it is touched only from that thread (other
  // threads post to it: reload, stop, cancel requests, a pool slot given to this worker): the reactor's
  // per-descriptor locks are not needed (its scheduler queue keeps its lock, for those posts).
  // shutdown() (protected in Asio) destroys the handlers still queued, the coroutine frames of live sessions
  // among them, while the members below that those frames touch (pools, readiness set, session table) are
  // still alive; ~io_context would do it only after they are gone.
  struct Io : asio::io_context {
    using asio::io_context::io_context;
    void destroy_pending() { shutdown(); }
  };
  Io io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  net::Readiness readiness_{io_};
  std::vector<std::unique_ptr<Listener>> listeners_;  // after readiness_: detached from it first
  std::vector<int> listener_fds_;
  std::thread thread_;
  std::shared_ptr<const control::Config> config_;
  std::shared_ptr<net::ssl::context> tls_;
  std::map<std::tuple<std::string, std::string, int, int>, std::unique_ptr<pool::Pool>>
      pools_;  // (db, user, shard, backend)
  std::unique_ptr<sql::ClassifierCache> classifier_;
  // By database config (a session on the snapshot before a reload has its own), emptied on reload.
  std::unordered_map<const control::DatabaseConfig*, std::shared_ptr<sharding::ShardMap>> shard_maps_;
  uint64_t rr_ = 0;
  std::vector<routing::Candidate> candidates_;
  std::unordered_map<uint32_t, session::ClientSession*> sessions_;
  std::unordered_map<std::string, std::pair<std::string, protocol::scram::Verifier>> verifiers_;
  control::UserlistFile userlist_;
  bool userlist_reload_ = false;  // set by a reload: the next lookup re-reads the file whatever its time
  session::AuthCache auth_cache_;
  std::unordered_map<std::string, std::shared_ptr<const control::DatabaseConfig>> fallback_dbs_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<const control::UserConfig>> found_users_;
  const control::UserConfig* found_user(const std::string& db, const std::string& user) const;
  uint32_t pid_counter_ = 0;
  uint64_t session_counter_ = 0;
  std::mt19937 rng_;
  // serving -> draining (drain()) -> stopping (stop(), from either); changed only on the worker's thread.
  enum class Phase : uint8_t { serving, draining, stopping };
  Phase phase_ = Phase::serving;
  // Logins in progress, oldest first (they share one timeout, so also earliest deadline first), and the
  // timer set for the first one's deadline while any is watched.
  boost::intrusive::list<LoginWatch, boost::intrusive::constant_time_size<false>> logins_;
  asio::steady_timer login_timer_{io_};
  bool login_timer_set_ = false;
  void arm_login_timer();  // for the first login's deadline
  void on_login_timer();
};

}  // namespace pgrouter
