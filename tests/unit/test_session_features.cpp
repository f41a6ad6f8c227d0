// The session-feature check that decides when transaction pooling must pin a client to its server.
#include <doctest/doctest.h>

#include "pgrouter/sql/session_features.hpp"

using pgrouter::sql::session_feature;

TEST_CASE("statements whose effects outlive the transaction are recognised") {
  CHECK(session_feature("LISTEN chan") == "LISTEN");
  CHECK(session_feature("select 1; listen x") == "LISTEN");
  CHECK(session_feature("SELECT pg_advisory_lock(1)") == "session advisory lock");
  CHECK(session_feature("select pg_try_advisory_lock_shared(1)") == "session advisory lock");
  CHECK(session_feature("CREATE TEMP TABLE t (x int)") == "temporary table");
  CHECK(session_feature("create temporary table t as select 1") == "temporary table");
  CHECK(session_feature("DECLARE c CURSOR WITH HOLD FOR select 1") == "WITH HOLD cursor");
  CHECK(session_feature("LOAD 'auto_explain'") == "LOAD");
  CHECK(session_feature("PREPARE q AS select 1") == "PREPARE");
  CHECK(session_feature("SET search_path = x") == "SET");
  CHECK(session_feature("  set statement_timeout to 5") == "SET");
  CHECK(session_feature("RESET ALL") == "SET");
  CHECK(session_feature("DISCARD ALL") == "DISCARD");
  CHECK(session_feature("DEALLOCATE ALL") == "DEALLOCATE");
  // Each statement of a multi-statement text, after white space and '(' (lexical: errs towards "yes").
  CHECK(session_feature("select 1;( Set search_path = x") == "SET");
  CHECK(session_feature("SET LOCAL x = 1; set y = 2") == "SET");
  CHECK(session_feature("select 'with hold'") == "WITH HOLD cursor");
  // After a comment where the first word is expected (routing hints, ORM tags), nested or not.
  CHECK(session_feature("/* pgrouter: primary */ SET search_path = x") == "SET");
  CHECK(session_feature("-- tag\n  reset all") == "SET");
  CHECK(session_feature("/* a /* nested */ one */ discard all") == "DISCARD");
  CHECK(session_feature("select 1; /* c */ -- d\n LISTEN x") == "LISTEN");
  CHECK(session_feature("/* c */ LOAD 'x'") == "LOAD");
  // What looks like a comment may be inside a quoted string: a ';' in it still starts a statement.
  CHECK(session_feature("select ';/*'; set x = 1") == "SET");
  CHECK(session_feature("select ';--'; set x = 1") == "SET");
  // set_config() that is not provably transaction-local (third argument the bare word true).
  CHECK(session_feature("select set_config('search_path', 'x', false)") ==
        "set_config() of a session setting");
  CHECK(session_feature("SELECT pg_catalog.SET_CONFIG('a.b', $1, $2)") ==
        "set_config() of a session setting");
  CHECK(session_feature("select set_config('a', 'b', 'true')") == "set_config() of a session setting");
  CHECK(session_feature("select set_config('a', f(1, 2), x)") == "set_config() of a session setting");
  CHECK(session_feature("select set_config('a', 'it''s, (', false)") == "set_config() of a session setting");
  CHECK(session_feature("select set_config('a', 'b')") == "set_config() of a session setting");
  CHECK(session_feature("select set_config('a', 'b', true") == "set_config() of a session setting");
  CHECK(session_feature("select set_config('a', 'b', true); select set_config('c', 'd', false)") ==
        "set_config() of a session setting");
  // PL/pgSQL: after BEGIN, THEN, ELSE, LOOP, and in the string EXECUTE runs.
  CHECK(session_feature("DO $$ BEGIN SET search_path = pg_catalog; END $$") == "SET");
  CHECK(session_feature("do $$begin if true then reset all; end if; end$$") == "SET");
  CHECK(session_feature("DO $$ BEGIN IF x THEN NULL; ELSE LISTEN c; END IF; END $$") == "LISTEN");
  CHECK(session_feature("DO $$ BEGIN EXECUTE 'SET statement_timeout = 5'; END $$") == "SET");
  CHECK(session_feature("DO $$ BEGIN LOOP DISCARD ALL; EXIT; END LOOP; END $$") == "DISCARD");
  // The most specific feature wins, whatever its place in the text.
  CHECK(session_feature("set x = 1; select pg_advisory_lock(1); listen c") == "LISTEN");
}

