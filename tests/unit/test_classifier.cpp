// The classifier's flags (transaction modes, session settings, routes), the cache, the built-in function
// lists and the JSON reader under it. The statement table is in test_classifier_table.cpp.
#include <doctest/doctest.h>

#include <string>

#include "pgrouter/sql/builtin_functions.hpp"
#include "pgrouter/sql/classifier_cache.hpp"
#include "sql/json_tree.hpp"

using namespace pgrouter::sql;

TEST_CASE("classifier: transaction modes") {
  auto ro = classify("BEGIN READ ONLY");
  CHECK(ro.cls == StatementClass::transaction_begin);
  CHECK(ro.read_only_begin);
  CHECK_FALSE(ro.read_write_begin);
  CHECK(ro.transaction_control);

  auto rw = classify("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE");
  CHECK(rw.read_write_begin);
  CHECK_FALSE(rw.read_only_begin);

  auto plain = classify("BEGIN ISOLATION LEVEL REPEATABLE READ");
  CHECK_FALSE(plain.read_only_begin);
  CHECK_FALSE(plain.read_write_begin);

  auto set_tx = classify("SET TRANSACTION READ ONLY");
  CHECK(set_tx.cls == StatementClass::set_session);
  CHECK(set_tx.read_only_begin);
  CHECK(set_tx.set_local);
  CHECK_FALSE(set_tx.sets_session);

  auto guc = classify("SET transaction_read_only = off");
  CHECK(guc.read_write_begin);
  CHECK(guc.set_local);

  // A session default is not this transaction's mode.
  auto characteristics = classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
  CHECK_FALSE(characteristics.read_only_begin);
  CHECK(characteristics.sets_session);

  auto whole = classify("BEGIN; SET TRANSACTION READ ONLY; SELECT * FROM t; COMMIT");
  CHECK(whole.cls == StatementClass::read);
  CHECK(whole.read_only_begin);
  CHECK(whole.transaction_control);
  CHECK(whole.statements == 4);

  CHECK_FALSE(classify("SELECT 1").transaction_control);
  CHECK(classify("SAVEPOINT a").transaction_control);
  CHECK_FALSE(classify("COMMIT PREPARED 'x'").transaction_control);  // not this session's transaction
}

TEST_CASE("classifier: how a transaction ends") {
  using Ending = Classification::Ending;
  CHECK(classify("COMMIT").ending == Ending::commit);
  CHECK(classify("end work").ending == Ending::commit);
  CHECK(classify("/* chain */ ROLLBACK").ending == Ending::rollback);
  CHECK_FALSE(classify("/* chain */ ROLLBACK").chain);
  CHECK(classify("ABORT").ending == Ending::rollback);
  CHECK(classify("PREPARE TRANSACTION 'g'").ending == Ending::prepare);
  auto chained = classify("COMMIT AND CHAIN");
  CHECK(chained.ending == Ending::commit);
  CHECK(chained.chain);
  CHECK(classify("ROLLBACK TO SAVEPOINT a").ending == Ending::none);
  CHECK(classify("SELECT 1").ending == Ending::none);
}

TEST_CASE("classifier: session settings and SET LOCAL") {
  auto session = classify("SET statement_timeout = 5");
  CHECK(session.sets_session);
  CHECK_FALSE(session.set_local);

  auto local = classify("SET LOCAL statement_timeout = 5");
  CHECK(local.cls == StatementClass::set_session);
  CHECK(local.set_local);
  CHECK_FALSE(local.sets_session);

  CHECK(classify("SET CONSTRAINTS ALL IMMEDIATE").set_local);
  CHECK(classify("RESET ALL").sets_session);

  auto mixed = classify("SET search_path = app; SELECT * FROM t");
  CHECK(mixed.cls == StatementClass::read);
  CHECK(mixed.sets_session);
}

