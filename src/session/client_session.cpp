// The client session: cancel keys, timeouts, server attach and the two-way relay (the login stage is in
// client_login.cpp).
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/util/strings.hpp"

#include <cassert>

#include <openssl/crypto.h>
#include <unistd.h>
#include <xxhash.h>

#include "pgrouter/control/log.hpp"
#include "pgrouter/sql/fingerprint.hpp"
#include "pgrouter/net/io.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "session/relay_handlers.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

namespace {
void cancel_stream(tcp::socket& s) {
  boost::system::error_code ec;
  s.cancel(ec);
}
void cancel_stream(net::TlsStream& s) {
  boost::system::error_code ec;
  s.lowest_layer().cancel(ec);
}
}  // namespace

ClientSession::ClientSession(Worker& worker, int fd, const tcp::endpoint& peer)
    : w_(worker), id_(worker.next_session_id()) {
  plain_.fd = fd;
  plain_.ready = &client_ready_;
  v6_ = peer.address().is_v6();
  auto addr = peer.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped())
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  peer_ = addr.is_v4() ? util::ipv4_text(addr.to_v4().to_uint()) : addr.to_string();
  config_ = w_.config();
  slow_.configure(config_->log.slow_query_ms, config_->log.slow_query_parameters);
}

ClientSession::~ClientSession() {
  if (plain_.fd >= 0) ::close(plain_.fd);  // leaves the readiness set with it
  if (key_pid_) w_.unregister_session(key_pid_);
  if (attached_.server && attached_.pool &&
      !w_.stopping()) {  // (at shutdown the server just closes with the session)
    w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
    attached_.pool->release(std::move(attached_.server), false);
  }
  if (!w_.stopping()) release_held();
  if (counted_client_) {
    w_.runtime().clients.fetch_sub(1, std::memory_order_relaxed);
    if (logged_in_) w_.stats().clients_connected.fetch_sub(1, std::memory_order_relaxed);
  }
}

bool ClientSession::secret_matches(uint32_t secret) const {
  return CRYPTO_memcmp(&secret, &key_secret_, sizeof secret) == 0;
}

void ClientSession::pin(std::string_view feature) {
  // A held session keeps each shard's server anyway: pinning would only turn its sharding off. Its server is
  // marked as holding session state (see take_held()).
  if (hold_servers_ && attached_.server) attached_.server->dirty = true;
  if (pinned_ || hold_servers_) return;
  pinned_ = true;
  if (tracker_) tracker_->client_pinned();
  if (attached_.server) attached_.server->dirty = true;
  w_.stats().clients_pinned_total.fetch_add(1, std::memory_order_relaxed);
  log::info("client pinned to its server for the rest of its session (transaction pooling cannot share this)",
            {{"session", id_}, {"client", peer_}, {"user", user_}, {"feature", feature}});
}

bool ClientSession::track_client_message(char type, std::string_view body) {
  c2s_repl_.clear();
  std::string begin;  // a BEGIN pgrouter answered before a shard was chosen goes first
  if (!deferred_begin_.empty()) {
    tracker_->begin_injected(deferred_begin_, begin);
    tx_begin_sql_ = std::move(deferred_begin_);
    deferred_begin_.clear();
  }
  TxnTracker::Effect effect = TxnTracker::Effect::none;
  bool replaced = (shard_map_ && shard_map() && shard_refusal(type, body)) ||
                  tracker_->client_message(type, body, attached_.server->statements, c2s_repl_, effect);
  // (A message the tracker holds comes again once the server answered what decides it.)
  if (shard_map_ && shard_map() && !(replaced && tracker_->held())) note_transaction_step(type, body);
  if (!begin.empty()) {
    if (!replaced) c2s_repl_.assign(body.data() - 5, body.size() + 5);
    c2s_repl_.insert(0, begin);
    replaced = true;
  }
  // Unsupported and not refused (pool.session_features: refuse replaces the message with its refusal; a
  // rename of a named statement's Parse that SETs is not a refusal): the client keeps its server from here
  // on.
  if (effect == TxnTracker::Effect::unsupported && !(replaced && tracker_->refuses()))
    pin(tracker_->feature());
  return replaced;
}

bool ClientSession::reset_to_startup(std::string_view body) {
  size_t pos = 0;
  auto sql = p::read_cstring(body, pos);
  c2s_inject_.clear();
  // pending_: the requests before this one (it is counted after this call).
  if (!sql || !startup_reset_.client_query(*sql, pending_, c2s_inject_)) return false;
  if (retry_.window) close_retry_window();  // its replies are filtered: not a read to send elsewhere
  return true;
}

TxnTracker::Reply ClientSession::track_server_message(char type, std::string_view body) {
  s2c_repl_.clear();
  uint64_t version = tracker_->settings_version();
  bool holding = tracker_->holding();
  auto reply = tracker_->server_message(type, body, attached_.server->statements, attached_.server->applied,
                                        s2c_repl_);
  if (holding && !tracker_->holding()) retry_signal();  // client -> server waits for this answer
  if (tracker_->settings_version() != version) attached_.server->settled = {};  // `applied` may have changed
  if (type == be::kReadyForQuery && tracker_->uncertain()) pin("ROLLBACK TO SAVEPOINT after SET");
  return reply;
}

void ClientSession::check_timeouts(pool::Clock::time_point now) {
  if (client_done_ || !pool_) return;
  const auto& cfg = pool_->settings().config;
  const char* code = nullptr;
  std::string message;
  if (pending_ > 0) {
    if (cfg.query_timeout.count() > 0 && ring_count_ > 0 && now - ring()[ring_head_] > cfg.query_timeout) {
      code = p::sqlstate::query_canceled;
      message = "query ran longer than pool.query_timeout (" + std::to_string(cfg.query_timeout.count()) +
                " ms); pgrouter closed the connection";
    }
  } else if (client_tx_status_ != 'I') {
    if (cfg.idle_transaction_timeout.count() > 0 && now - last_activity_ > cfg.idle_transaction_timeout) {
      code = p::sqlstate::idle_in_transaction_timeout;
      message = "terminating connection: idle in transaction longer than pool.idle_transaction_timeout (" +
                std::to_string(cfg.idle_transaction_timeout.count()) +
                " ms); the transaction was rolled back";
    }
  } else if (cfg.client_idle_timeout.count() > 0 && now - last_activity_ > cfg.client_idle_timeout) {
    code = p::sqlstate::idle_session_timeout;
    message = "terminating connection: idle longer than pool.client_idle_timeout (" +
              std::to_string(cfg.client_idle_timeout.count()) + " ms)";
  }
  if (!code) return;
  log::info("closing client on timeout", {{"session", id_}, {"client", peer_}, {"sqlstate", code}});
  pending_fatal_sqlstate_ = code;
  pending_fatal_message_ = std::move(message);
  client_done_ = true;  // the relay loops stop as on a client exit; the epilogue sends the FATAL
  cancel_io();
}

