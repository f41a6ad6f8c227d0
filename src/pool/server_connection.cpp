// Backend connection set-up and login; the relay itself lives in session/.
#include "pgrouter/pool/server_connection.hpp"
#include "pgrouter/util/strings.hpp"

#include <sys/socket.h>

#include "pgrouter/control/log.hpp"
#include "pgrouter/net/io.hpp"
#include "pgrouter/protocol/md5.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/protocol/scram.hpp"

namespace pgrouter::pool {
namespace p = pgrouter::protocol;

bool ServerConnection::looks_alive() {
  if (!socket.is_open()) return false;
  char b;
  ssize_t n = ::recv(socket.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;                                  // closed by the server
  if (n > 0) return false;                                   // unsolicited bytes: not clean
  return errno == EAGAIN || errno == EWOULDBLOCK;
}

awaitable<bool> read_server_message(ServerConnection& c, char& type, std::string& body) {
  char hdr[5];
  // Bytes may already be buffered from the relay; login/reset never leave partial data there.
  if (!c.buffer.empty()) co_return false;
  auto ec = co_await net::read_exact(c.socket, hdr, 5);
  if (ec) co_return false;
  type = hdr[0];
  uint32_t len = p::read_be32(hdr + 1);
  if (len < 4 || len > 64u * 1024 * 1024) co_return false;
  body.resize(len - 4);
  if (len > 4) {
    ec = co_await net::read_exact(c.socket, body.data(), body.size());
    if (ec) co_return false;
  }
  co_return true;
}

awaitable<bool> ServerConnection::run_quietly(const std::string& sql, ServerError* err) {
  std::string out;
  p::append_query(out, sql);
  if (co_await net::write_all(socket, out)) co_return false;
  bool ok = true;
  for (;;) {
    char type;
    std::string body;
    if (!co_await read_server_message(*this, type, body)) co_return false;
    if (type == 'E') {
      ok = false;
      if (err) {
        auto f = p::parse_error_fields(body);
        err->sqlstate = f.code;
        err->message = f.message;
        err->from_server = true;
      }
    } else if (type == 'S') {
      if (auto kv = p::parse_parameter_status(body)) set_param(kv->first, kv->second);
    } else if (type == 'Z') {
      tx_status = body.empty() ? 'I' : body[0];
      co_return ok;
    }
  }
}

namespace {

awaitable<bool> login(ServerConnection& c, const ServerTarget& t, ServerError& err) {
  std::string out;
  p::append_startup(out, {{"user", t.user}, {"database", t.dbname}});
  if (co_await net::write_all(c.socket, out)) {
    err = {p::sqlstate::cannot_connect, "could not send startup packet to server", false};
    co_return false;
  }
  std::unique_ptr<p::scram::ClientExchange> scram;
  for (;;) {
    char type;
    std::string body;
    if (!co_await read_server_message(c, type, body)) {
      err = {p::sqlstate::connection_failure, "server closed the connection during login", false};
      co_return false;
    }
    switch (type) {
      case 'R': {
        if (body.size() < 4) {
          err = {p::sqlstate::protocol_violation, "malformed authentication request from server", false};
          co_return false;
        }
        uint32_t code = p::read_be32(body.data());
        std::string_view data(body.data() + 4, body.size() - 4);
        out.clear();
        if (code == 0) break;  // AuthenticationOk
        if (code == 3) {
          p::append_password(out, t.password);
        } else if (code == 5) {
          if (data.size() < 4) {
            err = {p::sqlstate::protocol_violation, "malformed md5 request from server", false};
            co_return false;
          }
          p::append_password(out, p::md5::response(p::md5::stored_hash(t.user, t.password), data.substr(0, 4)));
        } else if (code == 10) {
          if (data.find("SCRAM-SHA-256") == std::string_view::npos) {
            err = {p::sqlstate::feature_not_supported, "server offers no SASL mechanism pgrouter supports", false};
            co_return false;
          }
          scram = std::make_unique<p::scram::ClientExchange>(t.password);
          p::append_sasl_initial(out, "SCRAM-SHA-256", scram->client_first());
        } else if (code == 11 && scram) {
          std::string why;
          auto final_msg = scram->handle_server_first(data, why);
          if (!final_msg) {
            err = {p::sqlstate::protocol_violation, "SCRAM exchange with server failed: " + why, false};
            co_return false;
          }
          p::append_sasl_response(out, *final_msg);
        } else if (code == 12 && scram) {
          std::string why;
          if (!scram->verify_server_final(data, why)) {
            err = {p::sqlstate::invalid_password, "server's SCRAM signature is wrong: " + why, false};
            co_return false;
          }
        } else {
          err = {p::sqlstate::feature_not_supported,
                 "server asked for an authentication method pgrouter does not support (code " +
                     std::to_string(code) + ")",
                 false};
          co_return false;
        }
        if (!out.empty() && co_await net::write_all(c.socket, out)) {
          err = {p::sqlstate::connection_failure, "server closed the connection during login", false};
          co_return false;
        }
        break;
      }
      case 'E': {
        auto f = p::parse_error_fields(body);
        err = {f.code.empty() ? p::sqlstate::cannot_connect : f.code, f.message, true};
        co_return false;
      }
      case 'S': {
        if (auto kv = p::parse_parameter_status(body)) c.set_param(kv->first, kv->second);
        break;
      }
      case 'K':
        if (body.size() == 8) {
          c.backend_pid = p::read_be32(body.data());
          c.backend_secret = p::read_be32(body.data() + 4);
        }
        break;
      case 'Z':
        c.tx_status = body.empty() ? 'I' : body[0];
        co_return true;
      default:
        break;  // NoticeResponse, NegotiateProtocolVersion: nothing to do
    }
  }
}

}  // namespace

awaitable<std::unique_ptr<ServerConnection>> connect_server(asio::any_io_executor ex, const ServerTarget& target,
                                                            std::chrono::milliseconds timeout, ServerError& err) {
  auto conn = std::make_unique<ServerConnection>(ex);
  conn->target = target;
  // One watchdog for the whole connect + login: closing the socket aborts whatever step is pending.
  // Its state is shared because the handler may already be queued when this coroutine finishes.
  struct Watch {
    bool done = false;
    bool timed_out = false;
    tcp::socket* socket = nullptr;
  };
  auto watch = std::make_shared<Watch>();
  watch->socket = &conn->socket;
  asio::steady_timer watchdog(ex);
  watchdog.expires_after(timeout);
  watchdog.async_wait([watch](boost::system::error_code ec) {
    if (!ec && !watch->done) {
      watch->timed_out = true;
      boost::system::error_code ignored;
      watch->socket->close(ignored);
    }
  });
  net::error_code ec;
  tcp::resolver resolver(ex);
  auto endpoints =
      co_await resolver.async_resolve(target.host, std::to_string(target.port), asio::redirect_error(use_awaitable, ec));
  if (!ec) co_await asio::async_connect(conn->socket, endpoints, asio::redirect_error(use_awaitable, ec));
  bool ok = false;
  if (ec) {
    err = {p::sqlstate::cannot_connect,
           "could not connect to server " + util::host_port(target.host, target.port) + ": " + ec.message(),
           false};
  } else {
    net::tune_socket(conn->socket);
    ok = co_await login(*conn, target, err);
  }
  watch->done = true;
  watchdog.cancel();
  if (watch->timed_out) {
    err = {p::sqlstate::cannot_connect,
           "timed out connecting to server " + util::host_port(target.host, target.port) + " after " +
               std::to_string(timeout.count()) + " ms",
           false};
    ok = false;
  }
  if (!ok) co_return nullptr;
  conn->created = conn->idle_since = Clock::now();
  co_return conn;
}

}  // namespace pgrouter::pool
