// Statement classification for read/write splitting: what a query string does (read, write, lock rows,
// control a transaction, set session state), which relations it touches and which routing hint it carries,
// from PostgreSQL's own grammar (libpg_query). docs/ARCHITECTURE.md lists how each statement kind is
// classified.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgrouter::sql {

enum class StatementClass : uint8_t {
  read,                   // safe on a replica
  write,                  // changes data or schema (or might: DO, CALL, writer functions, unparseable text)
  locking_read,           // SELECT ... FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE: takes row locks
  transaction_begin,      // BEGIN / START TRANSACTION
  transaction_end,        // COMMIT / ROLLBACK / END / ABORT / PREPARE TRANSACTION (also AND CHAIN)
  transaction_savepoint,  // SAVEPOINT / RELEASE / ROLLBACK TO: inside a transaction, which it neither opens
                          // nor ends
  set_session,            // SET / RESET / SET LOCAL / SET TRANSACTION / SET CONSTRAINTS
  utility,  // changes no table data but belongs on the primary (VACUUM, LISTEN, PREPARE, LOCK, ...)
  unknown,  // no statement at all (empty or only comments): PostgreSQL answers EmptyQueryResponse
};

enum class RouteHint : uint8_t { none, primary, replica };

std::string_view to_string(StatementClass cls);
std::string_view to_string(RouteHint hint);

struct Classification {
  // Over all statements of a multi-statement string: the strongest data class if there is one (write >
  // utility > locking_read > read); else the last of BEGIN/COMMIT-like statements (so "COMMIT; BEGIN"
  // begins), else transaction_savepoint; else set_session; else unknown.
  StatementClass cls = StatementClass::unknown;
  bool read_only_begin = false;   // BEGIN/START TRANSACTION READ ONLY, SET TRANSACTION READ ONLY
  bool read_write_begin = false;  // the same with READ WRITE
  bool transaction_control =
      false;                  // some statement is BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION...
  bool sets_session = false;  // some statement sets session state: SET, RESET, SET SESSION CHARACTERISTICS
  bool set_local = false;     // some statement sets transaction-scoped state: SET LOCAL, SET TRANSACTION,
                              // SET CONSTRAINTS, SET transaction_read_only/isolation/deferrable
  // How the last COMMIT/END, ROLLBACK/ABORT or PREPARE TRANSACTION among the statements ends its
  // transaction, and whether it says AND CHAIN.
  enum class Ending : uint8_t { none, commit, rollback, prepare };
  Ending ending = Ending::none;
  bool chain = false;
  RouteHint hint = RouteHint::none;  // leading /* pgrouter: primary */ or -- pgrouter: replica
  // SET pgrouter.route = 'primary'|'replica'|'auto' (lower-cased as written; the caller validates it); RESET
  // pgrouter.route, SET ... TO DEFAULT, RESET ALL and DISCARD ALL give "auto". SET LOCAL of it is ignored.
  std::optional<std::string> session_route;
  // Relations touched (FROM, JOIN, subqueries, CTE bodies but not CTE names, DML targets, COPY, LOCK,
  // TRUNCATE, VACUUM, DDL targets), schema-qualified as written with identifiers as PostgreSQL folds them
  // ("public.t", "t", "Mixed Case"), deduplicated and sorted.
  std::vector<std::string> tables;
  // libpg_query rejected the text (or it nests deeper than the reader allows): classified write, so it goes
  // to the primary and PostgreSQL answers with its own error.
  bool parse_error = false;
  int statements = 0;
  // Set by ClassifierCache::get: sql::session_feature() finds nothing in the text (for texts keyed by their
  // shape, in the shape: literals do not count), so transaction pooling need not look at it again.
  bool session_plain = false;
};

// Classifies `sql` (one Query message's text, possibly several statements). `is_read_only_function` is asked
// about functions that are not built-ins, with the name as written and qualified ("get_price",
// "app.get_price"); without it, or when it says no, such a call makes the statement a write.
Classification classify(std::string_view sql,
                        const std::function<bool(std::string_view)>& is_read_only_function = {});

}  // namespace pgrouter::sql
