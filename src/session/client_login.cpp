// The client session's login stage: startup packet (SSLRequest, GSSENCRequest, CancelRequest, protocol
// negotiation), authentication (trust, cleartext, md5, SCRAM-SHA-256) and the welcome (a server attached
// in session pooling, the startup parameters recorded in transaction pooling), then the hand-over to the
// relay.
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <strings.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <type_traits>

#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/protocol/md5.hpp"
#include "pgrouter/protocol/scram.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
using control::AuthMethod;

namespace {
// Unauthenticated clients may not make pgrouter allocate much.
constexpr uint32_t kMaxAuthMessage = 65535;  // PG_MAX_AUTH_TOKEN_LENGTH

// Startup parameters that are about the connection itself, not session settings to apply.
bool is_connection_param(std::string_view k) {
  return k == "user" || k == "database" || k == "replication" || k == "options" || k.substr(0, 5) == "_pq_.";
}

}  // namespace

template <typename Stream>
awaitable<void> ClientSession::fail(Stream& s, const char* sqlstate, std::string message, std::string hint) {
  std::string out;
  p::append_error(out, "FATAL", sqlstate, message, {}, hint);
  w_.stats().count_error(sqlstate, true);
  co_await net::write_all(s, out);
}

awaitable<net::error_code> ClientSession::plain_login_read(char* dst, size_t n) {
  // Whatever the client sent is read at once (one recv for a whole startup packet, not a header and then a
  // body); bytes past the message asked for stay in client_buf_, where the next login read or the relay
  // finds them.
  auto& b = client_buf_;
  net::error_code ec;
  while (b.size() < n) {
    b.reserve_message(n);
    size_t got = 0;
    if (!client_ready_.read_now(b.write_ptr(), b.write_space(), got, ec))
      got = co_await client_ready_.read_some(b.write_ptr(), b.write_space(), ec);  // waits for the data
    if (ec) co_return ec;
    b.commit(got);
  }
  std::memcpy(dst, b.data(), n);
  b.consume(n);
  co_return ec;
}

template <typename Stream>
awaitable<net::error_code> ClientSession::login_read(Stream& s, char* dst, size_t n) {
  if constexpr (std::is_same_v<Stream, net::PlainStream>)
    return plain_login_read(dst, n);
  else
    return net::read_exact(s, dst, n);
}

template <typename Stream>
awaitable<bool> ClientSession::read_startup_on(Stream& s, p::StartupPacket& out) {
  char len_buf[4];
  if (co_await login_read(s, len_buf, 4)) co_return false;
  uint32_t len = p::read_be32(len_buf);
  if (len < 8 || len > p::kMaxStartupPacket) {
    // As PostgreSQL: logged, and the connection closed without a word (a reply would be read as garbage by
    // whatever sent this, and drivers that already gave up raise it).
    log::info("invalid length of startup packet; connection closed",
              {{"session", id_}, {"client", peer_}, {"length", uint64_t(len)}});
    co_return false;
  }
  std::string body(len - 4, '\0');
  if (co_await login_read(s, body.data(), body.size())) co_return false;
  std::string why;
  auto sp = p::parse_startup(body, why);
  if (!sp) {
    co_await fail(s, p::sqlstate::protocol_violation, "invalid startup packet: " + why);
    co_return false;
  }
  out = std::move(*sp);
  co_return true;
}

void ClientSession::login_timed_out() {
  log::info("client login timed out", {{"session", id_}, {"client", peer_}});
  if (tls_) {
    boost::system::error_code ignored;
    tls_->next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    tls_->next_layer().cancel(ignored);
  } else {
    ::shutdown(plain_.fd, SHUT_RDWR);
    client_ready_.cancel();
  }
}

