// JSON log lines on stderr: {"ts":...,"level":...,"worker":...,"session":...,"msg":...,<fields>}.
// Secrets are never passed here: callers log user names, never passwords or verifiers.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace pgrouter::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

bool parse_level(std::string_view text, Level& out);
void set_level(Level level);
bool enabled(Level level);

struct Field {
  std::string_view key;
  std::string value;
  bool quoted = true;  // false for numbers/booleans
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  Field(std::string_view k, const std::string& v) : key(k), value(v) {}
  template <typename N, typename = std::enable_if_t<std::is_arithmetic_v<N>>>
  Field(std::string_view k, N n) : key(k), value(std::to_string(n)), quoted(false) {}
};

// The worker index of the calling thread (-1 on the control plane); set once per thread.
void set_thread_worker(int worker);

void write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});
inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::debug)) write(Level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::info)) write(Level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::warn)) write(Level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::error, m, f); }

}  // namespace pgrouter::log
