// Lexical detection of session-scoped statements for transaction pooling (see the header).
#include "pgrouter/sql/session_features.hpp"
#include "pgrouter/util/strings.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace pgrouter::sql {
namespace {

// The bytes of a word for these checks: ASCII letters, digits and '_' (a word is a maximal run of them).
constexpr auto kWordBytes = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[size_t(c)] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  return t;
}();
bool word_byte(char c) { return kWordBytes[static_cast<unsigned char>(c)]; }
bool space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// Whether the text from `pos`, after white space, starts with one of the '|'-separated lower-case
// alternatives (ASCII case-insensitively) as whole words: "SET local_app.tenant = 1" and "SET
// transaction_timeout = 0" are session SETs, not SET LOCAL or SET TRANSACTION.
bool next_is_any(std::string_view sql, size_t pos, std::string_view alternatives) {
  while (pos < sql.size() && space_byte(sql[pos])) ++pos;
  for (size_t a = 0, b; a < alternatives.size(); a = b + 1) {
    b = alternatives.find('|', a);
    if (b == std::string_view::npos) b = alternatives.size();
    auto alt = alternatives.substr(a, b - a);
    size_t end = pos + alt.size();
    if (util::equals_ascii_ci(sql.substr(pos, alt.size()), alt) &&
        (end >= sql.size() || !util::sql_ident_char(sql[end])))
      return true;
  }
  return false;
}

// The set_config call whose '(' is at `pos`: true when its third argument is the bare word true.
bool local_set_config_call(std::string_view sql, size_t pos) {
  size_t n = sql.size();
  int depth = 0, commas = 0;
  size_t third = 0;
  for (size_t i = pos; i < n; ++i) {
    char c = sql[i];
    if (c == '\'' || c == '"') {  // a quoted literal or identifier ('' and "" inside are two quotes in a row)
      for (++i; i < n && sql[i] != c; ++i) {
      }
      if (i >= n) return false;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth == 0) {
        if (commas != 2) return false;
        auto arg = sql.substr(third, i - third);
        while (!arg.empty() && space_byte(arg.front())) arg.remove_prefix(1);
        while (!arg.empty() && space_byte(arg.back())) arg.remove_suffix(1);
        return util::equals_ascii_ci(arg, "true");
      }
    } else if (c == ',' && depth == 1) {
      if (++commas == 2) third = i + 1;
    } else if (c == ';') {
      return false;
    }
  }
  return false;
}

// After the word set_config at `pos`: whether it is a call that may set a session value, i.e. it is followed
// by '(' and its third argument is not the bare word `true` (false, an expression, a parameter, a quoted or
// shaped literal, something this scan cannot follow: it errs towards "yes").
bool session_set_config(std::string_view sql, size_t pos) {
  size_t n = sql.size();
  while (pos < n && space_byte(sql[pos])) ++pos;
  if (pos >= n || sql[pos] != '(') return false;  // a column or a word in a string, not a call
  return !local_set_config_call(sql, pos);
}

bool ends_with_ci(std::string_view s, std::string_view lower_word) {
  return s.size() >= lower_word.size() &&
         util::equals_ascii_ci(s.substr(s.size() - lower_word.size()), lower_word);
}

}  // namespace

