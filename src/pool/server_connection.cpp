// Backend connection set-up and login; the relay itself lives in session/.
#include "pgrouter/pool/server_connection.hpp"
#include "pgrouter/util/strings.hpp"

#include <sys/socket.h>

#include <openssl/err.h>

#include <cstdio>

#include "pgrouter/control/log.hpp"
#include "pgrouter/net/io.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/md5.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/protocol/scram.hpp"

namespace pgrouter::pool {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

bool ServerConnection::looks_alive() {
  if (!socket.is_open()) return false;
  char b;
  ssize_t n = ::recv(socket.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;  // closed by the server
  if (n > 0) return false;   // unsolicited bytes: not clean
  if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
  return !ssl || SSL_pending(ssl.get()) == 0;  // decrypted bytes waiting are unsolicited too
}

awaitable<net::error_code> ServerConnection::read_exact(char* dst, size_t n) {
  if (ssl) return net::tls_read_exact(socket, ssl.get(), dst, n);
  return net::read_exact(socket, dst, n);
}

awaitable<net::error_code> ServerConnection::write_all(const std::string& data) {
  if (ssl) return net::tls_write_all(socket, ssl.get(), data.data(), data.size());
  return net::write_all(socket, data.data(), data.size());
}

void ServerConnection::say_goodbye() {
  if (!socket.is_open()) return;
  std::string bye;
  p::append_terminate(bye);
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  if (ssl) {
    socket.native_non_blocking(true, ec);
    ERR_clear_error();
    SSL_write(ssl.get(), bye.data(), int(bye.size()));
    SSL_shutdown(ssl.get());  // close_notify; the server's answer is not waited for
    ERR_clear_error();
  } else {
    socket.write_some(asio::buffer(bye), ec);  // never blocks
  }
}

namespace {

// How a message type byte reads in an error: the letter, or its code when it is not printable.
std::string type_name(char type) {
  auto u = static_cast<unsigned char>(type);
  if (u >= 0x21 && u <= 0x7e) return std::string("'") + type + "'";
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", u);
  return hex;
}

}  // namespace

awaitable<bool> read_server_message(ServerConnection& c, char& type, std::string& body, uint32_t max_length,
                                    std::string* why) {
  char hdr[5];
  // Bytes may already be buffered from the relay; login/reset never leave partial data there.
  if (!c.buffer.empty()) {
    if (why) *why = "left unread bytes behind";
    co_return false;
  }
  auto ec = co_await c.read_exact(hdr, 5);
  if (ec) {
    if (why) *why = "closed the connection (" + ec.message() + ")";
    co_return false;
  }
  type = hdr[0];
  uint32_t len = p::read_be32(hdr + 1);
  // Checked before anything is allocated or waited for: a hostile length must cost neither memory nor the
  // time until the connect timeout.
  if (len < 4 || len > max_length) {
    if (why)
      *why = "sent an invalid message length " + std::to_string(len) + " for message type " +
             type_name(type) + " (at most " + std::to_string(max_length) + " bytes expected here)";
    co_return false;
  }
  body.resize(len - 4);
  if (len > 4) {
    ec = co_await c.read_exact(body.data(), body.size());
    if (ec) {
      if (why) *why = "closed the connection in the middle of a message (" + ec.message() + ")";
      co_return false;
    }
  }
  co_return true;
}

awaitable<bool> ServerConnection::run_quietly(const std::string& sql, ServerError* err) {
  std::string out;
  p::append_query(out, sql);
  bool ok = co_await run_messages(std::move(out), sql.substr(0, sql.find(' ')), nullptr, err);
  co_return ok;
}

awaitable<bool> ServerConnection::run_lookup(const std::string& sql, const std::string& param, Rows& rows,
                                             ServerError* err) {
  std::string out;
  p::append_parse(out, "", sql, p::kNoParameterTypes);
  std::string params;  // no parameter formats (text), one parameter, no result formats (text)
  p::put_be16(params, 0);
  p::put_be16(params, 1);
  p::put_be32(params, uint32_t(param.size()));
  params += param;
  params.append("\0\0", 2);
  p::append_bind(out, "", "", params);
  p::append_execute(out, "");
  p::append_sync(out);
  // The unnamed statement is pgrouter's now: no client may count on what it parsed there before.
  statements.unnamed_owner = 0;
  bool ok = co_await run_messages(std::move(out), "auth_query", &rows, err);
  co_return ok;
}

awaitable<bool> ServerConnection::run_messages(std::string out, std::string label, Rows* rows,
                                               ServerError* err) {
  // A server that stops answering must not keep this connection, and its pool slot, forever (a reset runs
  // with no client waiting on it): past quiet_timeout the pending wait is cancelled and the run fails. The
  // socket is cancelled, not closed: it may still be registered with the relay's readiness set.
  struct Watch {
    bool done = false;
    bool fired = false;
  };
  auto watch = std::make_shared<Watch>();
  asio::steady_timer watchdog(socket.get_executor());
  if (quiet_timeout.count() > 0) {
    watchdog.expires_after(quiet_timeout);
    watchdog.async_wait([watch, s = &socket](boost::system::error_code ec) {
      if (!ec && !watch->done) {
        watch->fired = true;
        boost::system::error_code ignored;
        s->cancel(ignored);
      }
    });
  }
  auto fail = [&](const char* sqlstate, std::string what) {
    watch->done = true;
    watchdog.cancel();
    if (watch->fired) {
      sqlstate = p::sqlstate::connection_failure;
      what = "did not answer pgrouter's " + label + " within " + std::to_string(quiet_timeout.count()) +
             " ms (pool.connect_timeout); the connection was closed";
    }
    if (err && !err->from_server) {
      err->sqlstate = sqlstate;
      err->message = "server " + util::host_port(target.host, target.port) + " " + what;
    }
    return false;
  };
  if (co_await write_all(out))
    co_return fail(p::sqlstate::connection_failure, "closed the connection (while being sent a query)");
  bool ok = true;
  for (;;) {
    char type;
    std::string body;
    std::string why;
    // fired is checked too: the timer may have run while a completed wait was still queued.
    if (watch->fired || !co_await read_server_message(*this, type, body, kMaxQuietMessage, &why))
      co_return fail(
          why.starts_with("sent") ? p::sqlstate::protocol_violation : p::sqlstate::connection_failure, why);
    if (type == be::kErrorResponse) {
      ok = false;
      if (err) {
        auto f = p::parse_error_fields(body);
        err->sqlstate = f.code;
        err->message = f.message;
        err->from_server = true;
      }
    } else if (type == be::kParameterStatus) {
      if (auto kv = p::parse_parameter_status(body)) set_param(kv->first, kv->second);
    } else if (type == be::kDataRow && rows) {
      rows->push_back(p::data_row_texts(body));
    } else if (type == be::kReadyForQuery) {
      watch->done = true;
      watchdog.cancel();
      tx_status = body.empty() ? 'I' : body[0];
      co_return ok;
    }
  }
}

namespace {

// Where a login stands. A server may only move it forward, one step at a time, the way PostgreSQL does; any
// other message is a protocol violation, so a server cannot skip the proof that it knows the password (an
// AuthenticationOk in place of SASLFinal) or have pgrouter answer one request twice.
enum class LoginStep {
  started,        // startup packet sent: an authentication request, ErrorResponse or NegotiateProtocolVersion
  password_sent,  // cleartext or md5 answered: AuthenticationOk (or an error)
  scram_first,    // SASLInitialResponse sent: SASLContinue
  scram_final,    // SASLResponse sent: SASLFinal
  scram_verified,  // server signature checked: AuthenticationOk
  authenticated,   // ParameterStatus, BackendKeyData, then ReadyForQuery
};

}  // namespace

awaitable<bool> start_tls(ServerConnection& c, const ServerTarget& t, ServerError& err) {
  if (t.tls.sslmode == net::SslMode::disable) co_return true;
  const std::string server = "server " + util::host_port(t.host, t.port);
  const std::string mode = std::string("(sslmode=") + net::sslmode_name(t.tls.sslmode) + ")";
  auto fail = [&](std::string what) {
    err = {p::sqlstate::connection_failure, std::move(what), false};
    return false;
  };
  if (!t.tls_ctx) co_return fail("TLS to " + server + " is not available: " + t.tls_error);
  std::string request;
  p::put_be32(request, 8);
  p::put_be32(request, p::kSslRequestCode);
  char answer = 0;
  auto ec = co_await net::write_all(c.socket, request.data(), request.size());
  if (!ec) ec = co_await net::read_exact(c.socket, &answer, 1);
  if (ec)
    co_return fail(server + " closed the connection before answering pgrouter's SSLRequest (" + ec.message() +
                   ")");
  if (answer == 'N') {
    if (t.tls.sslmode == net::SslMode::prefer) co_return true;
    co_return fail(server + " refused TLS " + mode);
  }
  if (answer != 'S')
    co_return fail(server + " answered pgrouter's SSLRequest with " + type_name(answer) +
                   " (expected 'S' or 'N')");
  std::string why;
  c.ssl = co_await net::tls_connect(c.socket, t.tls_ctx->get(), t.tls, t.host, why);
  if (!c.ssl) co_return fail("TLS handshake with " + server + " failed: " + why + " " + mode);
  c.ready.use_tls(c.ssl.get());
  co_return true;
}

namespace {

// The SASL mechanism to use from a server's list (NUL-separated): SCRAM-SHA-256-PLUS when on TLS with a
// certificate to bind to, else SCRAM-SHA-256; empty when neither is offered.
const char* login_method_name(uint32_t code) {
  return code == 3 ? "a cleartext password" : code == 5 ? "an md5 password" : "SCRAM-SHA-256";
}

std::string choose_sasl(ServerConnection& c, std::string_view offered, p::scram::ClientExchange& scram) {
  bool plain = false, plus = false;
  for (size_t start = 0; start < offered.size();) {
    size_t end = offered.find('\0', start);
    if (end == std::string_view::npos) end = offered.size();
    auto name = offered.substr(start, end - start);
    plain = plain || name == "SCRAM-SHA-256";
    plus = plus || name == "SCRAM-SHA-256-PLUS";
    start = end + 1;
  }
  if (plus && c.ssl) {
    if (auto hash = net::server_end_point_hash(c.ssl.get()); !hash.empty()) {
      scram.bind_channel(std::move(hash));
      return "SCRAM-SHA-256-PLUS";
    }
  }
  return plain ? "SCRAM-SHA-256" : "";
}

awaitable<bool> login(ServerConnection& c, const ServerTarget& t, ServerError& err) {
  const std::string server = "server " + util::host_port(t.host, t.port);
  auto fail = [&](const char* sqlstate, std::string what) {
    err = {sqlstate, server + " " + what, false};
    return false;
  };
  auto violation = [&](std::string what) { return fail(p::sqlstate::protocol_violation, std::move(what)); };
  std::string out;
  p::append_startup(out, {{"user", t.user}, {"database", t.dbname}});
  if (co_await c.write_all(out)) {
    err = {p::sqlstate::cannot_connect, "could not send the startup packet to " + server, false};
    co_return false;
  }
  std::unique_ptr<p::scram::ClientExchange> scram;
  LoginStep step = LoginStep::started;
  for (;;) {
    char type;
    std::string body;
    std::string why;
    if (!co_await read_server_message(c, type, body, kMaxLoginMessage, &why)) {
      co_return fail(
          why.starts_with("sent") ? p::sqlstate::protocol_violation : p::sqlstate::connection_failure,
          why + " during login");
    }
    switch (type) {
      case be::kAuthentication: {
        if (body.size() < 4) co_return violation("sent a malformed authentication request");
        uint32_t code = p::read_be32(body.data());
        std::string_view data(body.data() + 4, body.size() - 4);
        // Each request is valid at one step only (see LoginStep).
        bool in_order = (code == 0 && (step == LoginStep::started || step == LoginStep::password_sent ||
                                       step == LoginStep::scram_verified)) ||
                        ((code == 3 || code == 5 || code == 10) && step == LoginStep::started) ||
                        (code == 11 && step == LoginStep::scram_first) ||
                        (code == 12 && step == LoginStep::scram_final);
        if (!in_order && (code == 0 || code == 3 || code == 5 || code == 10 || code == 11 || code == 12)) {
          if (code == 0 && scram)
            co_return violation(
                "sent AuthenticationOk before the SCRAM exchange was complete (it never proved "
                "it knows the password)");
          co_return violation("sent authentication request " + std::to_string(code) + " out of order");
        }
        out.clear();
        if (code == 0) {  // AuthenticationOk
          step = LoginStep::authenticated;
          break;
        }
        // A user found by auth_file or auth_query may come with a secret and no password (see
        // ServerTarget): each method can use only some kinds of secret.
        bool plain = !t.password.empty() || (t.md5_hash.empty() && t.scram_client_key.empty());
        if ((code == 3 && !plain) || (code == 5 && !plain && t.md5_hash.empty()) ||
            (code == 10 && !plain && t.scram_client_key.empty()))
          co_return fail(p::sqlstate::invalid_password,
                         "asks user \"" + t.user + "\" for " + login_method_name(code) +
                             ", which pgrouter cannot answer with the secret it has for this user (" +
                             (t.md5_hash.empty() ? "a SCRAM verifier, usable for SCRAM only after the "
                                                   "client logged in with SCRAM"
                                                 : "an md5 hash, usable for md5 only") +
                             ")");
        if (code == 3) {
          p::append_password(out, t.password);
          step = LoginStep::password_sent;
        } else if (code == 5) {
          if (data.size() < 4) co_return violation("sent a malformed md5 request");
          std::string stored = plain ? p::md5::stored_hash(t.user, t.password) : t.md5_hash;
          p::append_password(out, p::md5::response(stored, data.substr(0, 4)));
          step = LoginStep::password_sent;
        } else if (code == 10) {
          if (plain)
            scram = std::make_unique<p::scram::ClientExchange>(t.password);
          else
            scram = std::make_unique<p::scram::ClientExchange>(
                p::scram::PassthroughKeys{t.scram_client_key, t.scram_server_key});
          auto mechanism = choose_sasl(c, data, *scram);
          if (mechanism.empty())
            co_return fail(p::sqlstate::feature_not_supported, "offers no SASL mechanism pgrouter supports");
          log::debug("server login: SASL mechanism",
                     {{"server", util::host_port(t.host, t.port)}, {"mechanism", mechanism}});
          p::append_sasl_initial(out, mechanism, scram->client_first());
          step = LoginStep::scram_first;
        } else if (code == 11) {
          auto final_msg = scram->handle_server_first(data, why);
          if (!final_msg) co_return violation("sent a bad SCRAM server-first-message: " + why);
          p::append_sasl_response(out, *final_msg);
          step = LoginStep::scram_final;
        } else if (code == 12) {
          // A wrong signature: whoever answers does not know pgrouter's password for this role, so it is not
          // the server configured (or something sits in between). Not 28P01: the client's password is fine.
          if (!scram->verify_server_final(data, why))
            co_return fail(p::sqlstate::cannot_connect, "failed SCRAM authentication: " + why);
          step = LoginStep::scram_verified;
        } else {
          co_return fail(p::sqlstate::feature_not_supported,
                         "asked for an authentication method pgrouter does not support (code " +
                             std::to_string(code) + ")");
        }
        if (!out.empty() && co_await c.write_all(out))
          co_return fail(p::sqlstate::connection_failure, "closed the connection during login");
        break;
      }
      case be::kErrorResponse: {
        auto f = p::parse_error_fields(body);
        err = {f.code.empty() ? p::sqlstate::cannot_connect : f.code, f.message, true};
        co_return false;
      }
      case be::kNoticeResponse:  // nothing to do
        break;
      case be::kNegotiateProtocolVersion:  // pgrouter asks for nothing optional, so nothing to negotiate
        if (step != LoginStep::started)
          co_return violation("sent NegotiateProtocolVersion after authentication began");
        break;
      case be::kParameterStatus:
        if (step != LoginStep::authenticated)
          co_return violation("sent ParameterStatus before authentication");
        if (auto kv = p::parse_parameter_status(body)) c.set_param(kv->first, kv->second);
        break;
      case be::kBackendKeyData:
        if (step != LoginStep::authenticated)
          co_return violation("sent BackendKeyData before authentication");
        if (body.size() != 8) co_return violation("sent a malformed BackendKeyData");
        c.backend_pid = p::read_be32(body.data());
        c.backend_secret = p::read_be32(body.data() + 4);
        break;
      case be::kReadyForQuery:
        if (step != LoginStep::authenticated) co_return violation("sent ReadyForQuery before authentication");
        c.tx_status = body.empty() ? 'I' : body[0];
        co_return true;
      default:
        co_return violation("sent unexpected message type " + type_name(type) + " during login");
    }
  }
}

}  // namespace

awaitable<std::unique_ptr<ServerConnection>> connect_server(asio::any_io_executor ex,
                                                            const ServerTarget& target,
                                                            std::chrono::milliseconds timeout,
                                                            ServerError& err) {
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
  auto endpoints = co_await resolver.async_resolve(target.host, std::to_string(target.port),
                                                   asio::redirect_error(use_awaitable, ec));
  if (!ec) co_await asio::async_connect(conn->socket, endpoints, asio::redirect_error(use_awaitable, ec));
  bool ok = false;
  if (ec) {
    err = {p::sqlstate::cannot_connect,
           "could not connect to server " + util::host_port(target.host, target.port) + ": " + ec.message(),
           false};
  } else {
    net::tune_socket(conn->socket);
    ok = co_await start_tls(*conn, target, err) && co_await login(*conn, target, err);
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
  conn->quiet_timeout = timeout;
  conn->created = conn->idle_since = Clock::now();
  co_return conn;
}

}  // namespace pgrouter::pool
