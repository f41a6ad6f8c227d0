// Read/write splitting for a transaction-pooled client: classify the messages that open a transaction
// (libpg_query, cached per worker), then pick the primary or an eligible replica (routing/router.hpp).
// Session-pooled clients stay on the primary: their server is chosen once, at login.
#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/util/strings.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/session/client_session.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace fe = pgrouter::protocol::frontend;

namespace {

// Whether a statement may run on a replica.
bool is_read(const sql::Classification& c) {
  using sql::StatementClass;
  if (c.cls == StatementClass::read) return true;
  if (c.cls == StatementClass::transaction_begin) return c.read_only_begin;  // BEGIN READ ONLY
  return false;
}

std::string_view unquote(std::string_view v) {
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front())
    return v.substr(1, v.size() - 2);
  return v;
}

}  // namespace

pool::Pool& ClientSession::pool_at(int backend) {
  if (pools_db_ != db_ || pools_user_ != user_cfg_) {
    pools_by_backend_.clear();
    pools_db_ = db_;
    pools_user_ = user_cfg_;
  }
  size_t s = size_t(shard_), i = size_t(backend);
  if (s >= pools_by_backend_.size()) pools_by_backend_.resize(s + 1);
  auto& of_shard = pools_by_backend_[s];
  if (i >= of_shard.size()) of_shard.resize(i + 1, nullptr);
  auto*& p = of_shard[i];
  if (!p) p = &w_.pool_for(*db_, *user_cfg_, shard_, backend);
  return *p;
}

const routing::BackendHealth* ClientSession::health_of(int backend) {
  return pool_at(backend).settings().health.get();
}

int ClientSession::primary_backend() {
  const auto& shard = this->shard();
  if (!shard.auto_roles) return 0;
  std::vector<const routing::BackendHealth*> hosts(shard.backends());
  for (size_t i = 0; i < hosts.size(); ++i) hosts[i] = health_of(int(i));
  return routing::find_primary(hosts);
}

std::string ClientSession::no_primary_message() {
  const auto& shard = this->shard();
  std::string states;
  for (size_t i = 0; i < shard.backends(); ++i) {
    const auto* h = health_of(int(i));
    std::string state = !h || !h->probed.load() ? "not probed yet"
                        : !h->up.load()         ? "down"
                        : h->in_recovery.load() ? "in recovery"
                                                : "primary on timeline " + std::to_string(h->timeline.load());
    states += (states.empty() ? "" : ", ") + util::host_port(shard.backend(i).host, shard.backend(i).port) +
              " " + state;
  }
  bool two = primary_backend() == routing::kAmbiguousPrimary;
  return std::string(two ? "more than one host is a primary on the newest timeline"
                         : "no primary is available") +
         " for database \"" + db_->name + "\" (" + states + "; waited " +
         std::to_string(db_->routing.wait_for_primary.count()) + " ms, routing.wait_for_primary). " +
         (two ? "Writes go to none of them: stop or rebuild the one that should not be a primary."
              : "Check the cluster: promote a replica, or bring the primary back.");
}

bool ClientSession::routes_reads() const { return tracker_ && !hold_servers_ && shard().backends() > 1; }