TEST_CASE("classifier: pgrouter.route") {
  CHECK(classify("SET pgrouter.route = 'primary'").session_route == "primary");
  CHECK(classify("SET pgrouter.route TO replica").session_route == "replica");
  CHECK(classify("set PGROUTER.ROUTE = 'REPLICA'").session_route == "replica");
  CHECK(classify("SET SESSION pgrouter.route = auto").session_route == "auto");
  CHECK(classify("SET pgrouter.route TO DEFAULT").session_route == "auto");
  CHECK(classify("RESET pgrouter.route").session_route == "auto");
  CHECK(classify("RESET ALL").session_route == "auto");
  CHECK(classify("DISCARD ALL").session_route == "auto");
  CHECK(classify("SET pgrouter.route = 'sideways'").session_route == "sideways");  // the caller rejects it
  CHECK_FALSE(classify("SET LOCAL pgrouter.route = 'primary'").session_route);
  CHECK_FALSE(classify("SET pgrouter.other = 'primary'").session_route);
  CHECK_FALSE(classify("DISCARD PLANS").session_route);
  CHECK_FALSE(classify("SELECT set_config('pgrouter.route', 'primary', false)").session_route);
  // The last one in the string wins, as it does on the server.
  CHECK(classify("SET pgrouter.route = 'primary'; RESET ALL").session_route == "auto");
  CHECK(classify("RESET ALL; SET pgrouter.route = 'replica'").session_route == "replica");
}

TEST_CASE("classifier: statement counts, parse errors and hints together") {
  CHECK(classify("SELECT 1; SELECT 2;; SELECT 3").statements == 3);
  CHECK(classify("").statements == 0);
  auto bad = classify("-- pgrouter: replica\nSELECT FROM WHERE");
  CHECK(bad.parse_error);
  CHECK(bad.cls == StatementClass::write);
  CHECK(bad.hint == RouteHint::replica);
  CHECK(bad.statements == 0);
  // The text ends at the first NUL, as PostgreSQL reads a Query message.
  std::string with_nul("SELECT 1\0DELETE FROM t", 22);
  CHECK(classify(with_nul).cls == StatementClass::read);
}

TEST_CASE("classifier: user functions are asked about by their qualified name") {
  std::vector<std::string> asked;
  auto record = [&](std::string_view name) {
    asked.emplace_back(name);
    return name == "app.safe";
  };
  CHECK(classify("SELECT app.safe(1), lower('x'), nextval('s'), other(2), pg_catalog.abs(1)", record).cls ==
        StatementClass::write);
  CHECK(asked == std::vector<std::string>{"app.safe", "other"});
  CHECK(classify("SELECT app.safe(1)", record).cls == StatementClass::read);
  // Without a callback every user function is a write.
  CHECK(classify("SELECT app.safe(1)").cls == StatementClass::write);
}

TEST_CASE("classifier: deep and large statements") {
  std::string in_list = "SELECT * FROM t WHERE id IN (";
  for (int i = 0; i < 20000; ++i) in_list += (i ? ", " : "") + std::to_string(i);
  in_list += ")";
  auto big = classify(in_list);
  CHECK(big.cls == StatementClass::read);
  CHECK(big.tables == std::vector<std::string>{"t"});

  std::string nested = "SELECT ";
  for (int i = 0; i < 200; ++i) nested += "(1 + ";
  nested += "1" + std::string(200, ')') + " FROM t";
  CHECK(classify(nested).cls == StatementClass::read);

  // Deeper than the reader takes: refused as unparseable, so the primary answers.
  std::string deep = "SELECT 1";
  for (int i = 0; i < 5000; ++i) deep += " + 1";
  auto refused = classify(deep);
  CHECK(refused.parse_error);
  CHECK(refused.cls == StatementClass::write);
}