// One pass over the text, no copy: this runs on every Query and Parse of a transaction-pooled client.
// A statement starts at the beginning or after any ';' (quotes are not looked at: errs towards "yes"), its
// first word after white space and '(' names the command; the other features are words anywhere, and
// "with hold" anywhere.
std::string_view session_feature(std::string_view sql) {
  enum : unsigned {
    listen = 1,
    advisory = 2,
    temporary = 4,
    with_hold = 8,
    load = 16,
    prepare = 32,
    set = 64,
    discard = 128,
    deallocate = 256,
    set_config = 512,
    sequence_read = 1024
  };
  unsigned found = 0;
  bool statement_start = true;
  // A comment where a statement's first word is expected ("/* pgrouter: primary */ SET ...", "-- tag\nRESET
  // ..."): the word after it is still the first. Its own words are looked at as anywhere else, and a ';' in
  // it still starts a statement (quotes are not looked at, so what looks like a comment may not be one:
  // anything after a ';' in it is checked as a statement).
  int block = 0;      // depth of such a /* */ comment (they nest)
  bool line = false;  // in such a -- comment
  for (size_t i = 0, n = sql.size(); i < n;) {
    char c = sql[i];
    if (block > 0 || line) {
      if (line && c == '\n') {
        line = false;
        statement_start = true;
        ++i;
        continue;
      }
      if (block > 0 && i + 1 < n && ((c == '*' && sql[i + 1] == '/') || (c == '/' && sql[i + 1] == '*'))) {
        block += c == '/' ? 1 : -1;
        if (block == 0) statement_start = true;
        i += 2;
        continue;
      }
    } else if (statement_start && i + 1 < n &&
               ((c == '-' && sql[i + 1] == '-') || (c == '/' && sql[i + 1] == '*'))) {
      if (c == '-')
        line = true;
      else
        block = 1;
      statement_start = false;
      i += 2;
      continue;
    }
    if (!word_byte(c)) {
      if (c == ';')
        statement_start = true;
      else if (!space_byte(c) && c != '(' && c != '\'')
        statement_start = false;  // EXECUTE 'SET ...'
      ++i;
      continue;
    }
    size_t begin = i;
    while (i < n && word_byte(sql[i])) ++i;
    auto word = sql.substr(begin, i - begin);
    auto is = [&](std::string_view kw) { return util::equals_ascii_ci(word, kw); };
    bool first = statement_start;
    statement_start = false;
    switch (word.size()) {  // most words have no length of interest: one comparison each
      case 3:
        if (first && is("set") &&
            !next_is_any(sql, i, "local|transaction|constraints|session characteristics"))
          found |= set;
        break;
      case 4:
        if (first && is("load"))
          found |= load;
        else if (is("temp"))
          found |= temporary;
        break;
      case 5:
        if (first && is("reset")) found |= set;
        break;
      case 6:
        if (first && is("listen")) found |= listen;
        break;
      case 7:
        if (first && is("prepare") && !next_is_any(sql, i, "transaction"))
          found |= prepare;
        else if (first && is("discard"))
          found |= discard;
        else if ((is("currval") || is("lastval")) && next_is_any(sql, i, "("))
          found |= sequence_read;
        break;
      case 9:
        if (is("temporary")) found |= temporary;
        break;
      case 10:
        if (first && is("deallocate"))
          found |= deallocate;
        else if (is("set_config") && session_set_config(sql, i))
          found |= set_config;
        break;
      case 16:
      case 20:
      case 23:
      case 27:
        if (is("pg_advisory_lock") || is("pg_try_advisory_lock") || is("pg_advisory_lock_shared") ||
            is("pg_try_advisory_lock_shared"))
          found |= advisory;
        break;
      default:
        break;
    }
    if (i + 4 < n && sql[i] == ' ' && ends_with_ci(word, "with") &&
        util::equals_ascii_ci(sql.substr(i + 1, 4), "hold"))
      found |= with_hold;
    // PL/pgSQL (a DO block): a statement also starts after BEGIN, THEN, ELSE and LOOP, and EXECUTE runs the
    // text of the string after it ("DO $$ BEGIN SET search_path = x; END $$" sets it for the session). Not in
    // a comment where a statement's first word is expected ("-- load the user, then set the flag").
    if (block == 0 && !line && word.size() >= 4 && word.size() <= 7 &&
        (is("begin") || is("then") || is("else") || is("loop") || is("execute")))
      statement_start = true;
  }
  if (found & listen) return "LISTEN";
  if (found & advisory) return "session advisory lock";
  if (found & temporary) return "temporary table";
  if (found & with_hold) return "WITH HOLD cursor";
  if (found & load) return "LOAD";
  if (found & prepare) return "PREPARE";
  if (found & set_config) return "set_config() of a session setting";
  if (found & set) return "SET";
  if (found & discard) return "DISCARD";
  if (found & deallocate) return "DEALLOCATE";
  if (found & sequence_read) return kSequenceRead;
  return {};
}