ClientSession::BatchReads ClientSession::classify_batch(const char* d, size_t n) {
  // Every statement of the batch at hand must be a read to go to a replica: a pipelined write after a
  // read would fail there.
  bool any = false, all_read = true;
  bool writes = false;  // some statement may change data: read-your-writes starts after this transaction
  sql::RouteHint hint = sql::RouteHint::none;
  // Statements parsed in this batch (the unnamed one too): a few in place, no allocation per batch.
  std::pair<std::string_view, bool> parsed_few[8];
  size_t n_parsed = 0;
  std::vector<std::pair<std::string_view, bool>> parsed_more;
  auto parsed_here = [&](std::string_view stmt) -> std::optional<bool> {
    std::optional<bool> r;
    for (size_t k = 0; k < n_parsed; ++k)
      if (parsed_few[k].first == stmt) r = parsed_few[k].second;
    for (auto& [nm, rd] : parsed_more)
      if (nm == stmt) r = rd;
    return r;  // the last Parse of that name wins
  };
  auto& cache = w_.classifier();
  if (tracker_) tracker_->known_plain(nullptr);
  for (size_t i = 0; i + 5 <= n;) {
    bool first = i == 0;
    char type = d[i];
    uint32_t len = p::read_be32(d + i + 1);
    if (len < 4 || i + 1 + len > n) break;  // the rest comes later: it is checked as it is relayed
    std::string_view body(d + i + 5, len - 4);
    i += 1 + len;
    std::optional<bool> read;
    size_t pos = 0;
    if (type == fe::kQuery || type == fe::kParse) {
      std::optional<std::string_view> name;
      if (type == fe::kParse) name = p::read_cstring(body, pos);
      auto sql = p::read_cstring(body, pos);
      if (!sql) break;
      const auto& c = cache.get(*sql);
      // The scan that follows at once gives this message to the tracker: it need not look for SET & co.
      // again.
      if (first && c.session_plain && tracker_) tracker_->known_plain(sql->data());
      if (!any && c.hint != sql::RouteHint::none) hint = c.hint;
      read = is_read(c) || c.cls == sql::StatementClass::unknown;
      using sql::StatementClass;
      if (c.cls == StatementClass::write || c.cls == StatementClass::utility ||
          c.cls == StatementClass::locking_read ||
          (c.cls == StatementClass::transaction_begin && !c.read_only_begin))
        writes = true;
      if (name) {
        if (n_parsed < std::size(parsed_few))
          parsed_few[n_parsed++] = {*name, *read};
        else
          parsed_more.emplace_back(*name, *read);
      }
    } else if (type == fe::kBind) {
      auto portal = p::read_cstring(body, pos);
      auto stmt = portal ? p::read_cstring(body, pos) : std::nullopt;
      if (!stmt) break;
      read = parsed_here(*stmt);
      if (!read) {
        if (auto q = tracker_->statement_query(std::string(*stmt)))
          read = is_read(cache.get(*q));
        else
          read = false;
        if (!*read) writes = true;
      }
    } else if (type == fe::kFunctionCall) {
      read = false;
      writes = true;
    }
    if (!read) continue;
    any = true;
    if (!*read) all_read = false;
  }
  return {any, all_read, writes, hint};
}

awaitable<void> ClientSession::hold_write_behind_replica_read() {
  // Polled (this is rare: a pipelining client that does not wait for its read's answers): until server ->
  // client has given the replica's server back, or the transaction turned out to stay open there (BEGIN READ
  // ONLY: the write then fails on the replica, as it would on PostgreSQL). Bounded, in case the server is
  // kept for a reason not foreseen here: the batch then goes to the replica as before.
  w_.stats().routed_writes_held_total.fetch_add(1, std::memory_order_relaxed);
  asio::steady_timer t(w_.io());
  auto give_up = pool::Clock::now() + std::chrono::seconds(30);
  auto step = std::chrono::microseconds(200);
  while (attached_.server && !pinned_ && !client_done_ && !retry_.busy &&
         (pending_ > 0 || attached_.server->tx_status == 'I') && pool::Clock::now() < give_up) {
    t.expires_after(step);
    net::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    step = std::min<std::chrono::microseconds>(step * 2, std::chrono::milliseconds(10));
  }
}

