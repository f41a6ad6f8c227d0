// Worker-local connection pool: checkout, checkin with reset, bounded waiting, upkeep.
#include "pgrouter/pool/pool.hpp"

#include <strings.h>

#include <algorithm>

#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::pool {

// A waiter is woken with wake_after_batch: when the server comes back from another client's relay (the
// usual case under transaction pooling), the waiter runs once the readiness set's current batch of events
// is dispatched, on the same stack, instead of through a timer's cancellation and the scheduler's queue.
Pool::Waiter::~Waiter() {
  if (queued && pool) pool->leave_line(*this);
}

void Pool::Line::push_back(Waiter* w) {
  w->prev = tail;
  w->next = nullptr;
  (tail ? tail->next : head) = w;
  tail = w;
  ++n;
}

void Pool::Line::push_front(Waiter* w) {
  w->prev = nullptr;
  w->next = head;
  (head ? head->prev : tail) = w;
  head = w;
  ++n;
}

void Pool::Line::remove(Waiter* w) {
  (w->prev ? w->prev->next : head) = w->next;
  (w->next ? w->next->prev : tail) = w->prev;
  w->prev = w->next = nullptr;
  --n;
}

Pool::Pool(net::Readiness& readiness, PoolSettings settings, control::WorkerStats& stats,
           std::shared_ptr<PoolGroup> group, int worker)
    : ex_(readiness.io().get_executor()),
      readiness_(readiness),
      sweep_timer_(ex_),
      group_(std::move(group)),
      worker_(worker),
      settings_(std::move(settings)),
      stats_(stats),
      pstats_(&stats.pool_stats(settings_.labels)) {
  group_->members.at(size_t(worker_)).store(this);
}

Pool::~Pool() {
  group_->members.at(size_t(worker_)).store(nullptr);
  *alive_ = false;
  idle_changed(-int64_t(idle_.size()));
  pstats_->servers_open.fetch_sub(total_, std::memory_order_relaxed);
  // They see the pool gone and leave, touching nothing of it.
  while (Waiter* w = waiters_.front()) {
    waiters_.remove(w);
    w->queued = false;
    w->gone = true;
    group_->waiting.fetch_sub(1, std::memory_order_relaxed);
    stats_.clients_waiting.fetch_sub(1, std::memory_order_relaxed);
    pstats_->clients_waiting.fetch_sub(1, std::memory_order_relaxed);
    w->wake.wake_later();
  }
}

void Pool::arm_sweep(Clock::time_point at) {
  if (at >= sweep_at_) return;  // an earlier sweep is armed; it re-arms for the rest
  sweep_at_ = at;
  uint64_t gen = ++sweep_generation_;
  sweep_timer_.expires_at(at);  // an earlier wait ends with operation_aborted and sees a newer generation
  sweep_timer_.async_wait([this, alive = alive_, gen](boost::system::error_code) {
    if (!*alive || gen != sweep_generation_) return;
    sweep_at_ = Clock::time_point::max();
    sweep();
  });
}

void Pool::sweep() {
  auto now = Clock::now();
  auto next = Clock::time_point::max();
  bool steal = false;
  for (Waiter* w = waiters_.front(); w; w = w->next) {
    if (now >= w->deadline) {
      if (!w->timed_out) {
        w->timed_out = true;
        w->wake.wake_later();  // it leaves the queue itself
      }
      continue;
    }
    if (now >= w->next_steal) {
      // Waited past kStealAfter (then at growing intervals): ask the other workers to close a server that
      // has sat idle, so its slot moves here. Asking at once would churn server connections under load
      // (a server is usually back within a transaction's time); asking only once could miss a server
      // that goes idle later.
      steal = true;
      w->backoff = std::min(w->backoff * 2, std::chrono::milliseconds(500));
      w->next_steal = now + w->backoff;
    }
    next = std::min({next, w->next_steal, w->deadline});
  }
  // A slot freed for a waiter that had left by the time it was told: nobody else was woken for it.
  on_slot_freed();
  if (steal) {
    for (size_t i = 0; i < group_->members.size(); ++i) {
      Pool* other = group_->members[i].load();
      if (other && other != this) asio::post(other->ex_, [other] { other->give_up_idle(); });
    }
  }
  if (next != Clock::time_point::max()) arm_sweep(next);
}

void Pool::set_welcome(const std::map<std::string, std::string>& params) {
  if (params == welcome_params_) return;  // the same server parameters: the messages stand
  welcome_params_ = params;
  welcome_messages_.clear();
  for (auto& [k, v] : params) {
    std::string msg;
    protocol::append_parameter_status(msg, k, v);
    welcome_messages_.emplace_back(k, std::move(msg));
  }
}

