// shard_target(): which shard key values a statement names, or why it needs every shard or cannot be routed.
// The table covers the query shapes; the test cases after it the flags, messages, hints and odd inputs.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "pgrouter/sql/shard_key.hpp"

using namespace pgrouter::sql;

namespace {

const ShardingSchema& schema() {
  static const ShardingSchema s{
      {{"users", "tenant_id"}, {"orders", "tenant_id"}, {"app.items", "tid"}, {"events", "account"}},
      {"countries", "app.currencies"}};
  return s;
}

// The keys as "42,O'Brien,$2,NULL": literals, then parameters, then NULL (shard_target's order).
std::string keys_of(const ShardTarget& t) {
  std::string out;
  for (const KeyRef& k : t.keys) {
    if (!out.empty()) out += ',';
    std::string value = k.null ? "NULL" : k.param ? "$" + std::to_string(k.param) : k.literal;
    out += k.array ? "ANY(" + value + ")" : value;
  }
  return out;
}

std::string scope_name(ShardScope s) {
  const char* names[] = {"none", "reference", "keyed", "all", "refused"};
  return names[static_cast<int>(s)];
}

struct Case {
  const char* sql;
  ShardScope scope;
  const char* keys = "";
};

constexpr ShardScope none = ShardScope::none, reference = ShardScope::reference, keyed = ShardScope::keyed,
                     all = ShardScope::all, refused = ShardScope::refused;

void check_table(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    ShardTarget t = shard_target(c.sql, schema());
    std::string got =
        std::string(c.sql) + " -> " + scope_name(t.scope) + " [" + keys_of(t) + "] " + t.refusal;
    INFO(got);
    CHECK(scope_name(t.scope) == scope_name(c.scope));
    CHECK(keys_of(t) == std::string(c.keys));
  }
}

}  // namespace

TEST_CASE("shard key: = ANY of an array literal or parameter is one array key, read when routing") {
  check_table({
      {"SELECT * FROM users WHERE tenant_id = ANY($1)", keyed, "ANY($1)"},
      {"SELECT * FROM users WHERE tenant_id = ANY($2::int8[]) AND name = $1", keyed, "ANY($2)"},
      {"SELECT * FROM users WHERE tenant_id = ANY(CAST($1 AS bigint[]))", keyed, "ANY($1)"},
      {"SELECT * FROM users WHERE tenant_id = ANY('{1,2}')", keyed, "ANY({1,2})"},
      {"SELECT * FROM users WHERE tenant_id = ANY('{1,2}'::int8[])", keyed, "ANY({1,2})"},
      {"SELECT * FROM users WHERE tenant_id = ANY('{\"3\", NULL}'::pg_catalog.int4[])", keyed,
       "ANY({\"3\", NULL})"},
      {"SELECT * FROM users WHERE tenant_id = ANY('{}')", keyed, "ANY({})"},
      {"SELECT * FROM users WHERE tenant_id = ANY(NULL)", keyed, "NULL"},
      {"SELECT * FROM users WHERE tenant_id = ANY(ARRAY[1, 2]::int8[])", keyed, "1,2"},
      {"SELECT * FROM users WHERE tenant_id = ANY(ARRAY[]::int8[])", keyed, "NULL"},
      {"SELECT * FROM users WHERE tenant_id = ANY('{1,2}'::int2[]::bigint[])", keyed, "ANY({1,2})"},
      {"SELECT * FROM users WHERE tenant_id = ANY($1::text[]::uuid[])", keyed, "ANY($1)"},
      {"SELECT * FROM users u WHERE u.tenant_id = ANY($1) OR u.tenant_id = 7", keyed, "7,ANY($1)"},
      {"SELECT * FROM users u JOIN orders o ON o.tenant_id = u.tenant_id WHERE u.tenant_id = ANY($1)", keyed,
       "ANY($1)"},
      {"UPDATE users SET name = 'x' WHERE tenant_id = ANY('{4,5}')", keyed, "ANY({4,5})"},
  });
}

