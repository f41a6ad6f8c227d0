// See the header. The lexer follows PostgreSQL's scan.l as far as finding rows needs: quotes ('...', E'...'
// with backslash escapes, "..." identifiers, $tag$...$tag$), comments (-- and nested /* */), $n parameters
// and parentheses. Anything it does not know is one character of an operator or a word.
#include "pgrouter/sql/insert_rows.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace pgrouter::sql {

namespace {

bool word_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (c & 0x80); }
bool word_char(char c) { return word_start(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '$'; }

class Lexer {
 public:
  enum class Kind { end, word, param, open, close, comma, other, bad };
  struct Token {
    Kind kind = Kind::end;
    size_t begin = 0, end = 0;
  };
  explicit Lexer(std::string_view s) : s_(s) {}

  Token next() {
    skip_blanks();
    if (bad_) return {Kind::bad, i_, i_};
    if (i_ >= s_.size()) return {Kind::end, i_, i_};
    size_t b = i_;
    char c = s_[i_];
    if (c == '(' || c == ')' || c == ',') {
      ++i_;
      return {c == '(' ? Kind::open : c == ')' ? Kind::close : Kind::comma, b, i_};
    }
    if (c == '\'') return quoted(b, '\'', false);
    if (c == '"') return quoted(b, '"', false);
    if (c == '$') return dollar(b);
    if (word_start(c)) {
      while (i_ < s_.size() && word_char(s_[i_])) ++i_;
      // E'...' is an escape string: a backslash escapes its quote.
      if (i_ - b == 1 && (c == 'e' || c == 'E') && i_ < s_.size() && s_[i_] == '\'')
        return quoted(b, '\'', true);
      return {Kind::word, b, i_};
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.')) ++i_;
      return {Kind::other, b, i_};
    }
    ++i_;
    return {Kind::other, b, i_};
  }

 private:
  void skip_blanks() {
    while (i_ < s_.size()) {
      if (std::isspace(static_cast<unsigned char>(s_[i_]))) {
        ++i_;
      } else if (s_.substr(i_, 2) == "--") {
        size_t nl = s_.find('\n', i_);
        i_ = nl == std::string_view::npos ? s_.size() : nl + 1;
      } else if (s_.substr(i_, 2) == "/*") {
        block_comment();
      } else {
        return;
      }
    }
  }

  void block_comment() {  // nested, as PostgreSQL's are
    int depth = 0;
    while (i_ < s_.size()) {
      if (s_.substr(i_, 2) == "/*") {
        ++depth;
        i_ += 2;
      } else if (s_.substr(i_, 2) == "*/") {
        i_ += 2;
        if (--depth == 0) return;
      } else {
        ++i_;
      }
    }
    bad_ = true;
  }

  Token quoted(size_t b, char q, bool escapes) {
    i_ = s_.find(q, b) + 1;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (escapes && c == '\\') {
        i_ += 2;
      } else if (c == q && i_ + 1 < s_.size() && s_[i_ + 1] == q) {
        i_ += 2;
      } else if (c == q) {
        ++i_;
        return {Kind::other, b, i_};
      } else {
        ++i_;
      }
    }
    bad_ = true;
    return {Kind::bad, b, i_};
  }

  Token dollar(size_t b) {
    size_t j = b + 1;
    if (j < s_.size() && std::isdigit(static_cast<unsigned char>(s_[j]))) {
      while (j < s_.size() && std::isdigit(static_cast<unsigned char>(s_[j]))) ++j;
      i_ = j;
      return {Kind::param, b, j};
    }
    if (j < s_.size() && word_start(s_[j]))
      while (j < s_.size() && word_char(s_[j]) && s_[j] != '$') ++j;
    if (j >= s_.size() || s_[j] != '$') {
      i_ = b + 1;
      return {Kind::other, b, i_};
    }
    std::string_view tag = s_.substr(b, j + 1 - b);
    size_t close = s_.find(tag, j + 1);
    if (close == std::string_view::npos) {
      bad_ = true;
      return {Kind::bad, b, s_.size()};
    }
    i_ = close + tag.size();
    return {Kind::other, b, i_};
  }

  std::string_view s_;
  size_t i_ = 0;
  bool bad_ = false;
};

