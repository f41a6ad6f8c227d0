// auth_file parsing and reload, the auth_query answer cache, secret kinds, and the new config keys.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "pgrouter/control/config.hpp"
#include "pgrouter/control/userlist.hpp"
#include "pgrouter/protocol/scram.hpp"
#include "pgrouter/session/auth_cache.hpp"

using namespace pgrouter;
using control::parse_userlist;
using control::UserlistError;

TEST_CASE("userlist: pairs, quotes doubled, comments, blank lines, trailing text") {
  std::vector<UserlistError> errors;
  auto users = parse_userlist(
      "; a comment\n"
      "# another\n"
      "\n"
      "\"alice\" \"secret\"\n"
      "  \"bob\"\t\"md5abcdefabcdefabcdefabcdefabcdefab\" trailing words ignored\r\n"
      "\"quo\"\"te\" \"pa\"\"ss word\"\n"
      "\"empty\" \"\"\n"
      "\"alice\" \"second wins\"\n",
      errors);
  CHECK(errors.empty());
  CHECK(users.size() == 4);
  CHECK(users["alice"] == "second wins");
  CHECK(users["bob"] == "md5abcdefabcdefabcdefabcdefabcdefab");
  CHECK(users["quo\"te"] == "pa\"ss word");
  CHECK(users["empty"] == "");
}

TEST_CASE("userlist: malformed lines are reported by number and skipped") {
  std::vector<UserlistError> errors;
  auto users = parse_userlist(
      "alice secret\n"
      "\"bob\"\n"
      "\"carol\" \"unterminated\n"
      "\"\" \"x\"\n"
      "\"dave\" \"ok\"",  // no newline at the end
      errors);
  REQUIRE(errors.size() == 4);
  CHECK(errors[0].line == 1);
  CHECK(errors[1].line == 2);
  CHECK(errors[2].line == 3);
  CHECK(errors[2].message.find("unterminated") != std::string::npos);
  CHECK(errors[3].line == 4);
  CHECK(users.size() == 1);
  CHECK(users["dave"] == "ok");
}

TEST_CASE("secret kinds") {
  using control::SecretKind;
  CHECK(control::secret_kind("SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5") == SecretKind::scram);
  CHECK(control::secret_kind("md5" + std::string(32, 'a')) == SecretKind::md5);
  CHECK(control::secret_kind("md5" + std::string(31, 'a')) == SecretKind::plaintext);
  CHECK(control::secret_kind("md5" + std::string(32, 'G')) == SecretKind::plaintext);
  CHECK(control::secret_kind("hunter2") == SecretKind::plaintext);
}

TEST_CASE("userlist file: re-read when it changes, kept when it vanishes") {
  char dir[] = "/tmp/pgr-userlist-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string path = std::string(dir) + "/userlist.txt";
  std::ofstream(path) << "\"a\" \"1\"\n";
  control::UserlistFile file;
  REQUIRE(file.refresh(path));
  REQUIRE(file.find("a") != nullptr);
  CHECK(*file.find("a") == "1");
  CHECK(file.loads() == 1);
  CHECK(file.refresh(path));
  CHECK(file.loads() == 1);                              // unchanged: not read again
  std::ofstream(path) << "\"a\" \"22\"\n\"b\" \"3\"\n";  // another size, whatever the clock's resolution
  CHECK(file.refresh(path));
  CHECK(file.loads() == 2);
  CHECK(*file.find("a") == "22");
  CHECK(file.find("b") != nullptr);
  CHECK(file.refresh(path, true));
  CHECK(file.loads() == 3);  // forced (a reload)
  std::remove(path.c_str());
  CHECK_FALSE(file.refresh(path));
  CHECK(file.error().find("cannot read") != std::string::npos);
  CHECK(*file.find("a") == "22");  // the last good contents stay
  ::rmdir(dir);
}

