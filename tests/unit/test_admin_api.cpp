// The HTTP API's pure parts: JSON rendering of the SHOW result sets, paths, parameters and the access
// decision.
#include <doctest/doctest.h>

#include <cstdlib>

#include "pgrouter/admin/api.hpp"
#include "pgrouter/admin/show.hpp"

using namespace pgrouter::admin;
using pgrouter::control::ApiReadOpen;
namespace asio = boost::asio;

TEST_CASE("admin API: a result set as columns and rows, numbers as numbers, NULL as null") {
  ResultSet rs({"name", "count", "note"}, {"count"});
  rs.row().add("app").add(int64_t(42)).add_null();
  rs.row().add("x\"y").add(int64_t(-7)).add("");
  auto json = result_json(rs);
  CHECK(json.dump() == R"({"columns":["name","count","note"],"rows":[["app",42,null],["x\"y",-7,""]]})");
  CHECK(json["rows"][0][1].is_number_integer());
}

TEST_CASE("admin API: an empty result set keeps its columns") {
  auto json = result_json(show_pools({}));
  CHECK(json["rows"].empty());
  CHECK(json["columns"][0] == "database");
  CHECK(result_json(show_version())["rows"][0][0].get<std::string>().rfind("pgrouter ", 0) == 0);
}

TEST_CASE("admin API: the error envelope") {
  CHECK(error_json("unknown_path", "no such API path: /v1/x").dump() ==
        R"({"error":{"code":"unknown_path","message":"no such API path: /v1/x"}})");
}

TEST_CASE("admin API: paths") {
  CHECK(api_verb("/v1/pools") == Verb::show_pools);
  CHECK(api_verb("/v1/backends/") == Verb::show_backends);
  CHECK(api_verb("/v1/drain") == Verb::shutdown);
  CHECK(api_verb("/v1/kill") == Verb::kill);
  CHECK(api_verb("/v1/wait_close") == Verb::wait_close);
  CHECK(!api_verb("/v1/"));
  CHECK(!api_verb("/v1/pools/x"));
  CHECK(!api_verb("/v2/pools"));
  CHECK(!api_verb("/metrics"));
  CHECK(api_name(Verb::shutdown) == "drain");
}

TEST_CASE("admin API: the database of a call, from the query or the body") {
  CHECK(form_value("a=1&database=my%20db", "database") == "my db");
  CHECK(form_value("database", "database") == "");
  CHECK(!form_value("a=1", "database"));
  CHECK(database_param("database=app", "") == "app");
  CHECK(database_param("", "database=app") == "app");
  CHECK(database_param("", R"({"database": "app"})") == "app");
  CHECK(database_param("", "  ") == "");
  CHECK(database_param("", "{}") == "");
  CHECK(!database_param("", "{not json"));
  CHECK(!database_param("", R"({"database": 1})"));
  CHECK(database_param("database=q", R"({"database": "b"})") == "q");  // the query wins
}

TEST_CASE("admin API: bearer tokens") {
  CHECK(bearer_token("Bearer abc") == "abc");
  CHECK(bearer_token("bearer  abc ") == "abc");
  CHECK(!bearer_token("Basic abc"));
  CHECK(!bearer_token("Bearer "));
  CHECK(!bearer_token(""));
  CHECK(same_token("abc", "abc"));
  CHECK(!same_token("abc", "abd"));
  CHECK(!same_token("abc", "abcd"));
}

TEST_CASE("admin API: loopback callers") {
  CHECK(is_loopback(asio::ip::make_address("127.0.0.1")));
  CHECK(is_loopback(asio::ip::make_address("::1")));
  CHECK(is_loopback(asio::ip::make_address("::ffff:127.0.0.1")));
  CHECK(!is_loopback(asio::ip::make_address("127.0.0.2")));
  CHECK(!is_loopback(asio::ip::make_address("10.0.0.1")));
}

TEST_CASE("admin API: who may call what") {
  const auto local = ApiReadOpen::localhost;
  const auto token = ApiReadOpen::token;
  // Reads: open on loopback by default, else the token.
  CHECK(decide_access(false, true, local, "", "") == Access::allowed);
  CHECK(decide_access(false, false, local, "", "") == Access::forbidden);
  CHECK(decide_access(false, false, local, "s3cret", "") == Access::unauthorized);
  CHECK(decide_access(false, false, local, "s3cret", "Bearer s3cret") == Access::allowed);
  CHECK(decide_access(false, true, token, "s3cret", "") == Access::unauthorized);
  CHECK(decide_access(false, true, token, "s3cret", "Bearer s3cret") == Access::allowed);
  // Changes: always the token, even on loopback; none configured refuses them.
  CHECK(decide_access(true, true, local, "", "Bearer x") == Access::not_configured);
  CHECK(decide_access(true, true, local, "s3cret", "") == Access::unauthorized);
  CHECK(decide_access(true, true, local, "s3cret", "Bearer wrong") == Access::unauthorized);
  CHECK(decide_access(true, false, local, "s3cret", "Bearer s3cret") == Access::allowed);
}

namespace {
const std::string kBase =
    "version: 1\n"
    "databases: [{name: app, shards: [{primary: {host: db1}}]}]\n"
    "users: [{name: app, password: secret}]\n";

pgrouter::control::LoadResult load(const std::string& yaml) {
  return pgrouter::control::load_config_string(yaml, "test.yaml");
}
}  // namespace

TEST_CASE("admin API config: token from an environment variable, trimmed; read_open") {
  ::setenv("PGROUTER_TEST_API_TOKEN", "  tok3n \n", 1);
  auto r = load(kBase + "admin: {api_token_env: PGROUTER_TEST_API_TOKEN, api_read_open: token}\n");
  REQUIRE(r.ok());
  CHECK(r.config->admin.api_token == "tok3n");
  CHECK(r.config->admin.api_read_open == ApiReadOpen::token);
  auto d = load(kBase);
  REQUIRE(d.ok());
  CHECK(d.config->admin.api_token.empty());
  CHECK(d.config->admin.api_read_open == ApiReadOpen::localhost);
}

TEST_CASE("admin API config: token file must be readable and not empty; one source only") {
  CHECK(!load(kBase + "admin: {api_token_file: /nonexistent/pgrouter-token}\n").ok());
  ::setenv("PGROUTER_TEST_API_EMPTY", " \n", 1);
  auto empty = load(kBase + "admin: {api_token_env: PGROUTER_TEST_API_EMPTY}\n");
  REQUIRE(!empty.ok());
  CHECK(empty.errors.front().message.find("the API token is empty") != std::string::npos);
  CHECK(
      !load(kBase + "admin: {api_token_env: PGROUTER_TEST_API_TOKEN, api_token_file: /etc/hostname}\n").ok());
  CHECK(!load(kBase + "admin: {api_read_open: everyone}\n").ok());
}
