// Tests for the slow-query log's session part (which statement each request runs, Bind values only when
// asked) and for the statement digest it logs (fingerprint, normalized text).
#include <doctest/doctest.h>

#include <string>

#include "pgrouter/session/slow_query_log.hpp"
#include "pgrouter/sql/fingerprint.hpp"

using namespace pgrouter;
using pgrouter::session::SlowQueryLog;

namespace {

constexpr uint64_t kMs = 1'000'000;

std::string be16(int v) { return {char((v >> 8) & 0xff), char(v & 0xff)}; }
std::string be32(int32_t v) {
  auto u = uint32_t(v);
  return {char(u >> 24), char((u >> 16) & 0xff), char((u >> 8) & 0xff), char(u & 0xff)};
}
std::string cstr(const std::string& s) { return s + std::string(1, '\0'); }

// A Bind body: portal "", statement `name`, text format, the values (nullptr = NULL).
std::string bind_body(const std::string& name, std::initializer_list<const char*> values) {
  std::string b = cstr("") + cstr(name) + be16(0) + be16(int(values.size()));
  for (const char* v : values) {
    if (!v) {
      b += be32(-1);
      continue;
    }
    b += be32(int32_t(std::string(v).size())) + v;
  }
  return b + be16(0);
}

}  // namespace

TEST_CASE("SlowQueryLog is off at 0 and reports only requests at or over the threshold") {
  SlowQueryLog log;
  log.configure(0, false);
  CHECK_FALSE(log.on());
  log.configure(100, false);
  REQUIRE(log.on());
  CHECK(log.threshold_ns() == 100 * kMs);
  log.client_message('Q', cstr("SELECT pg_sleep(1)"));
  log.request_started('Q');
  log.client_message('Q', cstr("SELECT 1"));
  log.request_started('Q');
  auto first = log.request_finished(150 * kMs);
  REQUIRE(first);
  CHECK(first->text == "SELECT pg_sleep(1)");
  CHECK(first->duration_ns == 150 * kMs);
  CHECK_FALSE(log.request_finished(99 * kMs));   // the second, fast
  CHECK_FALSE(log.request_finished(500 * kMs));  // nothing in flight
}

TEST_CASE("SlowQueryLog names the statement of an extended batch by its Bind, values only when asked") {
  for (bool parameters : {false, true}) {
    CAPTURE(parameters);
    SlowQueryLog log;
    log.configure(10, parameters);
    log.client_message('P', cstr("s1") + cstr("SELECT * FROM t WHERE id = $1 AND name = $2") + be16(0));
    log.client_message('P', cstr("") + cstr("SELECT $1::int") + be16(0));
    log.client_message('B', bind_body("s1", {"4'2", nullptr}));
    log.client_message('E', cstr("") + be32(0));
    log.request_started('S');
    log.client_message('B', bind_body("", {"7"}));
    log.request_started('S');
    auto named = log.request_finished(20 * kMs);
    REQUIRE(named);
    CHECK(named->text == "SELECT * FROM t WHERE id = $1 AND name = $2");
    CHECK(named->parameters == (parameters ? "$1 = '4''2', $2 = NULL" : ""));
    auto unnamed = log.request_finished(20 * kMs);
    REQUIRE(unnamed);
    CHECK(unnamed->text == "SELECT $1::int");
    CHECK(unnamed->parameters == (parameters ? "$1 = '7'" : ""));
  }
}

TEST_CASE("SlowQueryLog survives a truncated Bind and an unknown statement") {
  SlowQueryLog log;
  log.configure(1, true);
  log.client_message('B', cstr("") + cstr("nope") + be16(0) + be16(2) + be32(5) + "ab");
  log.request_started('S');
  auto q = log.request_finished(5 * kMs);
  REQUIRE(q);
  CHECK(q->text.empty());
  CHECK(q->parameters == "$1 = ");  // stops at the value that runs off the end
}

TEST_CASE("digest_statement: one fingerprint for texts that differ in constants, values normalized away") {
  auto a = sql::digest_statement("SELECT * FROM accounts WHERE id = 42 AND secret = 'hunter2'");
  auto b = sql::digest_statement("select * from accounts where id = 7 and secret = 'x'");
  auto c = sql::digest_statement("SELECT * FROM accounts WHERE owner = 42");
  CHECK(a.fingerprint.size() == 16);
  CHECK(a.fingerprint == b.fingerprint);
  CHECK(a.fingerprint != c.fingerprint);
  CHECK(a.normalized.find("hunter2") == std::string::npos);
  CHECK(a.normalized.find("42") == std::string::npos);
  CHECK(a.normalized.find("$1") != std::string::npos);
  auto bad = sql::digest_statement("SELEKT nonsense (");
  CHECK(bad.fingerprint.empty());
  CHECK(bad.normalized.empty());
}
