// Read retry: a read that a replica fails to answer is sent again to another backend.
//
// A transaction-pooled client's transaction whose first messages are all reads and that was routed to a
// replica opens a *retry window* when its server is attached: client_buf_ is marked at the first message,
// so every byte sent from then on stays in the buffer (consumed, not discarded; no copy), and the
// tracker remembers where the client's statement state stood. The window closes when the first byte of
// the answer is written to the client (the common path: the mark is dropped, nothing else happens), when
// the kept bytes pass kMaxStreamingBuffer, or when the transaction leaves the replica.
//
// If the replica breaks inside the window (EOF or reset on either direction, or a going-away message:
// 57P01/57P02/57P03 as a FATAL ErrorResponse or as the WARNING NoticeResponse PostgreSQL sends before an
// immediate shutdown; the replies it flushes with it, from ParseComplete to rows and CommandComplete, are
// held back too unless one of them is an error, a ReadyForQuery or a PREPARE's CommandComplete), server ->
// client takes over: the broken server is closed (never pooled), its backend is marked down until a probe
// answers again, the tracker is rewound, the kept bytes are routed again (another replica, or the primary
// with routing.primary_fallback) and sent through the tracker to the new server, and a new server -> client
// loop starts for it. client -> server sends nothing meanwhile (retry_.busy). When no backend can take the
// read, the client gets a FATAL ErrorResponse: the server's own going-away error, or 08006, saying the read
// was not answered.
//
// A replica killed after buffering a whole answer but before its ReadyForQuery flushes the answer with its
// going-away WARNING: when that answer ends exactly one autocommit statement (can_end_answer_early), server
// -> client relays it with a ReadyForQuery 'I' of its own (end_answer_early) and drops the server, rather
// than running the statement again (the only way for an answer that is the statement's own error).
#include "pgrouter/control/log.hpp"
#include "pgrouter/sql/session_features.hpp"
#include "session/relay_handlers.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;

void ClientSession::open_retry_window() {
  retry_.attempts = 0;
  if (!tracker_ || !tx_read_ || !tx_on_replica_ || retry_.window) return;
  retry_.window = true;
  retry_.server_sqlstate.clear();
  retry_.server_message.clear();
  client_buf_.mark();
  tracker_->begin_window();
}

void ClientSession::close_retry_window() {
  if (!retry_.window) return;
  retry_.window = false;
  client_buf_.unmark();
  tracker_->end_window();
}

bool ClientSession::server_going_away(char type, std::string_view body) {
  // Shutdown (57P01, also pg_terminate_backend), crash of another backend (57P02), not accepting
  // connections (57P03): as a FATAL error, or as the WARNING notice of an immediate shutdown. Other
  // FATALs are the client's business (a protocol error would only fail again elsewhere).
  auto code = p::error_sqlstate(body);
  if (code != "57P01" && code != "57P02" && code != "57P03") return false;
  auto f = p::parse_error_fields(body);
  bool going = type == p::backend::kNoticeResponse || f.severity == "FATAL" || f.severity == "PANIC";
  if (going) {
    retry_.server_sqlstate = f.code;
    retry_.server_message = f.message;
  }
  return going;
}

bool ClientSession::can_end_answer_early() const {
  // Nothing else in flight either way, no state pgrouter itself is waiting on.
  if (!txn_mode_ || pinned_ || pending_ != 1 || unsynced_ || c2s_writing_ || !startup_reset_.idle() ||
      retry_.busy || !attached_.server)
    return false;
  // What the client sent since the window opened is one request with one statement: a Query holding a
  // single statement, or one extended batch (Parse, Bind, Describe, Close, Flush) with one Execute and
  // its Sync at the end. Two statements could not be ended here: the second may not have run.
  const char* d = client_buf_.mark_data();
  size_t n = client_buf_.consumed_since_mark(), pos = 0;
  int queries = 0, executes = 0, syncs = 0;
  char last = 0;
  while (pos + 5 <= n) {
    char type = d[pos];
    uint32_t len = p::read_be32(d + pos + 1);
    if (len < 4 || pos + 1 + size_t(len) > n) return false;
    std::string_view body(d + pos + 5, len - 4);
    switch (type) {
      case fe::kQuery: {
        ++queries;
        auto sql = body.substr(0, body.find('\0'));
        if (sql::split_statements(sql).size() != 1) return false;
        break;
      }
      case fe::kExecute:
        ++executes;
        break;
      case fe::kSync:
        ++syncs;
        break;
      case fe::kParse:
      case fe::kBind:
      case fe::kDescribe:
      case fe::kClose:
      case fe::kFlush:
        break;
      default:
        return false;
    }
    last = type;
    pos += 1 + size_t(len);
  }
  if (pos != n) return false;
  if (queries == 1) return executes == 0 && syncs == 0;
  return queries == 0 && executes == 1 && syncs == 1 && last == fe::kSync;
}

