// auth_file: PgBouncer's userlist.txt format, and the per-worker reload on a change of the file.
#include "pgrouter/control/userlist.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace pgrouter::control {

namespace {
// A double-quoted word at text[pos] (after blanks); `""` inside is one quote. nullopt if none or unclosed.
std::optional<std::string> quoted_word(std::string_view text, size_t& pos, std::string& why) {
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t')) ++pos;
  if (pos >= text.size() || text[pos] != '"') {
    why = "expected a double-quoted word";
    return std::nullopt;
  }
  std::string word;
  for (size_t i = pos + 1; i < text.size(); ++i) {
    if (text[i] != '"') {
      word += text[i];
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '"') {
      word += '"';
      ++i;
      continue;
    }
    pos = i + 1;
    return word;
  }
  why = "unterminated double-quoted word";
  return std::nullopt;
}
}  // namespace

std::map<std::string, std::string> parse_userlist(std::string_view text, std::vector<UserlistError>& errors) {
  std::map<std::string, std::string> users;
  int number = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    std::string_view line =
        text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    start = end == std::string_view::npos ? text.size() + 1 : end + 1;
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == ';' || line[first] == '#') continue;
    size_t pos = 0;
    std::string why;
    auto user = quoted_word(line, pos, why);
    auto secret = user ? quoted_word(line, pos, why) : std::nullopt;
    if (!user || !secret) {
      errors.push_back({number, why});
      continue;
    }
    if (user->empty()) {
      errors.push_back({number, "empty user name"});
      continue;
    }
    users[*user] = *secret;
  }
  return users;
}

bool UserlistFile::refresh(const std::string& path, bool force) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    error_ = "cannot read auth_file '" + path + "': " + std::strerror(errno);
    return false;
  }
  if (!force && path == path_ && st.st_mtim.tv_sec == mtime_.tv_sec && st.st_mtim.tv_nsec == mtime_.tv_nsec &&
      st.st_size == size_)
    return true;
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  if (!in || !(content << in.rdbuf())) {
    error_ = "cannot read auth_file '" + path + "': " + std::strerror(errno);
    return false;
  }
  std::vector<UserlistError> errors;
  auto parsed = parse_userlist(content.str(), errors);
  users_ = std::map<std::string, std::string, std::less<>>(parsed.begin(), parsed.end());
  path_ = path;
  mtime_ = st.st_mtim;
  size_ = st.st_size;
  ++loads_;
  // Lines in error are skipped, as PgBouncer skips them; the first is reported.
  error_ = errors.empty() ? std::string()
                          : "auth_file '" + path + "' line " + std::to_string(errors.front().line) + ": " +
                                errors.front().message;
  return true;
}

const std::string* UserlistFile::find(std::string_view user) const {
  auto it = users_.find(user);
  return it == users_.end() ? nullptr : &it->second;
}

SecretKind secret_kind(std::string_view secret) {
  if (secret.starts_with("SCRAM-SHA-256$")) return SecretKind::scram;
  if (secret.size() == 35 && secret.starts_with("md5") &&
      secret.substr(3).find_first_not_of("0123456789abcdef") == std::string_view::npos)
    return SecretKind::md5;
  return SecretKind::plaintext;
}

}  // namespace pgrouter::control
