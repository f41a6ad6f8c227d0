// Transaction pooling's per-client session state: the client's named prepared statements and the
// session settings it SET, so that both follow the client to whichever server it gets next.
//
// Prepared statements. A client's statement "S1" is prepared on servers under a name derived from its
// text, parameter types and the settings that change what a text means once parsed (parse_setting()):
// "pgr_" + 128-bit hash, so clients that prepare the same statement share it and different clients' "S1"
// never collide. Each server remembers what it has (ServerStatements,
// LRU-bounded). The tracker rewrites the client's messages on their way to the server:
//   Parse S1      -> Parse pgr_x, or, when the server already has pgr_x, a Close of a name that never
//                    exists, whose CloseComplete goes back to the client retyped as ParseComplete
//                    (so every reply still comes from the server, in order);
//   Bind/Describe -> renamed, after a Parse pgr_x injected when this server lacks it (its
//                    ParseComplete is dropped), and a Close of the least recently used statement when
//                    the server's cache is full (its CloseComplete is dropped too);
//   Close S1      -> forgets S1 (the server keeps pgr_x for others); Parse of an existing name -> the same
//                    Parse under a name the server has (an empty statement made first), so the server checks
//                    as PostgreSQL does, in its order (25P02, the text, then 42P05, renamed to the client's).
// Replies are matched to requests with a queue of expectations: one per Parse/Close (ParseComplete,
// CloseComplete) and one per Sync/Query/FunctionCall (ReadyForQuery). After an ErrorResponse the
// server skips to the next Sync (after an extended-protocol message's error, Queries and FunctionCalls too,
// which then get no ReadyForQuery): the skipped requests' expectations are dropped and their effects undone
// (a statement that was not created is forgotten again; a name redefined meanwhile means what it meant
// before; errors still name the client's statement, never pgr_...). Pipelining: a request is rewritten before
// the replies to earlier ones arrive. While a request that may fail or be skipped (a Parse the server really
// runs, a Close after a request that may fail, a SQL PREPARE) creates or removes a name, a later request
// naming it is sent so that the server decides, as PostgreSQL would, through a witness whose existence
// follows the outcome: the server statement that Parse created or that Close really closed, or an empty
// marker statement (pgr_marker_<client>_<n>) made right after a Close where the server has no copy. A Parse
// that may be skipped never takes the no-op path (nothing to witness): where the server has the shared
// statement, the client gets its own copy.
//
// The unnamed statement (pool.unnamed_statements). `pass`: it lives on the server as the client sent it, and
// is parsed again where the client binds it on a server someone else parsed on since. `prepare`: a Parse of
// the unnamed statement whose text touches no session state, and that this worker saw parsed before (a text
// sent once stays the server's unnamed statement), is treated like a named one under its "pgr_" name (Parse
// -> Parse pgr_x, or the Close retyped as ParseComplete when the server has it; Bind/Describe "" -> pgr_x,
// prepared first where missing), so a text the application sends again is parsed and planned once per server
// connection, as PgDog's `extended_anonymous`. The client still sees an unnamed statement: a Query or a Close
// drops it, a failed or skipped Parse leaves none, and errors name it "" again. Result columns (PostgreSQL's
// "cached plan must not change result type"). A statement keeps the result columns it had when the client
// parsed it: PostgreSQL refuses (0A000) to run or describe it once its tables changed them, until the client
// parses it again (JDBC decodes rows with the RowDescription it cached). pgrouter learns them with a Describe
// sent after the client's Parse (its replies dropped), and each server copy's with one sent after preparing
// it. A statement prepared again where a server lacks it (or has a copy with other columns) is checked before
// the client's Bind or Describe goes on: the relay holds that message (held()) until the Describe answers
// (holding()); other columns than the client's make it fail with 0A000, as in PostgreSQL, with nothing of it
// run. Columns known only from a shared copy (the client's Parse found it there) are the client's once a copy
// prepared again reports them. Schema changes. Shared names also hash a process-wide epoch that the
// CommandComplete of ALTER/DROP/CREATE VIEW through pgrouter bumps, so clients parse afresh after them. After
// "cached plan must not change result type" (a table changed under a statement behind pgrouter's back)
// pgrouter forgets all of that server's statements and prepares each again at its next use, after a Close of
// the stale one.
//
// SQL PREPARE / EXECUTE / DEALLOCATE (the same namespace as protocol names, in PostgreSQL and here). A simple
// Query `PREPARE s [(types)] AS stmt` is sent as `PREPARE pgr_y ...` (after a Close of pgr_y, so a server
// that already has it from another client prepares it again), pgr_y a hash of what follows the name; s is
// recorded when the PREPARE is sent and forgotten if it fails (PREPARE is not transactional: a later ROLLBACK
// keeps it, as in PostgreSQL), and a DEALLOCATE sent as a Query forgets s when sent (back if it fails).
// Among other statements of a Query, PREPARE / DEALLOCATE / EXECUTE names are replaced in the order of the
// text, each PREPARE and DEALLOCATE undone unless its CommandComplete comes. Either way, Queries pipelined
// after them see the name as PostgreSQL will. Every `EXECUTE s` in a Query or Parse text (also EXPLAIN
// EXECUTE, CREATE TABLE AS EXECUTE) becomes `EXECUTE pgr_y` after pgr_y was prepared where missing: before a
// Parse/Bind/Describe by Close/Close/Parse/Bind/Execute of the PREPARE text through a helper statement and
// portal ("pgr_prepare"), before a Query by the same (or the Parse of a protocol statement) and a Sync whose
// error, if any, is dropped (the client's own statement then fails as it would). Replies to all of that are
// dropped; errors of a rewritten text get their position and names translated back to what the client wrote.
//
// Settings. SET/RESET of a tracked parameter is recorded when its Sync/Query completes without error;
// inside a transaction it stays tentative until COMMIT (dropped on ROLLBACK). On every attach the
// session's settings are compared with what the server carries and the difference is SET/RESET first.
#pragma once
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <xxhash.h>

