// The configuration model: one immutable snapshot per load, published as shared_ptr<const Config>.
// Every key is declared once in config.cpp's key table (type, default, reloadable, validator).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pgrouter/net/server_tls_settings.hpp"
#include "pgrouter/sharding/key.hpp"

namespace pgrouter::control {

using Millis = std::chrono::milliseconds;

enum class PoolMode { session, transaction };
enum class Scheduling { batch, normal };    // listen.scheduling: the worker threads' Linux policy
enum class SendBatching { io_uring, off };  // listen.send_batching: how a batch's relayed sends are made
enum class AuthMethod { scram_sha_256, md5, trust, reject };

struct Endpoint {
  std::string host;
  uint16_t port = 5432;
  int weight = 1;  // for replicas (later issues)
  // This backend's own TLS keys (unset/empty: server_tls's), and `tls`, the two merged at load.
  std::optional<net::SslMode> sslmode;
  std::string sslrootcert, sslcert, sslkey;
  net::ServerTlsSettings tls;
};

// Backends are numbered 0 (primary) and 1..n (replicas, in order). With `hosts:` (role: auto), primary is
// hosts[0] and replicas the others only for numbering: which host is the primary is found by probing
// (the one not in recovery, on the newest timeline), so it follows a promotion without a reload.
struct ShardConfig {
  Endpoint primary;
  std::vector<Endpoint> replicas;
  std::vector<Endpoint> hosts;  // as written in the config (role: auto); empty with fixed roles
  bool auto_roles = false;
  // The database's name on this shard's servers (empty: the database's dbname), so several shards can be
  // databases of one server.
  std::string dbname;
  size_t backends() const { return replicas.size() + 1; }
  const Endpoint& backend(size_t i) const { return i == 0 ? primary : replicas.at(i - 1); }
};

enum class SessionFeatures { pin, refuse };
// Transaction pooling: what becomes of a client's unnamed statement (protocol Parse with an empty name).
enum class UnnamedStatements { pass, prepare };

struct PoolConfig {
  PoolMode mode = PoolMode::session;
  int size = 20;     // max server connections per (database, user), over all workers
  int min_size = 0;  // kept open per (database, user)
  Millis connect_timeout{5000};
  Millis idle_timeout{600000};   // idle server connections older than this are closed
  Millis max_lifetime{3600000};  // server connections older than this are closed at check-in
  int queue_size = 1000;         // clients allowed to wait for a server per pool
  Millis queue_timeout{30000};   // a waiting client gets 53300 after this
  std::string reset_query = "DISCARD ALL";
  // 0 = off. Checked once a second by each worker; each ends the client's connection with a FATAL.
  Millis query_timeout{0};             // a request running longer (57014)
  Millis idle_transaction_timeout{0};  // idle inside a transaction longer (25P03)
  Millis client_idle_timeout{0};       // idle outside a transaction longer (57P05)
  // Transaction pooling: prepared statements pgrouter keeps per server connection (LRU; 0 = no bound).
  int prepared_statements_cache = 500;
  // pass: sent as the client sent it (the server parses and plans it each time); prepare: from the second
  // time a worker sees its text, prepared under a shared name on each server connection and reused while its
  // text, parameter types and parse settings (search_path, TimeZone, ...) repeat.
  UnnamedStatements unnamed_statements = UnnamedStatements::pass;
  // Transaction pooling and session features it cannot carry (LISTEN, advisory locks, ...): pin the
  // client to its server for the rest of its session, or refuse the statement with 0A000.
  SessionFeatures session_features = SessionFeatures::pin;
  // Session parameters carried across servers on top of the built-in list.
  std::vector<std::string> track_parameters;
};

// Read/write splitting (transaction pooling only: a session-mode client keeps its primary server).
enum class ReadFrom { replicas, primary, any };
enum class ReplicaStrategy { round_robin, random, least_outstanding, weighted };
struct RoutingConfig {
  ReadFrom read_from = ReadFrom::replicas;  // where reads outside write transactions go
  ReplicaStrategy strategy = ReplicaStrategy::round_robin;
  bool primary_fallback = true;  // reads go to the primary when no replica is eligible
  bool read_your_writes = true;  // after a client's write, its reads wait for a replica that replayed it
  Millis read_your_writes_wait{
      0};  // how long such a read waits for a replica that replayed it (0 = primary at once)
  int64_t max_lag_bytes =
      16 << 20;            // a replica further behind the primary stops getting reads (0 = no bound)
  Millis max_lag_time{0};  // a replica whose replay is further behind than this stops getting reads (0 = off)
  Millis wait_for_primary{5000};  // role: auto: how long a write waits for a host to be the primary (0 = not)
  Millis probe_interval{500};     // how often every backend is probed (pg_is_in_recovery, WAL positions)
  std::string probe_user;         // the configured user whose backend login probes use (default: the first)
  std::vector<std::string> read_only_functions;  // user functions a SELECT may call and still be a read
};

// Tenant sharding (a database with more than one shard). See docs/SHARDING.md.
enum class ShardStrategy { hash, consistent, map };
enum class Unsharded { default_shard, reject };     // a statement on tables in neither list
enum class CrossShard { scatter, reject };          // a read that needs several shards
enum class CrossShardWrites { two_phase, reject };  // a transaction that writes on several shards

// strategy: map: keys pinned to a shard, given as single keys, lists or inclusive integer ranges; a key in
// none of them goes to `fallback`.
struct ShardPin {
  std::vector<std::string> keys;    // as written (parsed with the database's key type)
  std::optional<int64_t> from, to;  // an inclusive range of integer keys
  size_t shard = 0;
};

struct ShardingConfig {
  sharding::KeyType key_type = sharding::KeyType::int8;
  ShardStrategy strategy = ShardStrategy::hash;
  ShardStrategy fallback = ShardStrategy::hash;  // strategy: map, for keys no pin names (hash|consistent)
  std::vector<ShardPin> pins;                    // strategy: map
  // Sharded table -> its key column, identifiers as PostgreSQL folds them ("users" -> "tenant_id"). A table
  // may be written schema-qualified ("app.users"); unqualified, it matches the name in any schema.
  std::vector<std::pair<std::string, std::string>> tables;
  std::vector<std::string> reference_tables;  // on every shard: reads from one, writes to all
  Unsharded unsharded = Unsharded::default_shard;
  size_t default_shard = 0;
  CrossShard cross_shard = CrossShard::scatter;
  CrossShardWrites cross_shard_writes = CrossShardWrites::two_phase;
};

// auth_query: how users not under `users:` are looked up on the servers (docs/AUTH.md). Each key set on a
// database overrides the global one.
struct AuthLookup {
  std::string auth_user;    // a configured user with a password: the query runs as it
  std::string auth_query;   // one parameter, $1 = the user name; rows of (name, secret)
  std::string auth_dbname;  // a configured database whose primary answers (default: the client's database)
};
constexpr std::string_view kDefaultAuthQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

struct AuthSourcesConfig {
  std::string auth_file;  // userlist.txt format; empty = none
  AuthLookup lookup;
  int cache_seconds = 30;          // auth_query answers that found a user are kept this long
  int negative_cache_seconds = 5;  // and answers that did not
};

struct DatabaseConfig {
  std::string name;                 // the name clients connect to ("*": any name not listed, see below)
  std::string dbname;               // the name on the servers (default: name)
  std::vector<ShardConfig> shards;  // more than one: `sharding` says which holds what
  std::optional<PoolConfig> pool;   // overrides the global pool section when set (whole section merged)
  RoutingConfig routing;
  ShardingConfig sharding;  // used when shards.size() > 1
  AuthLookup auth;          // overrides auth_sources' keys for this database
  const std::string& server_dbname(size_t shard) const {
    return shards.at(shard).dbname.empty() ? dbname : shards.at(shard).dbname;
  }
};
// The fallback entry: clients asking for a database not listed get the same-named database on its server.
constexpr std::string_view kFallbackDatabase = "*";

struct UserConfig {
  std::string name;
  // Client-side secret: one of these (password may come from password_file / password_env).
  std::string password;        // plaintext, empty if not known
  std::string scram_verifier;  // "SCRAM-SHA-256$..." if given
  std::string md5_hash;        // "md5..." if given
  // Backend login: user name and password pgrouter uses on the servers (defaults: name, password).
  std::string backend_user;
  std::string backend_password;
  // Overrides pool.mode (and the database's) for this user's connections.
  std::optional<PoolMode> pool_mode;
  // Overrides the database's routing.read_from for this user's connections (e.g. a reporting user on
  // replicas).
  std::optional<ReadFrom> read_from;
  // Overrides the database's sharding.cross_shard for this user's connections.
  std::optional<CrossShard> cross_shard;
  // Users found by auth_file or auth_query only (never set from YAML): the server login's secrets when no
  // backend_password is known (see pool::ServerTarget).
  std::string backend_md5_hash;
  std::string backend_scram_client_key;
  std::string backend_scram_server_key;
};

struct AuthRule {
  AuthMethod method = AuthMethod::scram_sha_256;
  std::vector<std::string> users;      // empty or "all" = any
  std::vector<std::string> databases;  // empty or "all" = any
  std::vector<std::string> addresses;  // CIDRs; empty or "all" = any
  int line = 0;                        // where it was declared, for logs
};

struct ListenConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 6432;
  int workers = 0;  // 0 = half the CPU cores, at least one
  // normal: SCHED_OTHER. batch: worker threads run under SCHED_BATCH (a wake-up does not preempt the running
  // task, so under CPU saturation a worker finds more events per wake-up).
  Scheduling scheduling = Scheduling::normal;
  // io_uring: the relay's sends of one batch of events go to the kernel in one io_uring_enter (see
  // net::Readiness::flush_sends); off, or io_uring unavailable: one send() each.
  SendBatching send_batching = SendBatching::io_uring;
  // TCP_DEFER_ACCEPT on the listeners (Linux; PgBouncer's tcp_defer_accept, on by default there too): a
  // connection is accepted once its first bytes arrived, not at its handshake.
  bool tcp_defer_accept = true;
  int max_client_conn = 10000;
  int max_message_size = 64 * 1024 * 1024;  // bytes; bigger (or < 4) is 08P01
  Millis client_login_timeout{15000};
  // SIGTERM: how long transactions in flight may take to finish before the remaining connections are closed.
  Millis shutdown_timeout{30000};
  // Where a successor started with --takeover asks for the listening sockets (control/takeover.hpp); empty:
  // no takeover.
  std::string takeover_socket;
  // After a takeover: how long this process keeps serving its clients (0: not at all) before it drains.
  Millis takeover_client_wait{30000};
};

