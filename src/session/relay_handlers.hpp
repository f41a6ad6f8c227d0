// Pieces of the client -> server relay shared by client_session.cpp and read_retry.cpp (private header).
#pragma once
#include <string>
#include <string_view>

#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;
namespace fe = pgrouter::protocol::frontend;

// A scanned span to send on with some of its messages replaced or dropped: its bytes are copied into
// `out` only once something changed; otherwise they are sent straight from the read buffer.
struct SpanRewriter {
  std::string& out;
  const char* base = nullptr;
  size_t copied = 0;  // bytes of the span already in out
  bool rewritten = false;
  bool first = true;  // no message of the span was handled yet
  void begin(const char* b) {
    base = b;
    copied = 0;
    rewritten = false;
    first = true;
  }
  // Puts repl (empty: nothing) where the message at msg (its length field len) was.
  void replace(const char* msg, uint32_t len, std::string_view repl) {
    size_t at = size_t(msg - base);
    out.append(base + copied, at - copied);
    out.append(repl);
    copied = at + len + 1;
    rewritten = true;
  }
  // Puts bytes before the message at msg, which stays where it is (the scan stops before it).
  void insert(const char* msg, std::string_view bytes) {
    size_t at = size_t(msg - base);
    out.append(base + copied, at - copied);
    out.append(bytes);
    copied = at;
    rewritten = true;
  }
  // Leaves out the n bytes at p (a dropped message, or the part of it in this span).
  void drop(const char* p, size_t n) {
    size_t at = size_t(p - base);
    out.append(base + copied, at - copied);
    copied = at + n;
    rewritten = true;
  }
  std::string_view finish(size_t consumed) {
    if (!rewritten) return {base, consumed};
    out.append(base + copied, consumed - copied);
    return out;
  }
};

// The FrameScanner handler of client -> server: checks each message's type and length against the
// frontend protocol before anything of it is forwarded, counts requests, and in transaction pooling runs
// every message through the client's TxnTracker (which may replace it). `replaying`: the messages are
// being sent again to another server (read retry): they are already counted.
struct ClientSession::ClientMessages {
  ClientSession& self;
  SpanRewriter rw;
  bool replaying = false;
  bool terminate = false;  // the scan stopped at a Terminate: the session ends
  bool hold = false;       // the scan stopped before a message the tracker holds (TxnTracker::held())
  // Transaction pooling reads the messages that name statements or carry SQL; session pooling reads
  // only Query bodies, and only of clients whose startup settings pgrouter applied with SET (RESET).
  // The slow-query log reads Query, Parse and Bind while it is on.
  bool wants_body(char type) const {
    if (type == fe::kQuery) return self.txn_mode_ || !self.startup_reset_.empty() || self.slow_.on();
    if ((type == fe::kParse || type == fe::kBind) && self.slow_.on()) return true;
    return self.txn_mode_ &&
           (type == fe::kParse || type == fe::kBind || type == fe::kDescribe || type == fe::kClose);
  }
  // PostgreSQL's limit for the type, within pgrouter's own listen.max_message_size (the scanner's).
  uint32_t max_length(char type) const { return protocol::frontend::max_length(type); }
  void on_drop(const char* p, size_t n) {
    rw.first = false;  // what follows a dropped message is not where the loop looked
    rw.drop(p, n);
  }
  protocol::ScanAction on_message(char type, uint32_t len, std::string_view body) {
    namespace fe = protocol::frontend;
    bool first = std::exchange(rw.first, false);
    if (type == fe::kTerminate) {
      terminate = true;
      return protocol::ScanAction::stop_before;
    }
    // A batch pipelined behind a synced read on a replica: the loop decides where it goes (a write waits for
    // the replica's server to go back) before any of it is forwarded.
    // (Not the span's first message: the loop looked at that one. A body that has not arrived yet is an empty
    // view whose address says nothing of where its message is.)
    if (!replaying && !first && self.batch_behind_replica_read()) return protocol::ScanAction::stop_before;
    // Outside a COPY PostgreSQL reads these and ignores them; with nothing in flight no server can be in
    // a COPY, and a server between transactions may belong to someone else next: never forwarded then.
    if (fe::is_copy_message(type) && !replaying && !self.request_in_flight())
      return protocol::ScanAction::drop;
    if (!self.attached_.server) return protocol::ScanAction::stop_before;  // the loop attaches one first
    if (self.tracker_) self.tracker_->allow_hold(!replaying && !self.server_copy_in_);
    if (self.tracker_ && self.track_client_message(type, body)) {
      if (self.tracker_->held()) {
        // What goes before it is sent now; the message itself once the server's answer decided it.
        rw.insert(body.data() - 5, self.c2s_repl_);
        if (self.retry_.window) self.close_retry_window();  // a reply it waits for is not a read to resend
        self.unsynced_ = true;  // the server stays: the message, and its batch's Sync, are still to come
        hold = true;
        return protocol::ScanAction::stop_before;
      }
      rw.replace(body.data() - 5, len, self.c2s_repl_);
    } else if (type == fe::kQuery && !replaying && !self.startup_reset_.empty() &&
               !(self.tracker_ && self.tracker_->last_query_plain()) && self.reset_to_startup(body))
      rw.replace(body.data() - 5, len, self.c2s_inject_);
    if (replaying) return protocol::ScanAction::forward;
    if (self.slow_.on()) self.slow_.client_message(type, body);
    switch (type) {
      case fe::kQuery:
      case fe::kFunctionCall:
        self.request_started(type);
        break;
      case fe::kSync:
        self.unsynced_ = false;
        self.request_started(type);
        break;
      case fe::kParse:
      case fe::kBind:
      case fe::kExecute:
      case fe::kDescribe:
      case fe::kClose:
      case fe::kFlush:
        self.unsynced_ = true;
        break;
      default:
        break;
    }
    return protocol::ScanAction::forward;
  }
};

