#include <doctest/doctest.h>

#include <regex>

#include "pgrouter/sharding/two_phase.hpp"

using namespace pgrouter::sharding::two_phase;

TEST_CASE("gids are ours, distinct, and safe to quote as literals") {
  auto a = new_gid(), b = new_gid();
  CHECK(a != b);
  CHECK(is_ours(a));
  CHECK_FALSE(is_ours("other_1"));
  CHECK(std::regex_match(a, std::regex("pgr_[0-9a-f]{16}_[0-9]+")));
  CHECK(a.size() < 200);  // PostgreSQL's limit on a gid
  CHECK(prepare_sql(a) == "PREPARE TRANSACTION '" + a + "'");
  CHECK(finish_sql(a, Outcome::commit) == "COMMIT PREPARED '" + a + "'");
  CHECK(finish_sql(a, Outcome::abort) == "ROLLBACK PREPARED '" + a + "'");
}

TEST_CASE("the decision is durable and the first writer's") {
  auto sql = decide_sql("pgr_1_1", Outcome::commit);
  CHECK(sql.find("SET LOCAL synchronous_commit TO on") != std::string::npos);
  CHECK(sql.find("ON CONFLICT (gid) DO NOTHING") != std::string::npos);
  CHECK(sql.find("'commit'") != std::string::npos);
  CHECK(decide_sql("pgr_1_1", Outcome::abort).find("'abort'") != std::string::npos);
  CHECK(decision_won({"BEGIN", "SET", "INSERT 0 1", "COMMIT"}) == true);
  CHECK(decision_won({"BEGIN", "SET", "INSERT 0 0", "COMMIT"}) == false);
  CHECK_FALSE(decision_won({"BEGIN", "SET"}).has_value());
  CHECK(parse_outcome("commit") == Outcome::commit);
  CHECK(parse_outcome("abort") == Outcome::abort);
  CHECK_FALSE(parse_outcome("maybe").has_value());
}

TEST_CASE("cleanup keeps the decisions of parts still prepared") {
  CHECK(cleanup_sql({}).find("NOT IN") == std::string::npos);
  auto sql = cleanup_sql({"pgr_a_1", "pgr_a_2"});
  CHECK(sql.find("gid NOT IN ('pgr_a_1', 'pgr_a_2')") != std::string::npos);
}

TEST_CASE("the shards' command tags combine as one server's would") {
  CHECK(combined_tag({"UPDATE 3", "UPDATE 2"}) == "UPDATE 5");
  CHECK(combined_tag({"INSERT 0 1", "INSERT 0 2"}) == "INSERT 0 3");
  CHECK(combined_tag({"DELETE 0", "DELETE 0"}) == "DELETE 0");
  CHECK(combined_tag({"TRUNCATE TABLE", "TRUNCATE TABLE"}) == "TRUNCATE TABLE");
  CHECK_FALSE(combined_tag({"UPDATE 1", "DELETE 1"}).has_value());
  CHECK_FALSE(combined_tag({"ALTER TABLE", "UPDATE 1"}).has_value());
  CHECK_FALSE(combined_tag({}).has_value());
}

TEST_CASE("the write probe is asked only of servers that answer it") {
  CHECK(answers_xid_probe("15.4 (Debian 15.4-1.pgdg120+1)"));
  CHECK(answers_xid_probe("13.0"));
  CHECK(answers_xid_probe("17devel"));
  CHECK_FALSE(answers_xid_probe("12.17"));
  CHECK_FALSE(answers_xid_probe("9.6.24"));
  CHECK_FALSE(answers_xid_probe(""));
  CHECK_FALSE(answers_xid_probe("x15"));
  CHECK(kXidProbe.find("pg_current_xact_id_if_assigned()") != std::string_view::npos);
}
