// The text of an INSERT ... VALUES cut into the part before its rows, each row, and the part after, so that
// the statement can be rebuilt with a subset of its rows: one INSERT per shard, each with that shard's rows,
// its parameters renumbered from $1. Pure text work (a small lexer that knows SQL's quotes, comments and
// parameters); which row goes where is the caller's (sql::ShardTarget::row_keys).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::sql {

struct InsertText {
  struct Span {
    size_t begin = 0, end = 0;  // [begin, end) in the statement's text
  };
  struct Param {
    size_t at = 0, length = 0;  // the token "$n"
    int number = 0;
  };
  std::string_view text;
  Span head;               // up to the first row's "("
  std::vector<Span> rows;  // "( ... )" each
  Span tail;               // after the last row's ")": ON CONFLICT, RETURNING, a ";"
  std::vector<Param> params;
};

// The INSERT's VALUES rows: those of the first VALUES keyword outside any parentheses. nullopt when there is
// none, or the text ends inside a quote, comment or parenthesis.
std::optional<InsertText> insert_text(std::string_view sql);

// The statement with only the rows `keep` (indexes into rows, ascending), its parameters renumbered 1..n in
// the order of their old numbers; `params[i]` is the old number of new parameter $i+1.
struct RowsStatement {
  std::string sql;
  std::vector<int> params;
};
RowsStatement with_rows(const InsertText& insert, const std::vector<size_t>& keep);

}  // namespace pgrouter::sql