bool is_values(std::string_view w) {
  return w.size() == 6 && std::equal(w.begin(), w.end(), "values", [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == b;
         });
}

// Where the rows are: before the VALUES keyword, expecting a row's "(", inside a row, after a row.
enum class Phase { seek, row_expected, in_row, after_row, tail };

}  // namespace

std::optional<InsertText> insert_text(std::string_view sql) {
  InsertText out;
  out.text = sql;
  Lexer lex(sql);
  Phase phase = Phase::seek;
  int depth = 0;
  size_t row_begin = 0;
  for (;;) {
    auto t = lex.next();
    using K = Lexer::Kind;
    if (t.kind == K::bad) return std::nullopt;
    if (t.kind == K::end) break;
    if (t.kind == K::param) {
      int n = 0;
      std::from_chars(sql.data() + t.begin + 1, sql.data() + t.end, n);
      out.params.push_back({t.begin, t.end - t.begin, n});
    }
    if (t.kind == K::open) ++depth;
    if (t.kind == K::close && --depth < 0) return std::nullopt;
    switch (phase) {
      case Phase::seek:
        if (depth == 0 && t.kind == K::word && is_values(sql.substr(t.begin, t.end - t.begin)))
          phase = Phase::row_expected;
        break;
      case Phase::row_expected:
        if (t.kind != K::open) return std::nullopt;
        row_begin = t.begin;
        phase = Phase::in_row;
        break;
      case Phase::in_row:
        if (depth == 0) {
          out.rows.push_back({row_begin, t.end});
          phase = Phase::after_row;
        }
        break;
      case Phase::after_row:
        phase = t.kind == K::comma ? Phase::row_expected : Phase::tail;
        break;
      case Phase::tail:
        break;
    }
  }
  if (depth != 0 || out.rows.empty() || phase == Phase::row_expected || phase == Phase::in_row)
    return std::nullopt;
  out.head = {0, out.rows.front().begin};
  out.tail = {out.rows.back().end, sql.size()};
  return out;
}

RowsStatement with_rows(const InsertText& insert, const std::vector<size_t>& keep) {
  std::vector<InsertText::Span> pieces{insert.head};
  for (size_t r : keep) pieces.push_back(insert.rows.at(r));
  pieces.push_back(insert.tail);
  auto inside = [&](const InsertText::Param& p) {
    return std::any_of(pieces.begin(), pieces.end(),
                       [&](const auto& s) { return p.at >= s.begin && p.at < s.end; });
  };
  RowsStatement out;
  for (const auto& p : insert.params)
    if (inside(p)) out.params.push_back(p.number);
  std::sort(out.params.begin(), out.params.end());
  out.params.erase(std::unique(out.params.begin(), out.params.end()), out.params.end());
  auto renumbered = [&](int old) {
    return size_t(std::lower_bound(out.params.begin(), out.params.end(), old) - out.params.begin()) + 1;
  };
  auto param = insert.params.begin();
  for (size_t k = 0; k < pieces.size(); ++k) {
    if (k > 1 && k + 1 < pieces.size()) out.sql += ", ";
    size_t at = pieces[k].begin;
    for (; param != insert.params.end() && param->at < pieces[k].end; ++param) {
      if (param->at < at) continue;  // in a row left out
      out.sql.append(insert.text.substr(at, param->at - at));
      out.sql += '$' + std::to_string(renumbered(param->number));
      at = param->at + param->length;
    }
    out.sql.append(insert.text.substr(at, pieces[k].end - at));
  }
  return out;
}

}  // namespace pgrouter::sql
