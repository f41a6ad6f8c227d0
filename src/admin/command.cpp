// Parsing the admin console's commands (see the header).
#include "pgrouter/admin/command.hpp"

#include <array>
#include <utility>
#include <vector>

#include "pgrouter/util/strings.hpp"

namespace pgrouter::admin {
namespace {

bool blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Splits into words at blanks; a double-quoted word keeps its blanks and loses its quotes. False when a quote
// is not closed.
bool split_words(std::string_view text, std::vector<std::string>& words, std::vector<bool>& quoted) {
  size_t i = 0;
  while (i < text.size()) {
    if (blank(text[i])) {
      ++i;
      continue;
    }
    std::string word;
    bool q = text[i] == '"';
    if (q) {
      for (++i;; ++i) {
        if (i >= text.size()) return false;
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            word += '"';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        word += text[i];
      }
    } else {
      while (i < text.size() && !blank(text[i])) word += text[i++];
    }
    words.push_back(std::move(word));
    quoted.push_back(q);
  }
  return true;
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
  return out;
}

std::string_view trim_end(std::string_view text) {
  while (!text.empty() && (blank(text.back()) || text.back() == ';')) text.remove_suffix(1);
  return text;
}

enum class Arg { none, optional, required };

struct Entry {
  std::string_view words;  // lower case, one blank between words
  Verb verb;
  Arg arg;
};

constexpr std::array<Entry, 16> kCommands{{
    {"show pools", Verb::show_pools, Arg::none},
    {"show clients", Verb::show_clients, Arg::none},
    {"show servers", Verb::show_servers, Arg::none},
    {"show databases", Verb::show_databases, Arg::none},
    {"show stats", Verb::show_stats, Arg::none},
    {"show config", Verb::show_config, Arg::none},
    {"show version", Verb::show_version, Arg::none},
    {"show backends", Verb::show_backends, Arg::none},
    {"reload", Verb::reload, Arg::none},
    {"pause", Verb::pause, Arg::optional},
    {"resume", Verb::resume, Arg::optional},
    {"disable", Verb::disable, Arg::required},
    {"enable", Verb::enable, Arg::required},
    {"kill", Verb::kill, Arg::required},
    {"shutdown", Verb::shutdown, Arg::none},
    {"wait_close", Verb::wait_close, Arg::optional},
}};

}  // namespace

Parsed parse_command(std::string_view text) {
  Parsed out;
  text = trim_end(text);
  std::vector<std::string> words;
  std::vector<bool> quoted;
  if (!split_words(text, words, quoted)) {
    out.error = "unterminated quoted name";
    return out;
  }
  if (words.empty()) {
    out.empty = true;
    return out;
  }
  for (const auto& entry : kCommands) {
    // The entry's keywords must match the first words (unquoted), case-insensitively.
    std::vector<std::string> keys;
    std::vector<bool> unused;
    split_words(entry.words, keys, unused);
    if (words.size() < keys.size()) continue;
    bool match = true;
    for (size_t i = 0; i < keys.size() && match; ++i)
      match = !quoted[i] && util::ascii_lower(words[i]) == keys[i];
    if (!match) continue;
    size_t rest = words.size() - keys.size();
    if (rest > 1 || (rest == 1 && entry.arg == Arg::none)) {
      out.error = "too many arguments to " + upper(entry.words);
      return out;
    }
    if (rest == 0 && entry.arg == Arg::required) {
      out.error = upper(entry.words) + " needs a database name";
      return out;
    }
    out.command = Command{entry.verb, rest == 1 ? words.back() : std::string()};
    return out;
  }
  out.error = "unknown command";
  return out;
}

bool mutating(Verb verb) {
  switch (verb) {
    case Verb::show_pools:
    case Verb::show_clients:
    case Verb::show_servers:
    case Verb::show_databases:
    case Verb::show_stats:
    case Verb::show_config:
    case Verb::show_version:
    case Verb::show_backends:
      return false;
    default:
      return true;
  }
}

std::string_view valid_commands() {
  return "SHOW POOLS|CLIENTS|SERVERS|DATABASES|STATS|CONFIG|VERSION|BACKENDS, RELOAD, PAUSE [db], "
         "RESUME [db], DISABLE db, ENABLE db, KILL db, SHUTDOWN, WAIT_CLOSE [db]";
}

}  // namespace pgrouter::admin
