// The databases' `sharding:` section and users' cross_shard: a full valid example, and each error with its
// position.
#include <doctest/doctest.h>

#include "pgrouter/control/config.hpp"

using namespace pgrouter;
using namespace pgrouter::control;

namespace {

// A database `app` with `shards` shards whose sharding section is `body` (lines indented by 6 spaces); the
// body starts at line 6 + shards.
std::string with_sharding(const std::string& body, int shards = 3) {
  std::string yaml = "version: 1\ndatabases:\n  - name: app\n    shards:\n";
  for (int i = 0; i < shards; ++i) yaml += "      - primary: {host: db" + std::to_string(i) + "}\n";
  yaml += "    sharding:\n" + body;
  yaml += "users:\n  - name: app\n    password: secret\n";
  return yaml;
}

LoadResult load(const std::string& yaml) { return load_config_string(yaml, "test.yaml"); }

std::string all_errors(const LoadResult& result) {
  std::string out;
  for (const auto& e : result.errors) out += e.to_string() + "\n";
  return out;
}

bool has_error(const LoadResult& result, int line, const std::string& text, int column = 0) {
  for (const auto& e : result.errors) {
    if (e.line == line && (column == 0 || e.column == column) && e.message.find(text) != std::string::npos)
      return true;
  }
  return false;
}

// Line of the body's first line with three shards.
constexpr int kBody = 9;

}  // namespace

TEST_CASE("sharding: a full valid section") {
  auto r =
      load(with_sharding("      key_type: int8\n"
                         "      strategy: map\n"
                         "      fallback: consistent\n"
                         "      tables:\n"
                         "        Users: tenant_id\n"
                         "        app.Orders: Tenant_ID\n"
                         "        '\"Mixed\"': '\"TenantId\"'\n"
                         "      reference_tables: [countries, public.\"Plans\"]\n"
                         "      unsharded: reject\n"
                         "      default_shard: 2\n"
                         "      cross_shard: reject\n"
                         "      cross_shard_writes: reject\n"
                         "      pins:\n"
                         "        - {key: 42, shard: 1}\n"
                         "        - {keys: [7, ' 8', '+9'], shard: 2}\n"
                         "        - {from: 100, to: 199, shard: 0}\n"
                         "        - {from: -5, to: -5, shard: 2}\n"));
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  const auto& s = r.config->databases.at(0).sharding;
  CHECK(s.key_type == sharding::KeyType::int8);
  CHECK(s.strategy == ShardStrategy::map);
  CHECK(s.fallback == ShardStrategy::consistent);
  REQUIRE(s.tables.size() == 3);
  // Unquoted names fold to lower case; quoted ones keep their case, without the quotes.
  CHECK(s.tables[0] == std::pair<std::string, std::string>{"users", "tenant_id"});
  CHECK(s.tables[1] == std::pair<std::string, std::string>{"app.orders", "tenant_id"});
  CHECK(s.tables[2] == std::pair<std::string, std::string>{"Mixed", "TenantId"});
  CHECK(s.reference_tables == std::vector<std::string>{"countries", "public.Plans"});
  CHECK(s.unsharded == Unsharded::reject);
  CHECK(s.default_shard == 2);
  CHECK(s.cross_shard == CrossShard::reject);
  CHECK(s.cross_shard_writes == CrossShardWrites::reject);
  REQUIRE(s.pins.size() == 4);
  CHECK(s.pins[0].keys == std::vector<std::string>{"42"});
  CHECK(s.pins[0].shard == 1);
  CHECK(s.pins[1].keys == std::vector<std::string>{"7", " 8", "+9"});
  CHECK(s.pins[2].from == 100);
  CHECK(s.pins[2].to == 199);
  CHECK(s.pins[2].keys.empty());
  CHECK(s.pins[3].from == -5);
}

TEST_CASE("sharding: defaults, key type names, and users' cross_shard") {
  auto r = load(
      "version: 1\n"
      "databases:\n"
      "  - name: app\n"
      "    shards:\n"
      "      - primary: {host: db0}\n"
      "      - primary: {host: db1}\n"
      "    sharding:\n"
      "      tables: {users: tenant_id}\n"
      "users:\n"
      "  - name: app\n"
      "    password: secret\n"
      "    cross_shard: reject\n"
      "  - name: other\n"
      "    password: secret\n");
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  const auto& s = r.config->databases.at(0).sharding;
  CHECK(s.key_type == sharding::KeyType::int8);
  CHECK(s.strategy == ShardStrategy::hash);
  CHECK(s.unsharded == Unsharded::default_shard);
  CHECK(s.default_shard == 0);
  CHECK(s.cross_shard == CrossShard::scatter);
  CHECK(s.cross_shard_writes == CrossShardWrites::two_phase);
  CHECK(r.config->find_user("app")->cross_shard == CrossShard::reject);
  CHECK_FALSE(r.config->find_user("other")->cross_shard);

  for (auto [name, type] :
       std::vector<std::pair<std::string, sharding::KeyType>>{{"smallint", sharding::KeyType::int2},
                                                              {"int2", sharding::KeyType::int2},
                                                              {"integer", sharding::KeyType::int4},
                                                              {"int4", sharding::KeyType::int4},
                                                              {"bigint", sharding::KeyType::int8},
                                                              {"text", sharding::KeyType::text},
                                                              {"uuid", sharding::KeyType::uuid}}) {
    auto typed = load(with_sharding("      key_type: " + name + "\n"));
    REQUIRE_MESSAGE(typed.ok(), all_errors(typed));
    CHECK(typed.config->databases[0].sharding.key_type == type);
  }
}