bool ClientSession::end_if_idle_at_shutdown() {
  if (console_) return w_.draining() && end_console_at_shutdown();
  // s2c_done_: the relay has started (a login in progress is ended once it is idle in the relay).
  if (!w_.draining() || client_done_ || !s2c_done_ || client_tx_status_ != 'I' || !server_quiet() ||
      !client_buf_.empty())
    return false;
  pending_fatal_sqlstate_ = p::sqlstate::admin_shutdown;
  pending_fatal_message_ = "terminating connection due to administrator command";
  client_done_ = true;  // as check_timeouts: the relay loops stop and the epilogue sends the FATAL
  cancel_io();
  return true;
}

void ClientSession::forward_cancel() {
  // Only a query actually running for this client is cancelled; an idle server may already be
  // serving someone else in transaction mode, and its key must not be used then. A request across shards
  // runs on legs instead: those running its statement are in running_legs_ (never a leg given back).
  bool attached_runs = attached_.server && pending_ > 0;
  if (!attached_runs && running_legs_.empty()) {
    log::info("cancel request ignored: the client has no query running",
              {{"client_pid", key_pid_}, {"server_attached", attached_.server != nullptr}});
    return;
  }
  w_.stats().cancel_requests_total.fetch_add(1, std::memory_order_relaxed);
  if (attached_runs) cancel_server(*attached_.server);
  for (pool::ServerConnection* leg : running_legs_.servers()) cancel_server(*leg);
}

void ClientSession::cancel_server(pool::ServerConnection& server) {
  log::debug("cancel request forwarded", {{"client_pid", key_pid_}, {"backend_pid", server.backend_pid}});
  auto in_flight = server.cancels_in_flight;
  ++*in_flight;
  asio::co_spawn(
      w_.io(), send_cancel(w_.io().get_executor(), server.target, server.backend_pid, server.backend_secret),
      [in_flight](std::exception_ptr) { --*in_flight; });
}

awaitable<void> send_cancel(asio::any_io_executor ex, pool::ServerTarget target, uint32_t pid,
                            uint32_t secret) {
  pool::ServerConnection c(ex);
  tcp::resolver resolver(ex);
  net::error_code ec;
  auto eps = co_await resolver.async_resolve(target.host, std::to_string(target.port),
                                             asio::redirect_error(use_awaitable, ec));
  if (ec) co_return;
  co_await asio::async_connect(c.socket, eps, asio::redirect_error(use_awaitable, ec));
  pool::ServerError err;
  if (!ec && target.tls.sslmode >= net::SslMode::require && !co_await pool::start_tls(c, target, err))
    ec = asio::error::connection_aborted;
  if (ec) {
    log::warn("cannot deliver a cancel request to the server",
              {{"host", target.host},
               {"port", target.port},
               {"backend_pid", pid},
               {"error", err.message.empty() ? ec.message() : err.message}});
    co_return;
  }
  std::string msg;
  p::append_cancel_request(msg, pid, secret);
  co_await c.write_all(msg);
  // PostgreSQL closes the connection when done; wait for that so the cancel is delivered.
  char b;
  co_await c.read_exact(&b, 1);
}

void ClientSession::handle_cancel_request(const p::StartupPacket& sp) {
  cancel_by_key(w_.runtime(), sp.cancel_pid, sp.cancel_secret);
}

void ClientSession::cancel_by_key(Runtime& rt, uint32_t pid, uint32_t secret) {
  // A key this process did not give may be one the process it took over gave a client it still serves.
  int target = Worker::worker_of_pid(pid);
  if (target < 0 || target >= int(rt.workers.size())) {
    log::info("cancel request: no such client here; passed on to the process taken over, if any",
              {{"client_pid", pid}});
    rt.predecessor.forward_cancel(pid, secret);
    return;
  }
  Worker* tw = rt.workers[size_t(target)].get();
  asio::post(tw->io(), [&rt, tw, pid, secret] {
    ClientSession* s = tw->find_session(pid);
    if (s && s->secret_matches(secret)) {
      s->forward_cancel();
      return;
    }
    log::info(
        "cancel request: no such client here, or a wrong secret key; passed on to the process taken "
        "over, if any",
        {{"client_pid", pid}});
    rt.predecessor.forward_cancel(pid, secret);
  });
}

bool ClientSession::params_sql(pool::ServerConnection& server, std::string& sql,
                               std::vector<const std::string*>& set_keys,
                               std::vector<std::string>& reset_keys) {
  // What the client's session should have: its startup settings, then what it SET since (transaction
  // pooling). desired_digest_ names that set by what it is made of; a server last found or made to
  // match the same digest (by this client or any other wanting the same settings) needs nothing, and
  // most attachments end there, without building the statements below.
  uint64_t version = tracker_ ? tracker_->settings_version() : 0;
  if (digest_version_ != version) {
    desired_digest_ = settings_digest(wanted_params_, tracker_ ? &tracker_->settings() : nullptr);
    digest_version_ = version;
  }
  if (server.settled == desired_digest_) return true;
  // Each setting as the statement that gives it (startup settings with their raw values, as PostgreSQL
  // takes them from a startup packet), so a server's state is compared with one string comparison per
  // parameter. Built once per change of the client's settings.
  if (desired_version_ != version) {
    desired_.clear();
    startup_raw_.clear();
    for (auto& [k, v] : wanted_params_) {
      std::string name = util::ascii_lower(k);
      desired_[name] =
          "SELECT pg_catalog.set_config(" + p::quote_literal(name) + ", " + p::quote_literal(v) + ", false)";
      startup_raw_[name] = {k, v};
    }
    if (tracker_)
      for (auto& [k, v] : tracker_->settings()) {
        desired_[k] = v;
        startup_raw_.erase(k);  // SET by the client: compared as a statement only
      }
    desired_version_ = version;
  }
  for (auto& [k, v] : desired_) {
    auto it = server.applied.find(k);
    if (it != server.applied.end()) {
      if (it->second == v) continue;
    } else if (auto raw = startup_raw_.find(k); raw != startup_raw_.end()) {
      // A server still at its login value may already have the wanted one (e.g. client_encoding).
      const auto& [key, value] = raw->second;
      bool same = false;
      for (auto& [pk, pv] : server.params)
        if (pv == value && pk.size() == key.size() && strncasecmp(pk.c_str(), key.c_str(), key.size()) == 0)
          same = true;
      if (same) continue;
    }
    sql += v + ";";
    set_keys.push_back(&k);
  }
  for (auto& [k, v] : server.applied) {
    if (desired_.count(k)) continue;
    sql += "RESET " + k + ";";  // another client's setting
    reset_keys.push_back(k);
  }
  if (!sql.empty()) return false;
  server.settled = desired_digest_;
  return true;
}