void Pool::update(PoolSettings settings) {
  bool retarget = !(settings.target == settings_.target);
  settings_ = std::move(settings);
  relabel(settings_.labels);
  if (retarget) {
    ++generation_;
    set_welcome({});
    while (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      idle_changed(-1);
      close(std::move(c));
    }
  }
  on_slot_freed();  // a larger pool may let a waiter in now
}

bool Pool::reserve_slot() {
  int cur = group_->servers.load(std::memory_order_relaxed);
  while (cur < settings_.max_servers) {
    if (group_->servers.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) {
      total_changed(1);
      return true;
    }
  }
  return false;
}

void Pool::publish_load() {
  load_.store(uint64_t(uint32_t(total_)) << 32 | uint32_t(waiters_.size()), std::memory_order_relaxed);
}

Pool* Pool::starving_peer(int mine) {
  // Nobody waits on another worker (the common case, one atomic load): nothing to compare.
  int64_t my_waiting = int64_t(waiters_.size());
  if (group_->waiting.load(std::memory_order_relaxed) <= my_waiting) return nullptr;
  Pool* best = nullptr;
  int64_t best_waiting = 0, best_total = 1;
  for (auto& member : group_->members) {
    Pool* other = member.load(std::memory_order_relaxed);
    if (!other || other == this) continue;
    uint64_t load = other->load_.load(std::memory_order_relaxed);
    int64_t waiting = int64_t(load & 0xffffffff), total = int64_t(load >> 32);
    // Clients per server there more than twice here (counting the one this server would serve next): a
    // worker with waiters and no server always qualifies; two workers within 2x of each other never trade
    // (each move costs a server login).
    if (waiting == 0 || waiting * mine <= 2 * (my_waiting + 1) * total) continue;
    if (!best || waiting * best_total > best_waiting * total) {
      best = other;
      best_waiting = waiting;
      best_total = total;
    }
  }
  return best;
}

void Pool::release_slot() {
  Pool* to = starving_peer(total_);  // the slot counted as still here, as when hand_over asks
  total_changed(-1);
  group_->servers.fetch_sub(1, std::memory_order_relaxed);
  if (to) {
    asio::post(to->ex_, [to] { to->on_slot_freed(); });
    return;
  }
  if (!waiters_.empty()) {
    wake_one_for_slot();
    return;
  }
  if (group_->waiting.load(std::memory_order_relaxed) == 0) return;
  for (size_t i = 0; i < group_->members.size(); ++i) {
    Pool* other = group_->members[i].load();
    if (!other || other == this) continue;
    // Pools live as long as their worker; a post to a stopped worker is simply dropped.
    asio::post(other->ex_, [other] { other->on_slot_freed(); });
  }
}

void Pool::give_up_idle() {
  if (!waiters_.empty() || idle_.empty()) return;
  // Only a server this worker has not needed for a while: a busy worker's servers come back idle
  // between transactions all the time.
  if (Clock::now() - idle_.front()->idle_since < kStealAfter) return;
  auto c = std::move(idle_.front());  // the oldest
  idle_.pop_front();
  idle_changed(-1);
  close(std::move(c));  // release_slot tells the worker that asked
}

void Pool::close_idle() {
  while (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    idle_changed(-1);
    close(std::move(c));
  }
}

void Pool::on_slot_freed() {
  if (group_->servers.load(std::memory_order_relaxed) < settings_.max_servers) wake_one_for_slot();
}

void Pool::wake_one_for_slot() {
  if (waiters_.empty()) return;
  Waiter* w = waiters_.front();
  waiters_.remove(w);
  publish_load();
  group_->waiting.fetch_sub(1, std::memory_order_relaxed);
  w->queued = false;
  w->slot = true;
  w->wake.wake_after_batch(readiness_);
}

void Pool::lend(ServerConnection& c, Clock::time_point started, Clock::time_point now) {
  auto ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now - started).count());
  stats_.pool_wait.observe_ns(ns);
  pstats_->wait.observe_ns(ns);
  pstats_->checkouts_total.fetch_add(1, std::memory_order_relaxed);
  c.checked_out = now;
}

void Pool::idle_changed(int64_t delta) {
  stats_.servers_idle.fetch_add(delta, std::memory_order_relaxed);
  pstats_->servers_idle.fetch_add(delta, std::memory_order_relaxed);
}