// The FrameScanner handler of server -> client, for one attachment: in transaction pooling runs the server's
// replies through the client's TxnTracker (which drops, retypes or replaces those answering pgrouter's own
// requests), and the RESET rewrite's (StartupReset); follows the server's state (ServerState, a COPY, the
// transaction status); in a read retry window, stops before a going-away message. Replies are changed in
// place in the server's read buffer (begin() takes it writable) or through the SpanRewriter.
struct ClientSession::ServerReplies {
  ClientSession& self;
  SpanRewriter rw;
  char* base = nullptr;  // the scanned span, writable
  void begin(char* b) {
    base = b;
    rw.begin(b);
  }
  // The bytes of a message body the scan handed over (read-only) as the buffer's own, to change in place.
  char* writable(std::string_view body) const { return base + (body.data() - base); }
  bool wants_body(char type) const {
    return type == be::kReadyForQuery || type == be::kErrorResponse || type == be::kParameterStatus ||
           (type == be::kNoticeResponse && self.retry_.window) ||
           (self.tracker_ && (type == be::kParseComplete || type == be::kBindComplete ||
                              type == be::kCloseComplete || type == be::kCommandComplete)) ||
           (self.tracker_ && self.tracker_->probing() && TxnTracker::is_describe_reply(type)) ||
           !self.startup_reset_.idle();
  }
  // Nothing in this read so far that could not simply be produced again by another server: replies
  // with no effect outside this server (not an error, a ReadyForQuery or a PREPARE's CommandComplete).
  bool unanswered = true;
  // Read retry, answer complete: results relayed in this read end with one CommandComplete or
  // ErrorResponse (only ReadyForQuery missing).
  int answers_ended = 0;
  bool answer_complete = false;
  bool end_early = false;  // stopped at a going-away message after a complete answer: see below
  // No length above the scanner's 1 GiB bound, no type PostgreSQL never sends.
  uint32_t max_length(char type) const { return p::backend::known_type(type) ? 0xffffffffu : 0; }
  p::ScanAction on_message(char type, uint32_t len, std::string_view body) {
    if (self.retry_.window) {
      // Read retry: while the window is open nothing of the answer reached the client. A server going
      // away after replies it flushed with its last words (ParseComplete, RowDescription, rows, even a
      // CommandComplete: it was killed before its ReadyForQuery) is not relayed, nor are those: the read
      // is sent to another server (or, below, ended here).
      if ((type == be::kErrorResponse || type == be::kNoticeResponse) && self.server_going_away(type, body)) {
        // A complete answer to one autocommit statement: relayed with the ReadyForQuery the server did
        // not live to send (no second run). Else anything not yet seen by the client runs again.
        if (answer_complete && answers_ended == 1 && self.can_end_answer_early()) {
          end_early = true;
          return p::ScanAction::stop_before;
        }
        if (unanswered) return p::ScanAction::stop_before;
      }
      if (type == be::kErrorResponse || type == be::kReadyForQuery || type == be::kCopyInResponse ||
          type == be::kCopyOutResponse || type == be::kCopyBothResponse || type == be::kCopyData ||
          type == be::kCopyDone || type == be::kFunctionCallResponse ||
          (type == be::kCommandComplete && body.substr(0, 7) == "PREPARE"))
        unanswered = false;
    }
    bool replace_z = false;
    if (!self.startup_reset_.idle()) {
      // Replies to what pgrouter added to a RESET or DISCARD ALL (see session/startup_reset.hpp).
      char status = 'I';
      self.s2c_inject_.clear();
      auto r = self.startup_reset_.server_message(type, body, self.attached_.server->params, self.s2c_inject_,
                                                  status);
      self.attached_.server->settled = {};  // it may have changed `params`
      if (r == StartupReset::Reply::drop) {
        rw.replace(body.data() - 5, len, {});
        return p::ScanAction::forward;
      }
      if (r == StartupReset::Reply::replace && !body.empty()) {
        writable(body)[0] = status;  // DISCARD ALL's own transaction status
        replace_z = true;
      }
    }
    // The tracker first: a reply to a request pgrouter sent (a ReadyForQuery too) is not the client's.
    auto reply = TxnTracker::Reply::forward;
    if (self.tracker_ && (TxnTracker::is_reply_type(type) ||
                          (self.tracker_->probing() && TxnTracker::is_describe_reply(type))))
      reply = self.track_server_message(type, body);
    if (type == be::kCopyInResponse || type == be::kCopyBothResponse)
      self.server_copy_in_ = true;  // CopyIn/CopyBothResponse
    else if (type == be::kCommandComplete || type == be::kErrorResponse || type == be::kReadyForQuery)
      self.server_copy_in_ = false;
    if (type == be::kReadyForQuery) {
      self.attached_.server->tx_status = body.empty() ? 'I' : body[0];
      self.client_tx_status_ = self.attached_.server->tx_status;
      if (reply != TxnTracker::Reply::drop) {
        if (self.client_tx_status_ == 'I') self.replay_transaction_ended();
        self.request_finished();
      }
    } else if (type == be::kErrorResponse && p::error_is_fatal(body) && self.between_transactions()) {
      // The server is going away (shutdown, pg_terminate_backend) after the client's transaction ended:
      // the client's next one simply gets another server.
      self.set_server_state(ServerState::ended_idle);
      rw.replace(body.data() - 5, len, {});
      return p::ScanAction::forward;
    } else if (type == be::kErrorResponse) {
      auto code = p::error_sqlstate(body);
      // Counted as the client gets it: not at all when it answered pgrouter's own request, with the
      // rewritten code when the tracker replaced it (a refusal or a duplicate statement pgrouter makes the
      // server produce with a sentinel name).
      if (reply == TxnTracker::Reply::forward) {
        self.w_.stats().count_error(code, false);
      } else if (reply == TxnTracker::Reply::replace && self.s2c_repl_.size() > 5 &&
                 self.s2c_repl_[0] == be::kErrorResponse) {
        self.w_.stats().count_error(p::error_sqlstate(std::string_view(self.s2c_repl_).substr(5)), false);
      }
      // Any FATAL: the server is ending the session, and PostgreSQL closes the client's connection too.
      if (p::error_is_fatal(body)) self.set_server_state(ServerState::fatal);
    } else if (type == be::kParameterStatus) {
      if (auto kv = p::parse_parameter_status(body)) {
        self.attached_.server->set_param(kv->first, kv->second);
        if (self.tracker_) self.tracker_->parameter_reported(kv->first, kv->second);
        // A setting pgrouter applied here changed (a function's SET, set_config inside it): what it
        // is now is unknown, so the next client sets or RESETs it again. A tracked SET records its
        // statement again at its ReadyForQuery, which comes after this.
        if (auto it = self.attached_.server->applied.find(util::ascii_lower(kv->first));
            it != self.attached_.server->applied.end())
          it->second.clear();
      }
    }
    if (reply != TxnTracker::Reply::forward) {
      if (reply == TxnTracker::Reply::as_parse_complete) {
        writable(body)[-5] = be::kParseComplete;  // CloseComplete and ParseComplete have the same shape
      } else if (reply != TxnTracker::Reply::forward) {  // drop, or replace
        rw.replace(
            body.data() - 5, len,
            reply == TxnTracker::Reply::replace ? std::string_view(self.s2c_repl_) : std::string_view());
      }
    }
    if (replace_z) rw.replace(body.data() - 5, len, self.s2c_inject_);
    if (self.retry_.window && reply == TxnTracker::Reply::forward && type != be::kNoticeResponse &&
        type != be::kParameterStatus && type != be::kNotificationResponse) {
      // (Not a BEGIN: its ReadyForQuery would have said 'T'.)
      answer_complete =
          (type == be::kCommandComplete && body.substr(0, 5) != "BEGIN" && body.substr(0, 5) != "START") ||
          type == be::kErrorResponse;
      answers_ended += answer_complete;
    }
    return p::ScanAction::forward;
  }
};

}  // namespace pgrouter::session