pool::ServerConnection::SettingsDigest ClientSession::settings_digest(
    const std::vector<std::pair<std::string, std::string>>& startup, const TxnTracker::Settings* set) {
  // The inputs desired_ is built from, each string with its length in front: no two different inputs
  // serialize the same, and equal inputs build equal statements (different inputs that happen to build
  // the same statements only miss the shortcut).
  std::string all;
  auto put = [&all](std::string_view s) {
    uint64_t n = s.size();
    all.append(reinterpret_cast<const char*>(&n), sizeof n);
    all.append(s);
  };
  for (auto& [k, v] : startup) put(k), put(v);
  all.push_back('\0');
  if (set)
    for (auto& [k, v] : *set) put(k), put(v);
  XXH128_hash_t h = XXH3_128bits(all.data(), all.size());
  pool::ServerConnection::SettingsDigest d{h.low64, h.high64};
  if (d == pool::ServerConnection::SettingsDigest{}) d.lo = 1;  // {} means "unknown"
  return d;
}

bool ClientSession::params_ready() {
  std::string sql;
  std::vector<const std::string*> set_keys;
  std::vector<std::string> reset_keys;
  return params_sql(*attached_.server, sql, set_keys, reset_keys);
}

awaitable<bool> ClientSession::sync_params(pool::ServerConnection& server, pool::ServerError& err) {
  std::string sql;
  std::vector<const std::string*> set_keys;
  std::vector<std::string> reset_keys;
  if (params_sql(server, sql, set_keys, reset_keys)) co_return true;
  if (!co_await server.run_quietly(sql, &err)) co_return false;
  w_.stats().settings_replayed_total.fetch_add(set_keys.size() + reset_keys.size(),
                                               std::memory_order_relaxed);
  for (auto* k : set_keys) server.applied[*k] = desired_.at(*k);
  for (auto& k : reset_keys) server.applied.erase(k);
  server.settled = desired_digest_;  // params_sql built desired_ for the current version
  co_return true;
}

void ClientSession::detach_server(bool reusable) {
  if (reusable && park_server()) {  // a held session keeps it for the shard's next transaction
    transaction_ended();
    return;
  }
  w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
  attached_.pool->release(std::move(attached_.server), reusable);
  if (tracker_) tracker_->server_released();
  transaction_ended();
}

void ClientSession::refresh_config() {
  if (w_.config() == config_) return;
  auto fresh = w_.config();
  const control::DatabaseConfig* db = fresh->find_database(database_);
  std::shared_ptr<const control::DatabaseConfig> fallback;
  if (!db || db->name == control::kFallbackDatabase) {
    fallback = w_.fallback_database(database_);  // the worker has the fresh config already
    db = fallback.get();
  }
  const control::UserConfig* user = own_user_ ? own_user_.get() : fresh->find_user(user_);
  if (db && user) {
    config_ = std::move(fresh);
    db_ = db;
    own_db_ = std::move(fallback);
    user_cfg_ = user;
    slow_.configure(config_->log.slow_query_ms, config_->log.slow_query_parameters);
  }
}

bool ClientSession::register_server_io() {
  net::error_code nec;
  if (!attached_.server->ready.attached())
    attached_.server->socket.native_non_blocking(true, nec);  // once: it stays so
  attached_.server->ready.rearm();  // a new attachment: an earlier session's cancel no longer applies
  if (nec || !attached_.server->ready.attach(w_.readiness(), attached_.server->socket.native_handle(),
                                             /*first=*/true)) {
    log::error("cannot register server socket for the relay", {{"session", id_}});
    return false;
  }
  return true;
}

template <typename Stream>
void ClientSession::start_server_to_client(Stream& s) {
  server_attached();
  if (!register_server_io()) set_server_state(ServerState::broken);
  give_back_wanted_ = false;
  server_copy_in_ = false;
  s2c_done_->expires_at(pool::Clock::time_point::max());
  bool spawn = s2c_ == S2c::absent;
  set_s2c(S2c::handed);
  if (spawn) {
    asio::co_spawn(w_.io(), server_to_client_loop(s), asio::detached);
    return;
  }
  // The parked loop starts on the new server once the caller (client -> server, about to send the
  // request) suspends: as with a coroutine spawned for it, server -> client never runs before the request
  // was written or the write had to wait. Called from inside the loop (a read retry's new server), this
  // does nothing: the loop sees the flag when the current attachment's relay returns.
  s2c_wakeup_.wake_soon(w_.readiness());
}

template <typename Stream>
awaitable<void> ClientSession::end_answer_early(Stream& s, std::string_view answer) {
  // The answer and the ReadyForQuery its server would have sent: one autocommit statement done, so 'I'.
  std::string out(answer);
  s2c_out_.clear();
  auto reply = tracker_ ? track_server_message(be::kReadyForQuery, "I") : TxnTracker::Reply::forward;
  if (reply != TxnTracker::Reply::drop) {
    out.append("Z\0\0\0\5I", 6);
    request_finished();
  }
  client_tx_status_ = 'I';
  log::info("replica went away after answering, before its ReadyForQuery: the answer was ended by pgrouter",
            {{"session", id_}, {"backend", attached_.pool->target_name()}, {"error", retry_.server_message}});
  w_.stats().routed_reads_ended_early_total.fetch_add(1, std::memory_order_relaxed);
  close_retry_window();
  // The server is going away: never pooled, and its backend gets no reads until a probe answers.
  if (auto& h = attached_.pool->settings().health) h->mark_down();
  attached_.server->buffer.consume(attached_.server->buffer.size());
  detach_server(false);
  net::error_code wec;
  size_t written = 0;
  if (tls_ || !client_ready_.write_now(out.data(), out.size(), written, wec))
    co_await client_write(s, out.data() + written, out.size() - written, wec);
  if (wec) {
    if (!client_done_) cancel_client_io();
    co_return;
  }
  w_.stats().bytes_server_to_client.fetch_add(out.size(), std::memory_order_relaxed);
  last_activity_ = pool::Clock::now();
}

