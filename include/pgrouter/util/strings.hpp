// Small string helpers shared by the config loader, the SQL scanners and the session.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace pgrouter::util {

// ASCII lower case (SQL keywords and parameter names; locale-independent on purpose).
inline void ascii_lower_in_place(std::string& s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
}

inline std::string ascii_lower(std::string_view s) {
  std::string out(s);
  ascii_lower_in_place(out);
  return out;
}

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Whether s equals `lower_word` (given in lower case), ASCII case-insensitively (SQL keywords).
inline bool equals_ascii_ci(std::string_view s, std::string_view lower_word) {
  if (s.size() != lower_word.size()) return false;
  for (size_t i = 0; i < s.size(); ++i)
    if (ascii_lower(s[i]) != lower_word[i]) return false;
  return true;
}

// Whether `lower_word` (given in lower case) occurs anywhere in s, ASCII case-insensitively: the cheap
// test SQL scanners run before any parsing.
inline bool contains_ascii_ci(std::string_view s, std::string_view lower_word) {
  for (size_t i = 0; i + lower_word.size() <= s.size(); ++i)
    if (equals_ascii_ci(s.substr(i, lower_word.size()), lower_word)) return true;
  return false;
}

// The end of an SQL comment starting at s[i]: "--" runs past its newline, "/* */" nests as in PostgreSQL.
// Returns the index just past it (s.size() when it does not end; *closed tells an unterminated block
// comment), or i when no comment starts there. The scanners that skip or copy comments share it.
inline size_t sql_comment_end(std::string_view s, size_t i, bool* closed = nullptr) {
  if (closed) *closed = true;
  if (s.compare(i, 2, "--") == 0) {
    size_t e = s.find('\n', i);
    return e == std::string_view::npos ? s.size() : e + 1;
  }
  if (s.compare(i, 2, "/*") != 0) return i;
  int depth = 1;
  for (i += 2; i < s.size();) {
    if (s.compare(i, 2, "/*") == 0) {
      ++depth;
      i += 2;
    } else if (s.compare(i, 2, "*/") == 0) {
      i += 2;
      if (--depth == 0) return i;
    } else {
      ++i;
    }
  }
  if (closed) *closed = false;
  return s.size();
}

// A byte that may continue an SQL identifier: ASCII letters and digits, '_', '$' and any non-ASCII byte.
inline bool sql_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// "host:port", as logs, messages, metric labels and the health records' keys name a server.
inline std::string host_port(std::string_view host, uint16_t port) {
  std::string out(host);
  out += ':';
  out += std::to_string(port);
  return out;
}

// Dotted-quad text of an IPv4 address in host byte order (address_v4::to_uint): what address_v4::to_string
// gives, without inet_ntop's sprintf, which is costly for something done on every login.
inline std::string ipv4_text(uint32_t a) {
  char out[15];
  size_t n = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    unsigned v = (a >> shift) & 0xff;
    if (v >= 100) out[n++] = char('0' + v / 100);
    if (v >= 10) out[n++] = char('0' + v / 10 % 10);
    out[n++] = char('0' + v % 10);
    if (shift > 0) out[n++] = '.';
  }
  return std::string(out, n);
}

}  // namespace pgrouter::util