#include "pgrouter/control/stats.hpp"
#include "pgrouter/pool/server_statements.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/sql/session_features.hpp"

namespace pgrouter::session {

// How a statement text was rewritten (names replaced by server names), to translate an error about the
// rewritten text back: positions (in characters, 1-based) and names in the messages.
struct TextRewrite {
  struct Edit {
    uint32_t client_begin, client_len, server_len;  // characters
  };
  std::vector<Edit> edits;
  std::vector<std::pair<std::string, std::string>> names;  // server name -> client name
  uint32_t client_position(uint32_t server_position) const;
};

struct TrackedStatement {
  std::string server_name;    // "pgr_" + hash of (query, parameter types)
  std::string parse_message;  // protocol Parse: a whole Parse message that creates it under server_name
  std::string prepare_sql;  // SQL PREPARE: "PREPARE <server_name> ..." that creates it (parse_message empty)
  // Statements its text EXECUTEs: prepared first wherever it is prepared; how its text was rewritten.
  std::vector<std::shared_ptr<TrackedStatement>> uses;
  std::shared_ptr<const TextRewrite> rewrite;
  // Its result columns (TxnTracker::desc_of: 0 unknown, kNoRows none); desc_own: found for this client's own
  // Parse (or a copy prepared since), not taken from a shared copy, so the server must keep them.
  uint64_t desc = 0;
  bool desc_own = false;
};

class TxnTracker {
 public:
  // Settings: lower-case parameter name -> the statement that gives it its value ("SET name TO ...").
  using Settings = std::map<std::string, std::string>;

  // What to do with one message from the server.
  enum class Reply { forward, drop, as_parse_complete, replace };
  // What a client's statement text means for the session.
  // reads_sequence: currval()/lastval() in a simple Query or unnamed Parse that client_message() let through
  // (it reports none then) or refused.
  enum class Effect { none, tracked, unsupported, reads_sequence };

  // refuse: statements using an unshareable session feature get an error instead of pinning.
  // owner: a process-unique token of the client (who last parsed a server's unnamed statement).
  // startup_parse_settings: the client's startup parameters that change what a statement text means when it
  // is parsed (see kParseSettings in txn_tracker.cpp), lower-case names, as given. prepare_unnamed:
  // pool.unnamed_statements is `prepare` (see above).
  TxnTracker(control::WorkerStats& stats, uint64_t owner, size_t cache_capacity, bool refuse,
             std::vector<std::string> extra_tracked_parameters,
             std::vector<std::pair<std::string, std::string>> startup_parse_settings = {},
             bool prepare_unnamed = false)
      : stats_(stats),
        owner_(owner),
        capacity_(cache_capacity),
        refuse_(refuse),
        prepare_unnamed_(prepare_unnamed),
        extra_tracked_(std::move(extra_tracked_parameters)),
        startup_parse_(std::move(startup_parse_settings)) {}
  // Parameters whose value is part of what a statement means once parsed: name resolution (search_path), the
  // constants PostgreSQL converts while parsing (a timestamptz or date literal: TimeZone, DateStyle,
  // IntervalStyle), how the text is read (standard_conforming_strings, client_encoding). Statements are
  // shared on a server only between clients that agree on all of them.
  static bool parse_setting(std::string_view lower_name);