awaitable<void> ClientSession::wait_retry_signal() {
  net::error_code ec;
  retry_.signal->expires_at(pool::Clock::time_point::max());
  co_await retry_.signal->async_wait(asio::redirect_error(use_awaitable, ec));
}

void ClientSession::retry_signal() { retry_.signal->cancel(); }

awaitable<bool> ClientSession::replace_failed_server(std::string why) {
  auto& stats = w_.stats();
  retry_.busy = true;
  if (c2s_writing_ && attached_.server) {
    attached_.server->ready.cancel();  // its write to the broken server ends now
    while (c2s_writing_) co_await wait_retry_signal();
  }
  std::string replica = attached_.pool->target_name(), failed;
  bool ok = false;
  // Every replica once, then the primary: each round drops a server that broke before answering.
  size_t limit = shard().backends();
  for (;;) {
    failed = attached_.pool->target_name();
    if (auto& h = attached_.pool->settings().health) h->mark_down();
    attached_.pool->close_idle();  // a retry must not meet a sibling of the broken server, as stale as it
    if (attached_.server) {
      stats.servers_active.fetch_sub(1, std::memory_order_relaxed);
      attached_.pool->release(std::move(attached_.server), false);
    }
    tracker_->rewind();
    if (client_done_) break;
    if (retry_.attempts++ >= limit) {
      pending_fatal_sqlstate_ = p::sqlstate::connection_failure;
      pending_fatal_message_ = "every backend tried failed before answering (the last: " + failed + ")";
      break;
    }
    log::warn("replica failed before answering: routing the read again",
              {{"session", id_}, {"backend", failed}, {"error", why}});
    if (!co_await attach_backend(true)) break;
    if (client_done_) break;  // the new server goes back with the session's end
    if (!tx_read_) {
      // What the client sent since is not only reads any more: it cannot simply run elsewhere.
      stats.servers_active.fetch_sub(1, std::memory_order_relaxed);
      attached_.pool->release(std::move(attached_.server), true);
      pending_fatal_sqlstate_ = p::sqlstate::connection_failure;
      pending_fatal_message_ = "the batch also holds statements that are not reads";
      break;
    }
    stats.routed_reads_retried_total.fetch_add(1, std::memory_order_relaxed);
    // The bytes the broken server got, again through the tracker (against what this server has).
    // Taken now: the buffer may have moved while the attach waited.
    const char* d = client_buf_.mark_data();
    size_t sent = client_buf_.consumed_since_mark();
    // classify_batch's word on the first message is not taken here: it was given before the attach waited,
    // and the kept bytes may have moved since (client -> server reads on meanwhile).
    tracker_->known_plain(nullptr);
    p::FrameScanner scanner(uint32_t(config_->listen.max_message_size));
    ClientMessages handler{*this, SpanRewriter{c2s_out_}, true};
    handler.rw.begin(d);
    auto r = scanner.scan(d, sent, handler);
    std::string_view out = handler.rw.finish(r.consumed);
    net::error_code wec;
    if (register_server_io())
      co_await attached_.server->ready.write_all(out.data(), out.size(), wec);
    else
      wec = asio::error::bad_descriptor;
    c2s_out_.clear();
    if (!wec) {
      ok = true;
      break;
    }
    why = wec.message();  // this one broke at once too: next round
  }
  if (ok) {
    server_attached();                          // the new server: the old one's state went with it
    if (!tx_on_replica_) close_retry_window();  // a read on the primary is not retried
  } else if (!client_done_) {
    // Nobody can answer the read: the client gets the going-away error the replica sent, or 08006.
    std::string reason = std::move(pending_fatal_message_);
    if (!retry_.server_sqlstate.empty()) {
      pending_fatal_sqlstate_ = retry_.server_sqlstate;
    } else {
      pending_fatal_sqlstate_ = p::sqlstate::connection_failure;
    }
    pending_fatal_message_ = "replica " + replica + " failed before answering (" + why +
                             ") and the read could not be sent elsewhere: " + reason +
                             ". The read did not return results; reconnect and retry.";
    retry_.failed = true;
    close_retry_window();
    cancel_client_io();  // client -> server ends; the relay's epilogue sends the FATAL
  }
  retry_.busy = false;
  retry_signal();
  co_return ok;
}

}  // namespace pgrouter::session