TEST_CASE("sharding: bad choices and unknown keys") {
  auto r = load(with_sharding("      key_type: numeric\n"));
  CHECK(has_error(r, kBody, "'key_type' must be smallint, integer, bigint, text or uuid", 17));
  r = load(with_sharding("      strategy: range\n"));
  CHECK(has_error(r, kBody, "'strategy' must be one of hash | consistent | map"));
  r = load(with_sharding("      fallback: map\n"));
  CHECK(has_error(r, kBody, "'fallback' must be one of hash | consistent"));
  r = load(with_sharding("      unsharded: random\n"));
  CHECK(has_error(r, kBody, "'unsharded' must be one of default_shard | reject"));
  r = load(with_sharding("      cross_shard: maybe\n"));
  CHECK(has_error(r, kBody, "'cross_shard' must be one of scatter | reject"));
  r = load(with_sharding("      cross_shard_writes: yolo\n"));
  CHECK(has_error(r, kBody, "'cross_shard_writes' must be one of two_phase | reject"));
  r = load(with_sharding("      strategyy: hash\n"));
  CHECK(has_error(r, kBody, "unknown key 'strategyy' in sharding; did you mean 'strategy'?"));
  auto user = load(with_sharding("      strategy: hash\n") + "    cross_shard: sometimes\n");
  CHECK(has_error(user, kBody + 4, "'cross_shard' must be one of scatter | reject"));
}

TEST_CASE("sharding: a pin to a shard that does not exist") {
  auto r =
      load(with_sharding("      strategy: map\n"
                         "      pins:\n"
                         "        - {key: 1, shard: 2}\n"
                         "        - {key: 2, shard: 3}\n"));
  CHECK(r.errors.size() == 1);
  CHECK(has_error(r, kBody + 3, "pin to shard 3, which does not exist: shards are numbered 0 to 2", 27));
}

TEST_CASE("sharding: default_shard out of range") {
  auto r = load(with_sharding("      default_shard: 3\n"));
  CHECK(has_error(r, kBody, "default_shard 3 does not exist: shards are numbered 0 to 2", 22));
  CHECK(load(with_sharding("      default_shard: 2\n")).ok());
}

TEST_CASE("sharding: with one shard the section is read but shard numbers are not checked") {
  auto r =
      load(with_sharding("      strategy: map\n"
                         "      default_shard: 3\n"
                         "      pins: [{key: 1, shard: 4}]\n",
                         1));
  CHECK_MESSAGE(r.ok(), all_errors(r));
  // Its other checks still apply (a bad key is bad whatever the number of shards).
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins: [{key: abc, shard: 0}]\n",
                         1));
  CHECK(has_error(r, kBody - 2 + 1, "pin key 'abc' is not a valid bigint"));
}

TEST_CASE("sharding: a pin key that is not a value of key_type") {
  auto r =
      load(with_sharding("      key_type: smallint\n"
                         "      strategy: map\n"
                         "      pins:\n"
                         "        - {key: 32768, shard: 0}\n"
                         "        - {keys: [1, x2, 3], shard: 1}\n"));
  CHECK(has_error(r, kBody + 3, "pin key '32768' is not a valid smallint (key_type)", 17));
  CHECK(has_error(r, kBody + 4, "pin key 'x2' is not a valid smallint", 22));
  CHECK(r.errors.size() == 2);
  r =
      load(with_sharding("      key_type: uuid\n"
                         "      strategy: map\n"
                         "      pins: [{key: 6ba7b810-9dad-11d1-80b4-00c04fd430c, shard: 0}]\n"));
  CHECK(has_error(r, kBody + 2, "is not a valid uuid"));
  // The same value twice, however written, is an error.
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins:\n"
                         "        - {key: 5, shard: 0}\n"
                         "        - {keys: [' +5'], shard: 1}\n"));
  CHECK(has_error(r, kBody + 3, "key ' +5' is pinned twice (first at line 11)"));
}

