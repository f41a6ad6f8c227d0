// Unit tests for the YAML config loader: values, every kind of error with its position, secrets, auth
// matching.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "pgrouter/control/config.hpp"

using namespace pgrouter::control;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The smallest valid config: lines 1-8, so text appended to it starts at line 9, and "  - name: x"
// appended to it adds a user.
const std::string kBase =
    "version: 1\n"
    "databases:\n"
    "  - name: app\n"
    "    shards:\n"
    "      - primary: {host: db1}\n"
    "users:\n"
    "  - name: app\n"
    "    password: secret\n";

LoadResult load(const std::string& yaml) { return load_config_string(yaml, "test.yaml"); }

// True if an error at this line (and column, if given) contains the text.
bool has_error(const LoadResult& result, int line, const std::string& text, int column = 0) {
  for (const auto& e : result.errors) {
    if (e.line == line && (column == 0 || e.column == column) && e.message.find(text) != std::string::npos)
      return true;
  }
  return false;
}

std::string all_errors(const LoadResult& result) {
  std::string out;
  for (const auto& e : result.errors) out += e.to_string() + "\n";
  return out;
}

// A scratch directory removed at the end of the test.
struct TempDir {
  fs::path path = fs::temp_directory_path() / ("pgrouter-test-config-" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  fs::path write(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return path / name;
  }
};

// conf/pgrouter.yaml, found from this source file's path; a relative __FILE__ is relative to the
// build directory the compiler ran in, which is where the test binary's parent folder is.
fs::path example_config_path() {
  fs::path relative = fs::path(__FILE__).parent_path() / ".." / ".." / "conf" / "pgrouter.yaml";
  if (relative.is_absolute() || fs::exists(relative)) return relative;
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path() / relative;
}

}  // namespace

TEST_CASE("a full config loads with every value") {
  auto result = load(R"(version: 1
listen:
  host: 0.0.0.0
  port: 7432
  workers: 3
  max_client_conn: 500
  max_message_size: 2MB
  client_login_timeout: 250ms
  shutdown_timeout: 2m
admin: {host: 127.0.0.2, port: 0}
log: {level: debug}
pool:
  mode: transaction
  size: 8
  min_size: 2
  connect_timeout: 2s
  idle_timeout: 5m
  max_lifetime: 2h
  queue_size: 7
  queue_timeout: 90
  reset_query: ''
databases:
  - name: app
    dbname: app_prod
    shards:
      - primary: {host: db1, port: 5433}
        replicas:
          - {host: db2, weight: 3}
          - {host: db3, port: 5434}
    pool: {size: 4, mode: session}
  - name: other
    shards:
      - primary: {host: db9}
users:
  - name: app
    password: secret
    backend_user: app_backend
  - name: ro
    scram_verifier: "SCRAM-SHA-256$4096:2OgkVZvPJxaGgwJsVxTfjA==$0rqAeFvI1JJ8fJ/2KxMGkLdA9GS1zhDMYfjAshqMemo=:u+C+/K0Vi3+KZ+aBof7pN2sT/69ZN/pzbWlYechC++k="
    md5_hash: md5e806f6fe5e905e8376ed58219e3abc61
    backend_password: other
auth:
  - method: md5
    users: ro
    databases: [app, other]
    addresses: [10.0.0.0/8, "fe80::/10"]
)");
  REQUIRE_MESSAGE(result.ok(), all_errors(result));
  const Config& c = *result.config;
  CHECK(c.source == "test.yaml");
  CHECK(c.listen.host == "0.0.0.0");
  CHECK(c.listen.port == 7432);
  CHECK(c.listen.workers == 3);
  CHECK(c.listen.max_client_conn == 500);
  CHECK(c.listen.max_message_size == 2 * 1024 * 1024);
  CHECK(c.listen.client_login_timeout == 250ms);
  CHECK(c.listen.shutdown_timeout == 120s);
  CHECK(c.admin.host == "127.0.0.2");
  CHECK(c.admin.port == 0);
  CHECK(c.log.level == "debug");
  CHECK(c.tls.cert_file.empty());
  CHECK(c.pool.mode == PoolMode::transaction);
  CHECK(c.pool.size == 8);
  CHECK(c.pool.min_size == 2);
  CHECK(c.pool.connect_timeout == 2s);
  CHECK(c.pool.idle_timeout == 5min);
  CHECK(c.pool.max_lifetime == 2h);
  CHECK(c.pool.queue_size == 7);
  CHECK(c.pool.queue_timeout == 90s);
  CHECK(c.pool.reset_query.empty());

  REQUIRE(c.databases.size() == 2);
  const DatabaseConfig& app = c.databases[0];
  CHECK(app.dbname == "app_prod");
  REQUIRE(app.shards.size() == 1);
  CHECK(app.shards[0].primary.host == "db1");
  CHECK(app.shards[0].primary.port == 5433);
  REQUIRE(app.shards[0].replicas.size() == 2);
  CHECK(app.shards[0].replicas[0].weight == 3);
  CHECK(app.shards[0].replicas[0].port == 5432);
  CHECK(app.shards[0].replicas[1].port == 5434);
  // The override is the global pool with only the keys it names replaced.
  REQUIRE(app.pool);
  CHECK(app.pool->size == 4);
  CHECK(app.pool->mode == PoolMode::session);
  CHECK(app.pool->min_size == 2);
  CHECK(app.pool->queue_size == 7);
  CHECK(&c.pool_for(app) == &*app.pool);
  CHECK(c.databases[1].dbname == "other");
  CHECK_FALSE(c.databases[1].pool);
  CHECK(&c.pool_for(c.databases[1]) == &c.pool);

  REQUIRE(c.users.size() == 2);
  CHECK(c.users[0].backend_user == "app_backend");
  CHECK(c.users[0].backend_password == "secret");
  CHECK(c.users[1].backend_user == "ro");
  CHECK(c.users[1].backend_password == "other");
  CHECK(c.users[1].password.empty());
  CHECK(c.users[1].md5_hash == "md5e806f6fe5e905e8376ed58219e3abc61");
  CHECK(c.find_user("ro") == &c.users[1]);
  CHECK(c.find_user("nobody") == nullptr);
  CHECK(c.find_database("other") == &c.databases[1]);
  CHECK(c.find_database("App") == nullptr);

  REQUIRE(c.auth.size() == 1);
  CHECK(c.auth[0].method == AuthMethod::md5);
  CHECK(c.auth[0].users == std::vector<std::string>{"ro"});
  CHECK(c.auth[0].databases == std::vector<std::string>{"app", "other"});
  CHECK(c.auth[0].line == 43);
}

