#include "pgrouter/sharding/two_phase.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <random>

#include "pgrouter/control/log.hpp"

namespace pgrouter::sharding::two_phase {
namespace {
constexpr std::string_view kTable = "public.pgrouter_2pc_decisions";

std::string instance_id() {
  std::random_device rd;
  uint64_t v = (uint64_t(rd()) << 32) ^ rd() ^ uint64_t(::getpid());
  return fmt::format("{:016x}", v);
}

// The number ending a tag ("UPDATE 3", "INSERT 0 3"), and the tag without it.
bool split_count(std::string_view tag, std::string_view& head, uint64_t& n) {
  auto sp = tag.rfind(' ');
  if (sp == std::string_view::npos || sp + 1 == tag.size()) return false;
  n = 0;
  for (char c : tag.substr(sp + 1)) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + uint64_t(c - '0');
  }
  head = tag.substr(0, sp);
  return true;
}
}  // namespace

std::string new_gid() {
  static const std::string instance = instance_id();
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}{}_{}", kGidPrefix, instance, counter.fetch_add(1, std::memory_order_relaxed) + 1);
}

bool is_ours(std::string_view gid) { return gid.starts_with(kGidPrefix); }

// The major version leads server_version ("15.4 (Debian 15.4-1.pgdg120+1)", "17devel"); 9.6's "9" is
// below 13.
bool answers_xid_probe(std::string_view server_version) {
  int major = 0;
  size_t i = 0;
  for (; i < server_version.size() && i < 4 && server_version[i] >= '0' && server_version[i] <= '9'; ++i)
    major = major * 10 + (server_version[i] - '0');
  return i > 0 && major >= 13;
}

// gids are made of the prefix, hex digits, digits and '_' (new_gid), and recovery acts only on gids that
// is_ours() accepts and that contain nothing else, so quoting them as literals needs no escaping.
std::string prepare_sql(std::string_view gid) { return fmt::format("PREPARE TRANSACTION '{}'", gid); }

std::string finish_sql(std::string_view gid, Outcome o) {
  return fmt::format("{} PREPARED '{}'", o == Outcome::commit ? "COMMIT" : "ROLLBACK", gid);
}

std::string decide_sql(std::string_view gid, Outcome o) {
  return fmt::format(
      "BEGIN; SET LOCAL synchronous_commit TO on; INSERT INTO {} (gid, outcome) VALUES ('{}', '{}') ON "
      "CONFLICT (gid) DO NOTHING; COMMIT",
      kTable, gid, o == Outcome::commit ? "commit" : "abort");
}

std::string outcome_sql(std::string_view gid) {
  return fmt::format("SELECT outcome FROM {} WHERE gid = '{}'", kTable, gid);
}

std::string create_table_sql() {
  return fmt::format(
      "CREATE TABLE IF NOT EXISTS {} (gid text PRIMARY KEY, outcome text NOT NULL CHECK (outcome IN "
      "('commit', 'abort')), decided_at timestamptz NOT NULL DEFAULT now())",
      kTable);
}

std::string in_doubt_sql() {
  return fmt::format(
      "SELECT gid, owner, prepared < now() - make_interval(secs => {}) FROM pg_catalog.pg_prepared_xacts "
      "WHERE database = current_database() AND starts_with(gid, '{}') AND gid ~ '^[a-z0-9_]+$'",
      kGrace.count(), kGidPrefix);
}

std::string cleanup_sql(const std::vector<std::string>& still_prepared) {
  std::string keep;
  for (const auto& g : still_prepared) keep += fmt::format("{}'{}'", keep.empty() ? "" : ", ", g);
  return fmt::format("DELETE FROM {} WHERE decided_at < now() - make_interval(mins => {}){}", kTable,
                     kKeepDecisions.count(), keep.empty() ? "" : " AND gid NOT IN (" + keep + ")");
}

std::optional<bool> decision_won(const std::vector<std::string>& tags) {
  for (const auto& t : tags) {
    if (t == "INSERT 0 1") return true;
    if (t == "INSERT 0 0") return false;
  }
  return std::nullopt;
}

std::optional<Outcome> parse_outcome(std::string_view text) {
  if (text == "commit") return Outcome::commit;
  if (text == "abort") return Outcome::abort;
  return std::nullopt;
}

std::optional<std::string> combined_tag(const std::vector<std::string>& tags) {
  if (tags.empty()) return std::nullopt;
  std::string_view head0;
  uint64_t total = 0, n = 0;
  if (!split_count(tags[0], head0, total)) {
    for (const auto& t : tags)
      if (t != tags[0]) return std::nullopt;
    return tags[0];
  }
  for (size_t i = 1; i < tags.size(); ++i) {
    std::string_view head;
    if (!split_count(tags[i], head, n) || head != head0) return std::nullopt;
    total += n;
  }
  return fmt::format("{} {}", head0, total);
}

namespace {
const char* crash_at() {
  static const char* at = std::getenv("PGROUTER_TEST_CRASH_AT");
  return at;
}
}  // namespace

bool crash_points_armed() { return crash_at() != nullptr; }

void crash_point(std::string_view point) {
  const char* at = crash_at();
  if (!at || point != at) return;
  log::warn("PGROUTER_TEST_CRASH_AT: killing the process", {{"point", std::string(point)}});
  ::raise(SIGKILL);
}

}  // namespace pgrouter::sharding::two_phase
