// Worker threads: accept loop, per-worker pools, config snapshots applied between events.
#include "pgrouter/worker.hpp"

#include <pthread.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "pgrouter/control/log.hpp"
#include "pgrouter/control/takeover.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/session/two_phase_recovery.hpp"
#include "pgrouter/sharding/two_phase.hpp"

namespace pgrouter {

Worker::Worker(Runtime& rt, int index, std::shared_ptr<const control::Config> config,
               std::shared_ptr<net::ssl::context> tls)
    : rt_(rt),
      index_(index),
      stats_(*rt.stats->workers.at(size_t(index))),
      config_(std::move(config)),
      tls_(std::move(tls)),
      rng_(std::random_device{}()) {
  build_classifier();
}

Worker::~Worker() {
  stop();
  join();
  phase_ = Phase::stopping;
  io_.destroy_pending();
}

Worker::Listener& Worker::add_listener() {
  listeners_.push_back(std::make_unique<Listener>(io_));
  return *listeners_.back();
}

void Worker::listen(const std::string& host, uint16_t port) {
  auto addr = asio::ip::make_address(host);
  tcp::endpoint ep(addr, port);
  tcp::acceptor& acceptor = add_listener().acceptor;
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  int one = 1;
  if (::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    throw std::runtime_error("cannot set SO_REUSEPORT");
  acceptor.bind(ep);
  configure_listener(*listeners_.back());
  acceptor.listen(4096);
  listener_fds_.push_back(acceptor.native_handle());
}

void Worker::adopt(int fd) {
  Listener& l = add_listener();
  control::takeover::adopt_listener(l.acceptor, fd);
  configure_listener(l);
  listener_fds_.push_back(fd);
}

void Worker::configure_listener(Listener& l) {
  if (!config_->listen.tcp_defer_accept) return;
  // The kernel completes the handshake but wakes the listener only once the client's first bytes (its
  // SSLRequest or startup packet) are there: an accept is then never followed by a wait for them, and a
  // connection that sends nothing (a port probe) costs pgrouter nothing. After 45 s without data the
  // connection is accepted anyway, as PgBouncer's tcp_defer_accept does.
  int secs = 45;
  if (::setsockopt(l.acceptor.native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) != 0)
    log::warn(
        "listen.tcp_defer_accept: TCP_DEFER_ACCEPT could not be set; connections are accepted at their "
        "handshake",
        {{"error", std::string(std::strerror(errno))}});
}

void Worker::start() {
  bool want_batching = config_->listen.send_batching == control::SendBatching::io_uring;
  if (!readiness_.start(want_batching) && want_batching && index_ == 0)
    log::warn(
        "listen.send_batching: io_uring is not available here (kernel, seccomp or memory lock limit); the "
        "relay makes one send() per message");
  for (auto& l : listeners_) asio::co_spawn(io_, accept_loop(*l), asio::detached);
  asio::co_spawn(io_, maintenance_loop(), asio::detached);
  bool batch = config_->listen.scheduling == control::Scheduling::batch;
  thread_ = std::thread([this, batch] {
    log::set_thread_worker(index_);
    if (batch) {
      // Under SCHED_BATCH a wake-up of this thread (a socket became readable) does not preempt the task
      // running on the CPU: when the CPUs are saturated the worker runs a little later and finds more events
      // ready, relaying them in one pass (as a busy PgBouncer does; A/B runs in bench/RESULTS.md);
      // with an idle CPU it runs at once as before. Any user may select it. Opt-in (listen.scheduling).
      sched_param param{};
      if (int err = ::pthread_setschedparam(::pthread_self(), SCHED_BATCH, &param); err != 0)
        log::warn("listen.scheduling: batch could not be applied; the worker runs under the normal policy",
                  {{"error", std::string(std::strerror(err))}});
    }
    for (;;) {
      try {
        io_.run();
        break;
      } catch (const std::exception& e) {
        // A bug in one session must not take the others down.
        log::error("unhandled exception in worker; continuing", {{"error", e.what()}});
      }
    }
  });
}

void Worker::drain() {
  asio::post(io_, [this] {
    if (phase_ != Phase::serving) return;
    phase_ = Phase::draining;
    close_listeners();  // new connections are refused by the kernel from here on
    asio::co_spawn(io_, drain_loop(), asio::detached);
  });
}

void Worker::stop() {
  asio::post(io_, [this] {
    phase_ = Phase::stopping;
    close_listeners();
    readiness_.stop();
    io_.stop();
  });
}

void Worker::stop_accepting() {
  asio::post(io_, [this] { close_listeners(); });
}

void Worker::close_listeners() {
  for (auto& l : listeners_) {
    l->ready.cancel();
    l->ready.detach();
    control::takeover::close_shared_listener(l->acceptor);  // a successor may hold the same socket
  }
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::publish(std::shared_ptr<const control::Config> config, std::shared_ptr<net::ssl::context> tls) {
  asio::post(io_, [this, config = std::move(config), tls = std::move(tls)]() mutable {
    config_ = std::move(config);
    tls_ = std::move(tls);
    build_classifier();
    shard_maps_.clear();
    fallback_dbs_.clear();
    auth_cache_.clear();
    userlist_reload_ = true;
    for (auto& [key, pool] : pools_) {
      auto* db = config_->find_database(std::get<0>(key));
      std::shared_ptr<const control::DatabaseConfig> fallback;
      if (!db) {
        fallback = fallback_database(std::get<0>(key));
        db = fallback.get();
      }
      auto* user = config_->find_user(std::get<1>(key));
      if (!user) user = found_user(std::get<0>(key), std::get<1>(key));
      auto [dbname, username, shard, backend] = key;
      // A replica (or shard) removed from the config keeps its pool until its servers go idle; routing no
      // longer picks it.
      if (db && user && size_t(shard) < db->shards.size() &&
          (backend == 0 || size_t(backend) <= db->shards[size_t(shard)].replicas.size()))
        pool->update(settings_for(*db, *user, shard, backend));
    }
  });
}

std::shared_ptr<sharding::ShardMap> Worker::shard_map(const control::DatabaseConfig& db) {
  auto& m = shard_maps_[&db];
  if (!m) m = std::make_shared<sharding::ShardMap>(db);
  return m;
}

void Worker::build_classifier() {
  // A user function is read-only when some database lists it (the cache is per worker, not per database).
  std::vector<std::string> read_only;
  for (const auto& db : config_->databases)
    read_only.insert(read_only.end(), db.routing.read_only_functions.begin(),
                     db.routing.read_only_functions.end());
  classifier_ =
      std::make_unique<sql::ClassifierCache>(4096, [read_only = std::move(read_only)](std::string_view name) {
        return std::find(read_only.begin(), read_only.end(), name) != read_only.end();
      });
}

pool::PoolSettings Worker::settings_for(const control::DatabaseConfig& db, const control::UserConfig& user,
                                        int shard_index, int backend) const {
  pool::PoolSettings s;
  const auto& shard = db.shards.at(size_t(shard_index));
  const auto& ep = backend == 0 ? shard.primary : shard.replicas.at(size_t(backend - 1));
  s.target.host = ep.host;
  s.target.port = ep.port;
  s.weight = ep.weight;
  s.health = rt_.health.get(ep.host, ep.port);
  s.target.dbname = db.server_dbname(size_t(shard_index));
  if (s.target.dbname.empty()) s.target.dbname = db.name;
  s.target.user = user.backend_user.empty() ? user.name : user.backend_user;
  s.target.password = user.backend_password.empty() ? user.password : user.backend_password;
  s.target.md5_hash = user.backend_md5_hash;
  s.target.scram_client_key = user.backend_scram_client_key;
  s.target.scram_server_key = user.backend_scram_server_key;
  s.target.tls = ep.tls;
  if (ep.tls.sslmode != net::SslMode::disable)
    s.target.tls_ctx = net::client_tls_context(ep.tls, s.target.tls_error);
  s.config = config_->pool_for(db, user);
  // role: auto finds the primary by probing, so a backend's role is not fixed by its place.
  std::string role = shard.auto_roles ? "auto" : backend == 0 ? "primary" : "replica";
  s.labels = rt_.stats->pool_labels.admit(
      {db.name, user.name, util::host_port(ep.host, ep.port), std::to_string(shard_index), std::move(role)});
  int workers = int(rt_.workers.size());
  if (workers < 1) workers = 1;
  // The size is one budget for all workers (PoolGroup); min_size is kept per worker as an equal share.
  s.max_servers = std::max(1, s.config.size);
  s.min_servers = (s.config.min_size + workers - 1) / workers;
  return s;
}

pool::Pool& Worker::pool_for(const control::DatabaseConfig& db, const control::UserConfig& user, int shard,
                             int backend) {
  auto key = std::make_tuple(db.name, user.name, shard, backend);
  auto it = pools_.find(key);
  if (it == pools_.end())
    it = pools_
             .emplace(key, std::make_unique<pool::Pool>(
                               readiness_, settings_for(db, user, shard, backend), stats_,
                               rt_.pool_group(db.name, user.name, shard, backend), index_))
             .first;
  return *it->second;
}

uint32_t Worker::register_session(session::ClientSession* s, uint32_t& secret) {
  uint32_t pid;
  do {
    pid_counter_ = (pid_counter_ + 1) & 0xffffffu;
    pid = (uint32_t(index_ + 1) << 24) | pid_counter_;
  } while (pid_counter_ == 0 || sessions_.count(pid));
  secret = uint32_t(rng_());
  sessions_[pid] = s;
  return pid;
}

const protocol::scram::Verifier& Worker::scram_verifier_for(const control::UserConfig& user) {
  auto& entry = verifiers_[user.name];
  if (entry.first != user.password || entry.second.stored_key.empty()) {
    auto salt = protocol::scram::mock_verifier(user.name, rt_.mock_secret).salt;
    entry = {user.password, protocol::scram::make_verifier(user.password, salt)};
  }
  return entry.second;
}

void Worker::unregister_session(uint32_t pid) { sessions_.erase(pid); }

const std::string* Worker::userlist_secret(const std::string& user) {
  const auto& path = config_->auth_sources.auth_file;
  if (path.empty()) return nullptr;
  uint64_t loads = userlist_.loads();
  bool readable = userlist_.refresh(path, userlist_reload_);
  userlist_reload_ = false;
  if (!readable)
    log::warn("auth_file cannot be read; its last contents stay in use", {{"error", userlist_.error()}});
  else if (userlist_.loads() != loads && !userlist_.error().empty())
    log::warn("auth_file has lines pgrouter skips", {{"error", userlist_.error()}});
  return userlist_.find(user);
}

std::shared_ptr<const control::DatabaseConfig> Worker::fallback_database(const std::string& name) {
  const auto* fallback = config_->fallback_database();
  if (!fallback || name == control::kFallbackDatabase) return nullptr;
  if (auto it = fallback_dbs_.find(name); it != fallback_dbs_.end()) return it->second;
  auto db = std::make_shared<control::DatabaseConfig>(*fallback);
  db->name = name;
  db->dbname = name;
  // Names come from clients not yet authenticated: past a bound, entries are made per session, not kept.
  constexpr size_t kMaxKept = 256;
  if (fallback_dbs_.size() < kMaxKept) fallback_dbs_.emplace(name, db);
  return db;
}

const control::UserConfig* Worker::found_user(const std::string& db, const std::string& user) const {
  auto it = found_users_.find({db, user});
  return it == found_users_.end() ? nullptr : it->second.get();
}

void Worker::adopt_user(const control::DatabaseConfig& db, std::shared_ptr<const control::UserConfig> user) {
  auto& known = found_users_[{db.name, user->name}];
  auto same = [](const control::UserConfig& a, const control::UserConfig& b) {
    return a.backend_password == b.backend_password && a.backend_md5_hash == b.backend_md5_hash &&
           a.backend_scram_client_key == b.backend_scram_client_key &&
           a.backend_scram_server_key == b.backend_scram_server_key;
  };
  if (known && same(*known, *user)) return;
  known = std::move(user);
  // The user's password changed (or is first known): its pools log in with the new secret from now on.
  for (auto& [key, pool] : pools_) {
    auto [dbname, username, shard, backend] = key;
    if (dbname == db.name && username == known->name) pool->update(settings_for(db, *known, shard, backend));
  }
}

void Worker::watch_login(LoginWatch& w, std::chrono::steady_clock::duration timeout) {
  unwatch_login(w);
  w.deadline = std::chrono::steady_clock::now() + timeout;
  logins_.push_back(w);
  if (!login_timer_set_) arm_login_timer();  // else it is set for an earlier login, first in the list
}

void Worker::arm_login_timer() {
  login_timer_set_ = true;
  login_timer_.expires_at(logins_.front().deadline);
  login_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) on_login_timer();
  });
}