bool transaction_control(std::string_view sql) {
  size_t i = 0;
  while (i < sql.size() && (space_byte(sql[i]) || sql[i] == '(')) ++i;
  size_t begin = i;
  while (i < sql.size() && word_byte(sql[i])) ++i;
  auto word = sql.substr(begin, i - begin);
  if (word.size() < 3 || word.size() > 9) return false;
  for (std::string_view kw : {"begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release",
                              "set", "show", "reset"})
    if (util::equals_ascii_ci(word, kw)) return true;
  return false;
}

namespace {
bool digit(char c) { return c >= '0' && c <= '9'; }

// The first ASCII digit at or after i (n if none): 16 bytes at a time where SSE2 is there (x86-64 always has
// it), because most of a statement is not digits.
size_t next_digit(const char* d, size_t i, size_t n) {
#ifdef __SSE2__
  const __m128i lo = _mm_set1_epi8(char(0x80 + '0')), lim = _mm_set1_epi8(char(-128 + 10));
  while (i + 16 <= n) {
    // (c - '0') < 10 unsigned, as a signed compare of the biased byte.
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + i));
    if (int mask = _mm_movemask_epi8(_mm_cmplt_epi8(_mm_sub_epi8(v, lo), lim)))
      return i + size_t(__builtin_ctz(unsigned(mask)));
    i += 16;
  }
#endif
  while (i < n && !digit(d[i])) ++i;
  return i;
}
}  // namespace

std::string_view session_feature_key(std::string_view sql, std::string& buf) {
  const char* d = sql.data();
  size_t n = sql.size(), copied = 0;
  for (size_t i = next_digit(d, 0, n); i < n; i = next_digit(d, i, n)) {
    size_t j = i + 1;
    while (j < n && digit(d[j])) ++j;
    if (i > 0 && (word_byte(d[i - 1]) || d[i - 1] == '$')) {  // in a word (t1, x2y) or a parameter ($1): kept
      i = j;
      continue;
    }
    if ((j == n || !word_byte(d[j])) && (j - i > 1 || d[i] != '0')) {
      if (copied == 0) buf.clear();
      buf.append(d + copied, i - copied);
      buf.push_back('0');
      copied = j;
    }
    i = j;
  }
  if (copied == 0) return sql;
  buf.append(d + copied, n - copied);
  return buf;
}

}  // namespace pgrouter::sql

namespace pgrouter::sql {
namespace {

// A tiny tokenizer for the few command forms parse_session_command() accepts.
struct Token {
  enum Type { word, string, quoted_ident, number, punct, end, bad } type;
  std::string_view text;  // as in the source
};

class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}
  size_t pos() const { return i_; }
  Token next() {
    skip_space();
    if (i_ >= s_.size()) return {Token::end, {}};
    size_t start = i_;
    char c = s_[i_];
    auto is_word = [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '$' || ch == '.' ||
             static_cast<unsigned char>(ch) >= 0x80;
    };
    if (c == '\'') {
      ++i_;
      for (;;) {
        if (i_ >= s_.size()) return {Token::bad, {}};
        if (s_[i_] == '\'') {
          if (i_ + 1 < s_.size() && s_[i_ + 1] == '\'') {
            i_ += 2;
            continue;
          }
          ++i_;
          break;
        }
        if (s_[i_] == '\\') return {Token::bad, {}};  // backslashes depend on standard_conforming_strings
        ++i_;
      }
      return {Token::string, s_.substr(start, i_ - start)};
    }
    if (c == '"') {
      ++i_;
      while (i_ < s_.size() && s_[i_] != '"') ++i_;
      if (i_ >= s_.size()) return {Token::bad, {}};
      ++i_;
      return {Token::quoted_ident, s_.substr(start, i_ - start)};
    }
    if (c == '-' || c == '+' || std::isdigit(static_cast<unsigned char>(c))) {
      ++i_;
      while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.')) ++i_;
      auto t = s_.substr(start, i_ - start);
      if (t.size() == 1 && !std::isdigit(static_cast<unsigned char>(c))) return {Token::bad, {}};
      return {Token::number, t};
    }
    if (is_word(c)) {
      while (i_ < s_.size() && is_word(s_[i_])) ++i_;
      return {Token::word, s_.substr(start, i_ - start)};
    }
    if (c == '=' || c == ',' || c == ';') {
      ++i_;
      return {Token::punct, s_.substr(start, 1)};
    }
    return {Token::bad, {}};
  }

