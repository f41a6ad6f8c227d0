// Where a statement's rows live under tenant sharding: the shard key values it names, found in libpg_query's
// parse tree. Pure: the caller maps key values to shards (sharding::Strategy) and decides what to do with a
// statement that needs several or all shards.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::sql {

// What the config says about tables, identifiers as PostgreSQL folds them. A name written unqualified here
// matches that table in any schema; "app.users" matches only "app.users".
struct ShardingSchema {
  std::vector<std::pair<std::string, std::string>> sharded;  // table -> key column
  std::vector<std::string> reference;                        // reference tables
};

// A value the key is compared with: a constant as written (its text, what the type's input function gets:
// 42, '42', '6ba7...'::uuid all give their literal's text) or a parameter of the extended protocol.
struct KeyRef {
  std::string literal;  // param == 0
  int param = 0;        // $n, 1-based
  bool null = false;    // NULL: matches no row (an INSERT of a NULL key is refused by the caller)
  // `key = ANY(value)` of an array the parse cannot see into: the literal is an array's text ('{1,2}') or
  // the parameter is bound to an array, and the key is any of its elements.
  bool array = false;
  bool operator==(const KeyRef&) const = default;
};

enum class ShardScope : uint8_t {
  none,       // no sharded or reference table (SELECT 1, SET, BEGIN, an unsharded table: see `unsharded`)
  reference,  // reference tables only (and/or unsharded ones)
  keyed,      // every access to a sharded table is limited to the rows of `keys` (their shards' union)
  all,        // some access to a sharded table is not limited by its key: every shard holds its rows
  refused,    // the statement cannot be routed correctly: `refusal` names the construct
};

struct ShardTarget {
  ShardScope scope = ShardScope::none;
  std::vector<KeyRef> keys;                   // keyed: one per distinct value named (IN lists give several)
  std::vector<std::string> unsharded_tables;  // tables in neither list, as written
  bool writes = false;            // INSERT/UPDATE/DELETE/MERGE/COPY FROM/TRUNCATE/DDL on a listed table
  bool writes_reference = false;  // a write whose target is a reference table
  // An INSERT into a sharded table: run on several shards, each would insert every row (its rows must be
  // split by key instead).
  bool inserts = false;
  // An INSERT ... VALUES into a sharded table: each row's key, in the rows' order, so that rows of several
  // shards can be split into one INSERT per shard (sql/insert_rows.hpp).
  std::vector<KeyRef> row_keys;
  // refused: what could not be routed, for a 0A000 message: "UPDATE of the shard key column tenant_id of
  // users", "INSERT ... SELECT into sharded table users not limited to one shard key".
  std::string refusal;
  // A leading or embedded `/* pgrouter: shard_key=42 */` comment (the value as written, quotes removed).
  std::string hint_key;
  // A `/* pgrouter: explain */` comment: the client asks where the statement would run instead of running it.
  bool explain = false;
  bool parse_error = false;  // libpg_query rejected the text (PostgreSQL will answer it: any shard will do)
  // The word EXECUTE appears in it (mentions_execute): it may run one of the client's SQL-prepared
  // statements, which only the session knows. Kept here so that the text is scanned once, not at every Bind.
  bool mentions_execute = false;
  // A COPY ... FROM (any table): its rows arrive as CopyData, so the caller splits them by key or refuses.
  bool copy_from = false;
  // COPY of a sharded table TO STDOUT, in text or CSV without HEADER: each shard's rows, concatenated, are
  // the table's (the caller may scatter it).
  bool copy_out = false;
  // COPY of a sharded table FROM with a column list: the key column's index in that list (its field in each
  // row); -1 without a column list (the table's own column order, which only the server knows).
  int copy_key_column = -1;
  // COPY ... FROM of a sharded or reference table: its table and its options as written, so that the caller
  // can cut the data into rows (sharding/copy_rows.hpp).
  struct CopyFrom {
    std::string schema, table;  // as PostgreSQL folds them; schema empty: the search_path's
    std::string key;            // a sharded table's key column (empty: a reference table)
    std::string format;         // "text", "csv" or "binary"
    std::optional<std::string> delimiter, quote, escape, null;  // nullopt: the format's default
    bool header = false;
    bool from_stdin = true;  // not a file or a program (the server's)
  } copy;
};

// Analyses one Query or Parse text (several statements: the union of their targets; a refusal wins).
// The cost is about one classify() of the text: one parse and one walk of its tree. Keys are found by value,
// so a caller that caches by statement shape calls this on each text whose literals it needs.
ShardTarget shard_target(std::string_view sql, const ShardingSchema& schema);

// One argument of a SQL EXECUTE, as its prepared statement's parameter receives it.
struct ExecuteArgument {
  enum class Kind : uint8_t {
    text,       // `text` is what the parameter's input function reads (a string or number, perhaps cast)
    null,       // NULL
    parameter,  // $`param` of the EXECUTE's own text (a Parse's), bound by its Bind
    unread,     // an expression pgrouter does not evaluate: a call, a column, an operator, ARRAY[...]
  };
  // The value's type before it becomes the parameter: a string, or a cast to text, keeps its text; a number,
  // or a cast to an integer type, is an integer (a text parameter gets its digits as int8out writes them); a
  // cast to uuid is a uuid (a text parameter gets uuid_out's spelling).
  enum class Form : uint8_t { as_written, integer, uuid };
  Kind kind = Kind::unread;
  Form form = Form::as_written;
  int param = 0;
  std::string text;
};

struct ExecuteCall {
  std::string name;  // as PostgreSQL folds it
  std::vector<ExecuteArgument> arguments;
  // The text of a PREPARE of that name earlier in the same text (a multi-statement Query), which defines the
  // statement this EXECUTE runs before anyone has recorded it; empty when there is none.
  std::string_view prepared_here;
};

// Every EXECUTE in `sql` (also under EXPLAIN and CREATE TABLE ... AS), in the text's order; none when
// libpg_query rejects the text (PostgreSQL answers it with its syntax error).
std::vector<ExecuteCall> execute_calls(std::string_view sql);

}  // namespace pgrouter::sql