bool ClientSession::begin_login() {
  auto& rt = w_.runtime();
  w_.stats().client_connections_total.fetch_add(1, std::memory_order_relaxed);
  counted_client_ = true;
  now_clients_ = rt.clients.fetch_add(1, std::memory_order_relaxed) + 1;
  net::tune_socket(plain_.fd);
  if (!client_ready_.attach(w_.readiness(), plain_.fd)) {
    log::error("cannot register a client connection with the worker's readiness set",
               {{"session", id_}, {"client", peer_}, {"error", std::string(std::strerror(errno))}});
    return false;
  }
  // A login that does not finish in time is cut off, whatever stage it is stuck in (login_timed_out).
  login_watch_.session = this;
  w_.watch_login(login_watch_, config_->listen.client_login_timeout);
  answer_encryption_request_now();
  return true;
}

void ClientSession::answer_encryption_request_now() {
  // With TCP_DEFER_ACCEPT the client's first message is usually there when the connection is accepted. The
  // SSLRequest that libpq sends first by default (sslmode=prefer), or a GSSENCRequest, is answered 'N' here
  // in the accept loop, as PgBouncer does, when no TLS is configured: the client's next step does not wait
  // for the login coroutine to be scheduled behind the rest of the worker's batch (a client that connects
  // synchronously, such as pgbench -C, waits for every such step). Anything else, or more than the request
  // (see the CVE-2021-23214 check in login), is left in client_buf_ for login() to read.
  if (w_.tls()) return;
  auto& b = client_buf_;
  b.reserve_message(8);
  size_t got = 0;
  net::error_code ec;
  if (!client_ready_.read_now(b.write_ptr(), b.write_space(), got, ec) || ec) return;
  b.commit(got);
  if (b.size() != 8 || p::read_be32(b.data()) != 8) return;
  uint32_t code = p::read_be32(b.data() + 4);
  if (code != p::kSslRequestCode && code != p::kGssEncRequestCode) return;
  size_t written = 0;
  if (!client_ready_.write_now("N", 1, written, ec) || ec || written != 1) return;  // then login() answers
  b.consume(8);
  (code == p::kSslRequestCode ? early_ssl_ : early_gss_) = true;
}

awaitable<ClientSession::LoggedIn> ClientSession::login() {
  struct Unwatch {
    LoginWatch& w;
    ~Unwatch() { Worker::unwatch_login(w); }
  } unwatch{login_watch_};

  p::StartupPacket sp;
  bool tried_ssl = early_ssl_, tried_gss = early_gss_;  // answered by answer_encryption_request_now()
  for (;;) {
    if (!co_await read_startup_on(plain_, sp)) co_return LoggedIn::no;
    if (sp.code == p::kCancelRequestCode) {
      handle_cancel_request(sp);
      co_return LoggedIn::no;  // PostgreSQL closes a cancel connection without answering
    }
    if (sp.code == p::kSslRequestCode) {
      if (tried_ssl) {
        co_await fail(plain_, p::sqlstate::protocol_violation, "SSLRequest sent twice");
        co_return LoggedIn::no;
      }
      tried_ssl = true;
      // Bytes pipelined after SSLRequest would be processed as if they came over TLS (CVE-2021-23214). As
      // PostgreSQL does, what was read with the request is checked; later bytes go through the handshake.
      if (!client_buf_.empty()) {
        log::warn("client sent data after SSLRequest before the TLS handshake; closing",
                  {{"session", id_}, {"client", peer_}});
        co_return LoggedIn::no;
      }
      auto ctx = w_.tls();
      if (!ctx) {
        if (co_await net::write_all(plain_, "N", 1)) co_return LoggedIn::no;
        continue;
      }
      if (co_await net::write_all(plain_, "S", 1)) co_return LoggedIn::no;
      // From here Asio drives the connection (its TLS stream): out of the readiness set, into its reactor.
      client_ready_.detach();
      tcp::socket sock(w_.io());
      boost::system::error_code aec;
      sock.assign(v6_ ? tcp::v6() : tcp::v4(), plain_.fd, aec);
      if (aec) co_return LoggedIn::no;  // the destructor closes plain_.fd
      plain_.fd = -1;
      tls_ = std::make_unique<net::TlsStream>(std::move(sock), *ctx);
      net::error_code hec;
      co_await tls_->async_handshake(net::ssl::stream_base::server, asio::redirect_error(use_awaitable, hec));
      if (hec) {
        log::info("TLS handshake failed", {{"session", id_}, {"client", peer_}, {"error", hec.message()}});
        co_return LoggedIn::no;
      }
      p::StartupPacket tsp;
      if (!co_await read_startup_on(*tls_, tsp)) co_return LoggedIn::no;
      if (tsp.code == p::kSslRequestCode || tsp.code == p::kGssEncRequestCode ||
          tsp.code == p::kCancelRequestCode) {
        co_await fail(*tls_, p::sqlstate::protocol_violation, "unexpected request inside TLS");
        co_return LoggedIn::no;
      }
      if (now_clients_ > config_->listen.max_client_conn) {
        co_await fail(*tls_, p::sqlstate::too_many_connections,
                      "sorry, too many clients already (listen.max_client_conn = " +
                          std::to_string(config_->listen.max_client_conn) + ")");
        co_return LoggedIn::no;
      }
      bool in = co_await serve(*tls_, std::move(tsp));
      co_return in ? LoggedIn::tls : LoggedIn::no;
    }
    if (sp.code == p::kGssEncRequestCode) {
      if (tried_gss) {
        co_await fail(plain_, p::sqlstate::protocol_violation, "GSSENCRequest sent twice");
        co_return LoggedIn::no;
      }
      tried_gss = true;
      if (co_await net::write_all(plain_, "N", 1)) co_return LoggedIn::no;
      continue;
    }
    break;
  }
  if (now_clients_ > config_->listen.max_client_conn) {
    co_await fail(plain_, p::sqlstate::too_many_connections,
                  "sorry, too many clients already (listen.max_client_conn = " +
                      std::to_string(config_->listen.max_client_conn) + ")");
    co_return LoggedIn::no;
  }
  bool in = co_await serve(plain_, std::move(sp));
  co_return in ? LoggedIn::plain : LoggedIn::no;
}