template <typename Stream>
awaitable<void> ClientSession::server_to_client_loop(Stream& s) {
  try {
    for (;;) {
      while (s2c_ != S2c::handed && !client_done_) {
        net::error_code ec;
        co_await s2c_wakeup_.wait(w_.io(), ec);
        if (ec) break;
      }
      if (s2c_ != S2c::handed) break;  // the session is ending
      set_s2c(S2c::running);
      {
        // One attachment's replies, relayed until the server is given back or the relay stops (inline, not a
        // coroutine of its own, which would cost a frame per transaction).
        ServerReplies handler{*this, SpanRewriter{s2c_out_}};
        p::FrameScanner scanner(0xffffffffu);
        auto& stats = w_.stats();
        auto& buf = attached_.server->buffer;
        for (;;) {
          buf.prepare_read();
          net::error_code ec;
          size_t n = 0;
          // read_some without its coroutine frame: the reply is rarely there yet when this loop starts.
          while (!attached_.server->ready.read_now(buf.write_ptr(), buf.write_space(), n, ec)) {
            co_await attached_.server->ready.wait_readable(ec);
            if (ec) break;
          }
          if (ec == asio::error::operation_aborted && give_back_wanted_ && !client_done_) {
            // client -> server finished a message that straddled the last ReadyForQuery
            // (give_back_when_idle).
            give_back_wanted_ = false;
            attached_.server->ready.rearm();
            if ((can_release_server() || can_move_server()) && !scanner.mid_message()) {
              if (coordinating_)
                keep_server_for_coordination();
              else
                detach_server();
              break;  // this attachment is over
            }
            continue;
          }
          if (ec && retry_.window && !client_done_) {
            // Nothing of the answer reached the client: the read goes to another backend (buf is the broken
            // server's and goes with it).
            // Named local: no temporaries built by ?: inside a co_await expression (g++ 12).
            std::string why = ec == asio::error::operation_aborted
                                  ? std::string("the connection broke while sending to it")
                                  : ec.message();
            if (co_await replace_failed_server(std::move(why))) start_server_to_client(s);
            break;  // this attachment is over
          }
          if (ec && ec != asio::error::operation_aborted && between_transactions() && buf.empty() &&
              !scanner.mid_message()) {
            leave_dead_server(ec.message());
            break;  // this attachment is over
          }
          if (ec) {
            if (ec != asio::error::operation_aborted || !client_done_) {
              bool told = attached_.state == ServerState::fatal;
              set_server_state(ServerState::broken);
              if (!told && pending_fatal_message_.empty()) {
                pending_fatal_sqlstate_ = p::sqlstate::connection_failure;
                pending_fatal_message_ = "server connection lost: " + ec.message() +
                                         "; the query may or may not have run. Reconnect and retry.";
              }
              log::warn("server connection lost",
                        {{"session", id_},
                         {"server", attached_.server->target.host + ":" +
                                        std::to_string(attached_.server->target.port)},
                         {"error", ec.message()}});
              if (!client_done_) cancel_client_io();
            }
            if (!buf.empty() || scanner.mid_message())
              set_server_state(ServerState::broken);  // cut mid-message
            if (scanner.mid_message()) {
              // Part of a message already reached the client: nothing written after it could be read as a
              // message of its own, so the client gets EOF there, as from the server itself.
              s2c_relayed_half_ = true;
              pending_fatal_message_.clear();
            }
            break;  // this attachment is over
          }
          buf.commit(n);
          handler.begin(buf.data());
          handler.unanswered = true;
          handler.answers_ended = 0;
          handler.answer_complete = false;
          auto r = scanner.scan(buf.data(), buf.size(), handler);
          if (r.stopped && handler.end_early) {
            co_await end_answer_early(s, handler.rw.finish(r.consumed));
            break;  // this attachment is over
          }
          if (r.stopped) {  // only the retry window stops: the server is going away before answering
            set_server_state(ServerState::broken);
            s2c_out_.clear();
            if (!client_done_ && co_await replace_failed_server(retry_.server_message))
              start_server_to_client(s);
            break;  // this attachment is over
          }
          if (r.consumed > 0) {
            std::string_view out = handler.rw.finish(r.consumed);
            size_t out_len = out.size();
            net::error_code wec;
            if (out_len > 0) {
              size_t written = 0;
              bool done;
              if (tls_) {
                done = false;
              } else if (client_ready_.send_with_batch(out.data(), out_len, &written)) {
                co_await client_ready_.sent(
                    wec);  // with the batch's other replies (net::Readiness::flush_sends)
                done = wec || written == out_len;
              } else {
                done = client_ready_.write_now(out.data(), out_len, written, wec);
              }
              if (!done) co_await client_write(s, out.data() + written, out_len - written, wec);
            }
            s2c_out_.clear();
            if (out_len > 0 && !wec && retry_.window) close_retry_window();  // the answer has begun
            if (attached_.state == ServerState::fatal && !wec) {
              // Relayed; the server closes, and so does the client's connection, as with PostgreSQL itself.
              set_server_state(ServerState::broken);
              if (!client_done_) cancel_client_io();
              break;  // this attachment is over
            }
            if (wec) {
              set_server_state(
                  ServerState::broken);  // the client went away mid-answer: the server is not reusable
              if (!client_done_) cancel_client_io();
              break;  // this attachment is over
            }
            stats.bytes_server_to_client.fetch_add(out_len, std::memory_order_relaxed);
            buf.consume(r.consumed);
            if (pending_ == 0) last_activity_ = net::BatchClock::now();
            if (attached_.state == ServerState::ended_idle) {
              leave_dead_server("it sent FATAL");
              break;  // this attachment is over
            }
            // Transaction pooling: give the server back once it is idle with nothing in flight either way.
            if (can_release_server() && !scanner.mid_message()) {
              detach_server();
              break;  // this attachment is over
            }
          }
          if (r.bad_length || r.unknown_type) {
            std::string server =
                attached_.server->target.host + ":" + std::to_string(attached_.server->target.port);
            std::string what =
                std::string(r.unknown_type ? "a message of unknown type" : "an invalid message length") +
                " (type " + std::to_string(int(uint8_t(r.bad_type))) + ", length " +
                std::to_string(r.bad_len) + ")";
            log::warn("server broke the protocol; closing it and the client",
                      {{"session", id_}, {"server", server}, {"error", what}});
            set_server_state(ServerState::broken);
            pending_fatal_sqlstate_ = p::sqlstate::protocol_violation;
            pending_fatal_message_ = "server " + server + " sent " + what + "; the connection was closed";
            if (!client_done_) cancel_client_io();
            break;  // this attachment is over
          }
          if (r.need > 0) buf.reserve_message(r.need);
        }
      }
      if (s2c_ == S2c::running) {  // (handed: a read retry's new server, relayed next round)
        set_s2c(S2c::parked);
        s2c_done_->cancel();
        if (tracker_ && tracker_->holding()) retry_signal();  // no answer will come from this server
      }
    }
  } catch (const std::exception& e) {
    log::error("server -> client relay failed", {{"session", id_}, {"error", e.what()}});
  }
  set_s2c(S2c::absent);
  s2c_done_->cancel();
  if (tracker_ && tracker_->holding()) retry_signal();
}