  // Called for every message the client sends in transaction mode, in order, before it goes to
  // `server`. Returns false to forward the message unchanged; true when it must not be: the bytes to
  // send instead were appended to `out`. Sets `effect` for a Query or Parse whose text changes
  // session state: tracked (carried by this tracker) or unsupported (the caller pins or refuses).
  bool client_message(char type, std::string_view body, pool::ServerStatements& server, std::string& out,
                      Effect& effect);
  // Called for every message from the server that wants_reply_body() asked for.
  Reply server_message(char type, std::string_view body, pool::ServerStatements& server,
                       Settings& server_settings, std::string& replacement);
  static bool is_reply_type(char type) {
    namespace be = protocol::backend;
    return type == be::kParseComplete || type == be::kBindComplete || type == be::kCloseComplete ||
           type == be::kErrorResponse || type == be::kReadyForQuery || type == be::kCommandComplete;
  }
  // server_message() wants these only while probing().
  static bool is_describe_reply(char type) {
    namespace be = protocol::backend;
    return type == be::kParameterDescription || type == be::kRowDescription || type == be::kNoData;
  }
  bool probing() const { return probes_ > 0; }
  // The identity of a RowDescription's columns (names, types, sizes, modifiers: what PostgreSQL compares).
  static uint64_t desc_of(std::string_view row_description);
  static constexpr uint64_t kNoRows = 1;  // a statement answered NoData
  // The last client_message() did not take its message: `out` holds what goes to the server before it, and
  // the same message comes again once holding() is over (the relay waits for the reply that decides it). Only
  // while holds are allowed (not when read retry sends messages again).
  bool held() const { return held_; }
  bool holding() const { return hold_.state == HoldState::waiting; }
  void allow_hold(bool allowed) { allow_hold_ = allowed; }

  // currval()/lastval() give this client's value only on a server where something that may call nextval() ran
  // since the client got it (or on a server the client keeps): the caller says when the server changes hands.
  void server_released() { sequence_own_ = false; }
  void client_pinned() { sequence_own_ = true; }
  // No request awaits a reply: the server may be given back.
  bool idle() const { return expect_.empty(); }
  // The server was lost or reset: nothing more will answer, and it has nothing of ours.
  void server_gone() {
    expect_.clear();
    probes_ = 0;
    if (holding()) hold_.state = HoldState::skipped;
    tx_sets_.clear();
    group_sets_.clear();
    ghosts_.clear();
    may_skip_ = false;
    skip_to_sync_ = false;
    tx_status_ = 'I';
    sequence_own_ = false;
  }
  // Read retry (session/read_retry.cpp): between begin_window() and end_window() the client's messages
  // may be sent again to another server. rewind() undoes what the messages sent since begin_window()
  // did to the client's state (statements created or closed, the unnamed statement, pending SETs), also
  // for replies already matched (ParseComplete, CloseComplete), and forgets every expected reply, so the
  // messages can be tracked again against the new server. Only valid while no reply of the window
  // reached the client other than those two (the caller's rule).
  void begin_window() {
    window_ = true;
    window_unnamed_valid_ = unnamed_valid_;
    window_may_skip_ = may_skip_;
    unnamed_saved_ = false;
    window_matched_.clear();
  }
  void end_window() {
    window_ = false;
    window_matched_.clear();
  }
  void rewind();
  // A ROLLBACK TO SAVEPOINT may have undone a SET pgrouter cannot follow: the caller pins the client.
  bool uncertain() const { return uncertain_; }
  // The open transaction (or the batch in flight) SET a session setting, kept only if it commits.
  bool sets_pending() const { return !tx_sets_.empty() || !group_sets_.empty(); }
  // The feature behind the last Effect::unsupported ("LISTEN", "SET", ...).
  const std::string& feature() const { return feature_; }
  // The last simple Query's text has no statement that touches session state (Effect::none: no RESET, SET
  // x TO DEFAULT or DISCARD ALL, which are tracked or pin): StartupReset has nothing to rewrite in it either.
  bool last_query_plain() const { return last_query_plain_; }
  // The SQL text starting at `text` (inside the message about to be tracked) is known to touch no session
  // state (read/write splitting classified it, sql::Classification::session_plain): not scanned again.
  // Valid for the scan that follows only; cleared with nullptr.
  void known_plain(const char* text) { known_plain_ = text; }

