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

}  // namespace pgrouter::util
