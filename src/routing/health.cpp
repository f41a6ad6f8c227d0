// Backend probes for routing (see the header).
#include "pgrouter/routing/health.hpp"
#include "pgrouter/util/strings.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>

#include "pgrouter/control/log.hpp"

namespace pgrouter::routing {

SteadyMs steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {
std::string conn_value(const std::string& v) {  // libpq conninfo quoting
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "'";
}

// The probe connects as the pool's servers do: same sslmode and files.
std::string tls_conninfo(const net::ServerTlsSettings& tls) {
  std::string out = std::string(" sslmode=") + net::sslmode_name(tls.sslmode);
  if (!tls.sslrootcert.empty()) out += " sslrootcert=" + conn_value(tls.sslrootcert);
  if (!tls.sslcert.empty())
    out += " sslcert=" + conn_value(tls.sslcert) + " sslkey=" + conn_value(tls.sslkey);
  return out;
}

// One query answers everything routing needs; a replica reports its replayed position and how far its
// replay is behind in time (0 once it replayed all it received; NULLs, e.g. nothing replayed yet, count
// as 0), a primary its WAL insert position and its timeline (the first 8 hex digits of its current WAL
// file name). The insert position, not the write position (pg_current_wal_lsn): a commit with
// synchronous_commit = off returns to its client once its record is inserted, before it is written, and
// read-your-writes needs a position at or past the client's commit record.
constexpr const char* kProbe =
    "SELECT pg_is_in_recovery(), "
    "(coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() "
    "END, "
    "'0/0') - '0/0'::pg_lsn)::bigint, "
    "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END, "
    "CASE WHEN pg_is_in_recovery() THEN 0 "
    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END, "
    "CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END";
}  // namespace

HealthMonitor::HealthMonitor() = default;

HealthMonitor::~HealthMonitor() { stop(); }

std::shared_ptr<BackendHealth> HealthMonitor::get(const std::string& host, uint16_t port) {
  std::lock_guard lock(health_mu_);
  std::string name = util::host_port(host, port);
  auto& h = health_[name];
  if (!h) {
    h = std::make_shared<BackendHealth>();
    h->name = name;
  }
  return h;
}

std::vector<std::shared_ptr<BackendHealth>> HealthMonitor::all() {
  std::lock_guard lock(health_mu_);
  std::vector<std::shared_ptr<BackendHealth>> out;
  for (auto& [k, v] : health_) out.push_back(v);
  return out;
}

void HealthMonitor::update(const control::Config& config) {
  std::map<std::string, Target> wanted;
  std::chrono::milliseconds interval{60000};
  for (const auto& db : config.databases) {
    const control::UserConfig* user =
        db.routing.probe_user.empty() ? nullptr : config.find_user(db.routing.probe_user);
    if (!user && !config.users.empty()) user = &config.users.front();
    if (!user) continue;
    std::vector<std::pair<control::Endpoint, std::string>> endpoints;  // with the shard's database name
    for (size_t i = 0; i < db.shards.size(); ++i) {
      const auto& shard = db.shards[i];
      if (shard.replicas.empty() && !shard.auto_roles) continue;  // nothing to route between: no probes
      const auto& dbname = db.name == control::kFallbackDatabase ? "postgres" : db.server_dbname(i);
      endpoints.emplace_back(shard.primary, dbname);
      for (const auto& r : shard.replicas) endpoints.emplace_back(r, dbname);
    }
    if (endpoints.empty()) continue;
    interval = std::min(interval, std::chrono::milliseconds(db.routing.probe_interval.count()));
    for (const auto& [ep, dbname] : endpoints) {
      std::string conninfo =
          "host=" + conn_value(ep.host) + " port=" + std::to_string(ep.port) +
          " dbname=" + conn_value(dbname) +
          " user=" + conn_value(user->backend_user.empty() ? user->name : user->backend_user) + " password=" +
          conn_value(user->backend_password.empty() ? user->password : user->backend_password) +
          " connect_timeout=2 application_name='pgrouter probe' options='-c statement_timeout=2000'" +
          tls_conninfo(ep.tls);
      Target t;
      t.conninfo = conninfo;
      t.health = get(ep.host, ep.port);
      wanted.emplace(conninfo, std::move(t));
    }
  }
  std::lock_guard lock(mu_);
  interval_ = interval;
  // Keep open connections of targets that stay; the loop closes the others.
  for (auto& [k, t] : targets_)
    if (auto it = wanted.find(k); it != wanted.end()) std::swap(it->second.conn, t.conn);
  for (auto& [k, t] : targets_)
    if (t.conn) PQfinish(static_cast<PGconn*>(t.conn));
  targets_ = std::move(wanted);
  cv_.notify_all();
}

void HealthMonitor::start() {
  thread_ = std::thread([this] { loop(); });
}

void HealthMonitor::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  for (auto& [k, t] : targets_)
    if (t.conn) PQfinish(static_cast<PGconn*>(t.conn));
  targets_.clear();
}

void HealthMonitor::loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    auto interval = interval_;
    // Probing holds the lock: update() waits for at most one round (probes time out after 2 s).
    for (auto& [k, t] : targets_) {
      if (stopping_) break;
      probe(t);
    }
    cv_.wait_for(lock, interval);
  }
}

void HealthMonitor::probe(Target& t) {
  auto* conn = static_cast<PGconn*>(t.conn);
  if (conn && PQstatus(conn) != CONNECTION_OK) {
    PQfinish(conn);
    conn = nullptr;
  }
  if (!conn) {
    conn = PQconnectdb(t.conninfo.c_str());
    // A server's notices (e.g. the WARNING before an immediate shutdown) are not pgrouter's output.
    PQsetNoticeProcessor(
        conn, [](void*, const char*) {}, nullptr);
  }
  t.conn = conn;
  SteadyMs sent = steady_ms();
  PGresult* res = PQstatus(conn) == CONNECTION_OK ? PQexec(conn, kProbe) : nullptr;
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    // Refused, broken or wrong answer: out of rotation until a probe succeeds (on a new connection).
    std::string err = PQerrorMessage(conn);
    PQclear(res);
    PQfinish(conn);
    t.conn = nullptr;
    t.health->probes_failed.fetch_add(1, std::memory_order_relaxed);
    if (t.health->up.load())
      log::warn("backend probe failed: no reads are routed to it until it answers",
                {{"backend", t.health->name}, {"error", err}});
    t.health->mark_down();
    return;
  }
  bool recovery = PQgetvalue(res, 0, 0)[0] == 't';
  uint64_t lsn = std::strtoull(PQgetvalue(res, 0, 1), nullptr, 10);
  bool paused = PQgetvalue(res, 0, 2)[0] == 't';
  auto timeline = uint32_t(std::strtoul(PQgetvalue(res, 0, 3), nullptr, 10));
  auto lag_ms = int64_t(std::max(0.0, std::strtod(PQgetvalue(res, 0, 4), nullptr)) * 1000.0);
  PQclear(res);
  auto& h = *t.health;
  if (!h.probed.load() || h.in_recovery.load() != recovery)
    log::info(recovery ? "backend is a replica (in recovery)" : "backend is a primary (not in recovery)",
              {{"backend", h.name}, {"timeline", uint64_t(timeline)}});
  h.timeline.store(timeline);
  h.replay_lag_ms.store(lag_ms);
  h.in_recovery.store(recovery);
  h.replay_paused.store(paused);
  h.lsn.store(lsn);
  h.probe_sent.store(sent);
  h.probed.store(true);
  if (!h.up.exchange(true))
    log::info("backend answers probes again: back in rotation", {{"backend", h.name}});
}

}  // namespace pgrouter::routing