 private:
  void skip_space() {
    for (;;) {
      while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
      size_t e = util::sql_comment_end(s_, i_);  // -- to the line's end, /* */ nested as PostgreSQL does
      if (e == i_) return;
      i_ = e;
    }
  }
  std::string_view s_;
  size_t i_ = 0;
};

bool is_kw(const Token& t, std::string_view kw) {
  return t.type == Token::word && util::equals_ascii_ci(t.text, kw);
}

std::string lower(std::string_view s) { return util::ascii_lower(s); }

// True when only an optional ';' and nothing else is left.
bool at_end(Lexer& lx, Token t) {
  if (t.type == Token::punct && t.text == ";") t = lx.next();
  return t.type == Token::end;
}

// Reads "item [, item]*" up to the end of the statement. Items are words, strings and numbers, as
// PostgreSQL's var_list allows; `first` is the first item's token.
std::optional<std::string> read_value_list(std::string_view sql, Lexer& lx, Token first) {
  size_t begin = size_t(first.text.data() - sql.data());
  size_t end = begin;
  Token t = first;
  for (;;) {
    if (t.type != Token::word && t.type != Token::string && t.type != Token::number &&
        t.type != Token::quoted_ident)
      return std::nullopt;
    end = size_t(t.text.data() - sql.data()) + t.text.size();
    t = lx.next();
    if (t.type == Token::punct && t.text == ",") {
      t = lx.next();
      continue;
    }
    if (!at_end(lx, t)) return std::nullopt;
    return std::string(sql.substr(begin, end - begin));
  }
}

}  // namespace

std::optional<SessionCommand> parse_deallocate(std::string_view sql);  // below, with the name lexer

std::optional<SessionCommand> parse_session_command(std::string_view sql) {
  Lexer lx(sql);
  Token t = lx.next();
  if (is_kw(t, "discard")) {
    if (!is_kw(lx.next(), "all") || !at_end(lx, lx.next())) return std::nullopt;
    return SessionCommand{SessionCommand::discard_all, {}, {}};
  }
  if (is_kw(t, "deallocate")) return parse_deallocate(sql);
  if (is_kw(t, "reset")) {
    t = lx.next();
    if (is_kw(t, "all")) {
      if (!at_end(lx, lx.next())) return std::nullopt;
      return SessionCommand{SessionCommand::reset_all, {}, {}};
    }
    if (t.type != Token::word || is_kw(t, "session") || is_kw(t, "role")) return std::nullopt;
    std::string name = lower(t.text);
    if (name == "time") {
      if (!is_kw(lx.next(), "zone")) return std::nullopt;
      name = "timezone";
    }
    if (!at_end(lx, lx.next())) return std::nullopt;
    return SessionCommand{SessionCommand::reset, std::move(name), {}};
  }
  if (!is_kw(t, "set")) return std::nullopt;
  t = lx.next();
  if (is_kw(t, "local") || is_kw(t, "transaction") || is_kw(t, "constraints"))
    return SessionCommand{SessionCommand::set_local, {}, {}};
  if (is_kw(t, "session")) {
    t = lx.next();
    if (is_kw(t, "characteristics") || is_kw(t, "authorization")) return std::nullopt;
  }
  if (t.type != Token::word || is_kw(t, "role")) return std::nullopt;
  std::string name = lower(t.text);
  Token v;
  if (name == "time") {
    if (!is_kw(lx.next(), "zone")) return std::nullopt;
    name = "timezone";
    v = lx.next();
    if (is_kw(v, "local") || is_kw(v, "default")) {
      if (!at_end(lx, lx.next())) return std::nullopt;
      return SessionCommand{SessionCommand::reset, std::move(name), {}};
    }
    if (v.type != Token::string && v.type != Token::number) return std::nullopt;  // not INTERVAL '...'
  } else if (name == "schema" || name == "names") {
    name = name == "schema" ? "search_path" : "client_encoding";
    v = lx.next();
    if (is_kw(v, "default") && name == "client_encoding") {
      if (!at_end(lx, lx.next())) return std::nullopt;
      return SessionCommand{SessionCommand::reset, std::move(name), {}};
    }
    if (v.type != Token::string) return std::nullopt;
  } else {
    Token op = lx.next();
    if (!(is_kw(op, "to") || (op.type == Token::punct && op.text == "="))) return std::nullopt;
    v = lx.next();
    if (is_kw(v, "default")) {
      if (!at_end(lx, lx.next())) return std::nullopt;
      return SessionCommand{SessionCommand::reset, std::move(name), {}};
    }
  }
  auto value = read_value_list(sql, lx, v);
  if (!value) return std::nullopt;
  return SessionCommand{SessionCommand::set, std::move(name), std::move(*value)};
}

}  // namespace pgrouter::sql

