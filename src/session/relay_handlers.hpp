// Pieces of the client -> server relay shared by client_session.cpp and read_retry.cpp (private header).
#pragma once
#include <string>
#include <string_view>

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
  std::string_view finish(size_t consumed) {
    if (!rewritten) return {base, consumed};
    out.append(base + copied, consumed - copied);
    return out;
  }
};

// The FrameScanner handler of client -> server: counts requests, and in transaction pooling runs every
// message through the client's TxnTracker (which may replace it). `replaying`: the messages are being
// sent again to another server (read retry): they are already counted.
struct ClientSession::ClientMessages {
  ClientSession& self;
  SpanRewriter rw;
  bool replaying = false;
  // Transaction pooling reads the messages that name statements or carry SQL; session pooling reads
  // only Query bodies, and only of clients whose startup settings pgrouter applied with SET (RESET).
  bool wants_body(char type) const {
    if (type == 'Q') return self.txn_mode_ || !self.startup_reset_.empty();
    return self.txn_mode_ && (type == 'P' || type == 'B' || type == 'D' || type == 'C');
  }
  protocol::ScanAction on_message(char type, uint32_t len, std::string_view body) {
    if (type == 'X') return protocol::ScanAction::stop_before;
    if (self.tracker_ && self.track_client_message(type, body)) rw.replace(body.data() - 5, len, self.c2s_repl_);
    else if (type == 'Q' && !replaying && !self.startup_reset_.empty() &&
             !(self.tracker_ && self.tracker_->last_query_plain()) && self.reset_to_startup(body))
      rw.replace(body.data() - 5, len, self.c2s_inject_);
    if (replaying) return protocol::ScanAction::forward;
    switch (type) {
      case 'Q':
      case 'F':
        self.request_started();
        break;
      case 'S':
        self.unsynced_ = false;
        self.request_started();
        break;
      case 'P': case 'B': case 'E': case 'D': case 'C': case 'H':
        self.unsynced_ = true;
        break;
      default:
        break;
    }
    return protocol::ScanAction::forward;
  }
};

}  // namespace pgrouter::session