void ClientSession::request_started(char type) {
  ++pending_;
  w_.stats().queries_total.fetch_add(1, std::memory_order_relaxed);
  attached_.pool->pool_stats().queries_total.fetch_add(1, std::memory_order_relaxed);
  if (ring_count_ == kRingInline && !started_more_) {  // deeper than the few kept in place: to the heap
    auto more = std::make_unique<pool::Clock::time_point[]>(kRing);
    for (size_t i = 0; i < ring_count_; ++i) more[i] = started_inline_[(ring_head_ + i) % kRingInline];
    started_more_ = std::move(more);
    ring_head_ = 0;
  }
  auto now = net::BatchClock::now();
  if (ring_count_ < ring_capacity()) {
    ring()[(ring_head_ + ring_count_) % ring_capacity()] = now;
    ++ring_count_;
    if (slow_.on()) slow_.request_started(type);  // paired with the ring's entry
  }
  if (!session_txn_open_) {
    session_txn_open_ = true;
    session_txn_started_ = txn_mode_ && !pinned_ ? attached_.server->checked_out : now;
  }
}

void ClientSession::request_finished() {
  if (pending_ > 0) --pending_;
  auto now = net::BatchClock::now();
  if (ring_count_ > 0) {
    auto ns =
        uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now - ring()[ring_head_]).count());
    w_.stats().query_latency.observe_ns(ns);
    ring_head_ = (ring_head_ + 1) % ring_capacity();
    --ring_count_;
    if (slow_.on()) {
      if (auto slow = slow_.request_finished(ns)) log_slow_query(*slow);
    }
  }
  if (session_txn_open_ && client_tx_status_ == 'I' && pending_ == 0) {
    session_txn_open_ = false;
    auto& ps = attached_.pool->pool_stats();
    ps.transaction.observe_ns(
        uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now - session_txn_started_).count()));
    ps.transactions_total.fetch_add(1, std::memory_order_relaxed);
  }
}

void ClientSession::log_slow_query(const SlowQuery& q) {
  const auto& labels = attached_.pool->settings().labels;
  auto digest = sql::digest_statement(q.text);
  const bool values = slow_.parameters();
  // Without parameters: the normalized text (constants as $n), never the text as sent.
  std::string statement = values ? q.text : digest.normalized;
  log::warn("slow query", {{"session", id_},
                           {"duration_ms", double(q.duration_ns) / 1e6},
                           {"database", database_},
                           {"user", user_},
                           {"backend", attached_.pool->target_name()},
                           {"shard", labels.shard},
                           {"role", labels.role},
                           {"fingerprint", digest.fingerprint},
                           {"statement", statement},
                           {"parameters", values ? q.parameters : std::string()}});
}

void ClientSession::cancel_client_io() {
  if (tls_) cancel_stream(*tls_);
  client_ready_.cancel();
}

void ClientSession::cancel_io() {
  cancel_client_io();
  if (attached_.server) {
    cancel_stream(attached_.server->socket);
    attached_.server->ready.cancel();
  }
}

awaitable<size_t> ClientSession::client_read(net::PlainStream&, char* dst, size_t n, net::error_code& ec) {
  return client_ready_.read_some(dst, n, ec);
}

awaitable<void> ClientSession::client_write(net::PlainStream&, const char* src, size_t n,
                                            net::error_code& ec) {
  return client_ready_.write_all(src, n, ec);
}

awaitable<size_t> ClientSession::client_read(net::TlsStream& s, char* dst, size_t n, net::error_code& ec) {
  size_t got = co_await s.async_read_some(asio::buffer(dst, n), asio::redirect_error(use_awaitable, ec));
  co_return got;
}

awaitable<void> ClientSession::client_write(net::TlsStream& s, const char* src, size_t n,
                                            net::error_code& ec) {
  ec = co_await net::write_all(s, src, n);
}

template <typename Stream>
awaitable<void> ClientSession::relay(Stream& s) {
  s2c_done_ = std::make_unique<asio::steady_timer>(w_.io());
  retry_.signal = std::make_unique<asio::steady_timer>(w_.io());
  last_activity_ = pool::Clock::now();
  if (attached_.server) start_server_to_client(s);  // session pooling: the server stays for the whole session
  co_await client_to_server(s);
  client_done_ = true;
  if (s2c_running()) {
    cancel_io();
    net::error_code ec;
    co_await s2c_done_->async_wait(asio::redirect_error(use_awaitable, ec));
  }
  s2c_wakeup_.wake_now();  // the parked server -> client loop sees client_done_ and ends, here and now
  if (!pending_fatal_message_.empty() && !s2c_relayed_half_) {
    // Nothing else writes to the client now, so this cannot interleave with relayed bytes. (Plain TCP: the
    // readiness cancel that stopped the loops is sticky; this last write is made past it.)
    if (!tls_) client_ready_.rearm();
    std::string out = std::move(pending_preface_);
    p::append_error(out, "FATAL", pending_fatal_sqlstate_, pending_fatal_message_);
    w_.stats().count_error(pending_fatal_sqlstate_, true);
    co_await net::write_all(s, out);
  }
  if (attached_.server) {
    bool clean = attached_.state == ServerState::in_step && server_quiet();
    if (tracker_) tracker_->server_gone();
    w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
    attached_.pool->release(std::move(attached_.server), clean);
  }
  release_held();
}