struct TlsConfig {
  std::string cert_file;  // empty = no TLS; SSLRequest answered 'N'
  std::string key_file;
};

// localhost: the API's read-only calls are open to clients on 127.0.0.1 and ::1; token: they need the token.
enum class ApiReadOpen { localhost, token };

struct AdminConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 9930;  // 0 = disabled
  // The admin console: a virtual database of this name on the client listener (PgBouncer's "pgbouncer"),
  // open to admin_users (every command) and stats_users (SHOW only), each a configured user.
  std::string database = "pgrouter";
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;
  // The HTTP API (/v1 on the admin server): the bearer token of its calls, from api_token_file or
  // api_token_env (empty: calls that change something are refused), and who may read without it.
  std::string api_token;
  ApiReadOpen api_read_open = ApiReadOpen::localhost;
};

struct LogConfig {
  std::string level = "info";  // debug | info | warn | error
  // Statements whose answer took at least this long are logged ("slow query"); 0 = off, as PostgreSQL's
  // log_min_duration_statement is by default.
  int slow_query_ms = 0;
  bool slow_query_parameters = false;  // the statement text and Bind values in that line (else a fingerprint)
};

struct MetricsConfig {
  int max_pools = 100;  // per-pool series beyond this many pools are counted under labels "other"
};

