// One connection from pgrouter to a PostgreSQL server: connect, log in (SCRAM-SHA-256, md5, cleartext
// or trust, as the server asks), remember its parameters and key, and run the reset query.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>
#include <memory>
#include <string>
#include <string_view>

#include "pgrouter/asio.hpp"
#include "pgrouter/net/readiness.hpp"
#include "pgrouter/net/server_tls.hpp"
#include "pgrouter/pool/server_statements.hpp"
#include "pgrouter/protocol/codec.hpp"

namespace pgrouter::pool {

using Clock = std::chrono::steady_clock;

struct ServerTarget {
  std::string host;
  uint16_t port = 5432;
  std::string dbname;
  std::string user;
  std::string password;
  // Without a password (a user from auth_file or auth_query): its md5 hash ("md5...") answers md5 logins;
  // its SCRAM ClientKey and ServerKey (raw, learnt from a client's SCRAM login) answer SCRAM logins.
  std::string md5_hash;
  std::string scram_client_key;
  std::string scram_server_key;
  net::ServerTlsSettings tls;
  // The context for tls (shared with every pool of the same files, so equal settings compare equal);
  // null with tls_error set when its files could not be loaded.
  std::shared_ptr<net::ClientTlsContext> tls_ctx;
  std::string tls_error;
  bool operator==(const ServerTarget&) const = default;
};

// Why a connect or login failed, in the terms the client will be told.
struct ServerError {
  std::string sqlstate;  // the server's own code when it sent an ErrorResponse, else 08001/08006
  std::string message;
  bool from_server = false;
};

class ServerConnection {
 public:
  explicit ServerConnection(asio::any_io_executor ex) : socket(ex), buffer(8192) {}
  tcp::socket socket;
  net::SslPtr ssl;          // set when the connection is encrypted: every byte then goes through it
  protocol::Buffer buffer;  // bytes read from the server not yet relayed
  ServerTarget target;
  uint32_t backend_pid = 0;
  uint32_t backend_secret = 0;
  std::map<std::string, std::string> params;   // ParameterStatus as last reported
  std::map<std::string, std::string> applied;  // client settings pgrouter SET here since the last reset
  // The settings this server was last found (or made) to have, as the digest of what the client that
  // checked wanted (ClientSession::params_sql): any client wanting the same settings takes the server as it
  // is, without comparing them one by one. Cleared whenever `applied` or `params` change. {} = unknown.
  struct SettingsDigest {
    uint64_t lo = 0, hi = 0;
    bool operator==(const SettingsDigest&) const = default;
  };
  SettingsDigest settled;
  // A ParameterStatus the server sent: into `params`, and `settled` no longer holds.
  void set_param(std::string_view name, std::string_view value) {
    params[std::string(name)] = std::string(value);
    settled = {};
  }
  Clock::time_point created;
  Clock::time_point idle_since;
  Clock::time_point checked_out;  // lent to its current client (transaction duration)
  char tx_status = 'I';
  uint64_t generation = 0;      // pool generation it was opened for; stale ones are closed at check-in
  ServerStatements statements;  // transaction pooling: prepared here by pgrouter, by server-side name
  // CancelRequests pgrouter sent for this connection that PostgreSQL has not yet taken: the connection is
  // not handed to another client before they are, or a late cancel could hit that client's query.
  std::shared_ptr<int> cancels_in_flight = std::make_shared<int>(0);
  bool dirty = false;  // carries session state a client left (pinned under transaction pooling): reset it
  net::SocketReadiness ready;  // relay-path readiness of `socket` (registered on first attach)

  // Cheap liveness check for an idle connection: a non-blocking peek. False if the server closed it
  // or sent something unsolicited (e.g. a FATAL on shutdown).
  bool looks_alive();
  // Login and reset I/O, through TLS when it is on (the relay uses `ready`, which knows `ssl` too).
  awaitable<net::error_code> read_exact(char* dst, size_t n);
  awaitable<net::error_code> write_all(const std::string& data);
  // Before the socket is closed: a Terminate (and TLS close_notify) without waiting. Best effort.
  void say_goodbye();
  // How long run_quietly waits for the server (the pool's connect_timeout, set by connect_server); 0 =
  // forever.
  std::chrono::milliseconds quiet_timeout{0};
  // Runs a simple query and discards the result; false if it failed, the connection broke or the server did
  // not answer within quiet_timeout (then the connection must be closed: the server may answer later).
  awaitable<bool> run_quietly(const std::string& sql, ServerError* err = nullptr);
  // Runs sql with one text parameter (extended protocol, unnamed statement) and collects its rows as text
  // (nullopt = NULL); false as run_quietly. For auth_query.
  using Rows = std::vector<std::vector<std::optional<std::string>>>;
  awaitable<bool> run_lookup(const std::string& sql, const std::string& param, Rows& rows,
                             ServerError* err = nullptr);

 private:
  // The messages in `out`, then what the server answers until ReadyForQuery; `label` names them in errors.
  awaitable<bool> run_messages(std::string out, std::string label, Rows* rows, ServerError* err);

 public:
};

// Opens and logs in; nullptr with err filled on failure. Never throws for network errors.
awaitable<std::unique_ptr<ServerConnection>> connect_server(asio::any_io_executor ex,
                                                            const ServerTarget& target,
                                                            std::chrono::milliseconds timeout,
                                                            ServerError& err);

// SSLRequest, then the handshake when the server says 'S' (libpq's order and sslmode rules). True when
// the connection may go on, encrypted (c.ssl set) or, with disable or a prefer answered 'N', not.
awaitable<bool> start_tls(ServerConnection& c, const ServerTarget& t, ServerError& err);

// The longest message a server may send during login: libpq refuses an authentication request over 2000
// bytes and an error over 30000; anything longer is garbage or an attack.
constexpr uint32_t kMaxLoginMessage = 30000;
// The longest message accepted in the answer to a reset or a SET (run_quietly): a notice or notification
// queued there is at most a few kB.
constexpr uint32_t kMaxQuietMessage = 1u << 20;

// Reads exactly one message from a server during login/reset (not on the relay path). False when the
// connection broke or the length is < 4 or > max_length (checked before reading or allocating the body), with
// *why saying which, as "<what the server did>" ("closed the connection ...", "sent an invalid message length
// ...").
awaitable<bool> read_server_message(ServerConnection& c, char& type, std::string& body,
                                    uint32_t max_length = kMaxQuietMessage, std::string* why = nullptr);

}  // namespace pgrouter::pool