TEST_CASE("defaults apply when sections are left out") {
  auto result = load(kBase);
  REQUIRE_MESSAGE(result.ok(), all_errors(result));
  const Config& c = *result.config;
  CHECK(c.listen.port == 6432);
  CHECK(c.listen.max_message_size == 64 * 1024 * 1024);
  CHECK(c.listen.scheduling == pgrouter::control::Scheduling::normal);
  CHECK(c.admin.port == 9930);
  CHECK(c.pool.size == 20);
  CHECK(c.pool.reset_query == "DISCARD ALL");
  CHECK(c.pool.unnamed_statements == pgrouter::control::UnnamedStatements::pass);
  CHECK(c.databases[0].dbname == "app");
  CHECK(c.databases[0].shards[0].primary.port == 5432);
  CHECK(c.users[0].backend_user == "app");
  CHECK(c.users[0].backend_password == "secret");
  CHECK(c.auth.empty());
}

TEST_CASE("the slow-query log and metrics.max_pools: defaults, values, limits") {
  auto defaults = load(kBase);
  REQUIRE_MESSAGE(defaults.ok(), all_errors(defaults));
  CHECK(defaults.config->log.slow_query_ms == 0);
  CHECK_FALSE(defaults.config->log.slow_query_parameters);
  CHECK(defaults.config->metrics.max_pools == 100);
  auto set =
      load(kBase + "log:\n  slow_query_ms: 250\n  slow_query_parameters: true\nmetrics:\n  max_pools: 7\n");
  REQUIRE_MESSAGE(set.ok(), all_errors(set));
  CHECK(set.config->log.slow_query_ms == 250);
  CHECK(set.config->log.slow_query_parameters);
  CHECK(set.config->metrics.max_pools == 7);
  CHECK_FALSE(load(kBase + "log: {slow_query_ms: -1}\n").ok());
  CHECK_FALSE(load(kBase + "log: {slow_query_parameters: maybe}\n").ok());
  CHECK_FALSE(load(kBase + "metrics: {max_pools: 0}\n").ok());
  CHECK(has_error(load(kBase + "metrics: {max_pool: 3}\n"), 9, "unknown key 'max_pool'"));
}

