// The admin console: a session of admin.database answers PgBouncer-style commands itself (SHOW, PAUSE,
// RESUME, DISABLE, ENABLE, KILL, RELOAD, SHUTDOWN) instead of relaying, and what the console needs of every
// session: its row for SHOW, KILL, and the wait of a paused database's transactions.
#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>

#include "pgrouter/admin/actions.hpp"
#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/session/client_session.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace fe = pgrouter::protocol::frontend;
namespace be = pgrouter::protocol::backend;
using admin::Verb;

namespace {
constexpr const char* kInsufficientPrivilege = "42501";
constexpr const char* kSyntaxError = "42601";
constexpr auto kPausePoll = std::chrono::milliseconds(20);
constexpr uint32_t kMaxConsoleQuery = 64 * 1024;  // a command is a few words

bool listed(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

void error(std::string& out, const char* sqlstate, std::string_view message, std::string_view hint = {}) {
  p::append_error(out, "ERROR", sqlstate, message, {}, hint);
}

std::string hex(const void* ptr) { return fmt::format("{:x}", reinterpret_cast<uintptr_t>(ptr)); }

// The address and port of a socket's end: the local one or the peer's.
void endpoint_of(int fd, bool local, std::string& addr, int& port) {
  if (fd < 0) return;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int rc = local ? ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                 : ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return;
  tcp::endpoint ep;
  if (len > ep.capacity()) return;
  std::memcpy(ep.data(), &ss, len);
  ep.resize(len);
  addr = ep.address().to_string();
  port = ep.port();
}

// The welcome's ParameterStatus set: what drivers read at login (psql, psycopg and JDBC check these).
const std::vector<std::pair<std::string, std::string>>& console_parameters() {
  static const std::vector<std::pair<std::string, std::string>> params{
      {"server_version", std::string("15.0 (pgrouter ") + PGROUTER_VERSION + ")"},
      {"server_encoding", "UTF8"},
      {"client_encoding", "UTF8"},
      {"DateStyle", "ISO, MDY"},
      {"TimeZone", "UTC"},
      {"integer_datetimes", "on"},
      {"standard_conforming_strings", "on"},
      {"is_superuser", "off"}};
  return params;
}
}  // namespace

awaitable<bool> ClientSession::console_login() {
  const auto& a = config_->admin;
  bool full = listed(a.admin_users, user_);
  if (!full && !listed(a.stats_users, user_)) {
    log::warn("admin console login refused", {{"session", id_}, {"client", peer_}, {"user", user_}});
    std::string out;
    p::append_error(out, "FATAL", p::sqlstate::invalid_authorization,
                    "not allowed: user \"" + user_ + "\" may not use the admin console", {},
                    "List the user under admin.admin_users or admin.stats_users.");
    w_.stats().count_error(p::sqlstate::invalid_authorization, true);
    net::error_code ec;
    co_await client_write_any(out, ec);
    co_return false;
  }
  console_ = true;
  console_stats_only_ = !full;
  last_activity_ = pool::Clock::now();
  key_pid_ = w_.register_session(this, key_secret_);
  std::string out;
  p::append_auth(out, 0);
  for (const auto& [k, v] : console_parameters()) p::append_parameter_status(out, k, v);
  p::append_backend_key_data(out, key_pid_, key_secret_);
  p::append_ready_for_query(out, 'I');
  net::error_code ec;
  co_await client_write_any(out, ec);
  log::info("admin console login", {{"session", id_}, {"client", peer_}, {"user", user_}});
  co_return !ec;
}

awaitable<net::error_code> ClientSession::console_read(char* dst, size_t n) {
  if (tls_) co_return co_await net::read_exact(*tls_, dst, n);
  co_return co_await plain_login_read(dst, n);
}

awaitable<net::error_code> ClientSession::console_read_message(char& type, std::string& body) {
  char hdr[5];
  if (auto ec = co_await console_read(hdr, sizeof hdr)) co_return ec;
  type = hdr[0];
  uint32_t len = p::read_be32(hdr + 1);
  if (len < 4 || len - 4 > kMaxConsoleQuery) co_return asio::error::message_size;
  body.assign(len - 4, '\0');
  if (len == 4) co_return net::error_code{};
  co_return co_await console_read(body.data(), body.size());
}

awaitable<void> ClientSession::run_console() {
  std::string body, out;
  for (;;) {
    char type = 0;
    auto ec = co_await console_read_message(type, body);
    out.clear();
    if (ec) {
      if (console_ending_) {
        client_ready_.rearm();  // the drain's cancel is sticky; the FATAL still goes out
        p::append_error(out, "FATAL", p::sqlstate::admin_shutdown,
                        "terminating connection due to administrator command");
      } else if (ec == asio::error::message_size)
        p::append_error(out, "FATAL", p::sqlstate::protocol_violation,
                        "invalid message length for the admin console (a command is at most 64 kB)");
      if (!out.empty()) co_await client_write_any(out, ec);
      co_return;
    }
    last_activity_ = pool::Clock::now();
    bool more = co_await console_message(type, body, out);
    if (!out.empty()) co_await client_write_any(out, ec);
    if (!more || ec) co_return;
  }
}

awaitable<bool> ClientSession::console_message(char type, std::string_view body, std::string& out) {
  if (type == fe::kTerminate) co_return false;
  if (type == fe::kQuery) {
    size_t pos = 0;
    auto sql = p::read_cstring(body, pos);
    co_await console_query(sql.value_or(""), out);
    p::append_ready_for_query(out, 'I');
  } else if (type == fe::kSync) {
    console_skipping_ = false;
    p::append_ready_for_query(out, 'I');
  } else if (type == fe::kParse || type == fe::kBind || type == fe::kDescribe || type == fe::kExecute ||
             type == fe::kClose || type == fe::kFlush || type == fe::kFunctionCall) {
    // One error per batch; the rest of it is skipped up to its Sync, as PostgreSQL skips after an error.
    if (!console_skipping_)
      error(out, p::sqlstate::feature_not_supported, "the admin console accepts only simple queries");
    console_skipping_ = true;
  } else if (!fe::is_copy_message(type)) {
    p::append_error(out, "FATAL", p::sqlstate::protocol_violation,
                    "invalid frontend message type " + std::to_string(int(uint8_t(type))));
    co_return false;
  }
  co_return true;
}

awaitable<void> ClientSession::console_query(std::string_view sql, std::string& out) {
  auto parsed = admin::parse_command(sql);
  if (parsed.empty) {
    p::append_header(out, be::kEmptyQueryResponse, 0);
    co_return;
  }
  if (!parsed.command) {
    error(out, kSyntaxError, parsed.error + ": \"" + std::string(sql) + "\"",
          std::string("The admin console knows ") + std::string(admin::valid_commands()) + ".");
    co_return;
  }
  if (console_stats_only_ && admin::mutating(parsed.command->verb)) {
    error(out, kInsufficientPrivilege, "admin access needed",
          "User \"" + user_ + "\" is in admin.stats_users: SHOW commands only.");
    co_return;
  }
  log::info("admin console command", {{"session", id_}, {"user", user_}, {"command", std::string(sql)}});
  co_await console_command(*parsed.command, out);
}

awaitable<void> ClientSession::console_command(admin::Command cmd, std::string& out) {
  if (!admin::mutating(cmd.verb)) {
    auto rows = co_await admin::show(cmd.verb, w_.io(), w_.runtime(), w_.config());
    rows.encode(out);
    co_return;
  }
  auto outcome = co_await admin::run(cmd, w_.io(), w_.runtime(), w_.config());
  if (outcome.ok())
    p::append_command_complete(out, admin::command_tag(cmd.verb));
  else
    error(out, outcome.sqlstate.c_str(), outcome.message, outcome.hint);
}

bool ClientSession::end_console_at_shutdown() {
  if (console_ending_) return false;
  console_ending_ = true;
  cancel_client_io();
  return true;
}

awaitable<void> ClientSession::wait_while_paused() {
  auto& controls = w_.runtime().admin;
  paused_since_ = pool::Clock::now();
  asio::steady_timer poll(w_.io());
  // A drain lifts the pause for this client: its transaction runs and it is then ended, as any other.
  while (!client_done_ && !w_.draining() && controls.paused(database_)) {
    poll.expires_after(kPausePoll);
    net::error_code ec;
    co_await poll.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  paused_since_ = {};
}

void ClientSession::admin_kill() {
  if (client_done_ || console_) return;
  log::info("client killed from the admin console", {{"session", id_}, {"client", peer_}});
  pending_fatal_sqlstate_ = p::sqlstate::admin_shutdown;
  pending_fatal_message_ =
      "terminating connection: database \"" + database_ + "\" was killed from the admin console";
  client_done_ = true;  // as check_timeouts: the relay loops stop and the epilogue sends the FATAL
  cancel_io();
}

admin::SessionRow ClientSession::admin_row() const {
  admin::SessionRow r;
  r.console = console_;
  auto& c = r.client;
  c.user = user_;
  c.database = database_;
  int fd = tls_ ? int(const_cast<net::TlsStream&>(*tls_).next_layer().native_handle()) : plain_.fd;
  endpoint_of(fd, false, c.addr, c.port);
  endpoint_of(fd, true, c.local_addr, c.local_port);
  c.connect_time = std::chrono::duration_cast<std::chrono::seconds>(connected_at_.time_since_epoch()).count();
  c.request_time = admin::unix_time(last_activity_);
  c.ptr = fmt::format("{:x}", id_);
  auto now = pool::Clock::now();
  bool paused = paused_since_.time_since_epoch().count() != 0;
  r.paused = paused;
  r.waiting = paused || line_.queued;
  if (r.waiting)
    c.wait_us =
        std::chrono::duration_cast<std::chrono::microseconds>(now - (paused ? paused_since_ : line_.started))
            .count();
  c.state = r.waiting ? "waiting" : "active";
  r.pool = attached_.server ? attached_.pool : pool_;
  for (const auto& slot : held_)
    if (slot.server) r.kept.emplace_back(slot.pool, server_row(*slot.server, slot.pool, c));
  for (const auto& [server, pool] : coordinated_servers())
    r.kept.emplace_back(pool, server_row(*server, pool, c));
  if (!attached_.server) return r;
  r.server = server_row(*attached_.server, attached_.pool, c);
  c.link = r.server->ptr;
  return r;
}

// A server of this client's, linked to it, as SHOW SERVERS lists it.
admin::ConnectionRow ClientSession::server_row(const pool::ServerConnection& server, const pool::Pool* pool,
                                               const admin::ConnectionRow& client) const {
  admin::ConnectionRow s;
  s.user = server.target.user;
  s.database = database_;
  s.state = "active";
  s.addr = server.target.host;
  s.port = server.target.port;
  endpoint_of(const_cast<tcp::socket&>(server.socket).native_handle(), true, s.local_addr, s.local_port);
  s.connect_time = admin::unix_time(server.created);
  s.request_time = client.request_time;
  s.close_needed = pool && pool->retired(server);
  s.ptr = hex(&server);
  s.link = client.ptr;
  return s;
}

}  // namespace pgrouter::session