template <typename Stream>
awaitable<void> ClientSession::client_to_server(Stream& s) {
  ClientMessages handler{*this, SpanRewriter{c2s_out_}};
  p::FrameScanner scanner(uint32_t(config_->listen.max_message_size));
  auto& stats = w_.stats();
  auto& buf = client_buf_;
  // Bytes the login read past its last message (a client that sent its first query without waiting for
  // the welcome) are scanned before anything more is read.
  bool unread = !buf.empty();
  for (;;) {
    net::error_code ec;
    size_t n = 0;
    if (unread) {
      unread = false;
    } else {
      if (buf.empty() && !tls_ && !client_ready_.maybe_readable()) {
        // Idle between requests: the buffer is given back while the client thinks (an idle client costs
        // no read buffer; allocating 2 KiB again per request is far cheaper than the round trip).
        buf.shrink(true);
        co_await client_ready_.wait_readable(ec);
        if (ec) co_return;
      }
      buf.prepare_read();
      // The data is usually there (the wait above, or a pipelining client): read it without a coroutine.
      if (tls_ || !client_ready_.read_now(buf.write_ptr(), buf.write_space(), n, ec))
        n = co_await client_read(s, buf.write_ptr(), buf.write_space(), ec);
      if (ec) co_return;
      if (end_if_idle_at_shutdown()) co_return;  // (bytes not yet committed) its next request gets the FATAL
      last_activity_ = net::BatchClock::now();
      buf.commit(n);
    }
    if (retry_.busy) {
      // A read failed on its replica and server -> client is sending it to another backend: nothing
      // goes to a server until it is done.
      while (retry_.busy) co_await wait_retry_signal();
      if (retry_.failed || client_done_) co_return;
    }
    if (batch_behind_replica_read() && !scanner.mid_message() && buf.size() >= 5 &&
        buf.data()[0] != p::frontend::kTerminate) {
      // A batch pipelined behind a synced read batch on a replica (not the rest of a message being forwarded:
      // those bytes are no message of their own) is looked at whole, as a transaction's first batch is: its
      // Parse alone may read as harmless where its Bind writes.
      if (batch_incomplete(buf)) continue;
      // A write is routed once the read is answered.
      if (classify_batch(buf.data(), buf.size()).writes) co_await hold_write_behind_replica_read();
      if (client_done_) co_return;
    }
    if (tx_begin_only_ && attached_.server && !scanner.mid_message() &&
        needs_server(buf.data(), buf.size())) {
      // The transaction's first batch after its BEGIN: routed like the first batch of a transaction.
      uint32_t first_len = p::read_be32(buf.data() + 1);
      if (first_len <= 64 * 1024 && buf.size() < 1 + size_t(first_len)) {
        buf.reserve_message(1 + size_t(first_len));
        continue;
      }
      if (batch_incomplete(buf)) continue;
      // (A batch that only parses, as pgbench -M prepared sends before a statement's first use, decides
      // nothing yet.)
      tx_begin_only_ = runs_nothing(buf.data(), buf.size());
      auto want = named_shard(buf.data(), buf.size());
      if (want && *want != shard_ && server_quiet()) co_await leave_begun_shard(*want);
      if (client_done_) co_return;
    }
    if (attached_.server && !scanner.mid_message() && coordination_wanted(buf.data(), buf.size())) {
      // A request of the open transaction needs another shard: the session coordinates the rest of it.
      if (batch_incomplete(buf)) continue;
      bool taken = co_await take_server_for_coordination();
      if (client_done_) co_return;
      if (taken) {
        bool alive = co_await coordinate_transaction();
        if (!alive) co_return;
        unread = !buf.empty();
        continue;
      }
    }
    if (!attached_.server && needs_server(buf.data(), buf.size())) {
      if (w_.runtime().admin.paused(database_)) {
        co_await wait_while_paused();  // PAUSE: no server for a new transaction (or scatter) until RESUME
        if (client_done_) co_return;
      }
      // Read/write splitting routes by the first message: when only part of it is here (a big query, or
      // a client that sends in pieces), read the rest first (up to 64 KiB; a longer one goes to the
      // primary as it comes). Its type and length were checked: a bogus header is refused, not waited on.
      uint32_t first_len = p::read_be32(buf.data() + 1);
      bool routes = routes_reads() || (tracker_ && shard_map());
      if (routes && first_len <= 64 * 1024 && buf.size() < 1 + size_t(first_len)) {
        buf.reserve_message(1 + size_t(first_len));
        continue;
      }
      // An extended batch is routed as a whole: wait for its Sync or Flush (a client expects no reply before
      // one, so waiting costs it nothing), or a later message of it could be a write sent to a replica.
      if (routes && batch_incomplete(buf)) continue;
      known_ = {};
      if (tracker_ && shard_map()) {
        sharding::Need need;
        bool explain = false;
        if (auto req = scatter_candidate(buf.data(), buf.size(), need, explain)) {
          known_ = {};
          bool alive = false;  // (no co_await inside ?: — g++ 12 may evaluate both sides)
          bool copy_in = !explain && need.kind == sharding::Need::Kind::write_across &&
                         shard_map()->target(req->sql).copy_from;
          if (!deferred_begin_.empty()) {
            alive = co_await coordinate_from_begin(*req, need);  // (consumes the request itself)
            copy_in = true;
          } else if (explain)
            alive = co_await explain_shards(*req, need);
          else if (copy_in)
            alive = co_await run_copy_across(*req, need);  // (consumes the request itself)
          else if (need.kind == sharding::Need::Kind::write_across)
            alive = co_await run_write_across(*req, need);
          else
            alive = co_await run_scatter(*req, need);
          if (!copy_in) buf.consume(req->length);  // (unless consumed already)
          if (!alive) co_return;
          last_activity_ = net::BatchClock::now();
          unread = !buf.empty();
          continue;
        }
      }
      if (tracker_ && shard_map() && deferred_begin_.empty()) {
        std::string reply;
        if (defer_begin(buf.data(), buf.size(), reply)) {
          known_ = {};
          buf.consume(buf.size());
          client_tx_status_ = 'T';
          net::error_code wec;
          co_await client_write(s, reply.data(), reply.size(), wec);
          if (wec) co_return;
          continue;
        }
      }
      // Transaction pooling: the first message of a transaction attaches a server (before the
      // messages are looked at: how they are rewritten depends on what that server has).
      int chosen = attach_now();
      pool::Pool* in_line = chosen >= 0 ? &pool_at(chosen) : nullptr;
      if (in_line && in_line->wait_in_line(line_)) {
        // Every server busy: this client waits in line right here (the common case of more clients than
        // servers), and is handed the next server given back, usually by another client's relay.
        auto& pool = *in_line;
        while (!line_.done()) {
          net::error_code wec;
          co_await line_.wake.wait(w_.io(), wec);
          if (wec) break;
        }
        if (auto server = line_.gone ? nullptr : pool.handed(line_)) {
          attached_.backend = chosen;
          attached_.pool = &pool;
          attached_.server = std::move(server);
          chosen = server_taken() ? kAttached : kNeedsParams;
        } else if (line_.gone) {
          co_return;  // a worker's pools go only when it stops: so does this session
        } else {
          if (!co_await attach_backend(false, chosen, true)) co_return;  // a slot offered, or timed out
          chosen = kAttached;
        }
      }
      if (chosen == kNeedsParams) {
        if (!co_await settle_params()) co_return;
      } else if (chosen != kAttached) {
        if (!co_await attach_backend(false, chosen)) co_return;
      }
      open_retry_window();
      start_server_to_client(s);
      if (shard_map_) note_begin_only(buf.data(), buf.size());
    }
    handler.rw.begin(buf.data());
    auto r = scanner.scan(buf.data(), buf.size(), handler);
    if (tracker_) tracker_->known_plain(nullptr);  // classify_batch's word was for this scan only
    known_ = {};                                   // so was the first request's analysis
    if (r.consumed > 0 || handler.hold) {
      std::string_view out = handler.rw.finish(r.consumed);
      size_t out_len = out.size();
      net::error_code wec;
      if (out_len > 0 && !attached_.server) {
        // Cannot happen: a message is forwarded only with a server attached, which stays while one streams.
        log::error("client bytes to forward without a server; closing the session", {{"session", id_}});
        co_return;
      }
      if (out_len > 0) {  // (nothing when all of it was dropped)
        c2s_writing_ = true;
        size_t written = 0;
        bool done;
        if (attached_.server->ready.send_with_batch(out.data(), out_len, &written)) {
          co_await attached_.server->ready.sent(
              wec);  // with the batch's other requests (net::Readiness::flush_sends)
          done = wec || written == out_len;
        } else {
          done = attached_.server->ready.write_now(out.data(), out_len, written, wec);
        }
        if (!done) co_await attached_.server->ready.write_all(out.data() + written, out_len - written, wec);
        c2s_writing_ = false;
      }
      c2s_out_.clear();
      if (retry_.busy) retry_signal();
      if (wec && retry_.window && !client_done_) {
        // The replica broke before answering: these bytes stay kept with the rest of the read, which
        // server -> client (woken here unless it is already at it) sends to another backend.
        if (!retry_.busy && attached_.server) attached_.server->ready.cancel();
        wec = {};
      }
      if (wec) {
        set_server_state(ServerState::broken);
        if (pending_fatal_message_.empty()) {
          pending_fatal_sqlstate_ = p::sqlstate::connection_failure;
          pending_fatal_message_ = "server connection lost: the server closed the connection unexpectedly";
        }
        co_return;
      }
      stats.bytes_client_to_server.fetch_add(out_len, std::memory_order_relaxed);
      buf.consume(r.consumed);
      if (retry_.window && !retry_.busy && buf.consumed_since_mark() > kMaxStreamingBuffer)
        close_retry_window();  // too much to keep for a retry
    }
    if (handler.hold) {
      // The tracker needs the server's answer before the message it stopped at goes (or is refused).
      handler.hold = false;
      while (tracker_->holding() && attached_.server && !server_broken() && !client_done_)
        co_await wait_retry_signal();
      if (client_done_ || server_broken()) co_return;
    }
    bool was_mid = c2s_mid_message_;
    c2s_mid_message_ = scanner.mid_message() && !scanner.dropping();
    if (handler.terminate) co_return;
    if (was_mid && !c2s_mid_message_) co_await give_back_when_idle();
    if (r.stopped) {  // the next message needs a server: attach one, then scan on without reading
      unread = true;
      continue;
    }
    if (r.unknown_type || r.bad_length) {
      co_await refuse_client_message(r);
      co_return;
    }
    if (r.need > 0) {
      buf.reserve_message(r.need);
    } else if (n == buf.capacity() && buf.capacity() < kMaxStreamingBuffer) {
      buf.reserve_message(buf.capacity() *
                          2);  // a full read: bulk traffic (COPY, big batches) reads more at once
    }
  }
}