TEST_CASE("transaction-scoped and ordinary statements are not") {
  CHECK(session_feature("select 1").empty());
  CHECK(session_feature("SELECT pg_advisory_xact_lock(1)").empty());
  CHECK(session_feature("SET LOCAL statement_timeout = 5").empty());
  // A comment's words are not commands, and a statement's first word follows the comment.
  CHECK(session_feature("/* load the user, then set the flag */ select 1").empty());
  CHECK(session_feature("-- reset everything\nselect 2").empty());
  CHECK(session_feature("select 1 /* set x */").empty());
  CHECK(session_feature("set transaction isolation level serializable").empty());
  CHECK(session_feature("SET CONSTRAINTS ALL DEFERRED").empty());
  CHECK(session_feature("PREPARE TRANSACTION 'x'").empty());
  CHECK(session_feature("update t set a = 1").empty());
  CHECK(session_feature("select * from listeners").empty());
  CHECK(session_feature("insert into t values ('listen')").empty());
  CHECK(session_feature("select tempo from songs").empty());
  CHECK(session_feature("BEGIN; INSERT INTO t VALUES (1); COMMIT").empty());
  CHECK(session_feature("select 1 /* set x */").empty());
  CHECK(session_feature("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").empty());
  CHECK(session_feature("select with_hold from t").empty());
  CHECK(session_feature("BEGIN ISOLATION LEVEL SERIALIZABLE; SET TRANSACTION READ ONLY").empty());
  CHECK(session_feature("DO $$ BEGIN SET LOCAL search_path = x; END $$").empty());
  CHECK(session_feature("select case when a then b else c end from t").empty());
  CHECK(session_feature("select set_config('app.tenant', '42', true)").empty());
  CHECK(session_feature("SELECT set_config( 'a', lower('X, (y)'), TRUE ) , 1").empty());
  CHECK(session_feature("select set_config('a', $1, true) where x = 'set_config'").empty());
  // The classifier asks about a statement's shape (string literals written as \x01): the same answer.
  CHECK(session_feature("select set_config(\x01, \x01, true)").empty());
  CHECK(session_feature("select set_config(\x01, \x01, \x01)") == "set_config() of a session setting");
}

// Found by tests/fuzz (fuzz_session_features): LOCAL, TRANSACTION and CONSTRAINTS after SET (and TRANSACTION
// after PREPARE) were matched as prefixes, so a session SET of a setting whose name starts with one of them
// was taken for a transaction-scoped one and, in a multi-statement query, left on the server for the next
// client.
TEST_CASE("SET LOCAL, SET TRANSACTION and PREPARE TRANSACTION are whole words") {
  CHECK(session_feature("SET local_app.tenant = 'a'; select 1") == "SET");
  CHECK(session_feature("set transaction_timeout = '1s'; select 1") == "SET");
  CHECK(session_feature("SET constraints_app.mode = 1; select 1") == "SET");
  CHECK(session_feature("SET Local1 = 5") == "SET");
  CHECK(session_feature("SET local\xff = 5") == "SET");  // a non-ASCII byte continues an identifier
  CHECK(session_feature("PREPARE transactions AS select 1") == "PREPARE");
  // The keywords themselves, before white space, '(' or the end, are still what they were.
  CHECK(session_feature("SET LOCAL\tstatement_timeout = 5").empty());
  CHECK(session_feature("set transaction\nread only").empty());
  CHECK(session_feature("SET CONSTRAINTS").empty());
  CHECK(session_feature("PREPARE TRANSACTION 'x'").empty());
}

