// JSON-lines logger: one write(2) per line so lines from different threads never interleave.
#include "pgrouter/control/log.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include <fmt/format.h>

namespace pgrouter::log {
namespace {
std::atomic<int> g_level{int(Level::info)};
thread_local int t_worker = -1;
constexpr const char* kNames[] = {"debug", "info", "warn", "error"};

void escape_into(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", int(c));
        else
          out.push_back(c);
    }
  }
}
}  // namespace

bool parse_level(std::string_view text, Level& out) {
  for (int i = 0; i < 4; ++i)
    if (text == kNames[i]) {
      out = Level(i);
      return true;
    }
  return false;
}

void set_level(Level level) { g_level.store(int(level), std::memory_order_relaxed); }
bool enabled(Level level) { return int(level) >= g_level.load(std::memory_order_relaxed); }
void set_thread_worker(int worker) { t_worker = worker; }

void write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::string line;
  line.reserve(160);
  line += fmt::format("{{\"ts\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{}\"",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms),
                      kNames[int(level)]);
  if (t_worker >= 0) line += fmt::format(",\"worker\":{}", t_worker);
  line += ",\"msg\":\"";
  escape_into(line, msg);
  line += '"';
  for (auto& f : fields) {
    line += ",\"";
    escape_into(line, f.key);
    line += "\":";
    if (f.quoted) {
      line += '"';
      escape_into(line, f.value);
      line += '"';
    } else {
      line += f.value;
    }
  }
  line += "}\n";
  ssize_t rc = ::write(2, line.data(), line.size());
  (void)rc;
}

}  // namespace pgrouter::log
