// PgBouncer's auth_file (userlist.txt): one `"user" "secret"` pair per line, re-read when its modification
// time changes. The secret is a plaintext password, an md5 hash ("md5" + 32 hex) or a SCRAM verifier.
#pragma once
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::control {

struct UserlistError {
  int line = 0;  // 1-based
  std::string message;
};

// Parses a userlist text as PgBouncer does: on each line two double-quoted words, `""` inside one being a
// literal quote; blank lines, lines starting with ';' or '#' and anything after the second word are
// ignored. A line that does not start with a quoted word is an error (PgBouncer skips it with a log line);
// a later entry of the same user replaces the earlier one.
std::map<std::string, std::string> parse_userlist(std::string_view text, std::vector<UserlistError>& errors);

// One worker's view of the auth_file: reloaded by refresh() when its path, modification time or size
// changed since the last read (a stat per call), or when forced (SIGHUP/RELOAD).
class UserlistFile {
 public:
  // Re-reads the file if needed; false (with the reason in error()) when it cannot be read, in which case
  // the last good contents stay in use.
  bool refresh(const std::string& path, bool force = false);
  const std::string* find(std::string_view user) const;
  const std::string& error() const { return error_; }
  uint64_t loads() const { return loads_; }  // successful reads so far

 private:
  std::string path_;
  timespec mtime_{};
  long long size_ = -1;
  std::map<std::string, std::string, std::less<>> users_;
  std::string error_;
  uint64_t loads_ = 0;
};

// What kind of secret a userlist (or pg_shadow / pg_authid) value is.
enum class SecretKind { plaintext, md5, scram };
SecretKind secret_kind(std::string_view secret);

}  // namespace pgrouter::control