TEST_CASE("shard key: equality, IN and constants") {
  check_table({
      {"SELECT * FROM users WHERE tenant_id = 42", keyed, "42"},
      {"SELECT * FROM users WHERE 42 = tenant_id", keyed, "42"},
      {"SELECT * FROM users WHERE tenant_id = '42'", keyed, "42"},
      {"SELECT * FROM users WHERE tenant_id = $1", keyed, "$1"},
      {"SELECT * FROM users WHERE $3 = tenant_id AND name = $1", keyed, "$3"},
      {"SELECT * FROM users WHERE tenant_id = -5", keyed, "-5"},
      {"SELECT * FROM users WHERE tenant_id = - /* minus */ 5", keyed, "-5"},
      {"SELECT * FROM users WHERE tenant_id = 0", keyed, "0"},
      {"SELECT * FROM users WHERE tenant_id = -2147483649", keyed, "-2147483649"},
      {"SELECT * FROM users WHERE tenant_id = 99999999999999999999", keyed, "99999999999999999999"},
      {"SELECT * FROM users WHERE tenant_id = -5::bigint", keyed, "-5"},
      {"SELECT * FROM users WHERE tenant_id = 'O''Brien'", keyed, "O'Brien"},
      {"SELECT * FROM users WHERE tenant_id = E'a\\'b'", keyed, "a'b"},
      {"SELECT * FROM users WHERE tenant_id = NULL", keyed, "NULL"},
      {"SELECT * FROM users WHERE tenant_id IN (1, '2', -3)", keyed, "-3,1,2"},
      {"SELECT * FROM users WHERE tenant_id IN ($1, $2)", keyed, "$1,$2"},
      {"SELECT * FROM users WHERE tenant_id IN (1, 1, 2)", keyed, "1,2"},
      {"SELECT * FROM users WHERE tenant_id = ANY(ARRAY[7, 8])", keyed, "7,8"},
      {"SELECT * FROM users WHERE tenant_id = ANY(ARRAY[$1, $2::int8])", keyed, "$1,$2"},
      {"SELECT * FROM users WHERE tenant_id = NULL::bigint", keyed, "NULL"},
      {"SELECT * FROM users WHERE tenant_id = '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid", keyed,
       "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {"SELECT * FROM users WHERE tenant_id OPERATOR(pg_catalog.=) 4", keyed, "4"},
      {"SELECT * FROM users WHERE tenant_id = 42 AND tenant_id = 43", keyed, "42,43"},
      {"SELECT * FROM users WHERE (tenant_id = 1 AND name = 'x') AND id > 3", keyed, "1"},
      {"SELECT * FROM events WHERE account = 'acme'", keyed, "acme"},
  });
}

TEST_CASE("shard key: what does not limit") {
  check_table({
      {"SELECT * FROM users", all},
      {"SELECT * FROM users WHERE tenant_id > 4", all},
      {"SELECT * FROM users WHERE tenant_id <> 4", all},
      {"SELECT * FROM users WHERE tenant_id NOT IN (1, 2)", all},
      {"SELECT * FROM users WHERE tenant_id IN (1, id)", all},
      {"SELECT * FROM users WHERE tenant_id = 1 + 1", all},
      {"SELECT * FROM users WHERE tenant_id = id", all},
      {"SELECT * FROM users WHERE tenant_id IS NULL", all},
      {"SELECT * FROM users WHERE tenant_id = ANY($1::numeric[])", all},
      {"SELECT * FROM users WHERE tenant_id = ANY('{1,2}'::int8)", all},
      {"SELECT * FROM users WHERE tenant_id = ANY('{1,2}'::varchar(3)[])", all},
      {"SELECT * FROM users WHERE tenant_id = ANY('{1.5}'::numeric[]::int8[])", all},
      {"SELECT * FROM users WHERE tenant_id = ANY(5)", all},
      {"SELECT * FROM users WHERE tenant_id = ANY(ARRAY[1, id])", all},
      {"SELECT * FROM users WHERE tenant_id <> ANY('{1,2}')", all},
      {"SELECT * FROM users WHERE tenant_id = ANY(ids)", all},
      {"SELECT * FROM users WHERE NOT tenant_id = ANY($1)", all},
      {"SELECT * FROM users WHERE tenant_id = ALL(ARRAY[1])", all},
      {"SELECT * FROM users WHERE tenant_id IS NOT DISTINCT FROM 1", all},
      {"SELECT * FROM users WHERE tenant_id::text = $1", all},
      {"SELECT * FROM users WHERE tenant_id::bigint = 42", all},
      {"SELECT * FROM users WHERE tenant_id = 4.2", all},
      {"SELECT * FROM users WHERE tenant_id = 4.2::bigint", all},
      {"SELECT * FROM users WHERE tenant_id = 'abc'::varchar(2)", all},
      {"SELECT * FROM users WHERE tenant_id = '42'::numeric", all},
      {"SELECT * FROM users WHERE tenant_id = +5", all},
      {"SELECT * FROM users WHERE NOT tenant_id = 1", all},
      {"SELECT * FROM users WHERE NOT (tenant_id <> 1)", all},
      {"SELECT * FROM users WHERE tenant_id = 1 OR name = 'x'", all},
      {"SELECT * FROM users WHERE name = 'x' AND (tenant_id = 1 OR id = 2)", all},
      {"SELECT * FROM users WHERE tenant_id IN (SELECT 1)", all},
      {"SELECT * FROM users WHERE tenant_id = (SELECT 1)", all},
      {"SELECT * FROM users WHERE id = 42", all},
      {"SELECT * FROM users u WHERE u.id = 42 AND tenant_id2 = 4", all},
  });
}

TEST_CASE("shard key: OR gives the union of its arms") {
  check_table({
      {"SELECT * FROM users WHERE tenant_id = 1 OR tenant_id = 2", keyed, "1,2"},
      {"SELECT * FROM users WHERE (tenant_id = 1 AND a = 1) OR (tenant_id IN (2, 3) AND b = 2)", keyed,
       "1,2,3"},
      {"SELECT * FROM users WHERE tenant_id = 1 OR (tenant_id = 2 OR tenant_id = 3)", keyed, "1,2,3"},
      {"SELECT * FROM users u, orders o WHERE u.tenant_id = o.tenant_id AND (u.tenant_id = 1 OR u.tenant_id "
       "= 2)",
       keyed, "1,2"},
      // An equality inside one arm holds only for that arm's rows.
      {"SELECT * FROM users u, orders o WHERE o.tenant_id = 1 AND (u.tenant_id = o.tenant_id OR u.id = 1)",
       all},
  });
}

TEST_CASE("shard key: qualified, unqualified and quoted names") {
  check_table({
      {"SELECT * FROM users u WHERE u.tenant_id = 1", keyed, "1"},
      {"SELECT * FROM users WHERE users.tenant_id = 1", keyed, "1"},
      {"SELECT * FROM users u WHERE users.tenant_id = 1", all},  // an alias hides the name (an error)
      {"SELECT * FROM public.users WHERE public.users.tenant_id = 1", keyed, "1"},
      {"SELECT * FROM app.items WHERE tid = 3", keyed, "3"},
      {"SELECT * FROM app.items i WHERE i.tid = 3", keyed, "3"},
      {"SELECT * FROM app.items WHERE app.items.tid = 3", keyed, "3"},
      {"SELECT * FROM items WHERE tid = 3", none},  // "app.items" names only that schema's table
      {"SELECT * FROM other.items WHERE tid = 3", none},
      {"SELECT * FROM \"Users\" WHERE tenant_id = 1", none},
      {"SELECT * FROM \"users\" WHERE \"tenant_id\" = 1", keyed, "1"},
      {"SELECT * FROM USERS WHERE Tenant_Id = 1", keyed, "1"},
      {"SELECT * FROM users WHERE \"Tenant_Id\" = 1", all},
      // Unqualified with two sharded tables: ambiguous unless USING merged them.
      {"SELECT * FROM users, orders WHERE tenant_id = 7", all},
      {"SELECT * FROM users JOIN orders USING (tenant_id) WHERE tenant_id = 7", keyed, "7"},
      {"SELECT * FROM users NATURAL JOIN orders WHERE tenant_id = 7", keyed, "7"},
      {"SELECT * FROM users JOIN events ON events.account = users.tenant_id WHERE tenant_id = 2", keyed, "2"},
      // Column aliases may rename the key column.
      {"SELECT * FROM users u(tenant_id) WHERE u.tenant_id = 1", all},
  });
}

TEST_CASE("shard key: joins") {
  check_table({
      {"SELECT * FROM users u JOIN orders o ON o.tenant_id = u.tenant_id WHERE u.tenant_id = 42", keyed,
       "42"},
      {"SELECT * FROM users u, orders o WHERE o.tenant_id = u.tenant_id AND o.tenant_id = $1", keyed, "$1"},
      {"SELECT * FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND u.tenant_id = 5", keyed, "5"},
      {"SELECT * FROM users u JOIN orders o ON o.id = u.id WHERE u.tenant_id = 42", all},
      {"SELECT * FROM users a JOIN users b ON a.tenant_id = b.tenant_id WHERE b.tenant_id = 4", keyed, "4"},
      {"SELECT * FROM users a, users b WHERE a.tenant_id = 4", all},  // self-join: each side is limited
      {"SELECT * FROM users a, users b WHERE a.tenant_id = 4 AND b.tenant_id = 4", keyed, "4"},
      {"SELECT * FROM users u JOIN orders o ON o.tenant_id = u.tenant_id JOIN events e ON e.account = "
       "o.tenant_id WHERE u.tenant_id = 9",
       keyed, "9"},
      // LEFT JOIN: ON limits the nullable side only, from the preserved side's limit.
      {"SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id WHERE u.tenant_id = 1", keyed,
       "1"},
      {"SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id AND u.tenant_id = 1", all},
      {"SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = 3 WHERE u.tenant_id = 1", keyed, "1,3"},
      {"SELECT * FROM users u LEFT JOIN orders o ON o.id = u.id WHERE u.tenant_id = 1", all},
      {"SELECT * FROM orders o RIGHT JOIN users u ON o.tenant_id = u.tenant_id WHERE u.tenant_id = 1", keyed,
       "1"},
      // Conservative: a WHERE on the nullable side makes the join an inner one, which is not looked for.
      {"SELECT * FROM users u RIGHT JOIN orders o ON o.tenant_id = u.tenant_id WHERE u.tenant_id = 1", all},
      {"SELECT * FROM users u FULL JOIN orders o ON o.tenant_id = u.tenant_id WHERE u.tenant_id = 1", all},
      {"SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id WHERE o.tenant_id = 1", all},
      {"SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id WHERE o.tenant_id = 1 AND "
       "u.tenant_id = o.tenant_id",
       keyed, "1"},
      {"SELECT * FROM users u JOIN countries c ON c.code = u.country WHERE u.tenant_id = 1", keyed, "1"},
      {"SELECT * FROM (users u JOIN orders o USING (tenant_id)) j WHERE j.tenant_id = 1", all},
      {"SELECT * FROM users u CROSS JOIN LATERAL (SELECT * FROM orders o WHERE o.tenant_id = u.tenant_id) x "
       "WHERE u.tenant_id = 6",
       keyed, "6"},
  });
}

TEST_CASE("shard key: subqueries and CTEs") {
  check_table({
      {"SELECT * FROM (SELECT * FROM users WHERE tenant_id = 9) s", keyed, "9"},
      {"SELECT * FROM (SELECT * FROM users) s WHERE s.tenant_id = 9", all},  // limits only through its level
      {"SELECT (SELECT count(*) FROM orders WHERE tenant_id = 2) FROM users WHERE tenant_id = 1", keyed,
       "1,2"},
      {"SELECT (SELECT count(*) FROM orders) FROM users WHERE tenant_id = 1", all},
      {"SELECT * FROM users u WHERE u.tenant_id = 1 AND EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = "
       "u.tenant_id)",
       keyed, "1"},
      {"SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = u.tenant_id)", all},
      {"SELECT * FROM users u WHERE u.tenant_id = 1 AND EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = "
       "u.tenant_id OR o.id = 1)",
       all},
      {"SELECT * FROM users u WHERE u.tenant_id = 1 OR EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = 2)",
       all},
      {"SELECT * FROM countries WHERE id IN (SELECT country FROM users WHERE tenant_id = 3)", keyed, "3"},
      {"SELECT * FROM countries WHERE id IN (SELECT country FROM users)", all},
      {"WITH x AS (SELECT * FROM users WHERE tenant_id = 5) SELECT * FROM x", keyed, "5"},
      {"WITH x AS (SELECT * FROM users) SELECT * FROM x WHERE tenant_id = 5", all},
      {"WITH x AS (SELECT * FROM users WHERE tenant_id = 5) SELECT * FROM x JOIN orders o ON o.tenant_id = "
       "x.tenant_id",
       all},
      {"WITH users AS (SELECT 1 AS tenant_id) SELECT * FROM users", none},
      {"WITH RECURSIVE t AS (SELECT 1 UNION ALL SELECT 1 FROM t) SELECT * FROM t", none},
      {"WITH d AS (DELETE FROM orders WHERE tenant_id = 4 RETURNING *) SELECT * FROM d", keyed, "4"},
      {"SELECT * FROM users WHERE tenant_id = 1 UNION SELECT * FROM users WHERE tenant_id = 2", keyed, "1,2"},
      {"SELECT * FROM users WHERE tenant_id = 1 UNION ALL SELECT * FROM orders", all},
      {"SELECT * FROM users WHERE tenant_id = 1 AND id IN (SELECT id FROM orders WHERE tenant_id = 1)", keyed,
       "1"},
      // Anti-joins: the rows looked for are on the outer side's shard too.
      {"SELECT * FROM users u WHERE u.tenant_id = 1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id "
       "= "
       "u.tenant_id)",
       keyed, "1"},
      {"SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id AND o.id = u.id WHERE "
       "u.tenant_id "
       "= 1 AND o.id IS NULL",
       keyed, "1"},
      // The inner alias shadows the outer one: orders is compared with itself.
      {"SELECT * FROM users u WHERE u.tenant_id = 1 AND EXISTS (SELECT 1 FROM orders u WHERE u.tenant_id = "
       "u.tenant_id)",
       all},
      {"SELECT * FROM users u, LATERAL (SELECT * FROM orders o WHERE o.tenant_id = u.tenant_id) x WHERE "
       "u.tenant_id = $1",
       keyed, "$1"},
      {"SELECT * FROM users u, LATERAL generate_series(1, u.id) g WHERE u.tenant_id = 1", keyed, "1"},
      {"SELECT * FROM users TABLESAMPLE SYSTEM (10) WHERE tenant_id = 1", keyed, "1"},
      {"SELECT * FROM users WHERE tenant_id = 1 LIMIT (SELECT count(*) FROM orders)", all},
  });
}

TEST_CASE("shard key: reference, unsharded and catalog tables") {
  check_table({
      {"SELECT 1", none},
      {"SELECT now()", none},
      {"SHOW search_path", none},
      {"SET application_name = 'x'", none},
      {"BEGIN", none},
      {"COMMIT", none},
      {"SELECT * FROM pg_class", none},
      {"SELECT * FROM pg_catalog.pg_tables", none},
      {"SELECT * FROM information_schema.tables", none},
      {"SELECT * FROM countries", reference},
      {"SELECT * FROM app.currencies", reference},
      {"SELECT * FROM currencies", none},
      {"SELECT * FROM logs", none},
      {"SELECT * FROM logs JOIN countries ON true", reference},
      {"SELECT * FROM users u JOIN logs l ON l.id = u.id WHERE u.tenant_id = 3", keyed, "3"},
  });
  ShardTarget t = shard_target("SELECT * FROM logs l, app.audit, logs JOIN pg_class ON true", schema());
  CHECK(t.unsharded_tables == std::vector<std::string>{"app.audit", "logs"});
  t = shard_target("WITH c AS (SELECT 1) SELECT * FROM c, countries", schema());
  CHECK(t.unsharded_tables.empty());
}

TEST_CASE("shard key: INSERT") {
  check_table({
      {"INSERT INTO users (tenant_id, name) VALUES (42, 'x')", keyed, "42"},
      {"INSERT INTO users (name, tenant_id) VALUES ('x', $2)", keyed, "$2"},
      {"INSERT INTO users (tenant_id, name) VALUES (1, 'a'), ($1, 'b'), ('3', 'c'), (-4, 'd')", keyed,
       "-4,1,3,$1"},
      {"INSERT INTO users (tenant_id, name) VALUES ($1::bigint, $2)", keyed, "$1"},
      {"INSERT INTO users (tenant_id) VALUES (NULL)", keyed, "NULL"},
      {"INSERT INTO users (tenant_id, id) VALUES (1, 2) ON CONFLICT (id) DO NOTHING", keyed, "1"},
      {"INSERT INTO users (tenant_id, n) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET n = excluded.n "
       "RETURNING *",
       keyed, "1"},
      {"INSERT INTO users (tenant_id, n) SELECT 5, n FROM logs", keyed, "5"},
      {"INSERT INTO users (tenant_id, n) SELECT $1, n FROM logs", keyed, "$1"},
      {"INSERT INTO users (tenant_id, n) SELECT tenant_id, n FROM orders WHERE tenant_id = 8", keyed, "8"},
      {"INSERT INTO users (tenant_id, n) SELECT o.tenant_id, 1 FROM orders o WHERE o.tenant_id IN (1, 2)",
       keyed, "1,2"},
      {"INSERT INTO users (tenant_id) SELECT 1 UNION ALL SELECT 2", keyed, "1,2"},
      {"WITH s AS (SELECT 1) INSERT INTO users (tenant_id) VALUES (3)", keyed, "3"},
      {"INSERT INTO logs (a) VALUES (1)", none},
      {"INSERT INTO logs (a) SELECT n FROM users WHERE tenant_id = 2", keyed, "2"},
      {"INSERT INTO logs (a) SELECT n FROM users", all},
      // refused
      {"INSERT INTO users (tenant_id, name) VALUES (1, 'a'), (1 + 1, 'b')", refused},
      {"INSERT INTO users (tenant_id, name) VALUES (DEFAULT, 'a')", refused},
      {"INSERT INTO users (tenant_id) VALUES (lower('A'))", refused},
      {"INSERT INTO users (name) VALUES ('a')", refused},
      {"INSERT INTO users VALUES (1, 'a')", refused},
      {"INSERT INTO users DEFAULT VALUES", refused},
      {"INSERT INTO users (tenant_id, n) SELECT tenant_id, n FROM orders", refused},
      {"INSERT INTO users (tenant_id, n) SELECT 1, n FROM orders", refused},
      {"INSERT INTO users (tenant_id, n) SELECT * FROM orders WHERE tenant_id = 1", refused},
      {"INSERT INTO users (tenant_id, n) SELECT n, tenant_id FROM orders WHERE tenant_id = 1", refused},
      {"INSERT INTO users (tenant_id) SELECT 1 UNION ALL SELECT id FROM logs", refused},
      {"INSERT INTO users (tenant_id, n) VALUES (1, (SELECT max(n) FROM orders))", refused},
      {"INSERT INTO users (tenant_id) VALUES (1) ON CONFLICT (id) DO UPDATE SET tenant_id = 2", refused},
      // Spread over every shard, an INSERT would insert its rows on each.
      {"WITH s AS (SELECT * FROM orders) INSERT INTO users (tenant_id) VALUES (1)", refused},
      {"WITH d AS (INSERT INTO users (tenant_id) VALUES (1) RETURNING *) SELECT * FROM orders", refused},
      {"WITH d AS (INSERT INTO users (tenant_id) VALUES (1) RETURNING *) SELECT * FROM d", keyed, "1"},
  });
  ShardTarget t = shard_target("INSERT INTO users (tenant_id) VALUES (1)", schema());
  CHECK(t.writes);
  CHECK_FALSE(t.writes_reference);
  CHECK(shard_target("INSERT INTO users (name, tenant_id) VALUES ('a', 2 * 3)", schema()).refusal ==
        "INSERT into sharded table users without a constant or parameter value for its shard key tenant_id");
  CHECK(shard_target("INSERT INTO users VALUES (1)", schema()).refusal ==
        "INSERT into sharded table users without a column list: name the columns so that its shard key "
        "tenant_id can be found");
  CHECK(shard_target("INSERT INTO users (tenant_id) SELECT tenant_id FROM orders", schema()).refusal ==
        "INSERT ... SELECT into sharded table users not limited to one shard key");
  CHECK_FALSE(shard_target("INSERT INTO logs (a) VALUES (1)", schema()).writes);
}

TEST_CASE("shard key: UPDATE, DELETE, MERGE, TRUNCATE") {
  check_table({
      {"UPDATE users SET name = 'x' WHERE tenant_id = 3", keyed, "3"},
      {"UPDATE users SET name = 'x' WHERE tenant_id = 3 AND id = 4 RETURNING *", keyed, "3"},
      {"UPDATE users u SET name = o.n FROM orders o WHERE o.tenant_id = u.tenant_id AND u.tenant_id = $1",
       keyed, "$1"},
      {"UPDATE users SET name = 'x'", all},
      {"UPDATE users SET name = (SELECT n FROM orders WHERE tenant_id = 3) WHERE tenant_id = 3", keyed, "3"},
      {"UPDATE users SET tenant_id = 4 WHERE tenant_id = 3", refused},
      {"UPDATE users SET (name, tenant_id) = ('x', 4) WHERE tenant_id = 3", refused},
      {"DELETE FROM users WHERE tenant_id = 7", keyed, "7"},
      {"DELETE FROM users u USING orders o WHERE o.tenant_id = u.tenant_id AND o.tenant_id = 7", keyed, "7"},
      {"DELETE FROM users", all},
      {"DELETE FROM users WHERE id = 7", all},
      {"WITH users AS (SELECT 1) DELETE FROM users WHERE tenant_id = 2", keyed,
       "2"},  // the table, not the CTE
      {"MERGE INTO users u USING logs s ON u.tenant_id = s.t WHEN MATCHED THEN DELETE", refused},
      {"MERGE INTO logs l USING users u ON u.id = l.id WHEN MATCHED THEN DELETE", all},
      {"MERGE INTO logs l USING (SELECT * FROM users WHERE tenant_id = 1) u ON u.id = l.id WHEN MATCHED THEN "
       "DELETE",
       keyed, "1"},
      {"TRUNCATE users", all},
      {"TRUNCATE logs", none},
  });
  ShardTarget t = shard_target("DELETE FROM users", schema());
  CHECK(t.writes);
  t = shard_target("TRUNCATE users, logs", schema());
  CHECK(t.writes);
  CHECK(t.unsharded_tables == std::vector<std::string>{"logs"});
  CHECK(shard_target("UPDATE users SET tenant_id = 4 WHERE tenant_id = 3", schema()).refusal ==
        "UPDATE of the shard key column tenant_id of users: moving a row between shards is not an UPDATE; "
        "DELETE "
        "and INSERT it instead");
  CHECK(shard_target("MERGE INTO users u USING logs s ON true WHEN MATCHED THEN DELETE", schema()).refusal ==
        "MERGE into sharded table users");
  CHECK_FALSE(shard_target("SELECT * FROM users WHERE tenant_id = 1 FOR UPDATE", schema()).writes);
}

TEST_CASE("shard key: writes to reference tables") {
  check_table({
      {"INSERT INTO countries (code) VALUES ('fr')", reference},
      {"UPDATE countries SET name = 'x'", reference},
      {"DELETE FROM app.currencies", reference},
      {"TRUNCATE countries", reference},
      {"COPY countries FROM STDIN", reference},
      // A reference table's rows are the same on every shard: none may be written from one shard's data.
      {"INSERT INTO countries (code) SELECT country FROM users WHERE tenant_id = 1", refused},
      {"WITH u AS (SELECT * FROM users WHERE tenant_id = 1) UPDATE countries SET n = 1", refused},
  });
  for (const char* sql : {"INSERT INTO countries (code) VALUES ('fr')", "UPDATE countries SET name = 'x'",
                          "TRUNCATE countries", "COPY countries FROM STDIN"}) {
    INFO(sql);
    ShardTarget t = shard_target(sql, schema());
    CHECK(t.writes);
    CHECK(t.writes_reference);
  }
  ShardTarget read = shard_target("SELECT * FROM countries", schema());
  CHECK_FALSE(read.writes);
  CHECK_FALSE(read.writes_reference);
  CHECK(shard_target("INSERT INTO countries (code) SELECT country FROM users WHERE tenant_id = 1", schema())
            .refusal ==
        "a write to reference table countries in a statement that also reads or writes sharded tables");
}

TEST_CASE("shard key: COPY") {
  ShardTarget t = shard_target("COPY users FROM STDIN", schema());
  CHECK(t.scope == ShardScope::all);
  CHECK(t.writes);
  CHECK(t.copy_from);
  CHECK(t.copy_key_column == -1);

  t = shard_target("COPY users (name, tenant_id, id) FROM STDIN WITH (FORMAT csv)", schema());
  CHECK(t.scope == ShardScope::all);
  CHECK(t.copy_from);
  CHECK(t.copy_key_column == 1);

  t = shard_target("COPY users (name) FROM STDIN", schema());
  CHECK(t.scope == ShardScope::refused);
  CHECK(t.refusal == "COPY into sharded table users without its shard key column tenant_id");

  t = shard_target("COPY users TO STDOUT", schema());
  CHECK(t.scope == ShardScope::all);
  CHECK_FALSE(t.writes);
  CHECK_FALSE(t.copy_from);
  CHECK(t.copy_out);
  // Each shard's output, concatenated, is the table's only in text or CSV without a header, to the client.
  CHECK(shard_target("COPY users (id, tenant_id) TO STDOUT WITH (FORMAT csv)", schema()).copy_out);
  CHECK(shard_target("COPY users TO STDOUT WITH (FORMAT 'TEXT', DELIMITER ',')", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY users TO STDOUT WITH (FORMAT csv, HEADER)", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY users TO STDOUT WITH (FORMAT csv, HEADER false)", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY users TO STDOUT (FORMAT binary)", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY users TO '/tmp/users'", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY users TO PROGRAM 'cat'", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY (SELECT * FROM users ORDER BY id) TO STDOUT", schema()).copy_out);
  CHECK_FALSE(shard_target("COPY users FROM STDIN", schema()).copy_out);

  t = shard_target("COPY (SELECT * FROM users WHERE tenant_id = 3) TO STDOUT", schema());
  CHECK(t.scope == ShardScope::keyed);
  CHECK(keys_of(t) == "3");
  CHECK_FALSE(t.writes);

  t = shard_target("COPY logs FROM STDIN", schema());
  CHECK(t.scope == ShardScope::none);
  CHECK(t.copy_from);
  CHECK(t.unsharded_tables == std::vector<std::string>{"logs"});
}

TEST_CASE("shard key: DDL and utility statements") {
  check_table({
      {"CREATE TABLE logs (a int)", none},
      {"CREATE TEMP TABLE scratch AS SELECT * FROM users WHERE tenant_id = 1", keyed, "1"},
      {"SELECT * INTO scratch FROM users WHERE tenant_id = 1", keyed, "1"},
      {"CREATE INDEX ON users (name)", all},
      {"ALTER TABLE users ADD COLUMN z int", all},
      {"ALTER TABLE countries ADD COLUMN z int", all},
      {"DROP TABLE users", all},
      {"DROP TABLE IF EXISTS app.items", all},
      {"DROP TABLE logs, other", none},
      {"CREATE VIEW v AS SELECT * FROM users", all},
      {"VACUUM users", all},
      {"EXPLAIN SELECT * FROM users WHERE tenant_id = 1", keyed, "1"},
      {"PREPARE p AS SELECT * FROM users WHERE tenant_id = $1", keyed, "$1"},
      {"DECLARE c CURSOR FOR SELECT * FROM users", all},
      {"CALL do_things(1)", none},
      {"DO $$BEGIN PERFORM 1; END$$", none},
  });
  ShardTarget t = shard_target("CREATE INDEX ON users (name)", schema());
  CHECK(t.writes);
  t = shard_target("ALTER TABLE countries ADD COLUMN z int", schema());
  CHECK(t.writes);
  CHECK(t.writes_reference);
  t = shard_target("DROP TABLE logs, other", schema());
  CHECK(t.unsharded_tables == std::vector<std::string>{"logs", "other"});
  CHECK_FALSE(t.writes);
}

TEST_CASE("shard key: several statements") {
  check_table({
      {"BEGIN; SELECT * FROM users WHERE tenant_id = 1; COMMIT", keyed, "1"},
      {"SELECT * FROM users WHERE tenant_id = 1; SELECT * FROM orders WHERE tenant_id = 2", keyed, "1,2"},
      {"SELECT * FROM users WHERE tenant_id = 1; SELECT * FROM orders", all},
      {"SELECT * FROM countries; SELECT 1", reference},
      {"SELECT * FROM countries; SELECT * FROM users WHERE tenant_id = $1", keyed, "$1"},
      {"DELETE FROM users; UPDATE users SET tenant_id = 1 WHERE tenant_id = 1", refused},
  });
  ShardTarget t =
      shard_target("SELECT * FROM users WHERE tenant_id = 1; INSERT INTO countries (a) VALUES (1)", schema());
  CHECK(t.scope == ShardScope::keyed);
  CHECK(t.writes);
  CHECK(t.writes_reference);
  t = shard_target("UPDATE users SET tenant_id = 1; INSERT INTO users VALUES (1)", schema());
  CHECK(t.refusal.starts_with("UPDATE of the shard key column"));  // the first refusal
}

TEST_CASE("shard key: hints") {
  ShardTarget t = shard_target("/* pgrouter: shard_key=42 */ SELECT * FROM logs", schema());
  CHECK(t.hint_key == "42");
  CHECK(t.scope == ShardScope::none);
  CHECK(shard_target("/* pgrouter: shard_key = '4 2' */ SELECT 1", schema()).hint_key == "4 2");
  CHECK(shard_target("/*pgrouter:shard_key=\"ab\"*/ SELECT 1", schema()).hint_key == "ab");
  CHECK(shard_target("-- pgrouter: shard_key=7\nSELECT 1", schema()).hint_key == "7");
  CHECK(shard_target("SELECT 1 -- PGROUTER: SHARD_KEY=8", schema()).hint_key == "8");
  CHECK(shard_target("SELECT 1 /* pgrouter: replica, shard_key=9 */", schema()).hint_key == "9");
  CHECK(shard_target("/* pgrouter=shard_key:uuid-1 */ SELECT 1", schema()).hint_key == "uuid-1");
  CHECK(shard_target("/* pgrouter: primary */ SELECT 1", schema()).hint_key.empty());
  CHECK(shard_target("/* shard_key=3 */ SELECT 1", schema()).hint_key.empty());
  CHECK(shard_target("/* notpgrouter: shard_key=3 */ SELECT 1", schema()).hint_key.empty());
  // Not comments: literals, quoted identifiers, dollar quotes.
  CHECK(shard_target("SELECT '/* pgrouter: shard_key=1 */'", schema()).hint_key.empty());
  CHECK(shard_target("SELECT E'\\' /* pgrouter: shard_key=1 */'", schema()).hint_key.empty());
  CHECK(shard_target("SELECT 1 AS \"-- pgrouter: shard_key=1\"", schema()).hint_key.empty());
  CHECK(shard_target("SELECT $x$ -- pgrouter: shard_key=1 $x$", schema()).hint_key.empty());
  CHECK(shard_target("SELECT $1 -- pgrouter: shard_key=5", schema()).hint_key == "5");
  // Repeated: fine when they agree.
  t = shard_target("/* pgrouter: shard_key=1 */ SELECT 1; /* pgrouter: shard_key='1' */ SELECT 2", schema());
  CHECK(t.hint_key == "1");
  CHECK(t.scope == ShardScope::none);
  t = shard_target("/* pgrouter: shard_key=1 */ SELECT /* pgrouter: shard_key=2 */ 1", schema());
  CHECK(t.scope == ShardScope::refused);
  CHECK(t.refusal == "conflicting pgrouter shard_key hints");
  // explain: a word of the list, alone or with others, in any comment.
  CHECK(shard_target("/* pgrouter: explain */ SELECT * FROM users", schema()).explain);
  CHECK(shard_target("SELECT 1 -- PGROUTER: shard_key=4, Explain", schema()).explain);
  CHECK_FALSE(shard_target("/* pgrouter: explained */ SELECT 1", schema()).explain);
  CHECK_FALSE(shard_target("/* explain */ SELECT 1", schema()).explain);
  CHECK_FALSE(shard_target("SELECT '/* pgrouter: explain */'", schema()).explain);
}

TEST_CASE("shard key: parse errors and odd input") {
  ShardTarget t = shard_target("SELEC * FROM users WHERE tenant_id = 1", schema());
  CHECK(t.parse_error);
  CHECK(t.scope == ShardScope::none);
  CHECK(t.keys.empty());
  CHECK(shard_target("", schema()).scope == ShardScope::none);
  CHECK_FALSE(shard_target("", schema()).parse_error);
  CHECK(shard_target(";;", schema()).scope == ShardScope::none);
  CHECK(shard_target(std::string_view("SELECT * FROM users WHERE tenant_id = 1\0garbage", 47), schema())
            .scope == ShardScope::keyed);
  // Deep nesting neither crashes nor limits.
  std::string deep = "SELECT * FROM users WHERE ";
  for (int i = 0; i < 300; ++i) deep += "(";
  deep += "tenant_id = 1";
  for (int i = 0; i < 300; ++i) deep += ")";
  CHECK(keys_of(shard_target(deep, schema())) == "1");
  std::string subqueries = "SELECT 1";
  for (int i = 0; i < 100; ++i) subqueries = "SELECT * FROM (" + subqueries + ") s" + std::to_string(i);
  CHECK(shard_target(subqueries, schema()).scope == ShardScope::none);
  // A long IN list.
  std::string in = "SELECT * FROM users WHERE tenant_id IN (0";
  for (int i = 1; i < 5000; ++i) in += "," + std::to_string(i % 100);
  in += ")";
  CHECK(shard_target(in, schema()).keys.size() == 100);
  // An empty schema: every table is unsharded.
  ShardTarget plain = shard_target("SELECT * FROM users WHERE tenant_id = 1", ShardingSchema{});
  CHECK(plain.scope == ShardScope::none);
  CHECK(plain.unsharded_tables == std::vector<std::string>{"users"});
}

TEST_CASE("shard key: an INSERT into a sharded table is marked, other writes are not") {
  CHECK(shard_target("INSERT INTO users (tenant_id, name) VALUES (1, 'a'), (2, 'b')", schema()).inserts);
  CHECK(shard_target(
            "INSERT INTO users (tenant_id, n) SELECT tenant_id, n FROM orders WHERE tenant_id IN (1, 2)",
            schema())
            .inserts);
  CHECK_FALSE(shard_target("UPDATE users SET name = 'x' WHERE tenant_id IN (1, 2)", schema()).inserts);
  CHECK_FALSE(shard_target("DELETE FROM users WHERE tenant_id IN (1, 2)", schema()).inserts);
  CHECK_FALSE(shard_target("INSERT INTO logs (a) VALUES (1)", schema()).inserts);
}

namespace {

// An EXECUTE's arguments as "kind:text:form" each, "|" between: t (text), null, $n, unread; form i (integer),
// u (uuid), w (as written).
std::string arguments_of(const ExecuteCall& call) {
  std::string out;
  for (const ExecuteArgument& a : call.arguments) {
    if (!out.empty()) out += '|';
    using K = ExecuteArgument::Kind;
    using F = ExecuteArgument::Form;
    if (a.kind == K::null) out += "null";
    if (a.kind == K::unread) out += "unread";
    if (a.kind == K::parameter) out += "$" + std::to_string(a.param);
    if (a.kind == K::text)
      out += "t:" + a.text + ":" + (a.form == F::integer ? "i" : a.form == F::uuid ? "u" : "w");
  }
  return out;
}

std::string arguments_of(std::string_view sql) {
  auto calls = execute_calls(sql);
  REQUIRE(calls.size() == 1);
  return arguments_of(calls[0]);
}

}  // namespace

TEST_CASE("EXECUTE's arguments: constants as the parameter receives them") {
  CHECK(arguments_of("EXECUTE q(7)") == "t:7:i");
  CHECK(arguments_of("EXECUTE q(0)") == "t:0:i");
  CHECK(arguments_of("EXECUTE q('7')") == "t:7:w");
  CHECK(arguments_of("EXECUTE q('O''Brien', E'a\\nb')") == "t:O'Brien:w|t:a\nb:w");
  // Negative numbers: folded by the grammar (its location is the minus sign's), or a minus on a cast.
  CHECK(arguments_of("EXECUTE q(-7)") == "t:-7:i");
  CHECK(arguments_of("EXECUTE q(- /* c */ 7)") == "t:-7:i");
  CHECK(arguments_of("EXECUTE q(-5::bigint)") == "t:-5:i");
  CHECK(arguments_of("EXECUTE q(- -5)") == "t:5:i");
  // Integers beyond int4 are numeric constants to the grammar, still read as their digits.
  CHECK(arguments_of("EXECUTE q(9999999999, -9223372036854775808)") ==
        "t:9999999999:i|t:-9223372036854775808:i");
  // Casts to key types: an integer's, a text's, a uuid's; an array literal cast to an array of a key type.
  CHECK(arguments_of("EXECUTE q('7'::int8, '007'::pg_catalog.int4, 7::text, 'x'::varchar)") ==
        "t:7:i|t:007:i|t:7:w|t:x:w");
  CHECK(arguments_of("EXECUTE q('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid)") ==
        "t:A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11:u");
  CHECK(arguments_of("EXECUTE q('{1,2}', '{3}'::int8[], NULL::int8[])") == "t:{1,2}:w|t:{3}:w|null");
  CHECK(arguments_of("EXECUTE q(NULL, NULL::int8, CAST(NULL AS text))") == "null|null|null");
  CHECK(arguments_of("EXECUTE q($2, $1)") == "$2|$1");
  CHECK(arguments_of("EXECUTE q") == "");
}

TEST_CASE("EXECUTE's arguments: what is not a constant is not read") {
  CHECK(arguments_of("EXECUTE q(now(), tenant_id, 1 + 2, ARRAY[1, 2], (SELECT 1))") ==
        "unread|unread|unread|unread|unread");
  // A fraction becomes an integer parameter by rounding, a cast to another type by its own rules.
  CHECK(arguments_of("EXECUTE q(7.5, 1e3, '7'::numeric, '7'::varchar(1), -'7')") ==
        "unread|unread|unread|unread|unread");
  CHECK(arguments_of("EXECUTE q(7, now())") == "t:7:i|unread");
}

TEST_CASE("EXECUTE calls: where they are, their names, and a PREPARE in the same text") {
  auto calls = execute_calls(
      "EXPLAIN EXECUTE q(1); CREATE TABLE t AS EXECUTE \"Q\"(2); SELECT 1; execute Q (3); "
      "PREPARE r(int) AS SELECT $1; EXECUTE r(4); PREPARE r AS SELECT 2 ;EXECUTE r(5)");
  REQUIRE(calls.size() == 5);
  CHECK(calls[0].name == "q");
  CHECK(arguments_of(calls[0]) == "t:1:i");
  CHECK(calls[1].name == "Q");
  CHECK(calls[2].name == "q");
  CHECK(calls[2].prepared_here.empty());
  // (A statement's text starts after the ';' before it, as PostgreSQL cuts it.)
  CHECK(calls[3].prepared_here == " PREPARE r(int) AS SELECT $1");
  CHECK(calls[4].prepared_here == " PREPARE r AS SELECT 2 ");
  CHECK(execute_calls("EXECUTE q(").empty());                          // a syntax error: the server's
  CHECK(execute_calls("GRANT EXECUTE ON FUNCTION f() TO u").empty());  // no EXECUTE statement
  CHECK(execute_calls("SELECT 'EXECUTE q(1)'").empty());
}