TEST_CASE("auth cache: found and missing answers expire after their own times") {
  session::AuthCache cache;
  using namespace std::chrono_literals;
  auto t0 = session::AuthCache::Clock::time_point{} + 1000s;
  cache.put("db", "alice", {true, "md5x"}, t0, 30s, 5s);
  cache.put("db", "ghost", {false, ""}, t0, 30s, 5s);
  REQUIRE(cache.get("db", "alice", t0 + 4s));
  CHECK(cache.get("db", "alice", t0 + 4s)->secret == "md5x");
  REQUIRE(cache.get("db", "ghost", t0 + 4s));
  CHECK_FALSE(cache.get("db", "ghost", t0 + 4s)->found);
  CHECK_FALSE(cache.get("db", "ghost", t0 + 5s));  // negative answers go first
  CHECK(cache.get("db", "alice", t0 + 29s));
  CHECK_FALSE(cache.get("db", "alice", t0 + 30s));
  CHECK_FALSE(cache.get("other", "alice", t0));   // per database
  CHECK(cache.size() == 0);                       // expired entries were dropped when asked for
  cache.put("db", "x", {true, "s"}, t0, 0s, 5s);  // a ttl of 0 keeps nothing
  CHECK(cache.size() == 0);
}

TEST_CASE("auth cache: bounded, expired entries go first") {
  session::AuthCache cache(3);
  using namespace std::chrono_literals;
  auto t0 = session::AuthCache::Clock::time_point{} + 1000s;
  cache.put("db", "old", {false, ""}, t0, 30s, 1s);
  cache.put("db", "a", {true, "1"}, t0, 30s, 1s);
  cache.put("db", "b", {true, "2"}, t0, 30s, 1s);
  cache.put("db", "c", {true, "3"}, t0 + 2s, 30s, 1s);  // full: "old" has expired and goes
  CHECK(cache.size() == 3);
  CHECK(cache.get("db", "a", t0 + 2s));
  cache.put("db", "d", {true, "4"}, t0 + 2s, 30s, 1s);  // full of live entries: starts over
  CHECK(cache.size() == 1);
  CHECK(cache.get("db", "d", t0 + 2s));
}

