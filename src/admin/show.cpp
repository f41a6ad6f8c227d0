// The SHOW commands' rows (see the header).
#include "pgrouter/admin/show.hpp"

#include <fmt/format.h>

#include <map>
#include <tuple>

#include "pgrouter/util/strings.hpp"

namespace pgrouter::admin {
namespace {

using PoolKey = std::tuple<std::string, std::string, int, int>;

std::map<PoolKey, PoolRow> sum_pools(const std::vector<WorkerSnapshot>& parts) {
  std::map<PoolKey, PoolRow> sums;
  for (const auto& part : parts)
    for (const auto& row : part.pools) {
      auto [it, fresh] = sums.try_emplace({row.database, row.user, row.shard, row.backend_index}, row);
      if (fresh) continue;
      auto& sum = it->second;
      sum.cl_active += row.cl_active;
      sum.cl_waiting += row.cl_waiting;
      sum.sv_active += row.sv_active;
      sum.sv_idle += row.sv_idle;
      sum.sv_login += row.sv_login;
      sum.maxwait_us = std::max(sum.maxwait_us, row.maxwait_us);
    }
  return sums;
}

ResultSet connection_rows(const std::vector<ConnectionRow>& rows, std::string_view type) {
  ResultSet rs({"type", "user", "database", "state", "addr", "port", "local_addr", "local_port",
                "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link"},
               {"port", "local_port", "wait", "wait_us", "close_needed"});
  for (const auto& r : rows)
    rs.row()
        .add(type)
        .add(r.user)
        .add(r.database)
        .add(r.state)
        .add(r.addr)
        .add(int64_t(r.port))
        .add(r.local_addr)
        .add(int64_t(r.local_port))
        .add(format_time(r.connect_time))
        .add(format_time(r.request_time))
        .add(r.wait_us / 1'000'000)
        .add(r.wait_us % 1'000'000)
        .add(int64_t(r.close_needed))
        .add(r.ptr)
        .add(r.link);
  return rs;
}

std::string mode_name(control::PoolMode mode) {
  return mode == control::PoolMode::transaction ? "transaction" : "session";
}

std::string ms(control::Millis m) { return std::to_string(m.count()) + "ms"; }

std::string names(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& n : list) out += (out.empty() ? "" : ",") + n;
  return out;
}

}  // namespace

ResultSet show_pools(const std::vector<WorkerSnapshot>& parts) {
  ResultSet rs({"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
                "sv_login", "maxwait", "maxwait_us", "pool_mode", "backend", "shard"},
               {"cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login",
                "maxwait", "maxwait_us", "shard"});
  for (const auto& [key, r] : sum_pools(parts))
    rs.row()
        .add(r.database)
        .add(r.user)
        .add(r.cl_active)
        .add(r.cl_waiting)
        .add(r.sv_active)
        .add(r.sv_idle)
        .add(int64_t(0))  // a server given back is reset before it is idle: never "used"
        .add(int64_t(0))
        .add(r.sv_login)
        .add(r.maxwait_us / 1'000'000)
        .add(r.maxwait_us % 1'000'000)
        .add(r.pool_mode)
        .add(r.backend)
        .add(int64_t(r.shard));
  return rs;
}

ResultSet show_clients(const std::vector<WorkerSnapshot>& parts) {
  std::vector<ConnectionRow> rows;
  for (const auto& part : parts) rows.insert(rows.end(), part.clients.begin(), part.clients.end());
  return connection_rows(rows, "C");
}

ResultSet show_servers(const std::vector<WorkerSnapshot>& parts) {
  std::vector<ConnectionRow> rows;
  for (const auto& part : parts) rows.insert(rows.end(), part.servers.begin(), part.servers.end());
  return connection_rows(rows, "S");
}