namespace pgrouter::sql {

std::vector<std::string_view> split_statements(std::string_view sql) {
  std::vector<std::string_view> out;
  size_t start = 0, i = 0, depth = 0;
  auto push = [&](size_t end) {
    auto piece = sql.substr(start, end - start);
    size_t a = 0;
    while (a < piece.size() && std::isspace(static_cast<unsigned char>(piece[a]))) ++a;
    if (a < piece.size()) out.push_back(piece);
  };
  while (i < sql.size()) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      size_t e = sql.find(c, i + 1);
      while (e != std::string_view::npos && e + 1 < sql.size() && sql[e + 1] == c) e = sql.find(c, e + 2);
      i = e == std::string_view::npos ? sql.size() : e + 1;
    } else if (size_t e = util::sql_comment_end(sql, i); e != i) {
      i = e;
    } else if (c == '$' &&
               (i == 0 || !(std::isalnum(static_cast<unsigned char>(sql[i - 1])) || sql[i - 1] == '_'))) {
      size_t e = i + 1;
      while (e < sql.size() && (std::isalnum(static_cast<unsigned char>(sql[e])) || sql[e] == '_')) ++e;
      if (e < sql.size() && sql[e] == '$' &&
          !(e > i + 1 && std::isdigit(static_cast<unsigned char>(sql[i + 1])))) {
        auto tag = sql.substr(i, e - i + 1);
        size_t close = sql.find(tag, e + 1);
        i = close == std::string_view::npos ? sql.size() : close + tag.size();
      } else {
        ++i;
      }
    } else {
      if (c == '(')
        ++depth;
      else if (c == ')' && depth > 0)
        --depth;
      else if (c == ';' && depth == 0) {
        push(i);
        start = i + 1;
      }
      ++i;
    }
  }
  push(sql.size());
  return out;
}

}  // namespace pgrouter::sql

namespace pgrouter::sql {
namespace {

bool ident_start(char c) {
  auto u = static_cast<unsigned char>(c);
  return std::isalpha(u) || c == '_' || u >= 0x80;
}
using util::sql_ident_char;

struct SqlToken {
  enum Kind { word, quoted, other } kind;
  size_t begin, end;
};

// Calls f(token) for each token of `s`, skipping whitespace, comments, string literals and dollar quotes
// (reported as `other`). Words and "quoted identifiers" are what statement names are made of.
template <typename F>
void for_each_token(std::string_view s, F&& f) {
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    size_t start = i;
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (size_t e = util::sql_comment_end(s, i); e != i) {
      i = e;
    } else if (c == '\'') {
      // E'...' strings take backslash escapes (the word lexer hands them here with escapes on).
      bool escapes = start > 0 && (s[start - 1] == 'e' || s[start - 1] == 'E') &&
                     (start == 1 || !sql_ident_char(s[start - 2]));
      ++i;
      while (i < s.size()) {
        if (escapes && s[i] == '\\') {
          i += 2;
        } else if (s[i] == '\'') {
          if (i + 1 < s.size() && s[i + 1] == '\'')
            i += 2;
          else
            break;
        } else {
          ++i;
        }
      }
      i = std::min(i + 1, s.size());
      f(SqlToken{SqlToken::other, start, i});
    } else if (c == '"') {
      ++i;
      while (i < s.size()) {
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"')
            i += 2;
          else
            break;
        } else {
          ++i;
        }
      }
      i = std::min(i + 1, s.size());
      f(SqlToken{SqlToken::quoted, start, i});
    } else if (c == '$') {
      size_t e = i + 1;
      while (e < s.size() && sql_ident_char(s[e]) && s[e] != '$') ++e;
      if (e < s.size() && s[e] == '$' && !(e > i + 1 && std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
        auto tag = s.substr(i, e - i + 1);
        size_t close = s.find(tag, e + 1);
        i = close == std::string_view::npos ? s.size() : close + tag.size();
      } else {
        i = e;  // $1
      }
      f(SqlToken{SqlToken::other, start, i});
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      while (i < s.size() && (sql_ident_char(s[i]) || s[i] == '.')) ++i;
      f(SqlToken{SqlToken::other, start, i});
    } else if (ident_start(c)) {
      while (i < s.size() && sql_ident_char(s[i])) ++i;
      f(SqlToken{SqlToken::word, start, i});
    } else {
      ++i;
      f(SqlToken{SqlToken::other, start, i});
    }
  }
}

bool word_is(std::string_view s, const SqlToken& t, std::string_view kw) {
  return t.kind == SqlToken::word && util::equals_ascii_ci(s.substr(t.begin, t.end - t.begin), kw);
}

NameRef name_of(std::string_view s, const SqlToken& t) {
  NameRef r{t.begin, t.end, {}};
  if (t.kind == SqlToken::word) {
    r.name = util::ascii_lower(s.substr(t.begin, t.end - t.begin));
  } else {
    for (size_t i = t.begin + 1; i + 1 < t.end; ++i) {
      r.name.push_back(s[i]);
      if (s[i] == '"') ++i;  // "" is one "
    }
  }
  return r;
}

}  // namespace

