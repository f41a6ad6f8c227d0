// RESET, RESET ALL and DISCARD ALL that return to the client's startup values.
//
// pgrouter's servers log in with pgrouter's own startup packet and get a client's startup settings
// (application_name, TimeZone, options=-c name=value, ...) with SET. PostgreSQL resets a parameter to
// the value of the session's *startup packet*, so on its own a server would go back to its login value.
// StartupReset rewrites the client's simple Query so that the startup value is put back in the same
// step, and filters the extra replies so the client sees exactly what PostgreSQL would send:
//
//   RESET x, SET x TO DEFAULT, RESET ALL (also inside a multi-statement query or a transaction block):
//     right after each such statement, "SELECT pg_catalog.set_config('x', 'startup value', false) AS
//     pgrouter_startup_reset, ..." is inserted into the same query string. It runs in the same
//     transaction (rolled back with it, skipped when an earlier statement failed), and PostgreSQL's own
//     end-of-query ParameterStatus report compares the final value with the one it last reported, as it
//     would. Its RowDescription (recognised by the column name), DataRow and CommandComplete are dropped.
//   DISCARD ALL (which must be alone in its query): a second Query with the same SELECT follows it. The
//     ParameterStatus messages of both are held back, DISCARD ALL's ReadyForQuery is held, the second
//     query's replies are dropped, and at its ReadyForQuery the client gets the ParameterStatus of each
//     parameter whose final value differs from the last one it was shown, then DISCARD ALL's ReadyForQuery.
//
// Only the simple-query protocol is rewritten (a Parse of RESET cannot carry a second statement).
// Everything here is pure bookkeeping; ClientSession feeds it messages (session/startup_reset.cpp).
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgrouter::session {

class StartupReset {
 public:
  static constexpr std::string_view kMarker = "pgrouter_startup_reset";

  StartupReset() = default;
  // params: the startup settings pgrouter applies with SET (name as sent, value), later ones winning.
  explicit StartupReset(const std::vector<std::pair<std::string, std::string>>& params);
  // Nothing to re-apply: the client sent no startup settings pgrouter had to SET.
  bool empty() const { return params_.empty(); }
  // No rewritten query awaits replies.
  bool idle() const { return pending_.empty(); }

  // For a client Query's text: whether it must be rewritten. When it must, `replacement` gets the whole
  // Query message (or messages) to send instead, and the reply filter expects it. `ahead`: the
  // requests sent before it that still await their ReadyForQuery.
  bool client_query(std::string_view sql, int ahead, std::string& replacement);

  // What to do with one message from the server (call for every message while !idle()).
  enum class Reply { forward, drop, replace };
  // replace: only for ReadyForQuery; `replacement` holds the messages to send instead, and `status`
  // the transaction status the client's request ended with (DISCARD ALL's). `params`: the parameters
  // last reported to the client (server parameters), updated for what is held back and then reported.
  Reply server_message(char type, std::string_view body, std::map<std::string, std::string>& params,
                       std::string& replacement, char& status);
  void clear() {
    pending_.clear();
    dropping_ = false;
  }

  // The SELECT that puts back every startup value (for tests and DISCARD ALL).
  std::string reapply_all() const;

 private:
  struct Pending {
    explicit Pending(int a) : ahead(a) {}
    int ahead;                  // ReadyForQuery messages of earlier requests still to come
    bool discard = false;       // DISCARD ALL with a second query
    bool discard_done = false;  // DISCARD ALL's ReadyForQuery was held; the second query's replies follow
    char status = 'I';
    std::vector<std::pair<std::string, std::string>> held;  // ParameterStatus held back, in order
  };
  std::string reapply(const std::vector<size_t>& which) const;

  std::vector<std::pair<std::string, std::string>> params_;  // lower-case name, value
  std::deque<Pending> pending_;
  bool dropping_ = false;  // inside the replies of an inserted SELECT
};

}  // namespace pgrouter::session