bool ClientSession::batch_incomplete(protocol::Buffer& buf) {
  // (A batch longer than 64 KiB is decided on as it comes: the client may be streaming it.)
  if (buf.size() >= 64 * 1024 || batch_complete(buf.data(), buf.size())) return false;
  buf.reserve_message(buf.size() + 1);
  return true;
}

bool ClientSession::server_quiet() const {
  return pending_ == 0 && !unsynced_ && !c2s_writing_ && !c2s_mid_message_ && (!tracker_ || tracker_->idle());
}

bool ClientSession::between_transactions() const {
  return txn_mode_ && !pinned_ && attached_.server && attached_.server->tx_status == 'I' && !client_done_ &&
         server_quiet();
}

void ClientSession::set_s2c(S2c next) {
  // absent -> handed (spawned) -> running -> parked -> handed -> ...; a server handed over while running (a
  // read retry's) is relayed next; the loop ends from any stage.
  [[maybe_unused]] bool possible = next == S2c::absent || next == S2c::handed ||
                                   (next == S2c::running && s2c_ == S2c::handed) ||
                                   (next == S2c::parked && s2c_ == S2c::running);
  assert(possible && "impossible server -> client loop change");
  s2c_ = next;
}

void ClientSession::set_server_state(ServerState next) {
  // A server that broke or sent FATAL never comes back in step (a new server does, through
  // server_attached()).
  [[maybe_unused]] bool possible =
      attached_.state == ServerState::in_step || next == ServerState::broken ||
      (attached_.state == ServerState::ended_idle && next == ServerState::fatal) || next == attached_.state;
  assert(possible && "impossible server state change");
  attached_.state = next;
}