  // The client's message is answered with `error_response` (a whole ErrorResponse) instead, through a
  // sentinel request: the server skips the rest of its batch as it would after its own error.
  void refuse_message(std::string error_response, char type, std::string& out) {
    fail_with(std::move(error_response), type, out);
  }
  // A BEGIN pgrouter already answered for the client (sharding: it named no shard) is sent to the server
  // before the client's next message; its CommandComplete and ReadyForQuery are dropped.
  void begin_injected(std::string_view begin_sql, std::string& out);

  // The settings the client's session has from SQL (on top of its startup parameters).
  const Settings& settings() const { return settings_; }
  bool refuses() const { return refuse_; }  // pool.session_features: refuse
  // A ParameterStatus the client's server sent: a SET of that parameter committed in this transaction is
  // recorded with this value, not its text (a partial DateStyle such as 'ymd' merges with the value before
  // it, which another server need not have).
  void parameter_reported(std::string_view name, std::string_view value);
  // Changes whenever settings() does (or a server's settings were changed through this client).
  uint64_t settings_version() const { return settings_version_; }
  size_t statements() const { return statements_.size(); }
  bool tracks(const std::string& parameter) const;
  // The text of a statement the client prepared ("" = its unnamed statement), if pgrouter knows it.
  std::optional<std::string_view> statement_query(const std::string& name) const;
  // The same for the statement a server name of pgrouter's stands for: a statement whose text names others
  // with EXECUTE is kept with those names rewritten to their server names.
  std::optional<std::string_view> statement_query_by_server_name(std::string_view server_name) const;
  // Its text and parameter types (the bytes after the text in a Parse), when it was created by a Parse whose
  // text pgrouter did not rewrite.
  std::optional<std::pair<std::string_view, std::string_view>> statement_parse(const std::string& name) const;
  // A named statement the client created where no server saw it (a cross-shard read's Parse, run on each
  // shard as the unnamed statement): known from now on, prepared on a server wherever it is used. The name
  // must be new to the client.
  void define_statement(const std::string& name, std::string_view text, std::string_view types);
  // A DEALLOCATE the client ran where no server saw it (inside a transaction across shards): the statement
  // `name`, or every named one, is the client's no longer (servers keep their copies, for reuse).
  void forget_statement(const std::string& name) { statements_.erase(name); }
  void forget_named_statements() {
    std::erase_if(statements_, [](const auto& kv) { return !kv.first.empty(); });
  }
  // The Parse message that creates the client's statement `name` ("" its unnamed one), if one does.
  const std::string* parse_message_of(const std::string& name) const;