TEST_CASE("the example conf/pgrouter.yaml is valid") {
  fs::path path = example_config_path();
  INFO(path.string());
  REQUIRE(fs::exists(path));
  auto result = load_config_file(path.string());
  REQUIRE_MESSAGE(result.ok(), all_errors(result));
  CHECK(result.config->databases.size() == 2);
  CHECK(result.config->users.size() == 2);
  CHECK(result.config->auth.size() == 3);
}

TEST_CASE("errors carry the line and column of the offending key or value") {
  SUBCASE("unknown key, with a hint") {
    auto r = load(kBase + "pool:\n  szie: 3\n");
    CHECK_FALSE(r.ok());
    CHECK(has_error(r, 10, "did you mean 'size'", 3));
    CHECK(r.errors.front().to_string() == "test.yaml:10:3: unknown key 'szie' in pool; did you mean 'size'?");
  }
  SUBCASE("unknown section") { CHECK(has_error(load(kBase + "databse: []\n"), 9, "unknown key 'databse'")); }
  SUBCASE("ports") {
    auto r = load(kBase + "listen:\n  port: 0\nadmin:\n  port: 70000\n");
    CHECK(has_error(r, 10, "'port' must be an integer from 1 to 65535", 9));
    CHECK(has_error(r, 12, "from 0 to 65535"));
    CHECK(has_error(load(kBase + "listen: {port: abc}\n"), 9, "not 'abc'"));
  }
  SUBCASE("sizes and durations") {
    auto r = load(kBase + "listen:\n  max_message_size: 12XB\n  client_login_timeout: 5 weeks\n");
    CHECK(has_error(r, 10, "max_message_size"));
    CHECK(has_error(r, 11, "client_login_timeout"));
    CHECK(has_error(load(kBase + "listen: {max_message_size: 0}\n"), 9, "above 0"));
    CHECK(has_error(load(kBase + "pool: {connect_timeout: 0s}\n"), 9, "positive duration"));
    CHECK(has_error(load(kBase + "listen: {shutdown_timeout: 0}\n"), 9, "positive duration"));
  }
  SUBCASE("takeover socket: an absolute path that fits a sockaddr_un") {
    CHECK(has_error(load(kBase + "listen: {takeover_socket: run/t.sock}\n"), 9, "absolute path"));
    CHECK(has_error(load(kBase + "listen: {takeover_socket: /" + std::string(120, 'x') + "}\n"), 9,
                    "shorter than 108"));
    auto r = load(kBase + "listen: {takeover_socket: /run/pgrouter/t.sock, takeover_client_wait: 0}\n");
    REQUIRE(r.ok());
    CHECK(r.config->listen.takeover_socket == "/run/pgrouter/t.sock");
    CHECK(r.config->listen.takeover_client_wait.count() == 0);
  }
  SUBCASE("pool ranges, min_size above size, also in a database override") {
    auto r = load(kBase + "pool:\n  size: 0\n  queue_size: -1\n");
    CHECK(has_error(r, 10, "'size' must be an integer from 1"));
    CHECK(has_error(r, 11, "queue_size"));
    CHECK(has_error(load(kBase + "pool:\n  size: 2\n  min_size: 3\n"), 10,
                    "min_size (3) must not exceed size (2)"));
    auto merged = load(
        "version: 1\npool: {min_size: 5}\ndatabases:\n  - name: app\n    shards: [{primary: {host: h}}]\n"
        "    pool: {size: 4}\nusers: [{name: u, password: p}]\n");
    CHECK(has_error(merged, 6, "min_size (5) must not exceed size (4)"));
  }
  SUBCASE("enumerations") {
    CHECK(has_error(load(kBase + "pool: {mode: statement}\n"), 9, "one of session | transaction"));
    CHECK(has_error(load(kBase + "listen: {scheduling: fifo}\n"), 9, "one of batch | normal"));
    auto batch = load(kBase + "listen: {scheduling: batch}\n");
    REQUIRE_MESSAGE(batch.ok(), all_errors(batch));
    CHECK(batch.config->listen.scheduling == pgrouter::control::Scheduling::batch);
    CHECK(has_error(load(kBase + "pool: {unnamed_statements: cache}\n"), 9, "one of pass | prepare"));
    auto prepare = load(kBase + "pool: {unnamed_statements: prepare}\n");
    REQUIRE_MESSAGE(prepare.ok(), all_errors(prepare));
    CHECK(prepare.config->pool.unnamed_statements == pgrouter::control::UnnamedStatements::prepare);
    CHECK(batch.config->listen.send_batching == pgrouter::control::SendBatching::io_uring);  // the default
    CHECK(has_error(load(kBase + "listen: {send_batching: epoll}\n"), 9, "one of io_uring | off"));
    auto off = load(kBase + "listen: {send_batching: \"off\"}\n");
    REQUIRE_MESSAGE(off.ok(), all_errors(off));
    CHECK(off.config->listen.send_batching == pgrouter::control::SendBatching::off);
    CHECK(off.config->listen.tcp_defer_accept);  // the default, as PgBouncer's on Linux
    auto no_defer = load(kBase + "listen: {tcp_defer_accept: false}\n");
    REQUIRE_MESSAGE(no_defer.ok(), all_errors(no_defer));
    CHECK_FALSE(no_defer.config->listen.tcp_defer_accept);
    CHECK(has_error(load(kBase + "listen: {tcp_defer_accept: 45}\n"), 9, "one of true | false"));
    CHECK(has_error(load(kBase + "log: {level: verbose}\n"), 9, "debug | info | warn | error"));
    CHECK(has_error(load(kBase + "auth:\n  - method: password\n"), 10, "scram-sha-256 | md5 | trust | reject",
                    13));
  }
  SUBCASE("addresses") {
    auto r = load(kBase +
                  "auth:\n  - addresses: [10.0.0.0/33, \"::1/129\", 300.1.1.1, 10.0.0.0/8, ::1, fe80::/x]\n");
    CHECK(has_error(r, 10, "'10.0.0.0/33'"));
    CHECK(has_error(r, 10, "'::1/129'"));
    CHECK(has_error(r, 10, "'300.1.1.1'"));
    CHECK(has_error(r, 10, "'fe80::/x'"));
    CHECK(r.errors.size() == 4);
  }
  SUBCASE("duplicate names and keys") {
    auto r = load(kBase + "auth:\n  - method: trust\n    method: md5\n");
    CHECK(has_error(r, 11, "duplicate key 'method'", 5));
    auto dup = load(
        "version: 1\ndatabases:\n  - {name: a, shards: [{primary: {host: h}}]}\n"
        "  - {name: a, shards: [{primary: {host: h}}]}\nusers: [{name: u, password: p}, {name: u, password: "
        "q}]\n");
    CHECK(has_error(dup, 4, "duplicate name 'a' in databases (first at line 3)"));
    CHECK(has_error(dup, 5, "duplicate name 'u' in users"));
  }
  SUBCASE("required keys and lists") {
    auto r = load("listen: {}\ndatabases: []\nusers:\n  - password: x\n");
    CHECK(has_error(r, 1, "missing required key 'version'"));
    CHECK(has_error(r, 2, "'databases' must be a list of at least 1 entry"));
    CHECK(has_error(r, 4, "missing required key 'name'"));
    CHECK(has_error(
        load("version: 1\ndatabases:\n  - name: x\n    shards: []\nusers: [{name: u, password: p}]\n"), 4,
        "'shards' must be a list"));
    CHECK(has_error(load("version: 1\ndatabases:\n  - name: x\n    shards: [{replicas: []}]\nusers: [{name: "
                         "u, password: p}]\n"),
                    4, "a shard needs one of 'primary' (fixed roles, with optional 'replicas') or 'hosts'"));
    CHECK(has_error(load("version: 2\n"), 1, "unsupported config version '2'", 10));
    CHECK(has_error(load(kBase + "listen: [1, 2]\n"), 9, "'listen' must be a map"));
  }
  SUBCASE("secrets") {
    CHECK(has_error(load(kBase + "    password_env: HOME\n"), 9,
                    "'password' and 'password_env' are alternatives"));
    auto missing = load(kBase + "  - name: nosecret\nauth:\n  - method: md5\n");
    CHECK(has_error(missing, 9, "user 'nosecret' has no password"));
    CHECK(has_error(missing, 9, "auth rule at line 11"));
    auto bad_hashes =
        load(kBase + "  - name: h\n    scram_verifier: SCRAM-SHA-256$1:abc\n    md5_hash: md5xyz\n");
    CHECK(has_error(bad_hashes, 10, "SCRAM-SHA-256$<iterations>"));
    CHECK(has_error(bad_hashes, 11, "32 hex digits"));
  }
  SUBCASE("a user without a secret is fine when every rule for it is trust or reject") {
    auto r = load(
        "version: 1\ndatabases: [{name: d, shards: [{primary: {host: h}}]}]\n"
        "users: [{name: t}, {name: p, password: x}]\n"
        "auth:\n  - {method: trust, users: [t]}\n  - {method: reject, users: [all]}\n"
        "  - {method: md5, users: [p]}\n");
    CHECK_MESSAGE(r.ok(), all_errors(r));
  }
  SUBCASE("YAML syntax errors") {
    auto r = load("version: 1\nlisten: {port: 1\n");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].line >= 2);
    CHECK(load("").errors.at(0).message == "the config is empty");
  }
  SUBCASE("all errors are reported, in file order") {
    auto r = load(kBase + "listen: {port: 0, workers: -1}\npool: {mode: x}\nlog: {level: y}\n");
    REQUIRE(r.errors.size() == 4);
    CHECK(r.errors[0].line == 9);
    CHECK(r.errors[1].line == 9);
    CHECK(r.errors[1].column > r.errors[0].column);
    CHECK(r.errors[2].line == 10);
    CHECK(r.errors[3].line == 11);
  }
}