TEST_CASE("classifier cache: hits, misses and LRU eviction") {
  ClassifierCache cache(2, [](std::string_view name) { return name == "get_price"; });
  CHECK(cache.get("SELECT get_price(1)").cls ==
        StatementClass::read);  // the cache passes its function list on
  CHECK(cache.get("SELECT get_price(1)").cls == StatementClass::read);
  CHECK(cache.hits() == 1);
  CHECK(cache.misses() == 1);

  CHECK(cache.get("UPDATE t SET a = 1").cls == StatementClass::write);
  CHECK(cache.get("SELECT get_price(1)").statements == 1);   // hit: now the newest
  CHECK(cache.get("SELECT 3").cls == StatementClass::read);  // evicts the UPDATE, the oldest
  CHECK(cache.size() == 2);
  size_t misses = cache.misses();
  cache.get("SELECT get_price(1)");
  CHECK(cache.misses() == misses);
  cache.get("UPDATE t SET a = 1");
  CHECK(cache.misses() == misses + 1);

  // Exact text: one space more is another entry.
  cache.get("SELECT  3");
  CHECK(cache.misses() == misses + 2);

  cache.clear();
  CHECK(cache.size() == 0);
  CHECK(cache.get("SELECT 3").tables.empty());

  // Literals only differ: one entry (through the shape, then through the exact text seen before); a text
  // remembered exactly but whose entry is gone (cleared) is classified again, not taken from stale state.
  ClassifierCache shapes(4);
  CHECK(shapes.get("SELECT * FROM t WHERE a = 1").tables == std::vector<std::string>{"t"});
  CHECK(shapes.get("SELECT * FROM t WHERE a = 2").tables == std::vector<std::string>{"t"});
  CHECK(shapes.get("SELECT * FROM t WHERE a = 1").tables == std::vector<std::string>{"t"});
  CHECK(shapes.hits() == 2);
  CHECK(shapes.misses() == 1);
  shapes.clear();
  CHECK(shapes.get("SELECT * FROM t WHERE a = 1").cls == StatementClass::read);
  CHECK(shapes.misses() == 2);
  CHECK(shapes.size() == 1);

  ClassifierCache tiny(0);  // still holds the one entry get() returns
  CHECK(tiny.capacity() == 1);
  CHECK(tiny.get("SELECT * FROM t").tables == std::vector<std::string>{"t"});
  CHECK(tiny.get("SELECT * FROM t").tables == std::vector<std::string>{"t"});
  CHECK(tiny.hits() == 1);
}

TEST_CASE("classifier cache: statements that differ only in literals share an entry") {
  std::string shape;
  CHECK(ClassifierCache::shape_of("SELECT abalance FROM pgbench_accounts WHERE aid = 123;", shape));
  CHECK(shape == "SELECT abalance FROM pgbench_accounts WHERE aid = \x02;");
  CHECK(ClassifierCache::shape_of("/* pgrouter: replica */ select * from t1 where a = 'x''y' and b = -7",
                                  shape));
  CHECK(shape == "/* pgrouter: replica */ select * from t1 where a = \x01 and b = -\x02");
  // Kept exact: decimals, exponents, parameters, digits in identifiers and quoted identifiers, and comments.
  CHECK(ClassifierCache::shape_of("SELECT 1.5, 2e3, $1, x1, \"9 'a\" -- it's 4\nFROM t", shape));
  CHECK(shape == "SELECT 1.5, 2e3, $1, x1, \"9 'a\" -- it's 4\nFROM t");
  // Not shaped (keyed by the exact text).
  for (const char* exact : {"SET pgrouter.route = 'replica'", "SELECT 1; SET pgrouter.route = 'primary'",
                            "SELECT E'a\\'b'", "SELECT 'a\\b'", "SELECT $$1$$", "SELECT U&'d'",
                            "BEGIN READ ONLY", "SELECT 'unterminated", "SELECT /* open", "SELECT \x01"})
    CHECK_MESSAGE(!ClassifierCache::shape_of(exact, shape), exact);
  // Every special byte found wherever it falls in the 16-byte blocks the scan takes at a time.
  for (size_t k = 0; k < 40; ++k) {
    std::string pad(k, 'x');
    CHECK(ClassifierCache::shape_of("SELECT " + pad + ", 7, 'q', \"Ab\" FROM t -- c 9\n", shape));
    CHECK(shape == "SELECT " + pad + ", \x02, \x01, \"Ab\" FROM t -- c 9\n");
    CHECK(ClassifierCache::shape_of("SELECT " + pad + "/* 8 */ $1 FROM t;  ", shape));
    CHECK(shape == "SELECT " + pad + "/* 8 */ $1 FROM t;  ");
    CHECK(!ClassifierCache::shape_of("SELECT " + pad + std::string(1, '\x05') + " FROM t", shape));
    CHECK(!ClassifierCache::shape_of("SELECT " + pad + "; SET pgrouter.route = 'primary'", shape));
    CHECK(ClassifierCache::shape_of("SELECT " + pad + "\xc3\xa9 - 12 FROM t", shape));
    CHECK(shape == "SELECT " + pad + "\xc3\xa9 - \x02 FROM t");
  }

  ClassifierCache cache(8);
  CHECK(cache.get("SELECT abalance FROM pgbench_accounts WHERE aid = 1").tables ==
        std::vector<std::string>{"pgbench_accounts"});
  CHECK(cache.get("SELECT abalance FROM pgbench_accounts WHERE aid = 987654").cls == StatementClass::read);
  CHECK(cache.get("UPDATE t SET a = 'x' WHERE id = 5").cls == StatementClass::write);
  CHECK(cache.get("UPDATE t SET a = 'other' WHERE id = 6").cls == StatementClass::write);
  CHECK(cache.misses() == 2);
  CHECK(cache.hits() == 2);
  // The literals of a route setting are never merged: each text is its own entry with its own value.
  CHECK(cache.get("SELECT 1; SET pgrouter.route = 'primary'").session_route == "primary");
  CHECK(cache.get("SELECT 1; SET pgrouter.route = 'replica'").session_route == "replica");
  // A text that does not parse is not merged with one that does.
  CHECK(cache.get("SELECT 1 FROM").parse_error);
  CHECK(!cache.get("SELECT 1 FROM t").parse_error);
}