int ClientSession::choose_backend(const char* d, size_t n) {
  const auto& shard = this->shard();
  const auto& rc = db_->routing;
  auto& stats = w_.stats();
  tx_read_ = false;
  tx_on_replica_ = false;
  // The primary: backend 0 with fixed roles; with role: auto the host that probes found to be it, if any.
  int primary = primary_backend();
  if (primary < 0) primary = kNoPrimary;
  const auto read_from = user_cfg_->read_from.value_or(rc.read_from);  // users[].read_from wins
  // A held session takes a shard's primary only: one server per shard, whatever its statements do.
  if (!tracker_ || hold_servers_ || shard.backends() == 1 || read_from == control::ReadFrom::primary)
    return primary;
  if (!deferred_begin_.empty()) return primary;  // the client's BEGIN, answered already, may open a write

  // SET pgrouter.route = primary | replica | auto (carried with the client's other settings).
  std::string_view session_route = "auto";
  static const std::string kRouteSetting = "pgrouter.route";  // (a literal would be a std::string per lookup)
  const auto& settings = tracker_->settings();
  if (auto it = settings.empty() ? settings.end() : settings.find(kRouteSetting); it != settings.end()) {
    std::string_view stmt = it->second;  // "SET pgrouter.route TO <value>"
    session_route = unquote(stmt.substr(stmt.rfind(' ') + 1));
  }

  auto [any, all_read, writes, hint] = classify_batch(d, n);
  tx_read_ = any && all_read;
  bool want_replica;
  if (session_route == "primary" || hint == sql::RouteHint::primary)
    want_replica = false;
  else if (session_route == "replica" || hint == sql::RouteHint::replica)
    want_replica = true;
  else
    want_replica = any && all_read;
  if (!want_replica) {
    tx_wrote_ = writes || !any;
    stats.routed_writes_total.fetch_add(1, std::memory_order_relaxed);
    return primary;
  }
  tx_wrote_ = false;

  // Read-your-writes: after this client's write, a replica must have replayed the primary's position as
  // probed after that write; until a probe has seen it, the read goes to the primary (or waits, up to
  // routing.read_your_writes_wait).
  const routing::BackendHealth* primary_health = primary >= 0 ? health_of(primary) : nullptr;
  if (rc.read_your_writes && write_done_at_ != 0 && required_lsn_ == 0) {
    if (primary_health && primary_health->probe_sent.load(std::memory_order_relaxed) > write_done_at_)
      required_lsn_ = primary_health->lsn.load(std::memory_order_relaxed);
    else
      return ryw_held(primary);
  }
  // Candidates: every backend but the primary, in order (backend_of maps them back), then the primary
  // itself when it takes reads too.
  int backends = int(shard.backends());
  auto backend_of = [primary](int k) { return primary >= 0 && k >= primary ? k + 1 : k; };
  int replicas = primary >= 0 ? backends - 1 : backends;
  auto& candidates = w_.candidates();
  candidates.clear();
  for (int k = 0; k < replicas; ++k) {
    auto& pool = pool_at(backend_of(k));
    const auto* h = pool.settings().health.get();
    routing::Candidate c;
    c.eligible = h && routing::replica_eligible(*h, primary_health, rc, required_lsn_);
    c.weight = pool.settings().weight;
    c.outstanding = pool.attached();
    candidates.push_back(c);
  }
  if (primary >= 0 && read_from == control::ReadFrom::any && !(rc.read_your_writes && required_lsn_ != 0)) {
    routing::Candidate c;  // the primary takes reads too
    c.eligible = true;
    c.outstanding = pool_at(primary).attached();
    candidates.push_back(c);
  }
  int pick = routing::pick_replica(rc.strategy, candidates, w_.round_robin(), w_.rng());
  if (pick < 0 && rc.read_your_writes && required_lsn_ != 0 && pool::Clock::now() < ryw_give_up_at_) {
    // Waiting helps only when read-your-writes is what holds the read: some replica is eligible otherwise.
    std::vector<const routing::BackendHealth*> hosts(size_t(replicas), nullptr);
    for (int k = 0; k < replicas; ++k) hosts[size_t(k)] = health_of(backend_of(k));
    if (routing::held_by_read_your_writes(hosts, primary_health, rc, required_lsn_)) return kAwaitReplay;
  }
  if (ryw_waited_) {  // counted once (attach_backend may route again when a replica cannot be reached)
    ryw_waited_ = false;
    if (pick >= 0 && pick < replicas)
      stats.routed_reads_ryw_waited_total.fetch_add(1, std::memory_order_relaxed);
    else if (pick < 0)
      stats.routed_reads_ryw_wait_timeouts_total.fetch_add(1, std::memory_order_relaxed);
  }
  if (pick < 0 || pick == replicas) {
    if (pick < 0 && !rc.primary_fallback) {
      stats.routed_reads_refused_total.fetch_add(1, std::memory_order_relaxed);
      return kNoReplica;  // no replica may take it and the primary may not either
    }
    stats.routed_reads_primary_total.fetch_add(1, std::memory_order_relaxed);
    return primary;
  }
  stats.routed_reads_replica_total.fetch_add(1, std::memory_order_relaxed);
  tx_on_replica_ = true;
  return backend_of(pick);
}