void Pool::total_changed(int delta) {
  total_ += delta;
  pstats_->servers_open.fetch_add(delta, std::memory_order_relaxed);
  publish_load();
}

void Pool::relabel(const control::PoolLabels& labels) {
  control::PoolStats& next = stats_.pool_stats(labels);
  if (&next == pstats_) return;
  auto waiting = int64_t(waiters_.size()), idle = int64_t(idle_.size());
  pstats_->servers_open.fetch_sub(total_, std::memory_order_relaxed);
  pstats_->servers_idle.fetch_sub(idle, std::memory_order_relaxed);
  pstats_->clients_waiting.fetch_sub(waiting, std::memory_order_relaxed);
  next.servers_open.fetch_add(total_, std::memory_order_relaxed);
  next.servers_idle.fetch_add(idle, std::memory_order_relaxed);
  next.clients_waiting.fetch_add(waiting, std::memory_order_relaxed);
  pstats_ = &next;
}

bool Pool::expired(const ServerConnection& c, Clock::time_point now) const {
  return c.generation != generation_ || now - c.created >= settings_.config.max_lifetime;
}

std::unique_ptr<ServerConnection> Pool::take_idle(Clock::time_point started) {
  auto now = net::BatchClock::now();
  while (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    idle_changed(-1);
    // The liveness peek costs a syscall; in transaction mode a server idle for under a second is
    // taken as is (a failure then reaches the client as 08006, as with PgBouncer's server_check_delay).
    bool recent = settings_.config.mode == control::PoolMode::transaction &&
                  now - c->idle_since < std::chrono::seconds(1);
    // An idle server has nothing to say: if its socket became readable (the relay's last read drained it),
    // it sent a FATAL (terminated, restarted, idle_session_timeout) or closed. That costs no syscall to see.
    bool spoke = c->ready.attached() && c->ready.maybe_readable();
    if (expired(*c, now) || ((spoke || !recent) && !c->looks_alive())) {
      close(std::move(c));
      continue;
    }
    lend(*c, started, now);
    return c;
  }
  return nullptr;
}

void Pool::enqueue(Waiter& w, bool first) {
  w.conn.reset();
  w.slot = w.timed_out = w.gone = false;
  w.queued = true;
  w.pool = this;
  w.deadline = w.started + settings_.config.queue_timeout;
  w.backoff = kStealAfter;
  w.next_steal = Clock::now() + kStealAfter;
  if (first)
    waiters_.push_front(&w);
  else
    waiters_.push_back(&w);
  publish_load();
  group_->waiting.fetch_add(1, std::memory_order_relaxed);
  stats_.clients_waiting.fetch_add(1, std::memory_order_relaxed);
  pstats_->clients_waiting.fetch_add(1, std::memory_order_relaxed);
  arm_sweep(std::min(w.next_steal, w.deadline));
}

bool Pool::wait_in_line(Waiter& w) {
  if (!idle_.empty()) return false;
  // A free slot belongs to the clients already waiting (acquire): a newcomer opens a server when nobody
  // waits.
  int waiting = group_->waiting.load(std::memory_order_relaxed);
  if (waiting == 0 && group_->servers.load(std::memory_order_relaxed) < settings_.max_servers) return false;
  if (waiting >= settings_.config.queue_size) return false;  // acquire() says so
  w.started = net::BatchClock::now();
  enqueue(w, false);
  return true;
}