 private:
  // sentinel_error: a request sent only to make the server fail (a Describe of a missing
  // statement); its error is replaced by `error` (42P05 for a duplicate Parse, 0A000 for a refusal).
  // probe: a Describe pgrouter sent to learn a statement's result columns (ExpectMore::probed).
  enum class Action : uint8_t { forward, drop, as_parse_complete, sentinel_error, probe };
  enum class OnSuccess : uint8_t { deallocate_all, discard_all, deallocate };
  struct StatementEffect {  // what a DEALLOCATE / DISCARD ALL does once its Sync/Query succeeded
    OnSuccess kind;
    std::string client_name, server_name;
    // A DEALLOCATE sent as a Query forgets its name when sent (a Query pipelined after it must not find it);
    // this is put back if it fails.
    std::shared_ptr<TrackedStatement> removed = {};
  };
  // What a request's record carries besides its reply and action: only some requests need it (a named
  // Parse, a Close, pgrouter's own requests, a Sync after SETs), so it is allocated only for them and the
  // records of the relay's usual traffic (an unnamed Parse, a Sync) stay 16 bytes.
  struct ExpectMore {
    std::string error;  // sentinel-error requests: the ErrorResponse the client gets instead
    std::string match;  // ... and the message of the error it replaces (empty: the sentinel's 26000)
    // Undo information when the request is skipped after an error:
    std::string client_name;                    // a Parse that created (or a Close that removed) this name
    std::shared_ptr<TrackedStatement> removed;  // the statement a Close removed
    std::string server_name;                    // a Parse that prepared this, or a Close that evicted it
    // ReadyForQuery only: what the Sync/Query commits when no error came before it.
    std::vector<sql::SessionCommand> sets;
    std::vector<StatementEffect> effects;
    // A Parse or PREPARE of client_name: what it recorded when sent, and what the name meant before (put back
    // if it does not happen).
    std::shared_ptr<TrackedStatement> created, prev;
    std::shared_ptr<const TextRewrite> rewrite;  // a Parse/Query whose text was rewritten: for its errors
    std::shared_ptr<TrackedStatement> probed;  // probe: the statement whose columns it learns (server_name's)
  };
  static const ExpectMore kNoMore;
  struct Expect {
    explicit Expect(char r, Action a = Action::forward) : reply(r), action(a) {}
    Expect(char r, Action a, std::string err) : reply(r), action(a) { more().error = std::move(err); }
    // ParseComplete, BindComplete, CloseComplete, CommandComplete (of a PREPARE) or ReadyForQuery
    // (backend::).
    char reply;
    Action action;
    bool evicted : 1 = false;  // a Close pgrouter sent to make room (server_name)
    bool failed : 1 = false;   // ReadyForQuery only: an error came before it
    bool unnamed : 1 =
        false;  // a Parse or Close of the unnamed statement: if skipped, the server's is unknown
    bool unnamed_resend : 1 = false;  // ... one pgrouter re-sent: the client's unnamed statement still exists
    bool swallow : 1 = false;  // ReadyForQuery of a Sync pgrouter sent: an error before it is dropped too
    // A request that creates (created) or removes (removed) client_name and may fail or be skipped: while it
    // is in flight, what the name means is for the server to say (see pending_touch()).
    bool uncertain : 1 = false;
    bool client_text : 1 =
        false;  // a Parse of the client's text whose reply is dropped: its errors are the client's
    // A removal whose witness is a marker statement (ExpectMore::server_name) created right after it: it
    // exists exactly when the removal happened (used where the server lacks the removed statement's copy).
    bool marker : 1 = false;
    // ReadyForQuery of a Query or FunctionCall: after an extended-protocol error the server skips it too (up
    // to a Sync), and it gets no ReadyForQuery.
    bool not_sync : 1 = false;
    bool verify : 1 = false;  // probe: decides a hold (the columns must be the statement's)
    std::unique_ptr<ExpectMore> extra;
    ExpectMore& more() {
      if (!extra) extra = std::make_unique<ExpectMore>();
      return *extra;
    }
    const ExpectMore& get() const { return extra ? *extra : kNoMore; }
  };
  static_assert(sizeof(Expect) <= 16, "an expected reply of the usual traffic stays 16 bytes");
  using StatementMap = std::unordered_map<std::string, std::shared_ptr<TrackedStatement>>;

  // client_message() without the marker's Close: dispatches on the message type to the track_* below, which
  // return what it returns (true: the message was replaced by what they appended to out).
  bool track_client(char type, std::string_view body, pool::ServerStatements& server, std::string& out,
                    Effect& effect);
  bool track_parse(std::string_view body, pool::ServerStatements& server, std::string& out, Effect& effect);
  bool track_bind_or_describe(char type, std::string_view body, pool::ServerStatements& server,
                              std::string& out);
  bool track_close(std::string_view body, pool::ServerStatements& server, std::string& out);
  bool track_query(std::string_view body, pool::ServerStatements& server, std::string& out, Effect& effect);
  // A Sync, or a FunctionCall (which the server also answers with ReadyForQuery): the end of a group.
  void track_sync(char type);