namespace {
const char* kBase = R"(version: 1
databases:
  - name: app
    shards: [{primary: {host: 127.0.0.1, port: 5432}}]
users:
  - name: auth
    password: pw
)";
control::LoadResult load(const std::string& extra) { return control::load_config_string(kBase + extra, "t"); }
bool has_error(const control::LoadResult& r, const std::string& text) {
  for (const auto& e : r.errors)
    if (e.message.find(text) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST_CASE("config: auth_sources and per-database auth keys") {
  auto r = load("auth_sources:\n  auth_user: auth\n  auth_cache_seconds: 10\n");
  REQUIRE(r.ok());
  auto a = r.config->auth_lookup_for(r.config->databases[0]);
  CHECK(a.auth_user == "auth");
  CHECK(a.auth_query == control::kDefaultAuthQuery);
  CHECK(r.config->auth_sources.cache_seconds == 10);
  CHECK(r.config->auth_sources.negative_cache_seconds == 5);

  CHECK(has_error(load("auth_sources:\n  auth_user: nobody\n"), "auth_user 'nobody' is not a user"));
  CHECK(has_error(load("auth_sources:\n  auth_query: SELECT 1\n"), "auth_query needs auth_user"));
  CHECK(has_error(load("auth_sources:\n  auth_user: auth\n  auth_dbname: nope\n"), "auth_dbname 'nope'"));
  CHECK(has_error(load("auth_sources:\n  auth_cache_seconds: -1\n"), "auth_cache_seconds"));
  CHECK(has_error(load("auth_sources:\n  auth_file: /nonexistent/userlist.txt\n"), "cannot read"));
  CHECK(has_error(load("auth_sources:\n  bogus: 1\n"), "bogus"));
}

TEST_CASE("config: a database's auth keys override the global ones") {
  std::string yaml = std::string(R"(version: 1
auth_sources:
  auth_user: auth
databases:
  - name: app
    shards: [{primary: {host: 127.0.0.1, port: 5432}}]
  - name: other
    auth_query: SELECT u, p FROM my_lookup($1)
    auth_dbname: app
    shards: [{primary: {host: 127.0.0.1, port: 5432}}]
users:
  - name: auth
    password: pw
)");
  auto r = control::load_config_string(yaml, "t");
  REQUIRE(r.ok());
  auto a = r.config->auth_lookup_for(*r.config->find_database("other"));
  CHECK(a.auth_user == "auth");
  CHECK(a.auth_query == "SELECT u, p FROM my_lookup($1)");
  CHECK(a.auth_dbname == "app");
  CHECK(r.config->auth_lookup_for(*r.config->find_database("app")).auth_dbname.empty());
}

TEST_CASE("config: auth_file is checked line by line") {
  char dir[] = "/tmp/pgr-userlist-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string path = std::string(dir) + "/userlist.txt";
  std::ofstream(path) << "\"a\" \"1\"\nbroken line\n";
  auto r = load("auth_sources:\n  auth_file: " + path + "\n");
  CHECK(has_error(r, "line 2"));
  std::ofstream(path) << "\"a\" \"1\"\n";
  CHECK(load("auth_sources:\n  auth_file: " + path + "\n").ok());
  std::remove(path.c_str());
  ::rmdir(dir);
}

TEST_CASE("config: the fallback database") {
  auto r = load("  # users above\n");
  REQUIRE(r.ok());
  CHECK(r.config->fallback_database() == nullptr);
  std::string yaml = std::string(R"(version: 1
databases:
  - name: app
    shards: [{primary: {host: 127.0.0.1, port: 5432}}]
  - name: "*"
    shards: [{primary: {host: 127.0.0.2, port: 5433}}]
users:
  - name: auth
    password: pw
)");
  auto f = control::load_config_string(yaml, "t");
  REQUIRE(f.ok());
  REQUIRE(f.config->fallback_database() != nullptr);
  CHECK(f.config->fallback_database()->shards[0].primary.port == 5433);
  CHECK(f.config->find_database("postgres") == nullptr);  // exact names only: the worker makes the entry
  auto bad = control::load_config_string(
      yaml.replace(yaml.find("  - name: \"*\"\n") + 14, 0, "    dbname: x\n"), "t");
  CHECK(has_error(bad, "cannot have a dbname"));
}

namespace {
// One whole exchange of `client` against a server holding `v`; true when both sides accept.
bool exchange(protocol::scram::ClientExchange& client, const protocol::scram::Verifier& v,
              std::string* client_key = nullptr) {
  protocol::scram::ServerExchange server(v);
  std::string err, server_final;
  auto server_first = server.handle_client_first(client.client_first(), err);
  REQUIRE(server_first);
  auto client_final = client.handle_server_first(*server_first, err);
  REQUIRE(client_final);
  if (server.handle_client_final(*client_final, server_final, err) !=
      protocol::scram::ServerExchange::Result::Ok)
    return false;
  if (client_key) *client_key = server.client_key();
  return client.verify_server_final(server_final, err);
}
}  // namespace

TEST_CASE(
    "SCRAM passthrough: a client's proof gives the keys that log in to a server with the same verifier") {
  namespace scram = protocol::scram;
  auto verifier = scram::make_verifier("s3cret", "0123456789abcdef", 4096);
  scram::ClientExchange client("s3cret");
  std::string client_key;
  REQUIRE(exchange(client, verifier, &client_key));
  CHECK(client_key.size() == 32);

  scram::ClientExchange passthrough(scram::PassthroughKeys{client_key, verifier.server_key});
  CHECK(exchange(passthrough, verifier));

  // Another salt on the server (the password set again): the keys no longer prove anything.
  auto other = scram::make_verifier("s3cret", "fedcba9876543210", 4096);
  scram::ClientExchange stale(scram::PassthroughKeys{client_key, verifier.server_key});
  CHECK_FALSE(exchange(stale, other));
  // A wrong client key is refused by the server.
  std::string wrong = client_key;
  wrong[0] = char(wrong[0] ^ 1);
  scram::ClientExchange forged(scram::PassthroughKeys{wrong, verifier.server_key});
  CHECK_FALSE(exchange(forged, verifier));
}
