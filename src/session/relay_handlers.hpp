// Pieces of the client -> server relay shared by client_session.cpp and read_retry.cpp (private header).
#pragma once
#include <string>
#include <string_view>

#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/session/client_session.hpp"

namespace pgrouter::session {

// A scanned span to send on with some of its messages replaced or dropped: its bytes are copied into
// `out` only once something changed; otherwise they are sent straight from the read buffer.
struct SpanRewriter {
  std::string& out;
  const char* base = nullptr;
  size_t copied = 0;  // bytes of the span already in out
  bool rewritten = false;
  void begin(const char* b) {
    base = b;
    copied = 0;
    rewritten = false;
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
  bool wants_body(char type) const {
    if (type == 'Q') return self.txn_mode_ || !self.startup_reset_.empty();
    return self.txn_mode_ && (type == 'P' || type == 'B' || type == 'D' || type == 'C');
  }
  // PostgreSQL's limit for the type, within pgrouter's own listen.max_message_size (the scanner's).
  uint32_t max_length(char type) const { return protocol::frontend::max_length(type); }
  void on_drop(const char* p, size_t n) { rw.drop(p, n); }
  protocol::ScanAction on_message(char type, uint32_t len, std::string_view body) {
    namespace fe = protocol::frontend;
    if (type == fe::kTerminate) {
      terminate = true;
      return protocol::ScanAction::stop_before;
    }
    // Outside a COPY PostgreSQL reads these and ignores them; with nothing in flight no server can be in
    // a COPY, and a server between transactions may belong to someone else next: never forwarded then.
    if (fe::is_copy_message(type) && !replaying && !self.request_in_flight()) return protocol::ScanAction::drop;
    if (!self.server_) return protocol::ScanAction::stop_before;  // the loop attaches one first
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
    } else if (type == 'Q' && !replaying && !self.startup_reset_.empty() &&
             !(self.tracker_ && self.tracker_->last_query_plain()) && self.reset_to_startup(body))
      rw.replace(body.data() - 5, len, self.c2s_inject_);
    if (replaying) return protocol::ScanAction::forward;
    switch (type) {
      case fe::kQuery:
      case fe::kFunctionCall:
        self.request_started();
        break;
      case fe::kSync:
        self.unsynced_ = false;
        self.request_started();
        break;
      case fe::kParse: case fe::kBind: case fe::kExecute: case fe::kDescribe: case fe::kClose: case fe::kFlush:
        self.unsynced_ = true;
        break;
      default:
        break;
    }
    return protocol::ScanAction::forward;
  }
};

}  // namespace pgrouter::session
