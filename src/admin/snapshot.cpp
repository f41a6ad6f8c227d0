// One worker's pools, clients and servers for the admin console, read on that worker's thread.
#include "pgrouter/admin/snapshot.hpp"

#include <fmt/format.h>

#include <ctime>
#include <unordered_map>

#include "pgrouter/session/client_session.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::admin {

int64_t unix_time(std::chrono::steady_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) return 0;
  auto age = std::chrono::steady_clock::now() - t;
  return std::chrono::duration_cast<std::chrono::seconds>(
             (std::chrono::system_clock::now() - age).time_since_epoch())
      .count();
}

std::string format_time(int64_t unix_seconds) {
  if (unix_seconds == 0) return "";
  std::time_t t = std::time_t(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

namespace {

std::string mode_name(control::PoolMode mode) {
  return mode == control::PoolMode::transaction ? "transaction" : "session";
}

ConnectionRow idle_server_row(const pool::Pool& pool, const pool::ServerConnection& server,
                              const std::string& database, const std::string& user) {
  ConnectionRow row;
  row.user = user;
  row.database = database;
  row.state = "idle";
  row.addr = pool.settings().target.host;
  row.port = pool.settings().target.port;
  boost::system::error_code ec;
  auto local = server.socket.local_endpoint(ec);
  if (!ec) {
    row.local_addr = local.address().to_string();
    row.local_port = local.port();
  }
  row.connect_time = unix_time(server.created);
  row.request_time = unix_time(server.idle_since);
  row.ptr = fmt::format("{:x}", reinterpret_cast<uintptr_t>(&server));
  return row;
}

}  // namespace

WorkerSnapshot snapshot(Worker& w) {
  WorkerSnapshot out;
  std::unordered_map<const void*, size_t> row_of;  // pool -> its row in out.pools
  auto now = pool::Clock::now();
  for (const auto& [key, pool] : w.pools()) {
    const auto& [database, user, shard, backend] = key;
    PoolRow row;
    row.database = database;
    row.user = user;
    row.shard = shard;
    row.backend_index = backend;
    row.backend = pool->target_name();
    row.pool_mode = mode_name(pool->settings().config.mode);
    row.cl_waiting = int64_t(pool->waiting());
    row.sv_idle = int64_t(pool->idle());
    row.sv_login = pool->attached();  // less the active ones below: opening or being reset
    if (auto started = pool->first_wait_started())
      row.maxwait_us = std::chrono::duration_cast<std::chrono::microseconds>(now - *started).count();
    for (const auto& server : pool->idle_servers())
      out.servers.push_back(idle_server_row(*pool, *server, database, user));
    row_of[pool.get()] = out.pools.size();
    out.pools.push_back(std::move(row));
  }
  for (const auto& [pid, session] : w.sessions()) {
    SessionRow s = session->admin_row();
    if (auto it = row_of.find(s.pool); it != row_of.end()) {
      auto& row = out.pools[it->second];
      if (s.waiting && !s.server) {
        // In line in the pool (counted there already) or held by PAUSE (not).
        if (s.paused) ++row.cl_waiting;
        row.maxwait_us = std::max(row.maxwait_us, s.client.wait_us);
      } else {
        ++row.cl_active;
      }
      if (s.server) {
        ++row.sv_active;
        --row.sv_login;
      }
    }
    for (auto& [pool, server] : s.kept) {
      if (auto it = row_of.find(pool); it != row_of.end()) {
        ++out.pools[it->second].sv_active;
        --out.pools[it->second].sv_login;
      }
      out.servers.push_back(std::move(server));
    }
    out.clients.push_back(std::move(s.client));
    if (s.server) out.servers.push_back(std::move(*s.server));
  }
  for (auto& row : out.pools) row.sv_login = std::max<int64_t>(0, row.sv_login);
  return out;
}

}  // namespace pgrouter::admin
