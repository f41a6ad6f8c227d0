// Read/write splitting for a transaction-pooled client: classify the messages that open a transaction
// (libpg_query, cached per worker), then pick the primary or an eligible replica (routing/router.hpp).
// Session-pooled clients stay on the primary: their server is chosen once, at login.
#include "pgrouter/control/log.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/session/client_session.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;

namespace {

// Whether a statement may run on a replica.
bool is_read(const sql::Classification& c) {
  using sql::StatementClass;
  if (c.cls == StatementClass::read) return true;
  if (c.cls == StatementClass::transaction_begin) return c.read_only_begin;  // BEGIN READ ONLY
  return false;
}

std::string_view unquote(std::string_view v) {
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) return v.substr(1, v.size() - 2);
  return v;
}

}  // namespace

int ClientSession::choose_backend(const char* d, size_t n) {
  const auto& shard = db_->shards.at(0);
  const auto& rc = db_->routing;
  auto& stats = w_.stats();
  tx_read_ = false;
  if (!tracker_ || shard.replicas.empty() || rc.read_from == control::ReadFrom::primary) return 0;

  // SET pgrouter.route = primary | replica | auto (carried with the client's other settings).
  std::string_view session_route = "auto";
  if (auto it = tracker_->settings().find("pgrouter.route"); it != tracker_->settings().end()) {
    std::string_view stmt = it->second;  // "SET pgrouter.route TO <value>"
    session_route = unquote(stmt.substr(stmt.rfind(' ') + 1));
  }

  // Every statement of the batch at hand must be a read to go to a replica: a pipelined write after a
  // read would fail there.
  bool any = false, all_read = true;
  bool writes = false;  // some statement may change data: read-your-writes starts after this transaction
  sql::RouteHint hint = sql::RouteHint::none;
  std::vector<std::pair<std::string_view, bool>> parsed_here;  // named statements parsed in this batch
  auto& cache = w_.classifier();
  for (size_t i = 0; i + 5 <= n;) {
    char type = d[i];
    uint32_t len = p::read_be32(d + i + 1);
    if (len < 4 || i + 1 + len > n) break;  // the rest comes later: it is checked as it is relayed
    std::string_view body(d + i + 5, len - 4);
    i += 1 + len;
    std::optional<bool> read;
    size_t pos = 0;
    if (type == 'Q' || type == 'P') {
      std::optional<std::string_view> name;
      if (type == 'P') name = p::read_cstring(body, pos);
      auto sql = p::read_cstring(body, pos);
      if (!sql) break;
      const auto& c = cache.get(*sql);
      if (!any && c.hint != sql::RouteHint::none) hint = c.hint;
      read = is_read(c) || c.cls == sql::StatementClass::unknown;
      using sql::StatementClass;
      if (c.cls == StatementClass::write || c.cls == StatementClass::utility || c.cls == StatementClass::locking_read ||
          (c.cls == StatementClass::transaction_begin && !c.read_only_begin))
        writes = true;
      if (name) parsed_here.emplace_back(*name, *read);
    } else if (type == 'B') {
      auto portal = p::read_cstring(body, pos);
      auto stmt = portal ? p::read_cstring(body, pos) : std::nullopt;
      if (!stmt) break;
      for (auto& [nm, r] : parsed_here)
        if (nm == *stmt) read = r;
      if (!read) {
        if (auto q = tracker_->statement_query(std::string(*stmt))) read = is_read(cache.get(*q));
        else read = false;
        if (!*read) writes = true;
      }
    } else if (type == 'F') {
      read = false;
      writes = true;
    }
    if (!read) continue;
    any = true;
    if (!*read) all_read = false;
  }

  tx_read_ = any && all_read;
  bool want_replica;
  if (session_route == "primary" || hint == sql::RouteHint::primary) want_replica = false;
  else if (session_route == "replica" || hint == sql::RouteHint::replica) want_replica = true;
  else want_replica = any && all_read;
  if (!want_replica) {
    tx_wrote_ = writes || !any;
    stats.routed_writes_total.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  tx_wrote_ = false;

  // Read-your-writes: after this client's write, a replica must have replayed the primary's position as
  // probed after that write; until a probe has seen it, the read goes to the primary.
  auto& primary_pool = *pool_;
  const auto& primary_health = primary_pool.settings().health;
  if (rc.read_your_writes && write_done_at_ != 0 && required_lsn_ == 0) {
    if (primary_health && primary_health->probe_sent.load(std::memory_order_relaxed) > write_done_at_) {
      required_lsn_ = primary_health->lsn.load(std::memory_order_relaxed);
    } else {
      stats.routed_reads_primary_total.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
  }
  std::vector<routing::Candidate> candidates;
  candidates.reserve(shard.replicas.size() + 1);
  for (size_t r = 0; r < shard.replicas.size(); ++r) {
    auto& pool = w_.pool_for(*db_, *user_cfg_, int(r) + 1);
    const auto& h = pool.settings().health;
    routing::Candidate c;
    c.eligible = h && primary_health && routing::replica_eligible(*h, *primary_health, rc, required_lsn_);
    c.weight = pool.settings().weight;
    c.outstanding = pool.attached();
    candidates.push_back(c);
  }
  if (rc.read_from == control::ReadFrom::any && !(rc.read_your_writes && required_lsn_ != 0)) {
    routing::Candidate c;  // the primary takes reads too
    c.eligible = true;
    c.outstanding = primary_pool.attached();
    candidates.push_back(c);
  }
  int pick = routing::pick_replica(rc.strategy, candidates, w_.round_robin(), w_.rng());
  if (pick < 0 || size_t(pick) == shard.replicas.size()) {
    if (pick < 0 && !rc.primary_fallback) {
      stats.routed_reads_refused_total.fetch_add(1, std::memory_order_relaxed);
      return -1;  // no replica may take it and the primary may not either
    }
    stats.routed_reads_primary_total.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  stats.routed_reads_replica_total.fetch_add(1, std::memory_order_relaxed);
  return pick + 1;
}

namespace {
// A server that answers a login this way is going away or not up yet: route elsewhere.
bool unavailable(std::string_view sqlstate) {
  return sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
}
}  // namespace

awaitable<bool> ClientSession::attach_backend(bool from_mark) {
  // Read/write splitting: the transaction's first messages say where it goes. A replica that cannot be
  // reached is taken out of rotation and the transaction goes elsewhere (nothing was sent yet).
  pool::ServerError err;
  for (size_t attempt = 0;; ++attempt) {
    // Fetched again each round: the buffer may have moved while the previous round waited.
    const char* d = from_mark ? client_buf_.mark_data() : client_buf_.data();
    size_t n = from_mark ? client_buf_.size_since_mark() : client_buf_.size();
    backend_ = choose_backend(d, n);
    if (backend_ < 0) {
      backend_ = 0;
      pending_fatal_sqlstate_ = p::sqlstate::cannot_connect;
      pending_fatal_message_ = "no replica can take this read (all down, lagging or paused) and "
                               "routing.primary_fallback is false";
      co_return false;
    }
    server_pool_ = backend_ == 0 ? pool_ : &w_.pool_for(*db_, *user_cfg_, backend_);
    server_ = co_await server_pool_->acquire(err);
    if (server_ || backend_ == 0 || attempt > db_->shards[0].replicas.size()) break;
    if ((err.from_server && !unavailable(err.sqlstate)) || err.sqlstate == p::sqlstate::too_many_connections)
      break;  // busy, not down
    if (auto& h = server_pool_->settings().health) h->mark_down();
    log::warn("replica unreachable: taken out of rotation, transaction routed elsewhere",
              {{"session", id_}, {"backend", server_pool_->settings().target.host + ":" +
                                                std::to_string(server_pool_->settings().target.port)},
               {"error", err.message}});
  }
  if (!server_) {
    pending_fatal_sqlstate_ = err.sqlstate.empty() ? std::string(p::sqlstate::cannot_connect) : err.sqlstate;
    pending_fatal_message_ = err.from_server ? "server refused pgrouter's login: " + err.message : err.message;
    co_return false;
  }
  w_.stats().servers_active.fetch_add(1, std::memory_order_relaxed);
  if (pinned_) server_->dirty = true;
  pool::ServerError serr;
  if (!co_await sync_params(serr)) {
    pending_fatal_sqlstate_ = serr.sqlstate.empty() ? std::string(p::sqlstate::connection_failure) : serr.sqlstate;
    pending_fatal_message_ = serr.message.empty() ? "server connection failed while applying session parameters"
                                                  : serr.message;
    w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
    server_pool_->release(std::move(server_), serr.from_server);
    co_return false;
  }
  co_return true;
}

void ClientSession::transaction_ended() {
  if (backend_ == 0 && tx_wrote_) {
    write_done_at_ = routing::steady_ms();
    required_lsn_ = 0;
  }
  tx_wrote_ = false;
}

}  // namespace pgrouter::session