void Pool::leave_line(Waiter& w) {
  stats_.clients_waiting.fetch_sub(1, std::memory_order_relaxed);
  pstats_->clients_waiting.fetch_sub(1, std::memory_order_relaxed);
  if (w.queued) {
    waiters_.remove(&w);
    w.queued = false;
    publish_load();
    group_->waiting.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::unique_ptr<ServerConnection> Pool::handed(Waiter& w) {
  if (!w.conn) return nullptr;
  leave_line(w);
  lend(*w.conn, w.started);
  return std::move(w.conn);
}

std::unique_ptr<ServerConnection> Pool::finish_wait(Waiter& w, ServerError& err, bool& first_in_line) {
  if (auto c = handed(w)) return c;
  leave_line(w);
  if (w.slot && Clock::now() < w.deadline) {
    first_in_line = true;  // it was the first waiter when the slot was offered
    return nullptr;
  }
  err = {protocol::sqlstate::too_many_connections,
         "timed out after " + std::to_string(settings_.config.queue_timeout.count()) +
             " ms waiting for a server connection to database \"" + settings_.target.dbname + "\": all " +
             std::to_string(settings_.max_servers) + " are in use",
         false};
  return nullptr;
}

awaitable<std::unique_ptr<ServerConnection>> Pool::acquire(ServerError& err, Waiter* woken) {
  Waiter own;
  Waiter& w = woken ? *woken : own;
  bool first_in_line = false;  // woken for a freed slot that another worker took first: keep the place
  if (woken) {
    if (w.gone) co_return nullptr;
    if (auto c = finish_wait(w, err, first_in_line)) co_return c;
    if (!first_in_line) co_return nullptr;
  } else {
    w.started = net::BatchClock::now();
  }
  for (;;) {
    if (auto c = take_idle(w.started)) co_return c;
    // A free slot belongs to the clients already waiting (one was told of it): a newcomer opens a server
    // only when nobody waits, else it could take every slot given to a worker whose clients wait.
    bool may_open = first_in_line || group_->waiting.load(std::memory_order_relaxed) == 0;
    if (may_open && reserve_slot()) {
      auto alive = alive_;
      auto c = co_await connect_server(ex_, settings_.target, settings_.config.connect_timeout, err);
      if (!*alive) co_return nullptr;
      if (!c) {
        release_slot();
        stats_.server_connect_failures_total.fetch_add(1, std::memory_order_relaxed);
        log::warn("server login failed", {{"host", settings_.target.host},
                                          {"port", settings_.target.port},
                                          {"user", settings_.target.user},
                                          {"sqlstate", err.sqlstate},
                                          {"error", err.message}});
        co_return nullptr;
      }
      c->generation = generation_;
      set_welcome(c->params);
      stats_.server_connections_total.fetch_add(1, std::memory_order_relaxed);
      pstats_->server_connections_total.fetch_add(1, std::memory_order_relaxed);
      lend(*c, w.started);
      co_return c;
    }
    if (group_->waiting.load(std::memory_order_relaxed) >= settings_.config.queue_size) {
      err = {protocol::sqlstate::too_many_connections,
             "too many clients waiting for a server connection to database \"" + settings_.target.dbname +
                 "\" (pool.queue_size = " + std::to_string(settings_.config.queue_size) + ")",
             false};
      co_return nullptr;
    }
    enqueue(w, first_in_line);
    first_in_line = false;
    while (!w.done()) {
      boost::system::error_code ec;
      co_await w.wake.wait(readiness_.io(), ec);
      if (ec) break;
    }
    if (w.gone) co_return nullptr;  // the pool is destroyed: touch nothing of it
    if (auto c = finish_wait(w, err, first_in_line)) co_return c;
    if (!first_in_line) co_return nullptr;
  }
}

void Pool::release(std::unique_ptr<ServerConnection> conn, bool clean) {
  if (!conn) return;
  if (*conn->cancels_in_flight > 0) {
    // Parked in the pool, not in the coroutine: at shutdown the pool (destroyed before the worker's
    // readiness set) must own it, not a coroutine frame that the io_context destroys last.
    ServerConnection* key = conn.get();
    parked_.push_back({std::move(conn), clean});
    asio::co_spawn(ex_, release_after_cancels(key), asio::detached);
    return;
  }
  if (!clean || expired(*conn, net::BatchClock::now()) || !conn->buffer.empty()) {
    close(std::move(conn));
    return;
  }
  bool needs_reset =
      conn->tx_status != 'I' || conn->dirty ||
      (settings_.config.mode == control::PoolMode::session && !settings_.config.reset_query.empty());
  if (!needs_reset) {  // transaction pooling hands servers over between transactions as they are
    hand_over(std::move(conn));
    return;
  }
  asio::co_spawn(ex_, reset_and_return(std::move(conn)), asio::detached);
}

awaitable<void> Pool::release_after_cancels(ServerConnection* key) {
  // A cancel is delivered within milliseconds; one that is not after 2 s makes the connection suspect.
  auto alive = alive_;
  asio::steady_timer t(ex_);
  auto give_up = Clock::now() + std::chrono::seconds(2);
  auto parked = [&] {
    return std::find_if(parked_.begin(), parked_.end(), [&](const Parked& p) { return p.conn.get() == key; });
  };
  for (;;) {
    t.expires_after(std::chrono::milliseconds(2));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    if (!*alive) co_return;
    auto it = parked();
    if (*it->conn->cancels_in_flight > 0 && Clock::now() < give_up) continue;
    auto conn = std::move(it->conn);
    bool clean = it->clean;
    parked_.erase(it);
    if (*conn->cancels_in_flight > 0) {
      clean = false;
      conn->cancels_in_flight = std::make_shared<int>(0);
    }
    release(std::move(conn), clean);
    co_return;
  }
}

awaitable<void> Pool::reset_and_return(std::unique_ptr<ServerConnection> conn) {
  auto alive = alive_;
  bool ok = true;
  // A server that does not answer its reset (a client left it waiting for the rest of a message, or it
  // hangs) fails run_quietly after pool.connect_timeout (ServerConnection::quiet_timeout) and is closed.
  ServerError err;
  if (conn->tx_status != 'I') ok = co_await conn->run_quietly("ROLLBACK", &err);
  if (ok && (settings_.config.mode == control::PoolMode::session || conn->dirty) &&
      !settings_.config.reset_query.empty()) {
    conn->dirty = false;
    ok = co_await conn->run_quietly(settings_.config.reset_query, &err);
    // Prepared statements pgrouter keeps there must really be gone before they are forgotten.
    if (ok && conn->statements.size() > 0 &&
        strcasecmp(settings_.config.reset_query.c_str(), "DISCARD ALL") != 0)
      ok = co_await conn->run_quietly("DEALLOCATE ALL", &err);
    conn->applied.clear();  // DISCARD ALL reset every setting pgrouter had applied
    conn->settled = {};
    conn->statements.clear();
  } else if (conn->dirty) {
    ok = false;  // a pinned client's state and no reset query: never hand it to someone else
  }
  if (!*alive) co_return;
  if (!ok) {
    if (!err.message.empty())  // (a pinned client's state with no reset query has no message: nothing broke)
      log::warn("server reset failed; connection closed", {{"host", settings_.target.host},
                                                           {"port", settings_.target.port},
                                                           {"sqlstate", err.sqlstate},
                                                           {"error", err.message}});
    close(std::move(conn));
    co_return;
  }
  hand_over(std::move(conn));
}

void Pool::hand_over(std::unique_ptr<ServerConnection> conn) {
  if (group_->members.size() > 1 && starving_peer(total_)) {
    // Another worker has more than twice as many clients waiting per server: this server's slot serves it
    // (a server connection cannot change threads, so it is closed here and opened there).
    stats_.pool_slots_moved_total.fetch_add(1, std::memory_order_relaxed);
    close(std::move(conn));
    return;
  }
  if (!waiters_.empty()) {
    Waiter* w = waiters_.front();
    waiters_.remove(w);
    publish_load();
    group_->waiting.fetch_sub(1, std::memory_order_relaxed);
    w->queued = false;
    w->conn = std::move(conn);
    w->wake.wake_after_batch(readiness_);
    return;
  }
  conn->idle_since = net::BatchClock::now();
  conn->buffer.shrink();
  idle_.push_back(std::move(conn));
  idle_changed(1);
}

void Pool::close(std::unique_ptr<ServerConnection> conn) {
  boost::system::error_code ec;
  if (conn && conn->socket.is_open()) {
    conn->say_goodbye();
    conn->socket.close(ec);
  }
  release_slot();
}

awaitable<void> Pool::open_spare() {
  auto alive = alive_;
  ServerError err;
  if (!reserve_slot()) co_return;
  auto c = co_await connect_server(ex_, settings_.target, settings_.config.connect_timeout, err);
  if (!*alive) co_return;
  if (!c) {
    release_slot();
    stats_.server_connect_failures_total.fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  c->generation = generation_;
  set_welcome(c->params);
  stats_.server_connections_total.fetch_add(1, std::memory_order_relaxed);
  pstats_->server_connections_total.fetch_add(1, std::memory_order_relaxed);
  hand_over(std::move(c));
}

void Pool::maintain(Clock::time_point now) {
  // Idle servers that spoke or closed since they were pooled (see take_idle) are dead: dropped at once.
  std::erase_if(idle_, [&](std::unique_ptr<ServerConnection>& c) {
    if (!c->ready.attached() || !c->ready.maybe_readable() || c->looks_alive()) return false;
    idle_changed(-1);
    close(std::move(c));
    return true;
  });
  // Oldest idle connections are at the front (LIFO reuse at the back).
  while (!idle_.empty() && total_ > settings_.min_servers) {
    auto& c = *idle_.front();
    if (now - c.idle_since < settings_.config.idle_timeout && !expired(c, now) && c.looks_alive()) break;
    auto victim = std::move(idle_.front());
    idle_.pop_front();
    idle_changed(-1);
    close(std::move(victim));
  }
  for (int i = total_; i < settings_.min_servers; ++i) asio::co_spawn(ex_, open_spare(), asio::detached);
}

}  // namespace pgrouter::pool