TEST_CASE("${VAR} is substituted in values; an unset variable is an error") {
  ::setenv("PGROUTER_TEST_HOST", "db.example", 1);
  ::setenv("PGROUTER_TEST_PORT", "6543", 1);
  ::unsetenv("PGROUTER_TEST_UNSET");
  auto r = load(kBase +
                "listen:\n  host: ${PGROUTER_TEST_HOST}\n  port: \"${PGROUTER_TEST_PORT}\"\n"
                "admin:\n  host: pre-${PGROUTER_TEST_HOST}-post\n");
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  CHECK(r.config->listen.host == "db.example");
  CHECK(r.config->listen.port == 6543);
  CHECK(r.config->admin.host == "pre-db.example-post");

  auto unset = load(kBase + "listen:\n  host: ${PGROUTER_TEST_UNSET}\n  port: ${PGROUTER_TEST_PORT\n");
  CHECK(has_error(unset, 10, "environment variable 'PGROUTER_TEST_UNSET' is not set", 9));
  CHECK(has_error(unset, 11, "unterminated"));
}

TEST_CASE("secrets come from files (trailing newline stripped) and from the environment") {
  TempDir dir;
  dir.write("app.password", "from-file\n");
  dir.write("backend.password", "backend-from-file\r\n");
  ::setenv("PGROUTER_TEST_SECRET", "from-env", 1);
  fs::path config = dir.write("pgrouter.yaml",
                              "version: 1\n"
                              "databases: [{name: d, shards: [{primary: {host: h}}]}]\n"
                              "users:\n"
                              "  - name: a\n"
                              "    password_file: app.password\n"  // relative to the config file
                              "    backend_password_file: " +
                                  (dir.path / "backend.password").string() +
                                  "\n"
                                  "  - name: b\n"
                                  "    password_env: PGROUTER_TEST_SECRET\n");
  auto r = load_config_file(config.string());
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  CHECK(r.config->users[0].password == "from-file");
  CHECK(r.config->users[0].backend_password == "backend-from-file");
  CHECK(r.config->users[1].password == "from-env");
  CHECK(r.config->users[1].backend_password == "from-env");
  CHECK(r.config->source == config.string());

  auto missing = load(
      kBase +
      "  - name: c\n    password_file: /nonexistent/pw\n    backend_password_env: PGROUTER_TEST_UNSET\n");
  CHECK(has_error(missing, 10, "cannot read '/nonexistent/pw'"));
  CHECK(has_error(missing, 11, "environment variable 'PGROUTER_TEST_UNSET' is not set"));

  auto tls = load(kBase + "tls:\n  cert_file: /nonexistent/cert.pem\n");
  CHECK(has_error(tls, 10, "cannot read"));
  CHECK(has_error(tls, 10, "both cert_file and key_file"));

  auto unreadable = load_config_file((dir.path / "absent.yaml").string());
  REQUIRE(unreadable.errors.size() == 1);
  CHECK(unreadable.errors[0].to_string().find("absent.yaml: cannot read config file") != std::string::npos);
}