template <typename Stream>
awaitable<bool> ClientSession::serve(Stream& s, p::StartupPacket sp) {
  if ((sp.code >> 16) != 3) {
    co_await fail(s, p::sqlstate::feature_not_supported,
                  "unsupported frontend protocol " + std::to_string(sp.code >> 16) + "." +
                      std::to_string(sp.code & 0xffff) + ": pgrouter supports protocol 3.0");
    co_return false;
  }
  std::vector<std::string> unrecognized;
  for (auto& [k, v] : sp.params)
    if (k.rfind("_pq_.", 0) == 0) unrecognized.push_back(k);
  if ((sp.code & 0xffff) != 0 || !unrecognized.empty()) {
    std::string out;
    p::append_negotiate_protocol_version(out, 0, unrecognized);
    if (co_await net::write_all(s, out)) co_return false;
  }
  if (auto* r = sp.find("replication"); r && *r != "false" && *r != "0" && *r != "off" && *r != "no") {
    co_await fail(s, p::sqlstate::feature_not_supported, "pgrouter does not proxy replication connections",
                  "Connect replication clients straight to PostgreSQL.");
    co_return false;
  }
  auto* user = sp.find("user");
  if (!user || user->empty()) {
    co_await fail(s, p::sqlstate::invalid_authorization,
                  "no PostgreSQL user name specified in startup packet");
    co_return false;
  }
  user_ = *user;
  auto* db = sp.find("database");
  database_ = (db && !db->empty()) ? *db : user_;

  if (!co_await authenticate(s, sp)) {
    w_.stats().client_login_failures_total.fetch_add(1, std::memory_order_relaxed);
    co_return false;
  }
  // Authenticated: from here waiting is bounded by pool.queue_timeout, not the login timeout.
  Worker::unwatch_login(login_watch_);
  if (admin::is_console_database(*config_, database_)) co_return co_await console_login();
  if (!resolve_database()) {
    co_await fail(s, p::sqlstate::unknown_database, "database \"" + database_ + "\" does not exist",
                  "pgrouter serves only the databases listed under \"databases:\" in its configuration "
                  "(and any other name when a \"*\" entry is listed).");
    w_.stats().client_login_failures_total.fetch_add(1, std::memory_order_relaxed);
    co_return false;
  }
  if (w_.runtime().admin.disabled(database_)) {
    co_await fail(s, p::sqlstate::object_not_in_prerequisite_state,
                  "database \"" + database_ + "\" is not currently accepting connections",
                  "The admin console disabled it (DISABLE); ENABLE lets clients in again.");
    w_.stats().client_login_failures_total.fetch_add(1, std::memory_order_relaxed);
    co_return false;
  }
  if (own_user_) w_.adopt_user(*db_, own_user_);  // its pools log in with what the login taught
  if (w_.runtime().admin.paused(database_)) co_await wait_while_paused();
  if (!co_await attach_and_welcome(s, sp)) co_return false;
  logged_in_ = true;
  w_.stats().clients_connected.fetch_add(1, std::memory_order_relaxed);
  log::debug("client logged in",
             {{"session", id_}, {"client", peer_}, {"user", user_}, {"database", database_}});
  co_return true;
}

