// Lexical detection of session-scoped statements for transaction pooling (see the header).
#include "pgrouter/sql/session_features.hpp"

#include <algorithm>
#include <cctype>
#include <string>

namespace pgrouter::sql {
namespace {

bool contains_word(const std::string& lower, std::string_view needle) {
  size_t pos = 0;
  while ((pos = lower.find(needle, pos)) != std::string::npos) {
    bool start_ok = pos == 0 || !(std::isalnum(static_cast<unsigned char>(lower[pos - 1])) || lower[pos - 1] == '_');
    size_t end = pos + needle.size();
    bool end_ok = end >= lower.size() || !(std::isalnum(static_cast<unsigned char>(lower[end])) || lower[end] == '_');
    if (start_ok && end_ok) return true;
    pos = end;
  }
  return false;
}

// Each statement of a multi-statement string starts at the beginning or after a ';'.
bool any_statement_starts_with(const std::string& lower, std::string_view word, std::string_view unless_next = {}) {
  size_t i = 0;
  while (i <= lower.size()) {
    while (i < lower.size() && (std::isspace(static_cast<unsigned char>(lower[i])) || lower[i] == '(')) ++i;
    if (lower.compare(i, word.size(), word) == 0) {
      size_t end = i + word.size();
      if (end >= lower.size() || !(std::isalnum(static_cast<unsigned char>(lower[end])) || lower[end] == '_')) {
        if (unless_next.empty()) return true;
        size_t j = end;
        while (j < lower.size() && std::isspace(static_cast<unsigned char>(lower[j]))) ++j;
        bool excluded = false;
        for (size_t a = 0, b; a < unless_next.size(); a = b + 1) {
          b = unless_next.find('|', a);
          if (b == std::string_view::npos) b = unless_next.size();
          auto alt = unless_next.substr(a, b - a);
          if (lower.compare(j, alt.size(), alt) == 0) excluded = true;
        }
        if (!excluded) return true;
      }
    }
    size_t next = lower.find(';', i);
    if (next == std::string::npos) break;
    i = next + 1;
  }
  return false;
}

}  // namespace

std::string_view session_feature(std::string_view sql) {
  std::string lower(sql);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (any_statement_starts_with(lower, "listen")) return "LISTEN";
  if (contains_word(lower, "pg_advisory_lock") || contains_word(lower, "pg_advisory_lock_shared") ||
      contains_word(lower, "pg_try_advisory_lock") || contains_word(lower, "pg_try_advisory_lock_shared"))
    return "session advisory lock";
  if (contains_word(lower, "temp") || contains_word(lower, "temporary")) return "temporary table";
  if (lower.find("with hold") != std::string::npos) return "WITH HOLD cursor";
  if (any_statement_starts_with(lower, "load")) return "LOAD";
  if (any_statement_starts_with(lower, "prepare", "transaction")) return "PREPARE";
  if (any_statement_starts_with(lower, "set", "local|transaction|constraints|session characteristics"))
    return "SET";
  if (any_statement_starts_with(lower, "reset")) return "SET";
  if (any_statement_starts_with(lower, "discard")) return "DISCARD";
  if (any_statement_starts_with(lower, "deallocate")) return "DEALLOCATE";
  return {};
}

}  // namespace pgrouter::sql