void ClientSession::leave_dead_server(std::string_view why) {
  log::info("server ended between transactions; the client's next transaction gets another",
            {{"session", id_}, {"server", attached_.pool->target_name()}, {"why", why}});
  if (tracker_) tracker_->server_gone();
  detach_server(false);
}

bool ClientSession::can_release_server() const {
  return between_transactions() && attached_.state == ServerState::in_step &&
         attached_.server->buffer.empty() && startup_reset_.idle();
}

awaitable<void> ClientSession::give_back_when_idle() {
  // The server's ReadyForQuery came while the client was in the middle of a message, so server -> client
  // kept the server; now that the message is complete, it goes back if it is idle. server -> client is
  // parked on the server's socket: woken by a cancel, it gives the server back itself (or reads on).
  if (!can_release_server() || !s2c_running()) co_return;
  co_await ask_give_back();
}

awaitable<void> ClientSession::ask_give_back() {
  give_back_wanted_ = true;
  attached_.server->ready.cancel();
  asio::steady_timer poll(w_.io());
  while (give_back_wanted_ && attached_.server && !client_done_ && s2c_running()) {
    poll.expires_after(std::chrono::milliseconds(0));
    net::error_code ec;
    co_await poll.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  give_back_wanted_ = false;
}

bool ClientSession::batch_complete(const char* d, size_t n) {
  namespace fe = p::frontend;
  for (size_t pos = 0; n - pos >= 5;) {
    char type = d[pos];
    if (type != fe::kParse && type != fe::kBind && type != fe::kDescribe && type != fe::kExecute &&
        type != fe::kClose)
      return true;  // a Sync or Flush ends the batch; anything else is not part of one (the scan judges it)
    uint32_t len = p::read_be32(d + pos + 1);
    if (len < 4 || len > fe::max_length(type)) return true;  // refused by the scan, at once
    pos += size_t(len) + 1;
    if (pos > n) return false;
  }
  return false;
}

bool ClientSession::needs_server(const char* d, size_t n) const {
  namespace fe = p::frontend;
  if (n < 5) return false;
  char type = d[0];
  uint32_t len = p::read_be32(d + 1);
  uint32_t limit = std::min(fe::max_length(type), uint32_t(config_->listen.max_message_size));
  if (limit == 0 || len < 4 || len > limit || type == fe::kTerminate) return false;  // refused or ending
  return !(fe::is_copy_message(type) && !request_in_flight());                       // dropped
}

awaitable<void> ClientSession::refuse_client_message(const p::ScanResult& r) {
  namespace fe = p::frontend;
  auto type = uint8_t(r.bad_type);
  // PostgreSQL answers everything it was sent before this message, then ends the session; so pgrouter waits
  // for the replies to the requests in flight, or until a COPY FROM STDIN among them waits for its data.
  asio::steady_timer poll(w_.io());
  while (attached_.server && !server_copy_in_ && pending_ > 0 && !server_broken() && !client_done_ &&
         s2c_running()) {
    poll.expires_after(std::chrono::milliseconds(5));
    net::error_code ec;
    co_await poll.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  bool in_copy = attached_.server && server_copy_in_;
  log::warn("client sent a message PostgreSQL refuses; closing its connection",
            {{"session", id_}, {"client", peer_}, {"type", int(type)}, {"length", uint64_t(r.bad_len)}});
  if (r.unknown_type) {
    if (in_copy) {  // what PostgreSQL's COPY FROM STDIN says of it
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", unsigned(type));
      p::append_error(pending_preface_, "ERROR", p::sqlstate::protocol_violation,
                      std::string("unexpected message type ") + hex + " during COPY from stdin");
      w_.stats().count_error(p::sqlstate::protocol_violation, true);
      pending_fatal_message_ = "terminating connection because protocol synchronization was lost";
    } else {
      pending_fatal_message_ = "invalid frontend message type " + std::to_string(int(type));
    }
    pending_fatal_sqlstate_ = p::sqlstate::protocol_violation;
  } else if (r.bad_len >= 4 && r.bad_len <= fe::max_length(char(type))) {
    // Valid for PostgreSQL, too long for this pgrouter.
    pending_fatal_sqlstate_ = p::sqlstate::protocol_violation;
    pending_fatal_message_ = "message of type '" + std::string(1, char(type)) + "' is " +
                             std::to_string(r.bad_len) + " bytes long, over listen.max_message_size (" +
                             std::to_string(config_->listen.max_message_size) + " bytes)";
  } else if (in_copy) {
    // PostgreSQL's COPY reads the invalid length as a lost connection, then finds the protocol out of step.
    p::append_error(pending_preface_, "ERROR", p::sqlstate::connection_failure,
                    "unexpected EOF on client connection with an open transaction");
    w_.stats().count_error(p::sqlstate::connection_failure, true);
    pending_fatal_sqlstate_ = p::sqlstate::protocol_violation;
    pending_fatal_message_ = "terminating connection because protocol synchronization was lost";
  }
  // Else an invalid length: PostgreSQL only logs "invalid message length" and closes, and so does pgrouter.
  if (in_copy) set_server_state(ServerState::broken);  // that server still waits for the COPY's data
}

// The session's stages: the login (client_login.cpp), then the relay on either kind of client stream.
awaitable<void> ClientSession::run() {
  LoggedIn how = co_await login();
  if (how != LoggedIn::no && console_)
    co_await run_console();
  else if (how == LoggedIn::plain)
    co_await relay(plain_);
  else if (how == LoggedIn::tls)
    co_await relay(*tls_);
}

void spawn_session(Worker& worker, int fd, const tcp::endpoint& peer) {
  auto session = std::make_shared<ClientSession>(worker, fd, peer);
  if (!session->begin_login()) return;
  asio::co_spawn(
      worker.io(), [session]() -> awaitable<void> { co_await session->run(); }, asio::detached);
}

}  // namespace pgrouter::session