template <typename Stream>
awaitable<bool> ClientSession::read_password_message(Stream& s, std::string& body, bool sasl) {
  char hdr[5];
  if (co_await login_read(s, hdr, 5)) co_return false;
  uint32_t len = p::read_be32(hdr + 1);
  if (hdr[0] != p::frontend::kPasswordMessage) {  // PostgreSQL's words, and its number for the type
    co_await fail(s, p::sqlstate::protocol_violation,
                  std::string(sasl ? "expected SASL response" : "expected password response") +
                      ", got message type " + std::to_string(int(uint8_t(hdr[0]))));
    co_return false;
  }
  if (len < 4 || len > kMaxAuthMessage) {
    // PostgreSQL logs "invalid message length"; a SASL exchange then fails as a wrong password does, a
    // password message closes without a word.
    if (sasl) {
      co_await fail(s, p::sqlstate::invalid_password,
                    "password authentication failed for user \"" + user_ + "\"");
      co_return false;
    }
    log::info("invalid authentication message length; connection closed",
              {{"session", id_}, {"client", peer_}, {"length", uint64_t(len)}});
    co_return false;
  }
  body.assign(len - 4, '\0');
  if (len > 4 && co_await login_read(s, body.data(), body.size())) co_return false;
  co_return true;
}

template <typename Stream>
awaitable<bool> ClientSession::authenticate(Stream& s, const p::StartupPacket&) {
  const control::AuthRule* rule = config_->match_auth(user_, database_, peer_);
  auto bad_password = [&]() -> awaitable<bool> {
    log::warn("client authentication failed", {{"session", id_},
                                               {"client", peer_},
                                               {"user", user_},
                                               {"database", database_},
                                               {"sqlstate", "28P01"}});
    co_await fail(s, p::sqlstate::invalid_password,
                  "password authentication failed for user \"" + user_ + "\"");
    co_return false;
  };
  if (!rule || rule->method == AuthMethod::reject) {
    log::warn("no auth rule allows connection", {{"session", id_},
                                                 {"client", peer_},
                                                 {"user", user_},
                                                 {"database", database_},
                                                 {"sqlstate", "28000"}});
    co_await fail(s, p::sqlstate::invalid_authorization,
                  "no pgrouter auth rule allows host \"" + peer_ + "\", user \"" + user_ + "\", database \"" +
                      database_ + "\"",
                  "Add a rule for this client under \"auth:\" in the pgrouter configuration.");
    co_return false;
  }
  // Precedence: users under `users:`, then auth_file, then auth_query (look_up_user).
  user_cfg_ = config_->find_user(user_);
  if (!user_cfg_) {
    std::string error;
    bool looked_up = co_await look_up_user(error);
    if (!looked_up) {
      log::warn(
          "user lookup failed",
          {{"session", id_}, {"client", peer_}, {"user", user_}, {"database", database_}, {"error", error}});
      co_await fail(s, p::sqlstate::cannot_connect, error,
                    "pgrouter looks up users not in its configuration with auth_query; check that the "
                    "database's primary is up and that auth_user may run the query.");
      co_return false;
    }
  }
  if (rule->method == AuthMethod::trust) {
    if (!user_cfg_) co_return co_await bad_password();
    co_return true;
  }
  std::string body;
  if (rule->method == AuthMethod::md5) {
    char salt[4];
    RAND_bytes(reinterpret_cast<unsigned char*>(salt), 4);
    std::string out;
    p::append_auth(out, 5, std::string_view(salt, 4));
    if (co_await net::write_all(s, out)) co_return false;
    if (!co_await read_password_message(s, body)) co_return false;
    std::string_view given(body.data(), body.find('\0') == std::string::npos ? body.size() : body.find('\0'));
    std::string stored;
    if (user_cfg_) {
      if (!user_cfg_->md5_hash.empty())
        stored = user_cfg_->md5_hash;
      else if (!user_cfg_->password.empty())
        stored = p::md5::stored_hash(user_, user_cfg_->password);
    }
    if (stored.empty()) co_return co_await bad_password();
    std::string expected = p::md5::response(stored, std::string_view(salt, 4));
    if (given.size() != expected.size() || CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0)
      co_return co_await bad_password();
    co_return true;
  }
  // SCRAM-SHA-256. Unknown users (and users with only an md5 secret) get a mock verifier so the
  // exchange looks the same and fails with the same message.
  p::scram::Verifier verifier;
  bool real = false;
  if (user_cfg_) {
    if (!user_cfg_->scram_verifier.empty()) {
      if (auto v = p::scram::parse_verifier(user_cfg_->scram_verifier)) {
        verifier = *v;
        real = true;
      }
    } else if (!user_cfg_->password.empty()) {
      verifier = w_.scram_verifier_for(*user_cfg_);
      real = true;
    }
  }
  if (!real) verifier = p::scram::mock_verifier(user_, w_.runtime().mock_secret);
  std::string out;
  p::append_auth(out, 10, std::string_view("SCRAM-SHA-256\0\0", 15));
  if (co_await net::write_all(s, out)) co_return false;
  if (!co_await read_password_message(s, body, true)) co_return false;
  size_t pos = 0;
  auto mech = p::read_cstring(body, pos);
  if (!mech || *mech != "SCRAM-SHA-256" || body.size() < pos + 4) {
    co_await fail(s, p::sqlstate::protocol_violation,
                  "client selected an invalid SASL authentication mechanism",
                  "pgrouter offers SCRAM-SHA-256.");
    co_return false;
  }
  uint32_t dlen = p::read_be32(body.data() + pos);
  pos += 4;
  if (dlen == 0xffffffffu || body.size() - pos != dlen) {
    co_await fail(s, p::sqlstate::protocol_violation, "malformed SASLInitialResponse message");
    co_return false;
  }
  p::scram::ServerExchange ex(verifier);
  std::string why;
  auto server_first = ex.handle_client_first(std::string_view(body).substr(pos), why);
  if (!server_first) {
    co_await fail(s, p::sqlstate::protocol_violation, "malformed SCRAM message: " + why);
    co_return false;
  }
  out.clear();
  p::append_auth(out, 11, *server_first);
  if (co_await net::write_all(s, out)) co_return false;
  if (!co_await read_password_message(s, body, true)) co_return false;
  std::string server_final;
  auto result = ex.handle_client_final(body, server_final, why);
  if (result == p::scram::ServerExchange::Result::Malformed) {
    co_await fail(s, p::sqlstate::protocol_violation, "malformed SCRAM message: " + why);
    co_return false;
  }
  if (result != p::scram::ServerExchange::Result::Ok || !real) co_return co_await bad_password();
  if (own_user_ && !own_user_->scram_verifier.empty()) {
    // A user known only by its verifier: the client's proof gave its ClientKey, with which pgrouter logs
    // in to servers that hold the same verifier.
    own_user_->backend_scram_client_key = ex.client_key();
    own_user_->backend_scram_server_key = verifier.server_key;
  }
  out.clear();
  p::append_auth(out, 12, server_final);
  if (co_await net::write_all(s, out)) co_return false;
  co_return true;
}

