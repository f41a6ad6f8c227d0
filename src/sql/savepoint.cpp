// SAVEPOINT / RELEASE / ROLLBACK TO statements read lexically (see the header).
#include "pgrouter/sql/savepoint.hpp"

#include <vector>

#include "pgrouter/util/strings.hpp"

namespace pgrouter::sql {
namespace {

constexpr size_t kMaxNameBytes = 63;  // PostgreSQL's NAMEDATALEN - 1

bool space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

struct Token {
  std::string text;     // a word folded to lower case, or a quoted name's contents
  bool quoted = false;  // "..."
};

// The statement's words and quoted names; false on anything else (a string, an operator, a second
// statement, an unterminated quote or comment).
bool tokens(std::string_view sql, std::vector<Token>& out) {
  bool ended = false;  // a ';' came: only white space, comments and more ';' may follow
  for (size_t i = 0; i < sql.size();) {
    char c = sql[i];
    if (space_byte(c)) {
      ++i;
      continue;
    }
    bool closed = true;
    if (size_t e = util::sql_comment_end(sql, i, &closed); e != i) {
      if (!closed) return false;
      i = e;
      continue;
    }
    if (c == ';') {
      ended = true;
      ++i;
      continue;
    }
    if (ended) return false;
    Token t;
    if (c == '"') {
      t.quoted = true;
      for (++i;; ++i) {
        if (i >= sql.size()) return false;
        if (sql[i] == '"') {
          if (i + 1 < sql.size() && sql[i + 1] == '"') {
            t.text += '"';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        t.text += sql[i];
      }
      if (t.text.empty()) return false;  // PostgreSQL: zero-length delimited identifier
    } else if (util::sql_ident_char(c) && !(c >= '0' && c <= '9') && c != '$') {
      size_t b = i;
      while (i < sql.size() && util::sql_ident_char(sql[i])) ++i;
      t.text = util::ascii_lower(sql.substr(b, i - b));
      if (i < sql.size() && (sql[i] == '&' || sql[i] == '\'')) return false;  // U&"...", E'...' and such
    } else {
      return false;
    }
    out.push_back(std::move(t));
  }
  return true;
}

bool is_word(const Token& t, std::string_view lower) { return !t.quoted && t.text == lower; }

// PostgreSQL cuts a longer identifier to NAMEDATALEN - 1 bytes without splitting a (UTF-8) character.
std::string truncated(std::string name) {
  if (name.size() <= kMaxNameBytes) return name;
  size_t n = kMaxNameBytes;
  while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xC0) == 0x80) --n;
  name.resize(n);
  return name;
}

}  // namespace

std::optional<SavepointCommand> parse_savepoint(std::string_view sql) {
  std::vector<Token> t;
  if (!tokens(sql, t) || t.size() < 2) return std::nullopt;
  SavepointCommand cmd;
  size_t at = 1;  // the first token after the command's own words
  if (is_word(t[0], "savepoint")) {
    cmd.kind = SavepointCommand::Kind::savepoint;
  } else if (is_word(t[0], "release")) {
    cmd.kind = SavepointCommand::Kind::release;
    if (t.size() == 3 && is_word(t[1], "savepoint")) at = 2;
  } else if (is_word(t[0], "rollback")) {
    cmd.kind = SavepointCommand::Kind::rollback_to;
    if (at < t.size() && (is_word(t[at], "work") || is_word(t[at], "transaction"))) ++at;
    if (at >= t.size() || !is_word(t[at], "to")) return std::nullopt;
    ++at;
    if (t.size() == at + 2 && is_word(t[at], "savepoint")) ++at;
  } else {
    return std::nullopt;
  }
  if (t.size() != at + 1) return std::nullopt;
  cmd.name = truncated(std::move(t[at].text));
  return cmd;
}

}  // namespace pgrouter::sql