struct Config {
  int version = 1;
  std::string source;  // file path, or "<embedded>"
  ListenConfig listen;
  TlsConfig tls;
  net::ServerTlsSettings server_tls;  // TLS to servers: the default of every backend
  AdminConfig admin;
  LogConfig log;
  MetricsConfig metrics;
  PoolConfig pool;
  std::vector<DatabaseConfig> databases;
  std::vector<UserConfig> users;
  std::vector<AuthRule> auth;  // ordered; first match wins; no match = 28000
  AuthSourcesConfig auth_sources;

  // The entry named exactly so (never the fallback "*").
  const DatabaseConfig* find_database(std::string_view name) const;
  const DatabaseConfig* fallback_database() const { return find_database(kFallbackDatabase); }
  // The auth_query settings of a database (its own keys over auth_sources'); auth_user empty = no lookup.
  AuthLookup auth_lookup_for(const DatabaseConfig& db) const;
  const UserConfig* find_user(std::string_view name) const;
  const PoolConfig& pool_for(const DatabaseConfig& db) const { return db.pool ? *db.pool : pool; }
  // The pool settings of a (database, user): the database's, with the user's pool_mode if it has one.
  PoolConfig pool_for(const DatabaseConfig& db, const UserConfig& user) const {
    PoolConfig c = pool_for(db);
    if (user.pool_mode) c.mode = *user.pool_mode;
    return c;
  }
  // First rule matching user, database and client address (dotted IPv4/IPv6 text); nullptr if none.
  const AuthRule* match_auth(std::string_view user, std::string_view database,
                             std::string_view address) const;
};

struct ConfigError {
  std::string file;
  int line = 0;  // 1-based; 0 = not tied to a line
  int column = 0;
  std::string message;
  std::string to_string() const;  // "file:line:col: message"
};

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when errors is not empty
  std::vector<ConfigError> errors;
  bool ok() const { return config != nullptr; }
};

// Reads YAML, substitutes ${ENV} in scalar values, reads *_file secrets, validates every key.
// Unknown keys are errors (a typo must not silently fall back to a default).
LoadResult load_config_file(const std::string& path);
LoadResult load_config_string(const std::string& yaml, const std::string& source_name);

// Parses "250ms", "5s", "10m", "1h"; a bare number means seconds. nullopt if malformed.
std::optional<Millis> parse_duration(std::string_view text);

}  // namespace pgrouter::control