TEST_CASE("parse_duration") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("5s") == 5s);
  CHECK(parse_duration("10m") == 10min);
  CHECK(parse_duration("1h") == 1h);
  CHECK(parse_duration("30") == 30s);
  CHECK(parse_duration("0") == 0ms);
  CHECK(parse_duration("5 s") == 5s);
  for (const char* bad : {"", "s", "-5s", "1.5s", "5sec", "5d", "ms5", "99999999999999999999h"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_duration(bad));
  }
}

TEST_CASE("match_auth: first matching rule by user, database and address") {
  auto r = load(R"(version: 1
databases: [{name: app, shards: [{primary: {host: h}}]}, {name: admin, shards: [{primary: {host: h}}]}]
users: [{name: alice, password: a}, {name: bob, password: b}]
auth:
  - {method: reject, users: [bob], databases: [admin]}
  - {method: trust, addresses: [127.0.0.1/32, "::1"]}
  - {method: md5, databases: [admin], addresses: [10.1.0.0/16]}
  - {method: scram-sha-256, users: [all], databases: [all], addresses: [10.0.0.0/8, "2001:db8::/32"]}
)");
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  const Config& c = *r.config;
  auto method = [&](std::string_view user, std::string_view db, std::string_view address) -> std::string {
    const AuthRule* rule = c.match_auth(user, db, address);
    if (rule == nullptr) return "none";
    return std::to_string(rule->line);
  };
  CHECK(method("bob", "admin", "127.0.0.1") == "5");  // earlier rule wins over the trust rule
  CHECK(method("alice", "admin", "127.0.0.1") == "6");
  CHECK(method("alice", "app", "::1") == "6");
  CHECK(method("alice", "app", "::ffff:127.0.0.1") == "6");  // IPv4-mapped matches the IPv4 rule
  CHECK(method("alice", "admin", "10.1.2.3") == "7");
  CHECK(method("alice", "admin", "::ffff:10.1.2.3") == "7");
  CHECK(method("alice", "app", "10.1.2.3") == "8");
  CHECK(method("alice", "admin", "10.2.0.1") == "8");
  CHECK(method("alice", "app", "2001:db8:1::5") == "8");
  CHECK(method("alice", "app", "2001:db9::5") == "none");
  CHECK(method("alice", "app", "11.0.0.1") == "none");
  CHECK(method("alice", "app", "127.0.0.2") == "none");
  CHECK(method("alice", "app", "not an address") == "none");
  CHECK(c.auth[1].method == AuthMethod::trust);

  // Prefixes that do not end on a byte boundary.
  auto narrow = load(kBase + "auth:\n  - addresses: [192.168.1.64/27, \"fe80::/10\"]\n");
  REQUIRE_MESSAGE(narrow.ok(), all_errors(narrow));
  CHECK(narrow.config->match_auth("app", "app", "192.168.1.95") != nullptr);
  CHECK(narrow.config->match_auth("app", "app", "192.168.1.96") == nullptr);
  CHECK(narrow.config->match_auth("app", "app", "192.168.1.63") == nullptr);
  CHECK(narrow.config->match_auth("app", "app", "febf::1%eth0") != nullptr);
  CHECK(narrow.config->match_auth("app", "app", "fec0::1") == nullptr);
}

TEST_CASE("admin console settings: defaults, users that must exist, a name that must not be a database's") {
  auto plain = load(kBase);
  REQUIRE_MESSAGE(plain.ok(), all_errors(plain));
  CHECK(plain.config->admin.database == "pgrouter");
  CHECK(plain.config->admin.admin_users.empty());
  auto r = load(kBase + "admin: {database: console, admin_users: [app], stats_users: app}\n");
  REQUIRE_MESSAGE(r.ok(), all_errors(r));
  CHECK(r.config->admin.database == "console");
  CHECK(r.config->admin.admin_users == std::vector<std::string>{"app"});
  CHECK(r.config->admin.stats_users == std::vector<std::string>{"app"});
  CHECK(has_error(load(kBase + "admin: {admin_users: [app, ghost]}\n"), 9,
                  "admin.admin_users: 'ghost' is not a user under 'users:'"));
  CHECK(has_error(load(kBase + "admin: {stats_users: [ghost]}\n"), 9, "admin.stats_users: 'ghost'"));
  CHECK(has_error(load(kBase + "admin: {database: app}\n"), 9, "also the name of a database"));
}
