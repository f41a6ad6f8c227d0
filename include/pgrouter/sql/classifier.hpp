// Statement classification for read/write splitting: what a query string does (read, write, lock rows, control
// a transaction, set session state), which relations it touches and which routing hint it carries, from
// PostgreSQL's own grammar (libpg_query). docs/ARCHITECTURE.md lists how each statement kind is classified.
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
  transaction_savepoint,  // SAVEPOINT / RELEASE / ROLLBACK TO: inside a transaction, which it neither opens nor ends
  set_session,            // SET / RESET / SET LOCAL / SET TRANSACTION / SET CONSTRAINTS
  utility,                // changes no table data but belongs on the primary (VACUUM, LISTEN, PREPARE, LOCK, ...)
  unknown,                // no statement at all (empty or only comments): PostgreSQL answers EmptyQueryResponse
};

enum class RouteHint : uint8_t { none, primary, replica };

std::string_view to_string(StatementClass cls);
std::string_view to_string(RouteHint hint);

struct Classification {
  // Over all statements of a multi-statement string: the strongest data class if there is one (write > utility >
  // locking_read > read); else the last of BEGIN/COMMIT-like statements (so "COMMIT; BEGIN" begins), else
  // transaction_savepoint; else set_session; else unknown.
  StatementClass cls = StatementClass::unknown;
  bool read_only_begin = false;      // BEGIN/START TRANSACTION READ ONLY, SET TRANSACTION READ ONLY
  bool read_write_begin = false;     // the same with READ WRITE
  bool transaction_control = false;  // some statement is BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION...
  bool sets_session = false;         // some statement sets session state: SET, RESET, SET SESSION CHARACTERISTICS
  bool set_local = false;            // some statement sets transaction-scoped state: SET LOCAL, SET TRANSACTION,
                                     // SET CONSTRAINTS, SET transaction_read_only/isolation/deferrable
  RouteHint hint = RouteHint::none;  // leading /* pgrouter: primary */ or -- pgrouter: replica
  // SET pgrouter.route = 'primary'|'replica'|'auto' (lower-cased as written; the caller validates it); RESET
  // pgrouter.route, SET ... TO DEFAULT, RESET ALL and DISCARD ALL give "auto". SET LOCAL of it is ignored.
  std::optional<std::string> session_route;
  // Relations touched (FROM, JOIN, subqueries, CTE bodies but not CTE names, DML targets, COPY, LOCK, TRUNCATE,
  // VACUUM, DDL targets), schema-qualified as written with identifiers as PostgreSQL folds them ("public.t",
  // "t", "Mixed Case"), deduplicated and sorted.
  std::vector<std::string> tables;
  // libpg_query rejected the text (or it nests deeper than the reader allows): classified write, so it goes to
  // the primary and PostgreSQL answers with its own error.
  bool parse_error = false;
  int statements = 0;
  // Set by ClassifierCache::get: sql::session_feature() finds nothing in the text (for texts keyed by their
  // shape, in the shape: literals do not count), so transaction pooling need not look at it again.
  bool session_plain = false;
};

// Classifies `sql` (one Query message's text, possibly several statements). `is_read_only_function` is asked
// about functions that are not built-ins, with the name as written and qualified ("get_price",
// "app.get_price"); without it, or when it says no, such a call makes the statement a write.
Classification classify(std::string_view sql, const std::function<bool(std::string_view)>& is_read_only_function = {});

// Bounded LRU of classifications keyed by a 128-bit hash (XXH3), one per worker thread (no locks). A single
// SELECT/WITH/INSERT/UPDATE/DELETE/VALUES/TABLE statement is keyed by its shape (integer and plain string
// literals replaced, comments and identifiers kept), so texts that differ only in inlined values are parsed once;
// anything else by its exact text. Classifications depend on the function list, so a reload builds a new cache.
class ClassifierCache {
 public:
  explicit ClassifierCache(size_t capacity, std::function<bool(std::string_view)> is_read_only_function = {});

  // The classification of `sql`; the reference is valid until the next get() or clear().
  const Classification& get(std::string_view sql);
  void clear();
  size_t size() const { return entries_.size(); }
  size_t capacity() const { return capacity_; }
  size_t hits() const { return hits_; }
  size_t misses() const { return misses_; }
  // The text `sql` is keyed by, with literals replaced ('\x01' a string, '\x02' an integer), into `out`; false
  // when it is keyed exactly instead (not a plain query or DML statement, several statements, E'' or dollar
  // quotes, a backslash in a string, control characters, an unterminated comment or identifier).
  static bool shape_of(std::string_view sql, std::string& out);

 private:
  struct Key {
    uint64_t low, high;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return k.low; }  // already uniformly distributed
  };
  static constexpr uint32_t none = UINT32_MAX;
  struct Entry {
    Key key;
    Classification value;
    uint32_t newer = none, older = none;
  };
  void unlink(uint32_t i);
  void push_newest(uint32_t i);

  size_t capacity_;
  std::function<bool(std::string_view)> is_read_only_function_;
  std::vector<Entry> entries_;  // grows to capacity_, then the oldest slot is reused
  std::unordered_map<Key, uint32_t, KeyHash> index_;
  uint32_t newest_ = none, oldest_ = none;
  size_t hits_ = 0, misses_ = 0;
  std::string shape_;  // reused by get()
  // Texts seen lately, keyed exactly, to their entry's key: the same text again (a prepared or unnamed
  // extended-protocol statement, a query without literals) skips the shaping pass over the text.
  // Direct-mapped; a text whose entry was evicted falls through to the shaping.
  struct Exact {
    uint64_t text_low = 0, text_high = 0;
    Key key{0, 0};
    bool used = false;
  };
  static constexpr size_t kExact = 256;
  std::vector<Exact> exact_ = std::vector<Exact>(kExact);
};

}  // namespace pgrouter::sql