ResultSet show_databases(const control::Config& config, const Controls& controls,
                         const std::vector<WorkerSnapshot>& parts) {
  ResultSet rs(
      {"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool",
       "pool_mode", "max_connections", "current_connections", "paused", "disabled", "shard"},
      {"port", "pool_size", "min_pool_size", "reserve_pool", "max_connections", "current_connections",
       "paused", "disabled", "shard"});
  std::map<std::pair<std::string, int>, int64_t> servers;  // (database, shard) -> open server connections
  for (const auto& [key, r] : sum_pools(parts))
    servers[{r.database, r.shard}] += r.sv_active + r.sv_idle + r.sv_login;
  for (const auto& db : config.databases) {
    const auto& pool = config.pool_for(db);
    for (size_t s = 0; s < db.shards.size(); ++s) {
      const auto& primary = db.shards[s].primary;
      auto it = servers.find({db.name, int(s)});
      rs.row()
          .add(db.name)
          .add(primary.host)
          .add(int64_t(primary.port))
          .add(db.server_dbname(s))
          .add("")
          .add(int64_t(pool.size))
          .add(int64_t(pool.min_size))
          .add(int64_t(0))
          .add(mode_name(pool.mode))
          .add(int64_t(0))
          .add(it == servers.end() ? int64_t(0) : it->second)
          .add(int64_t(controls.paused(db.name)))
          .add(int64_t(controls.disabled(db.name)))
          .add(int64_t(s));
    }
  }
  return rs;
}

ResultSet show_stats(const control::Stats& stats) {
  ResultSet rs(
      {"database", "total_xact_count", "total_query_count", "total_received", "total_sent", "total_xact_time",
       "total_query_time", "total_wait_time", "avg_xact_time", "avg_query_time", "avg_wait_time"},
      {"total_xact_count", "total_query_count", "total_received", "total_sent", "total_xact_time",
       "total_query_time", "total_wait_time", "avg_xact_time", "avg_query_time", "avg_wait_time"});
  uint64_t requests = 0, received = 0, sent = 0, query_ns = 0, timed = 0, wait_ns = 0, waits = 0;
  for (const auto& w : stats.workers) {
    requests += w->queries_total.load(std::memory_order_relaxed);
    received += w->bytes_client_to_server.load(std::memory_order_relaxed);
    sent += w->bytes_server_to_client.load(std::memory_order_relaxed);
    query_ns += w->query_latency.sum_ns.load(std::memory_order_relaxed);
    timed += w->query_latency.count.load(std::memory_order_relaxed);
    wait_ns += w->pool_wait.sum_ns.load(std::memory_order_relaxed);
    waits += w->pool_wait.count.load(std::memory_order_relaxed);
  }
  int64_t query_us = int64_t(query_ns / 1000), wait_us = int64_t(wait_ns / 1000);
  int64_t avg_query = timed ? query_us / int64_t(timed) : 0;
  rs.row()
      .add("*")
      .add(int64_t(requests))
      .add(int64_t(requests))
      .add(int64_t(received))
      .add(int64_t(sent))
      .add(query_us)
      .add(query_us)
      .add(wait_us)
      .add(avg_query)
      .add(avg_query)
      .add(waits ? wait_us / int64_t(waits) : 0);
  return rs;
}

