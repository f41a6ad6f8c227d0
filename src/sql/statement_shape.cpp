// ClassifierCache::shape_of: a statement's text with its integer and plain string literals replaced, so that
// texts differing only in inlined values share one classification.
#include <array>
#include <cstring>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "pgrouter/sql/classifier_cache.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::sql {

namespace {

// Copies a comment or quoted identifier starting at s[i] verbatim to out; false if it does not end.
bool copy_comment_or_identifier(std::string_view s, size_t& i, std::string& out) {
  size_t start = i;
  if (s[i] == '-' || s[i] == '/') {  // a comment ("--" with its newline; "/* */" nested)
    bool closed;
    i = util::sql_comment_end(s, i, &closed);
    if (!closed) return false;
  } else {  // "quoted identifier" ("" inside)
    for (++i;; ++i) {
      if (i >= s.size()) return false;
      if (s[i] == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          ++i;
          continue;
        }
        ++i;
        break;
      }
    }
  }
  out.append(s.substr(start, i - start));
  return true;
}

}  // namespace

// The bytes shape_of() copies as they are without looking at them: all but control bytes below '\t' and
// the starts of what it handles (';', quotes, comments, digits, '$').
constexpr auto kShapePlain = [] {
  std::array<bool, 256> t{};
  for (int c = 0x09; c < 256; ++c) t[size_t(c)] = true;
  for (char c : std::string_view(";\"'-/$0123456789")) t[static_cast<unsigned char>(c)] = false;
  return t;
}();

// The end of the run of kShapePlain bytes starting at i: 16 bytes at a time where SSE2 is there (x86-64
// always has it), because a statement is mostly such bytes.
static size_t plain_run_end(std::string_view s, size_t i) {
  const char* d = s.data();
  size_t n = s.size();
#ifdef __SSE2__
  const __m128i bias = _mm_set1_epi8(char(0x80));
  const __m128i digit_lo = _mm_set1_epi8(char(0x80 + '0')), digit_lim = _mm_set1_epi8(char(-128 + 10));
  const __m128i ctl_lim = _mm_set1_epi8(char(-128 + 0x09));
  const __m128i semi = _mm_set1_epi8(';'), dq = _mm_set1_epi8('"'), sq = _mm_set1_epi8('\''),
                dash = _mm_set1_epi8('-'), slash = _mm_set1_epi8('/'), dollar = _mm_set1_epi8('$');
  while (i + 16 <= n) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + i));
    // Unsigned ranges as signed compares of biased bytes: digits ('0'..'9') and control bytes (< 0x09).
    __m128i special = _mm_or_si128(_mm_cmplt_epi8(_mm_sub_epi8(v, digit_lo), digit_lim),
                                   _mm_cmplt_epi8(_mm_xor_si128(v, bias), ctl_lim));
    special = _mm_or_si128(special, _mm_or_si128(_mm_cmpeq_epi8(v, semi), _mm_cmpeq_epi8(v, dq)));
    special = _mm_or_si128(special, _mm_or_si128(_mm_cmpeq_epi8(v, sq), _mm_cmpeq_epi8(v, dash)));
    special = _mm_or_si128(special, _mm_or_si128(_mm_cmpeq_epi8(v, slash), _mm_cmpeq_epi8(v, dollar)));
    if (int mask = _mm_movemask_epi8(special)) return i + size_t(__builtin_ctz(unsigned(mask)));
    i += 16;
  }
#endif
  while (i < n && kShapePlain[static_cast<unsigned char>(d[i])]) ++i;
  return i;
}

bool ClassifierCache::shape_of(std::string_view s, std::string& out) {
  // The statement's first keyword, past white space and comments: only plain DML and queries are shaped.
  out.clear();
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f')
      out.push_back(s[i++]);
    else if (s.compare(i, 2, "--") == 0 || s.compare(i, 2, "/*") == 0) {
      if (!copy_comment_or_identifier(s, i, out)) return false;
    } else
      break;
  }
  size_t w = i;
  while (w < s.size() && util::sql_ident_char(s[w])) ++w;
  auto word = s.substr(i, w - i);
  auto is = [&](std::string_view kw) { return util::equals_ascii_ci(word, kw); };
  if (!is("select") && !is("with") && !is("insert") && !is("update") && !is("delete") && !is("values") &&
      !is("table"))
    return false;
  while (i < s.size()) {
    // Bytes that need no decision (most of a statement) are copied a run at a time.
    size_t run = plain_run_end(s, i);
    if (run > i) {
      out.append(s.data() + i, run - i);
      i = run;
      if (i == s.size()) break;
    }
    char c = s[i];
    if (static_cast<unsigned char>(c) < 0x09) return false;  // the placeholders below must not occur in text
    if (c == ';') {  // one statement only: a later SET pgrouter.route = '...' must keep its literal
      for (size_t j = i + 1; j < s.size(); ++j)
        if (s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r') return false;
      out.append(s.substr(i));
      return true;
    }
    if (c == '"' || s.compare(i, 2, "--") == 0 || s.compare(i, 2, "/*") == 0) {
      if (!copy_comment_or_identifier(s, i, out)) return false;
      continue;
    }
    bool after_ident = i > 0 && (util::sql_ident_char(s[i - 1]) || s[i - 1] == '.');
    if (c == '\'') {
      // A plain string (not E'', B'', X'', U&'', N'': those follow a letter or '&'); '' inside; a backslash
      // could be an escape (standard_conforming_strings off): left exact.
      if (after_ident || (i > 0 && s[i - 1] == '&')) return false;
      size_t j = i + 1;
      for (;; ++j) {
        if (j >= s.size() || s[j] == '\\') return false;
        if (s[j] == '\'') {
          if (j + 1 < s.size() && s[j + 1] == '\'') {
            ++j;
            continue;
          }
          break;
        }
      }
      out.push_back('\x01');
      i = j + 1;
      continue;
    }
    if (c >= '0' && c <= '9' && !after_ident) {
      // An integer literal: digits not touching an identifier, a '.', an exponent or a $n parameter.
      size_t j = i;
      while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
      if (j < s.size() && (util::sql_ident_char(s[j]) || s[j] == '.')) {
        out.append(s.substr(i, j - i));
        i = j;
        continue;
      }
      out.push_back('\x02');
      i = j;
      continue;
    }
    if (c == '$' && i + 1 < s.size() && !(s[i + 1] >= '0' && s[i + 1] <= '9') && !after_ident)
      return false;  // a dollar-quoted string
    out.push_back(c);
    ++i;
  }
  return true;
}

}  // namespace pgrouter::sql