std::optional<NameRef> parse_prepare(std::string_view sql) {
  int n = 0;
  bool ok = false;
  std::optional<NameRef> out;
  for_each_token(sql, [&](const SqlToken& t) {
    if (n == 0)
      ok = word_is(sql, t, "prepare");
    else if (n == 1 && ok &&
             (t.kind == SqlToken::quoted || (t.kind == SqlToken::word && !word_is(sql, t, "transaction"))))
      out = name_of(sql, t);
    ++n;
  });
  if (out && out->end - out->begin < 3 && sql[out->begin] == '"') return std::nullopt;  // "" is no name
  return out;
}

// DEALLOCATE [PREPARE] {name | ALL} [;]
std::optional<SessionCommand> parse_deallocate(std::string_view sql) {
  int n = 0;
  bool ok = true, done = false, semicolon = false;
  std::optional<SessionCommand> out;
  for_each_token(sql, [&](const SqlToken& t) {
    if (!ok) return;
    if (done) {
      // Only one ';' may follow the name.
      bool is_semicolon = t.kind == SqlToken::other && t.end == t.begin + 1 && sql[t.begin] == ';';
      if (is_semicolon && !semicolon)
        semicolon = true;
      else
        ok = false;
    } else if (n == 0) {
      ok = word_is(sql, t, "deallocate");
    } else if (n == 1 && word_is(sql, t, "prepare")) {
      // optional noise word (a statement named "prepare" is DEALLOCATE PREPARE prepare)
    } else if (word_is(sql, t, "all")) {
      out = SessionCommand{SessionCommand::deallocate_all, {}, {}};
      done = true;
    } else if (t.kind == SqlToken::word || (t.kind == SqlToken::quoted && t.end - t.begin > 2)) {
      out = SessionCommand{SessionCommand::deallocate, name_of(sql, t).name, {}};
      done = true;
    } else {
      ok = false;
    }
    ++n;
  });
  if (!ok || !done) return std::nullopt;
  return out;
}

bool mentions_execute(std::string_view sql) { return util::contains_ascii_ci(sql, "execute"); }

std::vector<NameRef> execute_references(std::string_view sql) {
  std::vector<NameRef> out;
  bool after_execute = false;
  for_each_token(sql, [&](const SqlToken& t) {
    if (after_execute && (t.kind == SqlToken::word || (t.kind == SqlToken::quoted && t.end - t.begin > 2)))
      out.push_back(name_of(sql, t));
    after_execute = word_is(sql, t, "execute");
  });
  return out;
}

}  // namespace pgrouter::sql
