// The admin console's command parser and row encoding.
#include <doctest/doctest.h>

#include "pgrouter/admin/command.hpp"
#include "pgrouter/admin/controls.hpp"
#include "pgrouter/admin/result_set.hpp"
#include "pgrouter/admin/show.hpp"
#include "pgrouter/protocol/codec.hpp"

using namespace pgrouter::admin;
namespace p = pgrouter::protocol;

TEST_CASE("admin commands: keywords in any case, blanks and a trailing semicolon") {
  auto c = parse_command("  show\tPools ; ");
  REQUIRE(c.command);
  CHECK(c.command->verb == Verb::show_pools);
  CHECK(c.command->database.empty());
  CHECK(parse_command("SHOW VERSION;").command->verb == Verb::show_version);
  CHECK(parse_command("reload").command->verb == Verb::reload);
  CHECK(parse_command("Shutdown;").command->verb == Verb::shutdown);
}

TEST_CASE("admin commands: database names as written, or quoted") {
  auto c = parse_command("PAUSE App");
  REQUIRE(c.command);
  CHECK(c.command->verb == Verb::pause);
  CHECK(c.command->database == "App");
  CHECK(parse_command("pause").command->database.empty());
  CHECK(parse_command("KILL \"my db\"\"x\"").command->database == "my db\"x");
  CHECK(parse_command("RESUME").command->verb == Verb::resume);
  CHECK(parse_command("enable app").command->verb == Verb::enable);
  CHECK(parse_command("wait_close").command->verb == Verb::wait_close);
}

TEST_CASE("admin commands: errors") {
  CHECK(parse_command("SHOW NONSENSE").error == "unknown command");
  CHECK(parse_command("select 1").error == "unknown command");
  CHECK(parse_command("KILL").error == "KILL needs a database name");
  CHECK(parse_command("DISABLE").error == "DISABLE needs a database name");
  CHECK(parse_command("SHOW POOLS extra").error == "too many arguments to SHOW POOLS");
  CHECK(parse_command("PAUSE a b").error == "too many arguments to PAUSE");
  CHECK(parse_command("KILL \"open").error == "unterminated quoted name");
  CHECK(parse_command("\"show\" pools").error ==
        "unknown command");  // a quoted word is a name, not a keyword
  CHECK(parse_command(" ; ").empty);
  CHECK(parse_command("").empty);
}

TEST_CASE("admin commands: which change something") {
  CHECK_FALSE(mutating(Verb::show_pools));
  CHECK_FALSE(mutating(Verb::show_backends));
  for (auto v : {Verb::reload, Verb::pause, Verb::resume, Verb::disable, Verb::enable, Verb::kill,
                 Verb::shutdown, Verb::wait_close})
    CHECK(mutating(v));
  CHECK(std::string(valid_commands()).find("SHOW POOLS") != std::string::npos);
}

namespace {
// (type, body) of each message in out.
std::vector<std::pair<char, std::string>> messages(const std::string& out) {
  std::vector<std::pair<char, std::string>> m;
  for (size_t pos = 0; pos + 5 <= out.size();) {
    uint32_t len = p::read_be32(out.data() + pos + 1);
    m.emplace_back(out[pos], out.substr(pos + 5, len - 4));
    pos += 1 + len;
  }
  return m;
}
}  // namespace

TEST_CASE("result set: RowDescription with text and int8 columns, DataRows with NULLs, CommandComplete") {
  ResultSet rs({"name", "count"}, {"count"});
  rs.row().add("a").add(int64_t(-5));
  rs.row().add_null().add(int64_t(0));
  std::string out;
  rs.encode(out);
  auto m = messages(out);
  REQUIRE(m.size() == 4);
  CHECK(m[0].first == 'T');
  const std::string& desc = m[0].second;
  CHECK(p::read_be16(desc.data()) == 2);
  CHECK(desc.substr(2, 5) == std::string("name\0", 5));
  CHECK(p::read_be32(desc.data() + 2 + 5 + 6) == kTextOid);
  size_t second = 2 + 5 + 18;
  CHECK(desc.substr(second, 6) == std::string("count\0", 6));
  CHECK(p::read_be32(desc.data() + second + 6 + 6) == kInt8Oid);
  CHECK(p::read_be16(desc.data() + second + 6 + 10) == 8);
  CHECK(m[1] == std::pair{'D', std::string("\0\2\0\0\0\1a\0\0\0\2-5", 13)});
  CHECK(m[2] == std::pair{'D', std::string("\0\2\xff\xff\xff\xff\0\0\0\1"
                                           "0",
                                           11)});
  CHECK(m[3] == std::pair{'C', std::string("SHOW\0", 5)});
}

TEST_CASE("SHOW POOLS sums each pool over the workers") {
  PoolRow a;
  a.database = "app";
  a.user = "u";
  a.backend = "127.0.0.1:5432";
  a.pool_mode = "transaction";
  a.cl_active = 1;
  a.sv_active = 1;
  a.sv_idle = 2;
  a.maxwait_us = 1'500'000;
  PoolRow b = a;
  b.cl_active = 2;
  b.sv_active = 0;
  b.maxwait_us = 10;
  PoolRow replica = a;
  replica.backend_index = 1;
  replica.backend = "127.0.0.1:5433";
  WorkerSnapshot w0, w1;
  w0.pools = {a, replica};
  w1.pools = {b};
  auto rs = show_pools({w0, w1});
  REQUIRE(rs.rows().size() == 2);
  const auto& row = rs.rows()[0];
  CHECK(*row[0] == "app");
  CHECK(*row[2] == "3");  // cl_active
  CHECK(*row[4] == "1");  // sv_active
  CHECK(*row[5] == "4");  // sv_idle
  CHECK(*row[9] == "1");  // maxwait (s)
  CHECK(*row[10] == "500000");
  CHECK(*row[11] == "transaction");
  CHECK(*row[12] == "127.0.0.1:5432");
  CHECK(*rs.rows()[1][12] == "127.0.0.1:5433");
}

TEST_CASE("SHOW CLIENTS: times as UTC text, waits in seconds and microseconds") {
  ConnectionRow c;
  c.user = "u";
  c.database = "app";
  c.state = "waiting";
  c.connect_time = 86400;
  c.wait_us = 2'000'003;
  WorkerSnapshot w;
  w.clients = {c};
  auto rs = show_clients({w});
  REQUIRE(rs.rows().size() == 1);
  CHECK(*rs.rows()[0][0] == "C");
  CHECK(*rs.rows()[0][8] == "1970-01-02 00:00:00 UTC");
  CHECK(*rs.rows()[0][9] == "");
  CHECK(*rs.rows()[0][10] == "2");
  CHECK(*rs.rows()[0][11] == "3");
}

TEST_CASE("controls: PAUSE and RESUME by database or all, DISABLE and ENABLE") {
  Controls c;
  CHECK_FALSE(c.paused("app"));
  c.pause("app");
  CHECK(c.paused("app"));
  CHECK_FALSE(c.paused("other"));
  CHECK(c.resume("other") == "database \"other\" is not paused");
  CHECK(c.resume("app").empty());
  CHECK_FALSE(c.paused("app"));
  c.pause("");
  CHECK(c.paused("app"));
  CHECK(c.paused("other"));
  CHECK_FALSE(c.resume("app").empty());  // everything is paused: RESUME without a name
  CHECK(c.resume("").empty());
  CHECK_FALSE(c.paused("app"));
  c.disable("app");
  CHECK(c.disabled("app"));
  CHECK_FALSE(c.disabled("other"));
  c.enable("app");
  CHECK_FALSE(c.disabled("app"));
}
