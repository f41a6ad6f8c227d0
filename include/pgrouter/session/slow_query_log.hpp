// The slow-query log's part of a session: which statement each request in flight runs, so that a request
// answered after log.slow_query_ms can be logged with its fingerprint (and, when log.slow_query_parameters
// says so, its text and Bind values). Kept only while the log is on: a session with it off holds nothing.
// Pure: fed the client's messages and the requests' durations, it says what to log.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::session {

// One request over the threshold.
struct SlowQuery {
  uint64_t duration_ns = 0;
  std::string text;        // the statement as the client sent it (Query text, or the Parse text of its Bind)
  std::string parameters;  // "$1 = '...', $2 = NULL" of its Bind (only with parameters on)
};

class SlowQueryLog {
 public:
  // threshold_ms 0 = off. Requests already in flight keep what was recorded for them.
  void configure(int threshold_ms, bool parameters);
  bool on() const { return threshold_ns_ != kOff; }
  bool parameters() const { return parameters_; }
  // The duration at or over which a request is slow: the session compares it once per answered request.
  uint64_t threshold_ns() const { return threshold_ns_; }
  // A client message forwarded to a server (call only when on()): Query, Parse and Bind are read.
  void client_message(char type, std::string_view body);
  // A request (Query, Sync, FunctionCall) was sent / was answered (call only when on(); the session keeps
  // these paired with its own request timing).
  void request_started(char type);
  std::optional<SlowQuery> request_finished(uint64_t duration_ns);
  // The requests in flight were abandoned (the server went away): what was recorded for them is dropped.
  void clear_in_flight() { in_flight_.clear(); }

 private:
  static constexpr uint64_t kOff = UINT64_MAX;
  static constexpr size_t kMaxNamed = 256;  // named statements remembered (the oldest name is forgotten)
  struct Request {
    std::string text, parameters;
  };
  uint64_t threshold_ns_ = kOff;
  bool parameters_ = false;
  std::deque<Request> in_flight_;
  Request batch_;                             // the extended batch being built: its last Bind's statement
  std::string unnamed_;                       // the unnamed statement's text
  std::map<std::string, std::string> named_;  // statement name -> text, as Parse'd in this session
  static std::string bind_parameters(std::string_view body, size_t at);
};

}  // namespace pgrouter::session