TEST_CASE("sharding: ranges are for integer key types, inclusive, and from <= to") {
  auto r =
      load(with_sharding("      key_type: text\n"
                         "      strategy: map\n"
                         "      pins: [{from: 1, to: 10, shard: 0}]\n"));
  CHECK(has_error(r, kBody + 2, "a pin's range needs an integer key_type, not text"));
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins: [{from: 10, to: 9, shard: 0}]\n"));
  CHECK(has_error(r, kBody + 1, "a pin's range is empty: 'from' (10) is above 'to' (9)"));
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins: [{from: 10, shard: 0}]\n"));
  CHECK(has_error(r, kBody + 1, "needs both 'from' and 'to'"));
  r =
      load(with_sharding("      key_type: smallint\n"
                         "      strategy: map\n"
                         "      pins: [{from: 0, to: 40000, shard: 0}]\n"));
  CHECK(has_error(r, kBody + 2, "a pin's 'to' (40000) is out of range for key_type smallint"));
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins: [{key: 1, from: 1, to: 2, shard: 0}]\n"));
  CHECK(has_error(r, kBody + 1, "not both"));
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins: [{shard: 0}]\n"));
  CHECK(has_error(r, kBody + 1, "a pin needs 'key', 'keys' or a range"));
  r =
      load(with_sharding("      strategy: map\n"
                         "      pins: [{key: 1}]\n"));
  CHECK(has_error(r, kBody + 1, "missing required key 'shard' in a sharding pin"));
  r = load(with_sharding("      pins: [{key: 1, shard: 0}]\n"));
  CHECK(has_error(r, kBody, "'pins' needs strategy: map"));
}

TEST_CASE("sharding: a table in both tables and reference_tables, or twice in tables") {
  auto r =
      load(with_sharding("      tables: {users: tenant_id, orders: tenant_id}\n"
                         "      reference_tables: [countries, Users]\n"));
  CHECK(has_error(r, kBody + 1, "table 'users' is in both 'tables' and 'reference_tables'"));
  CHECK(r.errors.size() == 1);
  // Twice after folding: Users and users are one table to PostgreSQL.
  r =
      load(with_sharding("      tables:\n"
                         "        users: tenant_id\n"
                         "        Users: tenant_id\n"));
  CHECK(has_error(r, kBody + 2, "table 'users' is listed twice in 'tables' (first at line 10)", 9));
  r = load(with_sharding("      reference_tables: [plans, PLANS]\n"));
  CHECK(has_error(r, kBody, "table 'plans' is listed twice in 'reference_tables'"));
}

TEST_CASE("sharding: table and column names must be identifiers") {
  auto r = load(with_sharding("      tables: {'my table': tenant_id}\n"));
  CHECK(has_error(r, kBody, "' ' is not allowed in an unquoted identifier"));
  r = load(with_sharding("      tables: {users: '1abc'}\n"));
  CHECK(has_error(r, kBody, "key column '1abc' of table 'users'"));
  r = load(with_sharding("      tables: [users]\n"));
  CHECK(has_error(r, kBody, "'tables' must be a map of table: key column"));
  r = load(with_sharding("      tables: {'\"a.b\"': id}\n"));
  CHECK(has_error(r, kBody, "'.' inside a quoted name"));
  r = load(with_sharding("      tables: {" + std::string(64, 'x') + ": id}\n"));
  CHECK(has_error(r, kBody, "at most 63 bytes"));
  CHECK(load(with_sharding("      tables: {" + std::string(63, 'x') + ": id}\n")).ok());
}

TEST_CASE("sharding: shards as databases of one server, each named by its dbname") {
  auto r = load(
      "version: 1\ndatabases:\n  - name: app\n    dbname: app_main\n    shards:\n"
      "      - primary: {host: db0}\n"
      "      - primary: {host: db0}\n        dbname: app_shard1\n"
      "      - primary: {host: db1}\n"
      "    sharding: {tables: {users: tenant_id}}\n"
      "users:\n  - name: app\n    password: secret\n");
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  const auto& db = r.config->databases.at(0);
  CHECK(db.server_dbname(0) == "app_main");
  CHECK(db.server_dbname(1) == "app_shard1");
  CHECK(db.server_dbname(2) == "app_main");  // another server: the database's own name
}

TEST_CASE("sharding: two shards that are one database of one server are refused") {
  auto r = load(
      "version: 1\ndatabases:\n  - name: app\n    shards:\n"
      "      - primary: {host: db0}\n        dbname: s\n"
      "      - primary: {host: db0, port: 5432}\n        dbname: s\n"
      "users:\n  - name: app\n    password: secret\n");
  CHECK(has_error(r, 7, "shards 0 and 1 are the same database (db0:5432/s)"));
  auto fallback = load(
      "version: 1\ndatabases:\n  - name: '*'\n    shards:\n"
      "      - primary: {host: db0}\n        dbname: s\n"
      "users:\n  - name: app\n    password: secret\n");
  CHECK(has_error(fallback, 6, "the fallback database \"*\" cannot have a dbname"));
}