ResultSet show_config(const control::Config& c) {
  ResultSet rs({"key", "value", "default", "changeable"});
  const control::Config d;
  auto add = [&](std::string_view key, const std::string& value, const std::string& def, bool changeable) {
    rs.row().add(key).add(value).add(def).add(changeable ? "yes" : "no");
  };
  add("listen.host", c.listen.host, d.listen.host, false);
  add("listen.port", std::to_string(c.listen.port), std::to_string(d.listen.port), false);
  add("listen.workers", std::to_string(c.listen.workers), std::to_string(d.listen.workers), false);
  add("listen.max_client_conn", std::to_string(c.listen.max_client_conn),
      std::to_string(d.listen.max_client_conn), true);
  add("listen.max_message_size", std::to_string(c.listen.max_message_size),
      std::to_string(d.listen.max_message_size), true);
  add("listen.client_login_timeout", ms(c.listen.client_login_timeout), ms(d.listen.client_login_timeout),
      true);
  add("listen.shutdown_timeout", ms(c.listen.shutdown_timeout), ms(d.listen.shutdown_timeout), true);
  add("listen.takeover_socket", c.listen.takeover_socket, d.listen.takeover_socket, false);
  add("listen.takeover_client_wait", ms(c.listen.takeover_client_wait), ms(d.listen.takeover_client_wait),
      true);
  add("admin.host", c.admin.host, d.admin.host, false);
  add("admin.port", std::to_string(c.admin.port), std::to_string(d.admin.port), false);
  add("admin.database", c.admin.database, d.admin.database, true);
  add("admin.admin_users", names(c.admin.admin_users), "", true);
  add("admin.stats_users", names(c.admin.stats_users), "", true);
  add("admin.api_token", c.admin.api_token.empty() ? "" : "(set)", "", true);  // never the token itself
  add("admin.api_read_open", c.admin.api_read_open == control::ApiReadOpen::token ? "token" : "localhost",
      "localhost", true);
  add("log.level", c.log.level, d.log.level, true);
  add("pool.mode", mode_name(c.pool.mode), mode_name(d.pool.mode), true);
  add("pool.size", std::to_string(c.pool.size), std::to_string(d.pool.size), true);
  add("pool.min_size", std::to_string(c.pool.min_size), std::to_string(d.pool.min_size), true);
  add("pool.connect_timeout", ms(c.pool.connect_timeout), ms(d.pool.connect_timeout), true);
  add("pool.idle_timeout", ms(c.pool.idle_timeout), ms(d.pool.idle_timeout), true);
  add("pool.max_lifetime", ms(c.pool.max_lifetime), ms(d.pool.max_lifetime), true);
  add("pool.queue_size", std::to_string(c.pool.queue_size), std::to_string(d.pool.queue_size), true);
  add("pool.queue_timeout", ms(c.pool.queue_timeout), ms(d.pool.queue_timeout), true);
  add("pool.reset_query", c.pool.reset_query, d.pool.reset_query, true);
  add("pool.query_timeout", ms(c.pool.query_timeout), ms(d.pool.query_timeout), true);
  add("pool.idle_transaction_timeout", ms(c.pool.idle_transaction_timeout),
      ms(d.pool.idle_transaction_timeout), true);
  add("pool.client_idle_timeout", ms(c.pool.client_idle_timeout), ms(d.pool.client_idle_timeout), true);
  add("pool.prepared_statements_cache", std::to_string(c.pool.prepared_statements_cache),
      std::to_string(d.pool.prepared_statements_cache), true);
  return rs;
}

ResultSet show_version() {
  ResultSet rs({"version"});
  rs.row().add(std::string("pgrouter ") + PGROUTER_VERSION);
  return rs;
}

ResultSet show_backends(const control::Config& config, routing::HealthMonitor& health) {
  ResultSet rs({"database", "shard", "host", "port", "role", "state", "probed", "lag_ms", "lsn"},
               {"shard", "port", "lag_ms", "lsn"});
  for (const auto& db : config.databases)
    for (size_t s = 0; s < db.shards.size(); ++s)
      for (size_t i = 0; i < db.shards[s].backends(); ++i) {
        const auto& ep = db.shards[s].backend(i);
        auto h = health.get(ep.host, ep.port);
        bool probed = h->probed.load();
        // role: auto: what the probes found; fixed roles: as configured.
        bool replica = db.shards[s].auto_roles && probed ? h->in_recovery.load() : i > 0;
        rs.row()
            .add(db.name)
            .add(int64_t(s))
            .add(ep.host)
            .add(int64_t(ep.port))
            .add(replica ? "replica" : "primary")
            .add(h->up.load() ? "up" : "down")
            .add(probed ? "yes" : "no")
            .add(h->replay_lag_ms.load())
            .add(int64_t(h->lsn.load()));
      }
  return rs;
}

}  // namespace pgrouter::admin
