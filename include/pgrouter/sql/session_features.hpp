// Cheap lexical checks on statement text for transaction pooling:
//  - session_feature(): statements whose effects outlive the transaction and that pgrouter cannot
//    carry to another server (they pin the client, or are refused). It errs towards "yes": a false
//    positive only pins a client to its server, a false negative would leak state between clients.
//  - parse_session_command(): the single-statement SET / RESET / DEALLOCATE / DISCARD ALL forms that
//    pgrouter does carry (it records them per client and replays them on the next server).
//  - parse_prepare(), execute_references(): where SQL PREPARE / EXECUTE name a prepared statement, so that
//    pgrouter can give the name its server-side one.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::sql {

// Non-empty name of the session feature the statement text uses, or empty: "LISTEN", "session advisory
// lock", "temporary table", "WITH HOLD cursor", "LOAD", "PREPARE", "set_config() of a session setting" (a
// set_config call whose third argument is not the bare word true), "SET", "DISCARD", "DEALLOCATE" or, only
// when none of those is there, kSequenceRead.
std::string_view session_feature(std::string_view sql);
// What session_feature() names a call of currval() or lastval() when it finds nothing else: the value of the
// session's last nextval(), which under transaction pooling may be another client's.
inline constexpr std::string_view kSequenceRead = "currval()/lastval()";

// True when `sql` starts with a word that ends, opens or sets something but runs no expression of the
// client's: BEGIN, START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, SET, SHOW, RESET. Anything else
// may call nextval() (an INSERT's default, a function).
bool transaction_control(std::string_view sql);

// A key for remembering session_feature()'s answer: `sql` with each number (a run of digits with no letter,
// digit or '_' on either side) written as one "0", in `buf`; `sql` itself when it has no other number.
// session_feature() looks only at words, ';', white space and '(', and a number is a word of no interest
// whatever its digits, so texts with the same key get the same answer (a number is not dropped: "5 set" and
// " set" keep different keys). Queries that differ only in their numbers share a key.
std::string_view session_feature_key(std::string_view sql, std::string& buf);

struct SessionCommand {
  enum Kind {
    set,             // SET [SESSION] name {TO|=} value   (name lower-case, value as SQL text to replay)
    reset,           // RESET name, SET name TO DEFAULT
    reset_all,       // RESET ALL
    set_local,       // SET LOCAL ..., SET TRANSACTION ...: ends with the transaction, nothing to carry
    deallocate,      // DEALLOCATE [PREPARE] name   (name as the client spelled it, unquoted)
    deallocate_all,  // DEALLOCATE [PREPARE] ALL
    discard_all,     // DISCARD ALL
  } kind;
  std::string name;
  std::string value;
};

// The command when `sql` is exactly one statement of a form above (comments and a trailing ';'
// allowed) whose value pgrouter can replay verbatim; nullopt otherwise (the caller then falls back
// to session_feature()).
std::optional<SessionCommand> parse_session_command(std::string_view sql);

// A prepared statement's name in statement text: its bytes [begin, end) as written, and the name PostgreSQL
// reads (unquoted: ASCII lower case; "quoted": as is, with "" read as ").
struct NameRef {
  size_t begin = 0, end = 0;
  std::string name;
};

// `PREPARE name ...` (not PREPARE TRANSACTION) as the first statement of `sql`: the name. Everything after it
// (parameter types, AS, the statement) is the server's to judge; the caller checks `sql` is one statement.
std::optional<NameRef> parse_prepare(std::string_view sql);

// True if the word EXECUTE (any case) occurs in `sql` at all: the cheap test before execute_references().
bool mentions_execute(std::string_view sql);

// Every name that follows the keyword EXECUTE outside quotes, comments and dollar quotes: EXECUTE name,
// EXPLAIN [ANALYZE] EXECUTE name, CREATE TABLE ... AS EXECUTE name. (Also GRANT EXECUTE ON and EXECUTE
// FUNCTION give a "name" (on, function): the caller only uses names it tracks.)
std::vector<NameRef> execute_references(std::string_view sql);

// Splits a simple-query string at the ';' that end statements (not those inside quotes, dollar quotes,
// comments or parentheses). Empty statements are left out.
std::vector<std::string_view> split_statements(std::string_view sql);

}  // namespace pgrouter::sql
