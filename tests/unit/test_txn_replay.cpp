// Savepoint statements read as PostgreSQL reads them, and the stack of savepoints and SET LOCALs a
// transaction across shards replays on a shard it reaches late.
#include <doctest/doctest.h>

#include "pgrouter/session/txn_replay.hpp"
#include "pgrouter/sql/savepoint.hpp"

using pgrouter::session::TxnReplay;
using pgrouter::sql::parse_savepoint;
using Kind = pgrouter::sql::SavepointCommand::Kind;

TEST_CASE("savepoint statements give their kind and the name PostgreSQL compares") {
  struct Case {
    const char* sql;
    Kind kind;
    const char* name;
  };
  for (const Case& c : {
           Case{"SAVEPOINT a", Kind::savepoint, "a"},
           Case{"savepoint MixedCase;", Kind::savepoint, "mixedcase"},
           Case{"SAVEPOINT \"_pg3_1\"", Kind::savepoint, "_pg3_1"},
           Case{"SAVEPOINT \"Quo\"\"ted\"", Kind::savepoint, "Quo\"ted"},
           Case{"/* c */ SAVEPOINT -- x\n s1 ;; ", Kind::savepoint, "s1"},
           Case{"RELEASE a", Kind::release, "a"},
           Case{"RELEASE SAVEPOINT A", Kind::release, "a"},
           Case{"release savepoint", Kind::release, "savepoint"},  // a savepoint named savepoint
           Case{"ROLLBACK TO a", Kind::rollback_to, "a"},
           Case{"rollback to savepoint \"B\"", Kind::rollback_to, "B"},
           Case{"ROLLBACK WORK TO SAVEPOINT c", Kind::rollback_to, "c"},
           Case{"ROLLBACK TRANSACTION TO d", Kind::rollback_to, "d"},
           Case{"rollback to savepoint savepoint", Kind::rollback_to, "savepoint"},
       }) {
    CAPTURE(c.sql);
    auto cmd = parse_savepoint(c.sql);
    REQUIRE(cmd);
    CHECK(cmd->kind == c.kind);
    CHECK(cmd->name == c.name);
  }
}

TEST_CASE("other statements and unread spellings are not savepoint commands") {
  for (const char* sql :
       {"ROLLBACK", "ROLLBACK WORK", "COMMIT", "SAVEPOINT", "RELEASE", "SAVEPOINT a b",
        "SAVEPOINT a; SELECT 1", "ROLLBACK TO", "SAVEPOINT U&\"a\"", "SAVEPOINT \"\"", "SAVEPOINT \"a",
        "SAVEPOINT a /* open", "SAVEPOINT 1a", "SELECT 1", "", "ROLLBACK AND CHAIN"}) {
    CAPTURE(sql);
    CHECK_FALSE(parse_savepoint(sql));
  }
}

TEST_CASE("a long name is cut to 63 bytes without splitting a character") {
  std::string name(70, 'x');
  CHECK(parse_savepoint("SAVEPOINT " + name)->name == std::string(63, 'x'));
  std::string wide = std::string(62, 'y') + "\xc3\xa9" + "zz";  // é straddles byte 63
  CHECK(parse_savepoint("SAVEPOINT \"" + wide + "\"")->name == std::string(62, 'y'));
}

namespace {
std::vector<std::string> sqls(const TxnReplay& r) {
  std::vector<std::string> out;
  for (auto& s : r.steps()) out.push_back(s.sql);
  return out;
}
void run(TxnReplay& r, const std::string& sql) {
  auto cmd = parse_savepoint(sql);
  if (cmd)
    r.apply(*cmd, sql);
  else
    r.set_local(sql);
}
}  // namespace

TEST_CASE("the replay keeps what PostgreSQL keeps") {
  TxnReplay r;
  for (const char* s :
       {"SET LOCAL x = 1", "SAVEPOINT a", "SET LOCAL y = 2", "SAVEPOINT b", "SET LOCAL z = 3"})
    run(r, s);
  CHECK(sqls(r).size() == 5);
  SUBCASE("ROLLBACK TO keeps the savepoint and drops what came after it") {
    run(r, "ROLLBACK TO a");
    CHECK(sqls(r) == std::vector<std::string>{"SET LOCAL x = 1", "SAVEPOINT a"});
    CHECK(r.has("a"));
    CHECK_FALSE(r.has("b"));
  }
  SUBCASE("RELEASE ends the savepoint and later ones, keeping what was set inside") {
    run(r, "RELEASE a");
    CHECK(sqls(r) == std::vector<std::string>{"SET LOCAL x = 1", "SET LOCAL y = 2", "SET LOCAL z = 3"});
    CHECK_FALSE(r.has("a"));
    CHECK_FALSE(r.has("b"));
  }
  SUBCASE("a name used twice: the latest one") {
    run(r, "SAVEPOINT a");
    run(r, "SET LOCAL w = 4");
    run(r, "ROLLBACK TO a");
    CHECK(sqls(r).size() == 6);
    run(r, "RELEASE a");  // the second a: the first is still there
    CHECK(r.has("a"));
    run(r, "ROLLBACK TO a");
    CHECK(sqls(r) == std::vector<std::string>{"SET LOCAL x = 1", "SAVEPOINT a"});
  }
  SUBCASE("an unknown name changes nothing") {
    CHECK_FALSE(r.apply(*parse_savepoint("RELEASE nope"), "RELEASE nope"));
    CHECK_FALSE(r.apply(*parse_savepoint("ROLLBACK TO nope"), "ROLLBACK TO nope"));
    CHECK(sqls(r).size() == 5);
  }
  SUBCASE("unknown until cleared") {
    r.mark_unknown();
    r.forget_steps();
    CHECK(r.unknown());
    CHECK(r.steps().empty());
    r.clear();
    CHECK_FALSE(r.unknown());
  }
}