TEST_CASE("classifier built-in function lists") {
  CHECK(builtin_function("", "count") == BuiltinFunction::read_only);
  CHECK(builtin_function("", "now") == BuiltinFunction::read_only);
  CHECK(builtin_function("pg_catalog", "anything_at_all") == BuiltinFunction::read_only);
  CHECK(builtin_function("", "nextval") == BuiltinFunction::primary_only);
  CHECK(builtin_function("pg_catalog", "nextval") == BuiltinFunction::primary_only);
  CHECK(builtin_function("", "pg_advisory_xact_lock_shared") == BuiltinFunction::primary_only);
  CHECK(builtin_function("", "pg_try_advisory_lock") == BuiltinFunction::primary_only);
  CHECK(builtin_function("", "lo_from_bytea") == BuiltinFunction::primary_only);
  CHECK(builtin_function("public", "nextval") == BuiltinFunction::unknown);  // someone's own nextval
  CHECK(builtin_function("public", "count") == BuiltinFunction::unknown);
  CHECK(builtin_function("", "my_function") == BuiltinFunction::unknown);
  CHECK(builtin_function("", "pg_sleep") == BuiltinFunction::read_only);
}

TEST_CASE("classifier JSON reader") {
  JsonTree tree;
  REQUIRE(tree.parse(
      R"( {"a": [1, -2.5e3, true, false, null, "x\"\\\/\n\u00e9\ud83d\ude00"], "b": {}, "c": []} )"));
  const JsonValue& root = tree.root();
  REQUIRE(root.kind == JsonValue::Kind::object);
  const JsonValue* a = tree.member(root, "a");
  REQUIRE(a);
  std::vector<const JsonValue*> items;
  for (const JsonValue* v = tree.first(*a); v; v = tree.next(*v)) items.push_back(v);
  REQUIRE(items.size() == 6);
  CHECK(items[0]->text == "1");
  CHECK(items[1]->text == "-2.5e3");
  CHECK((items[2]->kind == JsonValue::Kind::boolean && items[2]->boolean));
  CHECK((items[3]->kind == JsonValue::Kind::boolean && !items[3]->boolean));
  CHECK(items[4]->kind == JsonValue::Kind::null);
  CHECK(items[5]->text == "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(tree.first(*tree.member(root, "b")) == nullptr);
  CHECK(tree.member(root, "c")->kind == JsonValue::Kind::array);
  CHECK(tree.member(root, "missing") == nullptr);

  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "\"unterminated", "[1] x", "{\"a\":tru}", "\"\\q\""})
    CHECK_FALSE(tree.parse(bad));
  CHECK_FALSE(
      tree.parse(std::string(JsonTree::max_depth + 2, '[') + std::string(JsonTree::max_depth + 2, ']')));
  CHECK(tree.parse(std::string(100, '[') + std::string(100, ']')));
}
