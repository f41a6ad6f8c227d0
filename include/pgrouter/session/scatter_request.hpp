// A client request pgrouter can run as a cross-shard read (a scatter): one simple Query, or one batch that
// runs one statement through the unnamed portal: [Parse, [Describe S]], Bind, [Describe P], Execute, Sync, as
// psql, libpq's PQexecParams, psycopg, node-postgres, pgbench -M extended and JDBC send a statement, prepared
// (named) or not. Pure: reads the client's bytes, decides nothing about shards.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::session {

struct ScatterRequest {
  bool extended = false;
  std::string_view
      sql;  // the statement (within the client's bytes; extended without Parse: empty, see below)
  std::string_view statement;  // extended: the statement the Bind names ("" the unnamed one)
  // extended: the batch begins with the statement's Parse; without it the statement is one the client
  // prepared before, whose text and parameter types the caller fills in (sql, parameter_types).
  bool parses = false;
  // extended only, each within the client's bytes:
  std::string_view bind_body;        // the whole Bind body (the shard key's value is read from it)
  std::string_view parameter_types;  // the Parse body after the query text
  std::string_view parameters;       // the Bind body from its parameter format codes through the values
  // The Bind's result format codes as it gave them, 2 bytes each, every one 0 or 1 (none: all text). A view,
  // not a vector: every transaction's first request is read here.
  std::string_view result_formats;
  bool describe_statement = false;  // Describe S of the statement (after its Parse)
  bool describe_portal = false;     // Describe P of the unnamed portal
  int32_t max_rows = 0;             // the Execute's row limit (0: all)
  size_t length = 0;                // the bytes of d the request takes
  // Whether result column i is wanted in binary.
  size_t result_format_count() const { return result_formats.size() / 2; }
  bool binary_format(size_t k) const { return result_formats[2 * k + 1] != 0; }  // (the high byte is 0)
  bool binary_column(size_t i) const {
    size_t n = result_format_count();
    return n == 1 ? binary_format(0) : i < n && binary_format(i);
  }
  bool any_binary() const {
    for (size_t k = 0; k < result_format_count(); ++k)
      if (binary_format(k)) return true;
    return false;
  }
};

// The request at the start of d[0..n), if it has one of those shapes and is complete; nullopt otherwise (any
// other message or order, a named portal, a Bind of another statement than the Parse's, a malformed body).
std::optional<ScatterRequest> scatter_request(const char* d, size_t n);

}  // namespace pgrouter::session