void Worker::on_login_timer() {
  login_timer_set_ = false;
  if (stopping()) return;
  auto now = std::chrono::steady_clock::now();
  // Deadlines are in list order unless a reload shortened the timeout: a login behind an older one then
  // waits for that one's deadline (at most the old timeout).
  while (!logins_.empty() && logins_.front().deadline <= now) {
    LoginWatch& w = logins_.front();
    logins_.pop_front();
    w.session->login_timed_out();
  }
  if (!logins_.empty()) arm_login_timer();
}

awaitable<void> Worker::accept_loop(Listener& l) {
  // The listener is in the readiness set, like the connections it accepts: accept4() gives each one
  // non-blocking with its address, and nothing registers it with Asio's reactor (see net::PlainStream).
  int lfd = l.acceptor.native_handle();
  boost::system::error_code ec;
  l.acceptor.native_non_blocking(true, ec);
  if (ec || !l.ready.attach(readiness_, lfd)) {
    log::error("cannot register the listener with the worker's readiness set", {{"worker", index_}});
    co_return;
  }
  for (;;) {
    if (phase_ != Phase::serving) co_return;
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      tcp::endpoint peer;
      if (len <= peer.capacity()) {
        std::memcpy(peer.data(), &addr, len);
        peer.resize(len);
      }
      session::spawn_session(*this, fd, peer);
      continue;
    }
    int err = errno;
    if (err == EINTR || err == ECONNABORTED) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      l.ready.drained();
      co_await l.ready.wait_readable(ec);
      if (ec) co_return;  // cancelled: the worker stops
      continue;
    }
    log::warn("accept failed", {{"error", std::string(std::strerror(err))}});
    // EMFILE and friends: back off briefly instead of spinning.
    asio::steady_timer t(io_);
    t.expires_after(std::chrono::milliseconds(50));
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

awaitable<void> Worker::maintenance_loop() {
  asio::steady_timer t(io_);
  for (;;) {
    t.expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    if (stopping()) co_return;
    auto now = pool::Clock::now();
    for (auto& [key, pool] : pools_) pool->maintain(now);
    if (index_ == 0 && !recovering_ && now >= next_recovery_) {
      // One worker settles cross-shard writes left prepared (by a crash, here or in another instance).
      recovering_ = true;
      next_recovery_ = now + sharding::two_phase::kRecoveryInterval;
      asio::co_spawn(io_, recovery_round(), asio::detached);
    }
    for (auto& [pid, session] : sessions_) session->check_timeouts(now);
  }
}

awaitable<void> Worker::recovery_round() {
  co_await session::recover_in_doubt(*this);
  recovering_ = false;
}

awaitable<void> Worker::drain_loop() {
  // A client is ended between two of its transactions: at once when it is idle now, else when its
  // transaction ends (its next read sees the drain) or at the latest on the next tick.
  asio::steady_timer t(io_);
  while (draining()) {
    for (auto& [pid, session] : sessions_) session->end_if_idle_at_shutdown();
    t.expires_after(std::chrono::milliseconds(100));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

}  // namespace pgrouter