  // Parse. A named statement's Parse: the statement the name is about to mean, and what it meant before.
  struct NamedParse {
    std::string client_name;
    std::shared_ptr<TrackedStatement> st;
    std::shared_ptr<TrackedStatement> prev;
    // e is the request that creates the name and may fail or be skipped (the name is moved into it).
    void record(Expect& e);
  };
  // A Parse of a name the client has (PostgreSQL's 42P05, after its other checks).
  void parse_duplicate(const std::string& client_name, std::string_view query, std::string_view types,
                       std::string& out);
  // The text with the names it DEALLOCATEs or EXECUTEs replaced by server names (those prepared first); false
  // (nothing in text) when it keeps the client's.
  bool rewrite_parse_text(std::string_view query, pool::ServerStatements& server, std::string& out,
                          std::string& text, std::vector<std::shared_ptr<TrackedStatement>>& uses,
                          std::shared_ptr<const TextRewrite>& rewrite);
  // shareable: may be prepared under its shared name (pool.unnamed_statements: prepare) once seen before.
  bool parse_unnamed(std::string_view text, std::string_view types, bool rewritten, bool shareable,
                     std::vector<std::shared_ptr<TrackedStatement>> uses,
                     std::shared_ptr<const TextRewrite> rw, pool::ServerStatements& server, std::string& out);
  void parse_unnamed_shared(const XXH128_hash_t& h, std::string_view text, std::string_view types,
                            pool::ServerStatements& server, std::string& out);
  // Records the client's name as the statement (text, types) under its shared name, or under a name of the
  // client's own (own_copy) where the server has the shared one.
  NamedParse define_named(std::string client_name, std::string_view text, std::string_view types,
                          std::vector<std::shared_ptr<TrackedStatement>> uses,
                          std::shared_ptr<const TextRewrite> rw, bool own_copy,
                          const pool::ServerStatements& server);
  // The client's text parsed under its shared name where the server lacks it (its errors come first, as in
  // PostgreSQL); its ParseComplete is pgrouter's, not the client's.
  void parse_client_text(const TrackedStatement& st, pool::ServerStatements& server, std::string& out);
  // The paths of a named Parse: after a Close in flight whose witness is a marker (Expect::marker), with
  // another request's witness, the reuse of the server's shared copy (a no-op Close), a real Parse.
  void parse_after_marker(NamedParse& np, const Expect& touch, pool::ServerStatements& server,
                          std::string& out);
  void parse_with_witness(NamedParse& np, const Expect& touch, pool::ServerStatements& server,
                          std::string& out);
  void parse_reuse(NamedParse& np, const pool::ServerStatements& server, std::string& out);
  void parse_real(NamedParse& np, bool touched, pool::ServerStatements& server, std::string& out);
  // Bind and Describe (`type`) of the unnamed statement, and of a name the client no longer has.
  bool bind_or_describe_unnamed(char type, std::string_view body, std::string_view portal,
                                std::string_view rest, pool::ServerStatements& server, std::string& out);
  bool bind_or_describe_closed(char type, std::string_view name, std::string_view portal,
                               std::string_view rest, pool::ServerStatements& server, std::string& out);
  // A Close of a statement the client has; e is its expected CloseComplete.
  void close_named(StatementMap::iterator it, Expect e, pool::ServerStatements& server, std::string& out);
  // A simple Query `DEALLOCATE name` of a tracked statement (dealloc_ set by session_effect()).
  void carry_deallocate(pool::ServerStatements& server, std::string& out, Expect& z);
  // A simple Query naming tracked statements with EXECUTE: true when rewritten (the Query is in out).
  bool carry_executes(std::string_view sql, pool::ServerStatements& server, std::string& out, Expect& z);
  // The name of this client's marker statement number n (Expect::marker).
  std::string marker_name(uint32_t n) const;
  // Prepares st (and what it uses) on `server` if it lacks it, with messages appended to out that are valid
  // inside an extended-protocol batch; true if something was sent. Before a Query, the caller ends them
  // with sync_injected().
  bool ensure_prepared(const TrackedStatement& st, pool::ServerStatements& server, std::string& out);
  // ensure_prepared() for the statement a client's Bind or Describe (`type`) names, checking a copy prepared
  // afresh against the client's columns: hold (held() set: only the preparation is in out), refused (the
  // message's 0A000 is in out) or ready (the message goes on, renamed).
  enum class Prepared { ready, hold, refused };
  Prepared prepare_checked(const std::shared_ptr<TrackedStatement>& st, pool::ServerStatements& server,
                           char type, std::string& out);
  // A Describe of server_name (its replies dropped) that records its columns, or (verify) decides the hold.
  void probe(const std::shared_ptr<TrackedStatement>& st, const std::string& server_name, bool verify,
             std::string& out);
  Reply probe_answered(char type, std::string_view body, pool::ServerStatements& server);
  void sync_injected(std::string& out);
  // Rewrites the EXECUTE names of `sql` the client tracks to their server names, preparing them first;
  // false (nothing appended to `text`) when none is tracked.
  bool rewrite_executes(std::string_view sql, pool::ServerStatements& server, std::string& out,
                        std::string& text, std::vector<std::shared_ptr<TrackedStatement>>& uses,
                        std::shared_ptr<const TextRewrite>& rewrite);
  // A simple Query `PREPARE name ...` (prepare_ set by session_effect()).
  void carry_prepare(std::string_view sql, pool::ServerStatements& server, std::string& out, Expect& z);
  // A simple Query of several statements with PREPARE or DEALLOCATE names in it (multi_ set by
  // session_effect()): those names and the EXECUTE names become server names, in the order of the text.
  void carry_multi(std::string_view sql, pool::ServerStatements& server, std::string& out, Expect& z);
  bool fix_error(std::string_view body, const TextRewrite* rw, bool strip_position,
                 std::string& replacement) const;
  void evict_for(const std::string& name, pool::ServerStatements& server, std::string& out);
  // A Close of a server copy pgrouter already forgot, put back if the server skips the Close
  // (Expect::evicted).
  void close_copy(std::string name, std::string& out);
  // Before a Parse of `name` on a server that may hold statements pgrouter forgot
  // (ServerStatements::forget_stale).
  void close_stale(const std::string& name, const pool::ServerStatements& server, std::string& out);
  // Classifies statement text; for a DEALLOCATE of a tracked statement, sets dealloc_ to it.
  // simple: the text of a simple Query (a PREPARE there is carried).
  Effect session_effect(std::string_view sql, bool named, bool simple, std::string& feature);
  Effect statement_effect(std::string_view one_statement, bool named, bool single, bool simple,
                          std::string& feature);
  void end_group(Expect& z);
  std::string server_name_for(std::string_view query, std::string_view types) const;
  XXH128_hash_t statement_hash(std::string_view query, std::string_view types) const;
  static void name_from(const XXH128_hash_t& hash, std::string& name);  // "pgr_" + 32 hex digits
  void refuse(std::string_view feature, char type, std::string& out);
  // The client's message is replaced by a request whose error the client gets as `err` instead.
  void refuse_with(std::string err, char type, std::string& out);
  void fail_with(std::string err, char type, std::string& out);  // the same, not counted as a refusal
  // currval()/lastval() (Effect::reads_sequence): false when refused (the refusal is in out); notes whether
  // `sql` may have called nextval() on this server.
  bool sequence_text(std::string_view sql, char type, std::string& out, Effect& effect);
  static bool may_call_nextval(std::string_view sql);
  // duplicate: e is the request that failed, with 42P05 (the server has what it tried to create).
  void undo(Expect& e, pool::ServerStatements& server, bool duplicate = false);
  // A creation of `name` (`mine`, recorded when sent) did not happen: the name means `prev` again, also for
  // the requests sent after it that recorded `mine` as what they replaced.
  void forget_created(const std::string& name, const std::shared_ptr<TrackedStatement>& mine,
                      const std::shared_ptr<TrackedStatement>& prev);
  // The newest request in flight that may or may not create or remove `name` (Expect::uncertain). While there
  // is one, PostgreSQL's answer to a request naming `name` depends on whether it happened, which pgrouter
  // learns only later: the request is sent so that the server decides, through the server name whose
  // existence follows the outcome (the witness: what it created, or what it closed).
  Expect* pending_touch(const std::string& name);
  static const std::string& witness(const Expect& e) {
    return e.get().created ? e.get().created->server_name : e.get().removed->server_name;
  }
  void commit_sets(const std::vector<sql::SessionCommand>& sets, Settings& server_settings);