template <typename Stream>
awaitable<bool> ClientSession::attach_and_welcome(Stream& s, const p::StartupPacket& sp) {
  pool_ = &pool_at(0);
  txn_mode_ = pool_->settings().config.mode == control::PoolMode::transaction;
  // Session pooling on a sharded database: transaction pooling's routing, with each shard's server held by
  // the session (client_held.cpp), so that no statement runs on a shard its rows are not on.
  hold_servers_ = !txn_mode_ && shard_map();
  if (hold_servers_) txn_mode_ = true;
  // The client's startup settings, re-applied to whichever server it gets (transaction pooling).
  for (auto& [k, v] : sp.params) {
    if (is_connection_param(k)) continue;
    if (!p::is_safe_identifier(k)) {
      co_await fail(s, p::sqlstate::protocol_violation, "invalid startup parameter name \"" + k + "\"");
      co_return false;
    }
    wanted_params_.emplace_back(k, v);
  }
  if (auto* opts = sp.find("options")) {
    // Supports the common "-c name=value" form (and "--name=value").
    std::string_view o = *opts;
    size_t i = 0;
    while (i < o.size()) {
      while (i < o.size() && o[i] == ' ') ++i;
      size_t j = o.find(' ', i);
      std::string_view tok = o.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i);
      i = j == std::string_view::npos ? o.size() : j;
      if (tok.empty() || tok == "-c") continue;
      if (tok.substr(0, 2) == "-c")
        tok.remove_prefix(2);
      else if (tok.substr(0, 2) == "--")
        tok.remove_prefix(2);
      auto eq = tok.find('=');
      if (eq == std::string_view::npos || !p::is_safe_identifier(tok.substr(0, eq))) {
        co_await fail(s, p::sqlstate::feature_not_supported,
                      "pgrouter understands only \"-c name=value\" in the options parameter");
        co_return false;
      }
      wanted_params_.emplace_back(std::string(tok.substr(0, eq)), std::string(tok.substr(eq + 1)));
    }
  }

  if (txn_mode_) {
    const auto& pc = pool_->settings().config;
    std::vector<std::pair<std::string, std::string>> parse_settings;
    for (auto& [k, v] : wanted_params_)
      if (std::string name = util::ascii_lower(k); TxnTracker::parse_setting(name))
        parse_settings.emplace_back(std::move(name), v);
    tracker_ = std::make_unique<TxnTracker>(
        w_.stats(), id_, size_t(pc.prepared_statements_cache),
        !hold_servers_ && pc.session_features == control::SessionFeatures::refuse, pc.track_parameters,
        std::move(parse_settings), pc.unnamed_statements == control::UnnamedStatements::prepare);
    if (hold_servers_) tracker_->client_pinned();  // every server it gets is its own until it disconnects
  }
  // The ParameterStatus set of the welcome: the pool's (transaction pooling, with the client's own startup
  // settings over it) or the session's server's. Pointed to, not copied: nothing below waits before it is
  // sent.
  const std::map<std::string, std::string>* welcome = nullptr;
  const pool::Pool* welcome_pool = nullptr;  // transaction pooling: the pool whose welcome it is
  if (hold_servers_) {
    // A held session's login server (when it needs one) is for the shard of the startup option
    // pgrouter.shard_key, else the default shard; an invalid key is refused here.
    std::optional<int> chosen;
    if (explicit_shard(chosen).kind == sharding::Need::Kind::refuse) {
      co_await fail(s, p::sqlstate::invalid_parameter_value,
                    "pgrouter.shard_key is not a valid " +
                        std::string(sharding::to_string(shard_map()->config().key_type)));
      co_return false;
    }
    shard_ = chosen.value_or(shard_map()->default_shard());
  }
  const auto& shard = this->shard();
  pool::Pool* params_pool = pool_;
  if (txn_mode_ && shard.auto_roles)  // role: auto: any host's parameters will do for a welcome
    for (size_t i = 1; i < shard.backends() && params_pool->welcome_params().empty(); ++i)
      params_pool = &pool_at(int(i));
  if (txn_mode_ && !params_pool->welcome_params().empty()) {
    // Transaction pooling: a login needs no server when the pool already knows the servers'
    // parameters; the client's own settings are applied at its first transaction.
    welcome_pool = params_pool;
  } else {
    // role: auto: the session's server (or the first welcome's) comes from the host that is the primary now.
    attached_.backend = 0;
    if (shard.auto_roles) {
      attached_.backend = primary_backend();
      if (attached_.backend < 0 &&
          txn_mode_)  // a transaction-pooled login only needs some server's parameters
        for (size_t i = 0; i < shard.backends() && attached_.backend < 0; ++i)
          if (const auto* h = health_of(int(i)); h && h->up.load() && h->probed.load())
            attached_.backend = int(i);
      if (attached_.backend < 0)
        attached_.backend = co_await await_primary(pool::Clock::now() + db_->routing.wait_for_primary);
      if (attached_.backend < 0) {
        attached_.backend = 0;
        std::string msg = no_primary_message();
        co_await fail(s, p::sqlstate::cannot_connect, msg);
        co_return false;
      }
    }
    pool::ServerError err;
    attached_.pool = &pool_at(attached_.backend);
    attached_.server = co_await attached_.pool->acquire(err);
    if (!attached_.server) {
      // Named locals: g++ 12 double-frees temporaries built by ?: inside a co_await expression.
      std::string msg = err.from_server ? "server refused pgrouter's login: " + err.message : err.message;
      std::string hint;
      if (err.from_server)
        hint = "The server refused the connection pgrouter opened for this client; see the server's message.";
      else if (err.sqlstate == p::sqlstate::too_many_connections)
        hint = "Raise pool.size or pool.queue_timeout, or retry later.";
      else
        hint = "Check that the server is up and that pgrouter's backend credentials are right.";
      std::string code = err.sqlstate.empty() ? std::string(p::sqlstate::cannot_connect) : err.sqlstate;
      co_await fail(s, code.c_str(), msg, hint);
      co_return false;
    }
    w_.stats().servers_active.fetch_add(1, std::memory_order_relaxed);
    pool::ServerError serr;
    if (!co_await sync_params(*attached_.server, serr)) {
      // Named locals: g++ 12 double-frees temporaries built by ?: inside a co_await expression.
      std::string code = serr.sqlstate.empty() ? std::string(p::sqlstate::connection_failure) : serr.sqlstate;
      std::string msg = serr.message.empty()
                            ? std::string("server connection failed while applying startup parameters")
                            : serr.message;
      co_await fail(s, code.c_str(), msg);
      attached_.pool->release(std::move(attached_.server), serr.from_server);
      w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
      co_return false;
    }
    welcome = &attached_.server->params;
  }
  // RESET and DISCARD ALL go back to the startup settings pgrouter applied with SET: in session pooling
  // those this server needed; in transaction pooling any server may need any of them.
  std::vector<std::pair<std::string, std::string>> applied;
  for (auto& kv : wanted_params_)
    if (txn_mode_ || (attached_.server && attached_.server->applied.count(util::ascii_lower(kv.first))))
      applied.push_back(kv);
  if (!applied.empty()) startup_reset_ = StartupReset(applied);
  last_activity_ = pool::Clock::now();  // timeouts are checked from registration on
  key_pid_ = w_.register_session(this, key_secret_);
  std::string out;
  out.reserve(1024);
  p::append_auth(out, 0);
  if (welcome_pool) {
    // The pool's messages, with the client's own startup settings over them.
    for (auto& [k, msg] : welcome_pool->welcome_messages()) {
      const std::string* value = nullptr;
      for (auto& [wk, wv] : wanted_params_)
        if (wk == k) value = &wv;  // the last one given wins, as PostgreSQL applies them in order
      if (value)
        p::append_parameter_status(out, k, *value);
      else
        out += msg;
    }
  } else {
    for (auto& [k, v] : *welcome) p::append_parameter_status(out, k, v);
  }
  p::append_backend_key_data(out, key_pid_, key_secret_);
  p::append_ready_for_query(out, 'I');
  if (txn_mode_ && attached_.server) detach_server();  // the client gets a server again at its first message
  if (co_await net::write_all(s, out)) co_return false;
  co_return true;
}

}  // namespace pgrouter::session
