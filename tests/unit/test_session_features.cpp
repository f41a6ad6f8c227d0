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
}

TEST_CASE("transaction-scoped and ordinary statements are not") {
  CHECK(session_feature("select 1").empty());
  CHECK(session_feature("SELECT pg_advisory_xact_lock(1)").empty());
  CHECK(session_feature("SET LOCAL statement_timeout = 5").empty());
  CHECK(session_feature("set transaction isolation level serializable").empty());
  CHECK(session_feature("SET CONSTRAINTS ALL DEFERRED").empty());
  CHECK(session_feature("PREPARE TRANSACTION 'x'").empty());
  CHECK(session_feature("update t set a = 1").empty());
  CHECK(session_feature("select * from listeners").empty());
  CHECK(session_feature("insert into t values ('listen')").empty());
  CHECK(session_feature("select tempo from songs").empty());
  CHECK(session_feature("BEGIN; INSERT INTO t VALUES (1); COMMIT").empty());
}