  // Prepares the client's unnamed statement (query, types) under unnamed_server_ on a server that lacks it;
  // parse_action: forward for the client's own Parse, drop for one sent before a Bind/Describe.
  void prepare_unnamed_here(pool::ServerStatements& server, std::string& out, std::string_view query,
                            std::string_view types, Action parse_action);

  control::WorkerStats& stats_;
  uint64_t owner_;
  size_t capacity_;
  bool refuse_;
  bool sequence_own_ = false;  // see server_released()
  bool prepare_unnamed_;
  std::vector<std::string> extra_tracked_;
  std::vector<std::pair<std::string, std::string>> startup_parse_;
  // A hash of the parse settings' values (startup, then SET), recomputed when settings_version_ moves.
  uint64_t parse_context() const;
  mutable uint64_t parse_context_ = 0, parse_context_version_ = 0;
  StatementMap statements_;
  // The queue of expected replies, held only while it holds something: std::deque allocates its map and a
  // 512-byte block even when empty, and an idle client should cost no more than it must (thousands of clients
  // may sit idle). An emptied deque goes back to a per-thread stock and the next transaction takes it again
  // (it keeps its map and a block when emptied), so a transaction's expectations cost no allocation.
  class ReplyQueue {
   public:
    ReplyQueue() = default;
    ReplyQueue(const ReplyQueue&) = delete;
    ReplyQueue& operator=(const ReplyQueue&) = delete;
    ~ReplyQueue() { clear(); }
    bool empty() const { return !q_ || q_->empty(); }
    void push_back(Expect&& e) {
      if (!q_) q_ = take();
      q_->push_back(std::move(e));
    }
    Expect& front() { return q_->front(); }
    Expect& back() { return q_->back(); }
    void pop_front() {
      q_->pop_front();
      if (q_->empty()) give_back(std::move(q_));
    }
    void clear() {
      if (!q_) return;
      q_->clear();
      give_back(std::move(q_));
    }
    template <typename F>
    void for_each_newest_first(F&& f) {
      if (q_)
        for (auto it = q_->rbegin(); it != q_->rend(); ++it) f(*it);
    }

