// Small string helpers shared by the config loader, the SQL scanners and the session.
#pragma once
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

// A byte that may continue an SQL identifier: ASCII letters and digits, '_', '$' and any non-ASCII byte.
inline bool sql_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

}  // namespace pgrouter::util