int ClientSession::ryw_held(int primary) {
  if (pool::Clock::now() < ryw_give_up_at_) return kAwaitReplay;
  auto& stats = w_.stats();
  if (ryw_waited_) stats.routed_reads_ryw_wait_timeouts_total.fetch_add(1, std::memory_order_relaxed);
  ryw_waited_ = false;
  stats.routed_reads_primary_total.fetch_add(1, std::memory_order_relaxed);
  return primary;
}

namespace {
// A server that answers a login this way is going away or not up yet: route elsewhere.
bool unavailable(std::string_view sqlstate) {
  return sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
}
}  // namespace

awaitable<int> ClientSession::await_primary(pool::Clock::time_point give_up_at) {
  // role: auto: a failover takes a few probes; writes wait for it, up to routing.wait_for_primary.
  auto poll = std::min<pool::Clock::duration>(db_->routing.probe_interval, std::chrono::milliseconds(50));
  asio::steady_timer timer(w_.io());
  for (;;) {
    int primary = primary_backend();
    if (primary >= 0 || client_done_ || pool::Clock::now() >= give_up_at) co_return primary;
    timer.expires_after(poll);
    net::error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

void ClientSession::start_routing() {
  const auto ryw_wait = db_->routing.read_your_writes_wait;
  ryw_give_up_at_ = ryw_wait.count() > 0 ? net::BatchClock::now() + ryw_wait : pool::Clock::time_point::min();
  ryw_waited_ = false;
}

int ClientSession::attach_now() {
  const control::Config* analysed_with = config_.get();
  refresh_config();
  // After a reload the batch is analysed again, with the new config (the old one stays alive until
  // refresh_config() replaces it, so a new one is never at the same address).
  if (config_.get() != analysed_with) known_ = {};
  start_routing();
  shard_ = tracker_ && shard_map() ? choose_shard(client_buf_.data(), client_buf_.size()) : 0;
  int chosen = choose_backend(client_buf_.data(), client_buf_.size());
  if (chosen < 0) return chosen;
  auto& pool = pool_at(chosen);
  auto server = hold_servers_ ? take_held(shard_, pool) : nullptr;
  if (!server) server = pool.take_idle();
  if (!server) return chosen;
  attached_.backend = chosen;
  attached_.pool = &pool;
  attached_.server = std::move(server);
  return server_taken() ? kAttached : kNeedsParams;
}

bool ClientSession::server_taken() {
  w_.stats().servers_active.fetch_add(1, std::memory_order_relaxed);
  if (pinned_) attached_.server->dirty = true;
  return params_ready();
}

awaitable<bool> ClientSession::settle_params(bool from_mark) {
  pool::ServerError serr;
  if (co_await sync_params(*attached_.server, serr)) co_return true;
  if (tx_on_replica_ && !client_done_ && (!serr.from_server || unavailable(serr.sqlstate))) {
    // Each round takes a replica out of rotation: this ends on the primary (or with no backend left).
    if (auto& h = attached_.pool->settings().health) h->mark_down();
    log::warn(
        "replica failed while pgrouter applied the client's settings: taken out of rotation, transaction "
        "routed elsewhere",
        {{"session", id_}, {"backend", attached_.pool->target_name()}, {"error", serr.message}});
    w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
    attached_.pool->release(std::move(attached_.server), false);
    co_return co_await attach_backend(from_mark);
  }
  pending_fatal_sqlstate_ =
      serr.sqlstate.empty() ? std::string(p::sqlstate::connection_failure) : serr.sqlstate;
  pending_fatal_message_ =
      serr.message.empty() ? "server connection failed while applying session parameters" : serr.message;
  w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
  attached_.pool->release(std::move(attached_.server), serr.from_server);
  co_return false;
}

awaitable<bool> ClientSession::attach_backend(bool from_mark, int chosen, bool from_line) {
  // Read/write splitting: the transaction's first messages say where it goes. A replica that cannot be
  // reached is taken out of rotation and the transaction goes elsewhere (nothing was sent yet); so is,
  // with role: auto, a primary, and the transaction waits for the next one.
  const auto& shard = this->shard();
  auto give_up_at = pool::Clock::now() + db_->routing.wait_for_primary;
  if (chosen == kNotChosen) start_routing();
  pool::ServerError err;
  size_t replica_failures = 0;
  for (;;) {
    // Fetched again each round: the buffer may have moved while the previous round waited.
    const char* d = from_mark ? client_buf_.mark_data() : client_buf_.data();
    size_t n = from_mark ? client_buf_.size_since_mark() : client_buf_.size();
    attached_.backend = chosen != kNotChosen ? std::exchange(chosen, kNotChosen) : choose_backend(d, n);
    if (attached_.backend == kAwaitReplay) {
      // Read-your-writes: poll the probes' findings (a probe of the primary after the write, then a replica
      // that replayed its position) until routing.read_your_writes_wait is over; then the primary.
      attached_.backend = 0;
      ryw_waited_ = true;
      auto poll = std::min<pool::Clock::duration>(db_->routing.probe_interval, std::chrono::milliseconds(10));
      asio::steady_timer timer(w_.io());
      timer.expires_after(poll);
      net::error_code ec;
      co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
      if (client_done_) co_return false;
      continue;
    }
    if (attached_.backend == kNoReplica) {
      attached_.backend = 0;
      pending_fatal_sqlstate_ = p::sqlstate::cannot_connect;
      pending_fatal_message_ =
          "no replica can take this read (all down, lagging or paused) and "
          "routing.primary_fallback is false";
      co_return false;
    }
    if (attached_.backend == kNoPrimary) {
      attached_.backend = 0;
      int found = co_await await_primary(give_up_at);
      if (client_done_) co_return false;
      if (found >= 0) continue;
      pending_fatal_sqlstate_ = p::sqlstate::cannot_connect;
      pending_fatal_message_ = no_primary_message();
      co_return false;
    }
    attached_.pool = &pool_at(attached_.backend);
    attached_.server =
        co_await attached_.pool->acquire(err, std::exchange(from_line, false) ? &line_ : nullptr);
    if (attached_.server) break;
    if (client_done_) co_return false;  // the session ends anyway (with its own FATAL, if any)
    if ((err.from_server && !unavailable(err.sqlstate)) || err.sqlstate == p::sqlstate::too_many_connections)
      break;  // busy, or refusing us: not down
    bool retry = tx_on_replica_ ? replica_failures++ < shard.replicas.size()
                                : shard.auto_roles && pool::Clock::now() < give_up_at;
    if (!retry) break;
    if (auto& h = attached_.pool->settings().health) h->mark_down();
    log::warn(tx_on_replica_
                  ? "replica unreachable: taken out of rotation, transaction routed elsewhere"
                  : "primary unreachable: taken out of rotation until a probe answers; waiting for a "
                    "primary (routing.wait_for_primary)",
              {{"session", id_}, {"backend", attached_.pool->target_name()}, {"error", err.message}});
  }
  if (!attached_.server) {
    pending_fatal_sqlstate_ = err.sqlstate.empty() ? std::string(p::sqlstate::cannot_connect) : err.sqlstate;
    pending_fatal_message_ =
        err.from_server ? "server refused pgrouter's login: " + err.message : err.message;
    co_return false;
  }
  if (server_taken()) co_return true;
  co_return co_await settle_params(from_mark);
}

void ClientSession::transaction_ended() {
  if (tx_wrote_) {  // set only for transactions routed to the primary
    write_done_at_ = routing::steady_ms();
    required_lsn_ = 0;
  }
  tx_wrote_ = false;
  tx_begin_sql_.clear();
}

}  // namespace pgrouter::session