   private:
    using Deque = std::deque<Expect>;
    static constexpr size_t kStock = 64;  // per thread: about the sessions in a transaction at once
    static std::vector<std::unique_ptr<Deque>>& stock() {
      // Never destroyed: a session may be destroyed during the thread's (or the process's) exit.
      thread_local auto* s = new std::vector<std::unique_ptr<Deque>>();
      return *s;
    }
    static std::unique_ptr<Deque> take() {
      auto& s = stock();
      if (s.empty()) return std::make_unique<Deque>();
      auto q = std::move(s.back());
      s.pop_back();
      return q;
    }
    static void give_back(std::unique_ptr<Deque> q) {
      auto& s = stock();
      if (s.size() < kStock) s.push_back(std::move(q));
    }
    std::unique_ptr<Deque> q_;
  };
  ReplyQueue expect_;
  // SETs of the group being sent (until its Sync) and of the open transaction.
  std::vector<sql::SessionCommand> group_sets_;
  std::vector<sql::SessionCommand> tx_sets_;
  std::vector<StatementEffect> group_effects_;
  std::shared_ptr<TrackedStatement> dealloc_;  // set by session_effect() for DEALLOCATE name
  std::optional<sql::NameRef> prepare_;        // set by session_effect() for a simple Query PREPARE name
  // Set by session_effect() for PREPARE / DEALLOCATE names among other statements of a simple Query: where
  // the name is in the text (pointers into it) and, for a PREPARE, the rest of its statement.
  struct MultiRef {
    const char *begin, *end;
    std::string name;
    bool prepare;
    std::string_view rest;
  };
  std::vector<MultiRef> multi_;
  // The client's unnamed statement (as a Parse message), valid until a Query or a failed Parse; it
  // is re-sent when the client binds it on a server where someone else parsed since.
  std::string unnamed_parse_;
  std::vector<std::shared_ptr<TrackedStatement>> unnamed_uses_;  // statements it EXECUTEs
  std::shared_ptr<const TextRewrite> unnamed_rewrite_;
  // The rewritten statement every Bind of the group (until Sync) bound, for the positions of errors its
  // Execute raises (none if the group bound different statements).
  void bound(const std::shared_ptr<const TextRewrite>& rewrite);
  std::shared_ptr<const TextRewrite> group_rewrite_;
  bool group_bound_ = false, group_mixed_ = false;
  bool unnamed_valid_ = false;
  // pool.unnamed_statements: prepare: the server name the client's unnamed statement is prepared under
  // (empty: it is the server's unnamed statement). Meaningful while unnamed_valid_.
  std::string unnamed_server_;
  XXH128_hash_t unnamed_hash_{};  // the statement hash unnamed_server_ was made from
  // Read retry window: the unnamed statement as it was when the window began (swapped, not copied).
  bool window_ = false, window_unnamed_valid_ = false, unnamed_saved_ = false;
  std::string unnamed_before_window_, unnamed_server_before_window_;
  XXH128_hash_t unnamed_hash_before_window_{};
  std::vector<Expect> window_matched_;  // ParseComplete/CloseComplete expectations met inside the window
  std::string last_tag_;
  // Server names whose client names were forgotten while requests naming them may still be answered (a
  // creation undone, a removal in flight): their errors still name the client's statement. Cleared when idle.
  std::vector<std::pair<std::string, std::string>> ghosts_;
  // An extended-protocol request that may fail was sent since the last Sync: what follows may be skipped.
  bool may_skip_ = false, window_may_skip_ = false;
  // An extended-protocol error came with no Sync after it yet: the server ignores everything up to the next
  // Sync, whose ReadyForQuery is the next message it sends (what was sent before that Sync had no effect).
  bool skip_to_sync_ = false;
  char tx_status_ = 'I';  // the transaction status of the last ReadyForQuery
  uint32_t probes_ = 0;   // probe requests in flight
  enum class HoldState : uint8_t { none, waiting, matched, changed, skipped };
  struct Hold {
    std::string server_name;  // the copy being checked
    HoldState state = HoldState::none;
  } hold_;
  bool held_ = false, allow_hold_ = false;
  uint32_t markers_ = 0;      // marker statements made so far (each has its own name)
  bool marker_left_ = false;  // the last one may exist on the server: closed at the next request when idle
  bool uncertain_ = false;
  Settings settings_;
  Settings reported_;  // this transaction's ParameterStatus values, lower-case names (see parameter_reported)
  uint64_t settings_version_ = 1;
  std::string feature_;
  bool last_query_plain_ = false;      // see last_query_plain()
  const char* known_plain_ = nullptr;  // see known_plain()
};

}  // namespace pgrouter::session