TEST_CASE("SQL PREPARE and EXECUTE name their statements as PostgreSQL reads the names") {
  using pgrouter::sql::execute_references;
  using pgrouter::sql::mentions_execute;
  using pgrouter::sql::parse_prepare;
  auto p = parse_prepare("/* c */ PREPARE Foo (int, text) AS select $1, $2");
  REQUIRE(p);
  CHECK(p->name == "foo");
  CHECK(p->begin == 16);
  CHECK(p->end == 19);
  p = parse_prepare("prepare \"My \"\"S\"\"\" as select 1");
  REQUIRE(p);
  CHECK(p->name == "My \"S\"");
  CHECK_FALSE(parse_prepare("PREPARE TRANSACTION 'x'"));
  CHECK_FALSE(parse_prepare("select 1"));
  CHECK_FALSE(parse_prepare("prepare \"\" as select 1"));

  CHECK(mentions_execute("EXPLAIN ExEcUtE s"));
  CHECK_FALSE(mentions_execute("select 1"));
  auto refs =
      execute_references("execute A(1); explain (analyze) EXECUTE \"B\"; create table t as execute c");
  REQUIRE(refs.size() == 3);
  CHECK(refs[0].name == "a");
  CHECK(refs[1].name == "B");
  CHECK(refs[2].name == "c");
  // Not in strings, comments, dollar quotes or quoted identifiers.
  CHECK(execute_references("select 'execute a', $$ execute b $$, \"execute\" c -- execute d\n/* execute e */")
            .empty());
  CHECK(execute_references("select E'\\' execute a'").empty());
  CHECK(execute_references("execute").empty());
}

TEST_CASE("DEALLOCATE names are read as PostgreSQL reads them") {
  using pgrouter::sql::parse_session_command;
  using pgrouter::sql::SessionCommand;
  CHECK(parse_session_command("deallocate \"with \"\"quotes\"\" and space\"")->name ==
        "with \"quotes\" and space");
  CHECK(parse_session_command("DEALLOCATE Foo; -- done")->name == "foo");
  CHECK(parse_session_command("/* a /* nested */ comment */ SET search_path = x")->name == "search_path");
  CHECK(parse_session_command("deallocate prepare prepare")->name == "prepare");
  CHECK(parse_session_command("deallocate prepare all ;")->kind == SessionCommand::deallocate_all);
  CHECK_FALSE(parse_session_command("deallocate a b"));
  CHECK_FALSE(parse_session_command("deallocate a;;"));
  CHECK_FALSE(parse_session_command("deallocate"));
}

TEST_CASE("session_feature_key writes numbers as 0 and leaves words alone") {
  using pgrouter::sql::session_feature_key;
  std::string buf;
  CHECK(session_feature_key("select a from t where id = 12345", buf) == "select a from t where id = 0");
  CHECK(session_feature_key("select 1;5 set x = 7", buf) == "select 0;0 set x = 0");
  CHECK(session_feature_key("select * from t1, temp2 where x = $12 and y = 1e5", buf) ==
        "select * from t1, temp2 where x = $12 and y = 1e5");
  std::string_view plain = "select * from t1 where a = 0";
  CHECK(session_feature_key(plain, buf).data() == plain.data());  // nothing to write: the text itself
  // Numbers found wherever they fall in the 16-byte blocks the scan takes at a time.
  for (size_t k = 0; k < 40; ++k) {
    std::string pad(k, 'x');
    CHECK(session_feature_key("select " + pad + " = 42 and t" + pad + "9 < 7", buf) ==
          "select " + pad + " = 0 and t" + pad + "9 < 0");
    CHECK(session_feature_key(std::string(k, ' ') + "123", buf) == std::string(k, ' ') + "0");
  }
}

TEST_CASE("currval() and lastval() calls are found, after every other feature") {
  using pgrouter::sql::kSequenceRead;
  CHECK(session_feature("select currval('t_id_seq')") == kSequenceRead);
  CHECK(session_feature("SELECT LASTVAL ()") == kSequenceRead);
  CHECK(session_feature("insert into t default values; select lastval()") == kSequenceRead);
  CHECK(session_feature("select currval_of_mine from t").empty());  // a column, not the function
  CHECK(session_feature("select lastval from t").empty());
  CHECK(session_feature("set x = 1; select currval('s')") == "SET");  // the pinning feature comes first
}

TEST_CASE("transaction control runs no expression of the client's") {
  using pgrouter::sql::transaction_control;
  CHECK(transaction_control("BEGIN"));
  CHECK(transaction_control("  start transaction isolation level serializable"));
  CHECK(transaction_control("commit"));
  CHECK(transaction_control("SET LOCAL x = 1"));
  CHECK(transaction_control("show search_path"));
  CHECK_FALSE(transaction_control("insert into t values (1)"));
  CHECK_FALSE(transaction_control("select nextval('s')"));
  CHECK_FALSE(transaction_control("beginning()"));
  CHECK_FALSE(transaction_control(""));
}
