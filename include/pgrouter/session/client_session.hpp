// One client connection from accept to close, as one coroutine with named stages:
// startup (SSL/GSSENC/cancel/negotiation) -> authenticate -> attach a server -> relay -> cleanup.
#pragma once
#include <array>
#include <memory>
#include <string>

#include "pgrouter/admin/command.hpp"
#include "pgrouter/admin/snapshot.hpp"
#include "pgrouter/asio.hpp"
#include "pgrouter/net/io.hpp"
#include "pgrouter/net/readiness.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/session/running_legs.hpp"
#include "pgrouter/session/scatter_request.hpp"
#include "pgrouter/sharding/copy_rows.hpp"
#include "pgrouter/sharding/two_phase.hpp"
#include "pgrouter/session/slow_query_log.hpp"
#include "pgrouter/session/startup_reset.hpp"
#include "pgrouter/sql/classifier.hpp"
#include "pgrouter/sql/shard_key.hpp"
#include "pgrouter/session/txn_replay.hpp"
#include "pgrouter/session/txn_tracker.hpp"
#include "pgrouter/worker.hpp"

namespace pgrouter::session {

struct ShardLeg;
struct PrepareOnly;

class ClientSession {
 public:
  // fd: the accepted client connection (non-blocking; the session closes it); peer: its address.
  ClientSession(Worker& worker, int fd, const tcp::endpoint& peer);
  ~ClientSession();
  awaitable<void> run();
  // Before login() (which runs once the accept loop's batch is done): counts the client, registers its
  // socket, starts the login timeout, and answers an SSLRequest or GSSENCRequest that is already there.
  // False: the connection cannot be served (logged).
  bool begin_login();

  // Called on this session's worker thread when a CancelRequest with its key arrives.
  void forward_cancel();
  // A CancelRequest's key: the client's running query is cancelled (on whichever worker serves it), else the
  // key goes to the process this one took over (Runtime::predecessor). Any thread.
  static void cancel_by_key(Runtime& rt, uint32_t pid, uint32_t secret);
  bool secret_matches(uint32_t secret) const;
  // Called once a second by the worker: enforces pool.query_timeout, idle_transaction_timeout and
  // client_idle_timeout by ending the session with a FATAL.
  void check_timeouts(pool::Clock::time_point now);
  // Called by the worker when listen.client_login_timeout passed before the login finished: the socket is
  // shut down and its pending operations cancelled, so login() ends there.
  void login_timed_out();
  // While the worker drains (SIGTERM): a client outside any transaction, with nothing in flight and nothing
  // unread, is ended with the FATAL PostgreSQL sends at shutdown (57P01). True when it was.
  bool end_if_idle_at_shutdown();
  // The admin console (client_admin.cpp): what SHOW CLIENTS/SERVERS/POOLS say of this session, and KILL
  // (ended as the timeouts end a client: FATAL 57P01 after what is in flight).
  admin::SessionRow admin_row() const;
  admin::ConnectionRow server_row(const pool::ServerConnection& server, const pool::Pool* pool,
                                  const admin::ConnectionRow& client) const;
  // The servers of a transaction across shards (client_coordinated.cpp), for admin_row.
  std::vector<std::pair<const pool::ServerConnection*, const pool::Pool*>> coordinated_servers() const;
  void admin_kill();

 private:
  // The admin console (client_admin.cpp), a session of admin.database: its login after authentication (false:
  // refused, or the client is gone), then its command loop, which replaces the relay.
  awaitable<bool> console_login();
  awaitable<void> run_console();
  awaitable<net::error_code> console_read(char* dst, size_t n);
  awaitable<net::error_code> console_read_message(char& type, std::string& body);
  // The answer to one message, appended to out; false: the session ends after it is sent.
  awaitable<bool> console_message(char type, std::string_view body, std::string& out);
  awaitable<void> console_query(std::string_view sql, std::string& out);
  awaitable<void> console_command(admin::Command cmd, std::string& out);
  bool end_console_at_shutdown();
  // PAUSE: a transaction (or a session-pooled login) of a paused database waits here for RESUME.
  awaitable<void> wait_while_paused();
  bool console_ = false;             // a session of admin.database
  bool console_stats_only_ = false;  // its user is in admin.stats_users only: SHOW commands
  bool console_ending_ = false;      // the drain ends it: FATAL 57P01, then close
  bool console_skipping_ = false;    // an extended batch was refused: the rest of it is skipped to its Sync
  pool::Clock::time_point paused_since_{};  // waiting in wait_while_paused() since (epoch: not)
  std::chrono::system_clock::time_point connected_at_ = std::chrono::system_clock::now();

  void pin(std::string_view feature);
  // Transaction pooling: runs one client message through the tracker; true when it was replaced
  // (the replacement is in c2s_repl_).
  bool track_client_message(char type, std::string_view body);
  // Read/write splitting (client_routing.cpp): the backend for the transaction whose first messages are
  // d[0..n) (0 = primary, i = replica i-1; -1 = none may take it), and the bookkeeping at its end
  // (read-your-writes). attach_backend() chooses, takes a server from that backend's pool (another
  // backend when a replica cannot be reached) and gives it the client's settings; false with
  // pending_fatal_* set when no server could be had. from_mark: route the bytes kept for a read retry.
  bool routes_reads() const;  // transaction pooling with replicas to route reads to
  int choose_backend(const char* d, size_t n);
  // What the complete messages in d[0..n) do: any = some message was classified, all_read = each of those is
  // a read, writes = some statement may change data (also a function call or a Bind of a non-read).
  struct BatchReads {
    bool any, all_read, writes;
    sql::RouteHint hint;
  };
  BatchReads classify_batch(const char* d, size_t n);
  // A client attached to a replica for a read batch it has synced sends a batch that may write before the
  // read's answers are in: it waits for them, so the replica's server is given back and the write is routed
  // (to the primary) like any new transaction, instead of failing there with 25006.
  awaitable<void> hold_write_behind_replica_read();
  static constexpr int kNoReplica = -1;  // choose_backend: a read nothing may take (primary_fallback false)
  static constexpr int kNoPrimary = -2;  // choose_backend: role: auto and no host is the primary now
  static constexpr int kAwaitReplay =
      -3;  // choose_backend: read-your-writes holds the read; wait and ask again
  // choose_backend: a read held back by read-your-writes (no probe of the primary since the write, or no
  // replica replayed it yet while one would be eligible otherwise) goes to the primary, or, before
  // ryw_give_up_at_ (routing.read_your_writes_wait), is kAwaitReplay.
  int ryw_held(int primary);
  // attach_backend(), first round chosen already: `chosen` is what choose_backend() returned for it
  // (kNotChosen: nothing yet). from_line: line_ waited in that backend's pool and was woken without a
  // server (a slot offered, a timeout): its first acquire goes on from there.
  awaitable<bool> attach_backend(bool from_mark, int chosen = kNotChosen, bool from_line = false);
  static constexpr int kNotChosen = -100;
  // The start of a transaction without a coroutine when it needs no wait: routes it and takes an idle
  // server with this client's settings (kAttached); kNeedsParams: attached, but the server needs the
  // client's settings first (settle_params()); otherwise the choice made, for attach_backend() to go on.
  static constexpr int kAttached = -101;
  static constexpr int kNeedsParams = -102;
  int attach_now();
  void start_routing();   // the deadlines of a routing decision (read-your-writes), from now
  void refresh_config();  // a reload since the last transaction: route with the new replica list
  // The server was just taken from its pool: counted, marked dirty for a pinned client; true when it has
  // the client's settings already, else settle_params() gives them.
  bool server_taken();
  // Gives the server the client's settings; on failure gives it back and sets pending_fatal_*. A replica that
  // breaks or goes away meanwhile (nothing of the client's was sent yet) is taken out of rotation and the
  // transaction routed again (attach_backend, from_mark as there).
  awaitable<bool> settle_params(bool from_mark = false);
  void transaction_ended();
  // The primary's backend: 0 with fixed roles; with role: auto the one probes found (or < 0: none now).
  int primary_backend();
  // role: auto: waits (polling the probes' findings) until a host is the primary or give_up_at passes.
  awaitable<int> await_primary(pool::Clock::time_point give_up_at);
  std::string no_primary_message();  // what the client is told when no host is the primary
  const routing::BackendHealth* health_of(int backend);
  // Read retry (read_retry.cpp): a read routed to a replica keeps its client bytes (client_buf_'s mark)
  // until the first byte of its answer reaches the client; if the replica breaks before that, another
  // backend gets the same bytes.
  struct ClientMessages;  // the client -> server scan handler (relay_handlers.hpp)
  struct ServerReplies;   // the server -> client scan handler (relay_handlers.hpp)
  void open_retry_window();
  void close_retry_window();
  // Whether a server message in the retry window says the server is going away (stashing it).
  bool server_going_away(char type, std::string_view body);
  // Drops the broken server and sends the kept bytes to another backend; false (pending_fatal_* set,
  // client I/O cancelled) when none could take them.
  awaitable<bool> replace_failed_server(std::string why);
  awaitable<void> wait_retry_signal();
  void retry_signal();
  // A server going away right after a complete answer, before its ReadyForQuery: whether the answer may
  // be ended by pgrouter (one autocommit statement was asked, nothing else is in flight) ...
  bool can_end_answer_early() const;
  // ... and ending it: `answer` and a ReadyForQuery 'I' go to the client, the server is dropped.
  template <typename Stream>
  awaitable<void> end_answer_early(Stream& s, std::string_view answer);
  // A client Query that resets startup settings (RESET, RESET ALL, DISCARD ALL): true when it was
  // rewritten to put the startup values back (the replacement is in c2s_inject_).
  bool reset_to_startup(std::string_view body);
  // Transaction pooling: what to do with a server reply the tracker wants to see.
  TxnTracker::Reply track_server_message(char type, std::string_view body);

  // The login, up to the relay: which stream the relay runs on, or none. A coroutine of its own so that
  // its frame (the startup packet, the login timer, what authentication kept) is freed before the relay:
  // an idle client keeps only run()'s small frame and the relay's.
  enum class LoggedIn { no, plain, tls };
  awaitable<LoggedIn> login();
  void answer_encryption_request_now();
  // true: logged in, the relay may start on s.
  template <typename Stream>
  awaitable<bool> serve(Stream& s, protocol::StartupPacket sp);
  template <typename Stream>
  awaitable<bool> authenticate(Stream& s, const protocol::StartupPacket& sp);
  template <typename Stream>
  awaitable<bool> read_password_message(Stream& s, std::string& body, bool sasl = false);
  // Users and databases not in the config (client_lookup.cpp, docs/AUTH.md). resolve_database: db_ for
  // database_, a listed one or the fallback's entry; false if neither. look_up_user: a user not under
  // `users:` from auth_file, then auth_query; true with user_cfg_ set (found) or null (no such user), false
  // with `error` set when auth_query could not be run.
  bool resolve_database();
  awaitable<bool> look_up_user(std::string& error);
  awaitable<bool> run_auth_query(const control::AuthLookup& lookup, AuthCache::Answer& answer,
                                 std::string& error);
  void use_found_secret(const std::string& secret);
  template <typename Stream>
  awaitable<bool> attach_and_welcome(Stream& s, const protocol::StartupPacket& sp);
  template <typename Stream>
  awaitable<void> relay(Stream& s);
  template <typename Stream>
  void start_server_to_client(Stream& s);
  bool register_server_io();  // the server's socket in the worker's readiness set, for the relay
  awaitable<bool> sync_params(pool::ServerConnection& server, pool::ServerError& err);
  // The sync part of sync_params: true when the server has the client's settings (marked so), else the
  // statements (and which settings they set or reset) that give them.
  bool params_sql(pool::ServerConnection& server, std::string& sql, std::vector<const std::string*>& set_keys,
                  std::vector<std::string>& reset_keys);
  static pool::ServerConnection::SettingsDigest settings_digest(
      const std::vector<std::pair<std::string, std::string>>& startup, const TxnTracker::Settings* set);
  bool params_ready();
  // The transaction is over: the server goes back to its pool (closed when not reusable).
  void detach_server(bool reusable = true);
  // Nothing of this client's is in flight on the server either way, and both directions are at a message
  // boundary.
  bool server_quiet() const;
  // A replica's server is attached for a synced read, still being answered or answered but not yet given
  // back: the next batch may be a write that must not follow it there (unlike one inside a transaction the
  // client opened there, which fails as it would on PostgreSQL).
  bool batch_behind_replica_read() const {
    return attached_.server && tx_on_replica_ && !unsynced_ &&
           (pending_ > 0 || attached_.server->tx_status == 'I');
  }
  // Transaction pooling, unpinned, nothing in flight either way: the client is not in a server session.
  bool between_transactions() const;
  // A server that ended between transactions is closed; the client does not hear of it.
  void leave_dead_server(std::string_view why);
  template <typename Stream>
  awaitable<void> client_to_server(Stream& s);
  // client -> server found a message PostgreSQL would refuse (scan result r): after the replies to what
  // was sent before it (as PostgreSQL answers them first), the session ends as PostgreSQL would end it.
  awaitable<void> refuse_client_message(const protocol::ScanResult& r);
  // Whether the first message in d[0..n) needs a server (not a Terminate, a refused or a dropped message).
  bool needs_server(const char* d, size_t n) const;
  // Whether d[0..n), starting with an extended-protocol message, holds the Sync or Flush that ends its batch
  // (or something that is not part of one); true too when it does not start with one.
  static bool batch_complete(const char* d, size_t n);
  // The extended batch at the start of buf is not whole yet (and under 64 KiB): room for more was made, to be
  // read before it is decided on.
  static bool batch_incomplete(protocol::Buffer& buf);
  // Transaction pooling: the server may go back to its pool now (between transactions, in step, nothing of
  // its answer unread). The one rule for handing a server back in the middle of a session.
  bool can_release_server() const;
  // client -> server completed a message that kept the server past its ReadyForQuery: give it back if idle.
  awaitable<void> give_back_when_idle();
  bool give_back_wanted_ = false;   // ... asked of server -> client, which is parked on the server's socket
  awaitable<void> ask_give_back();  // sets it, wakes server -> client, and waits until it has decided
  template <typename Stream>
  awaitable<void> server_to_client_loop(Stream& s);
  template <typename Stream>
  awaitable<void> fail(Stream& s, const char* sqlstate, std::string message, std::string hint = {});
  template <typename Stream>
  awaitable<bool> read_startup_on(Stream& s, protocol::StartupPacket& out);
  // A login's read of exactly n bytes; on plain TCP through client_buf_ (plain_login_read), so a message
  // takes one recv and bytes a client sent past it are kept for what reads next (login or relay).
  template <typename Stream>
  awaitable<net::error_code> login_read(Stream& s, char* dst, size_t n);
  awaitable<net::error_code> plain_login_read(char* dst, size_t n);
  void handle_cancel_request(const protocol::StartupPacket& sp);
  void cancel_io();
  void cancel_client_io();
  // Relay I/O on the client: readiness-tracked for plain TCP, Asio for TLS.
  awaitable<size_t> client_read(net::PlainStream& s, char* dst, size_t n, net::error_code& ec);
  awaitable<void> client_write(net::PlainStream& s, const char* src, size_t n, net::error_code& ec);
  awaitable<size_t> client_read(net::TlsStream& s, char* dst, size_t n, net::error_code& ec);
  awaitable<void> client_write(net::TlsStream& s, const char* src, size_t n, net::error_code& ec);
  void request_started(char type);  // Query, Sync or FunctionCall sent
  void request_finished();
  void log_slow_query(const SlowQuery& q);

  Worker& w_;
  net::PlainStream plain_;  // the client connection until (unless) it becomes TLS; fd -1 then
  bool v6_ = false;         // the connection's address family (for handing the fd to Asio for TLS)
  std::unique_ptr<net::TlsStream> tls_;
  uint64_t id_;
  std::string peer_;
  std::string user_, database_;
  std::shared_ptr<const control::Config> config_;
  const control::DatabaseConfig* db_ = nullptr;
  const control::UserConfig* user_cfg_ = nullptr;
  // What db_ and user_cfg_ point to when they are not in config_: the fallback database's entry for
  // database_, a user found by auth_file or auth_query (its server credentials completed at login).
  std::shared_ptr<const control::DatabaseConfig> own_db_;
  std::shared_ptr<control::UserConfig> own_user_;
  bool counted_client_ = false;
  bool logged_in_ = false;
  bool early_ssl_ = false, early_gss_ = false;  // answered 'N' by answer_encryption_request_now()
  int now_clients_ = 0;                         // clients of all workers when this one was accepted
  LoginWatch login_watch_;  // on the worker's list while logging in (listen.client_login_timeout)

  // Cancel key handed to the client.
  uint32_t key_pid_ = 0, key_secret_ = 0;

  // Attached server.
  pool::Pool* pool_ = nullptr;  // the primary's pool (settings, welcome parameters)
  // What the attached server is good for. One state, changed only by set_server_state() (which rejects, in
  // debug builds, a change that cannot happen) and reset for each server attached (server_attached()).
  enum class ServerState : uint8_t {
    in_step,     // alive and in step with pgrouter: it goes back to its pool once nothing is in flight
    ended_idle,  // transaction pooling: it sent FATAL between the client's transactions (leave_dead_server())
    fatal,       // it sent FATAL inside the client's session: relayed, then it closes, and so does the client
    broken,      // its connection broke, or a message between it and the client was cut: closed, never pooled
  };
  // The server a transaction (or, in session pooling, the session) holds, with where it came from and what it
  // is good for. One today; a transaction that touches several shards will hold one of these per shard, each
  // with its own state, and the relay will run one server -> client stream per attachment.
  struct Attachment {
    std::unique_ptr<pool::ServerConnection> server;
    pool::Pool* pool = nullptr;  // the pool `server` came from
    int shard = 0;               // the shard of db_ it belongs to
    int backend = 0;             // 0 = the shard's primary, i = its replica i-1
    ServerState state = ServerState::in_step;
  };
  Attachment attached_;
  // In line for a server (transaction pooling, all busy): client_to_server waits on it itself, with no
  // coroutine frame of attach_backend and Pool::acquire per wait (see Pool::wait_in_line).
  pool::Pool::Waiter line_;
  // The worker's pool of each backend of db_ for user_cfg_ (Worker::pool_for builds a key and searches a
  // map, too costly for every transaction); valid while db_ and user_cfg_ are (the
  // session's config_ keeps them alive; a worker never drops a pool).
  pool::Pool& pool_at(int backend);                         // of shard_
  std::vector<std::vector<pool::Pool*>> pools_by_backend_;  // [shard][backend]
  // The shard the client's transaction runs on (sharding: chosen per transaction, see choose_shard()); 0 for
  // a database of one shard.
  int shard_ = 0;
  const control::ShardConfig& shard() const { return db_->shards.at(size_t(shard_)); }
  // Sharding (client_sharding.cpp): db_'s shard map (null: one shard), what a statement needs of the shards,
  // the shard a transaction's first messages d[0..n) choose, and the refusal of a message that needs
  // another shard than shard_ (true: replaced, in c2s_repl_). parsed_text: a Bind's statement text when its
  // Parse is in the same batch (not yet tracked).
  sharding::ShardMap* shard_map() {  // (asked for every message relayed: the usual answer without a call)
    return shard_map_ && shard_map_db_ == db_ ? shard_map_.get() : find_shard_map();
  }
  sharding::ShardMap* find_shard_map();
  std::shared_ptr<sharding::ShardMap> shard_map_;
  const control::DatabaseConfig* shard_map_db_ = nullptr;
  std::optional<std::string_view> session_shard_key() const;  // SET pgrouter.shard_key, or the startup option
  sharding::Need explicit_shard(std::optional<int>& shard);
  sharding::Need shard_need(char type, std::string_view body, std::string_view parsed_text);
  // shard_need() of a text with SQL EXECUTEs: `need` (the text's own) with the needs of the statements they
  // run, given their arguments (`bound`: the text's own Bind, for arguments that are its parameters).
  sharding::Need executed_need(std::string_view text, sharding::Need need, std::optional<int> session_shard,
                               const sharding::BoundParams* bound);
  // The need of one EXECUTE of the statement `prepared`; `why` says why it cannot be routed, if it cannot.
  sharding::Need executed_one(const sql::ExecuteCall& call, std::string_view prepared,
                              std::optional<int> session_shard, const sharding::BoundParams* bound,
                              std::string& why);
  int choose_shard(const char* d, size_t n);
  std::optional<int> named_shard(const char* d, size_t n);  // the first shard a statement of the batch names
  template <typename F>
  void each_statement(const char* d, size_t n, F&& f);
  // A transaction opened by a batch that only BEGINs through a named statement (which defer_begin cannot
  // answer) runs on the default shard until its next batch: if that names another shard, the server goes back
  // (rolled back by its pool) and the BEGIN is sent again there (leave_begun_shard).
  std::optional<std::string> begin_only(const char* d, size_t n);
  void note_begin_only(const char* d, size_t n);
  bool runs_nothing(const char* d, size_t n);  // only Parse, Describe, Close, Flush and Sync
  awaitable<void> leave_begun_shard(int shard);
  bool can_move_server() const;  // server -> client may give the server back for leave_begun_shard
  bool tx_begin_only_ = false;
  bool moving_shard_ = false;
  std::string begin_text_;
  bool shard_refusal(char type, std::string_view body);
  bool refuse_elsewhere(char type, std::string_view body);  // shard_refusal's analysis and refusal
  // A transaction's first request as scatter_candidate() analysed it, when one shard holds its rows: the
  // shard choice takes that shard, and the check of the request's messages as they are relayed
  // (shard_refusal) knows their answer, instead of analysing the same statement again; defer_begin() and
  // note_begin_only() know it is no BEGIN. Views into the client's buffer (or the tracker's text of a
  // statement prepared before): kept in known_ from scatter_candidate() to the end of the scan that follows
  // the attach, cleared on any other way out.
  struct KnownRequest {
    std::optional<int> shard;     // the shard the request needs (nullopt: nothing known)
    const char* query = nullptr;  // the request's Query body, or
    const char* parse = nullptr;  // its Parse body (if it has one) ...
    const char* bind = nullptr;   // ... and its Bind body
    std::string_view text;        // the statement text analysed
    std::string_view statement;   // the Bind's statement name
  };
  KnownRequest known_;
  // Session pooling on a sharded database (client_held.cpp): the session runs on transaction pooling's
  // machinery (a shard per transaction, scatter, cross-shard writes), but a server taken for a shard is the
  // session's until it disconnects: given back at a transaction's end, it is parked in held_[its shard], and
  // the next transaction (or leg) on that shard takes it again, so session state made there stays there.
  // Parked servers count as active.
  bool hold_servers_ = false;
  struct Held {
    std::unique_ptr<pool::ServerConnection> server;
    pool::Pool* pool = nullptr;  // the pool it goes back to at disconnect
  };
  std::vector<Held> held_;  // [shard]
  Held& held_slot(int shard);
  void give_back_held(Held& slot);  // its server (if any) back to its pool, reset
  bool park_server();  // detach_server's: the attached server parked in held_[shard_]; false: not
  // The parked server of `shard` from `pool`, taken out (uncounted as active), or null: none, another
  // pool's (given back), or closed while parked (dropped).
  std::unique_ptr<pool::ServerConnection> take_held(int shard, pool::Pool& pool);
  bool park_leg(ShardLeg& leg, bool client_gone);  // release_legs': the leg's server parked; false: not
  void release_held();                             // disconnect: every parked server back to its pool
  bool known_answer(char type, std::string_view body) const;  // shard_refusal would pass it
  // Cross-shard reads (client_scatter.cpp): a request of scatter_request()'s shapes, outside a transaction,
  // whose statement needs several shards (`need`), when sharding.cross_shard allows it ...
  // explain: the statement has a `/* pgrouter: explain */` comment (then any need qualifies).
  // known_ is set when the request needs one shard.
  std::optional<ScatterRequest> scatter_candidate(const char* d, size_t n, sharding::Need& need,
                                                  bool& explain);
  // `/* pgrouter: explain */`: the request is answered with where it would run and why, as rows of (shard,
  // statement, reason), instead of running. False when the client is gone.
  awaitable<bool> explain_shards(const ScatterRequest& req, const sharding::Need& need);
  std::vector<std::vector<std::optional<std::string>>> explain_rows(const ScatterRequest& req,
                                                                    const sharding::Need& need);
  bool scatter_allowed() const;
  // ... runs on a server of each of those shards, taken for it alone, and is answered from the merge of their
  // rows; false when the client is gone. The request's bytes are at the start of client_buf_.
  awaitable<bool> run_scatter(const ScatterRequest& req, const sharding::Need& need);
  struct ScatterRun;
  bool refuse_scatter(ScatterRun& run);
  awaitable<void> scatter_on_legs(ScatterRun& run);
  awaitable<bool> start_scatter_legs(ScatterRun& run, std::string& why);
  awaitable<bool> probe_group_names(ScatterRun& run, std::string& why);
  // A server of each of `shards` for one request (a write: the primaries), with the client's settings, and
  // their return to the pools.
  awaitable<bool> open_legs(std::vector<ShardLeg>& legs, const std::vector<int>& shards,
                            size_t request_length, bool writes, std::string& why);
  void release_legs(std::vector<ShardLeg>& legs, bool client_gone);
  // The legs running the client's statement (a cancel of the client reaches their servers), and a cancel
  // sent to one server (counted in its cancels_in_flight, so its pool keeps it until PostgreSQL took it).
  RunningLegs running_legs_;
  void cancel_server(pool::ServerConnection& server);
  // A cross-shard read that ended on a shard's error: the legs still running are cancelled, as PostgreSQL
  // ends the statement at its first error, so that reading them to their end takes no longer.
  void cancel_unfinished_legs(std::vector<ShardLeg>& legs);
  // Cross-shard writes (client_two_phase.cpp): a request of scatter_request()'s shapes, outside a
  // transaction, whose one statement writes on several shards, run on each shard's primary in a transaction
  // and committed on all or none: plainly when at most one part wrote, else by two-phase commit (decision
  // record: sharding/two_phase.hpp).
  bool writes_across_allowed() const;
  awaitable<bool> run_write_across(const ScatterRequest& req, const sharding::Need& need);
  struct WriteRun;
  awaitable<void> write_across(WriteRun& run);
  bool split_write(WriteRun& run);
  void define_if_parsed(const ScatterRequest& req, const std::vector<ShardLeg>& legs);
  awaitable<void> write_on_legs(WriteRun& run);
  awaitable<void> read_write_answers(WriteRun& run, size_t i, int from, int answers);
  awaitable<void> commit_across(WriteRun& run);
  awaitable<void> sort_parts(WriteRun& run, std::vector<ShardLeg*>& readers, std::vector<ShardLeg*>& writers);
  awaitable<void> commit_readers(WriteRun& run, std::vector<ShardLeg*> readers);
  awaitable<void> commit_one_part(WriteRun& run, ShardLeg& leg);
  awaitable<void> rollback_parts(std::vector<ShardLeg*> parts);
  awaitable<void> prepare_and_commit(WriteRun& run, std::vector<ShardLeg*> parts);
  awaitable<std::optional<sharding::two_phase::Outcome>> decide(WriteRun& run);
  void answer_write(WriteRun& run, std::string& out);
  // answer_write and a ReadyForQuery of `status`; false: the client is gone.
  awaitable<bool> send_write_answer(WriteRun& run, char status = 'I');
  // Transactions across shards (client_coordinated.cpp): when a request of an open transaction needs
  // another shard, the transaction's server leaves the relay and the session runs each later request on its
  // shard's server itself, up to a COMMIT (commit_across) or a ROLLBACK.
  struct Coordinated;
  struct CoordinatedPtr {  // (owns it; Coordinated is complete only in client_coordinated.cpp)
    Coordinated* p = nullptr;
    CoordinatedPtr() = default;
    CoordinatedPtr(const CoordinatedPtr&) = delete;
    CoordinatedPtr& operator=(const CoordinatedPtr&) = delete;
    ~CoordinatedPtr();
    Coordinated* get() const { return p; }
    void reset(Coordinated* next = nullptr);
  };
  CoordinatedPtr coord_;
  bool coordinating_ = false;  // server -> client keeps the server for coord_ instead of giving it back
  std::string tx_begin_sql_;   // the open transaction's BEGIN, when pgrouter sent it (a deferred one)
  // The savepoints and SET LOCALs of the open transaction while it runs on one shard's server through the
  // relay (a sharded database): what a shard it reaches later must replay. note_transaction_step() follows
  // each client message; batch_executes_: an Execute was sent since the last Sync.
  TxnReplay tx_replay_;
  bool batch_executes_ = false;
  void note_transaction_step(char type, std::string_view body);
  // A ReadyForQuery 'I' of the client's request: nothing to replay; nothing unknown either when no request
  // was sent after it.
  void replay_transaction_ended() {
    if (pending_ <= 1 && !unsynced_)
      tx_replay_.clear();
    else
      tx_replay_.forget_steps();
  }
  bool coordination_wanted(const char* d, size_t n);
  bool leaves_shard(const sharding::Need& need, std::string_view sql);
  // The text of the client's statement a Bind runs, as the tracker knows it (nullopt: malformed, unknown).
  std::optional<std::string_view> bound_statement_text(std::string_view bind) const;
  bool executes_prepared(std::string_view sql) const;  // SQL EXECUTE of one of the client's statements
  awaitable<bool> take_server_for_coordination();
  void keep_server_for_coordination();
  awaitable<bool> coordinate_transaction();  // false: the client is gone
  awaitable<bool> coordinate_from_begin(const ScatterRequest& req, const sharding::Need& need);
  // Where coordinated_check sends a request: the transaction's end, every open leg (a savepoint statement,
  // a SET LOCAL), or the shards `need` names (one, or several for a read or write across them).
  struct CoordinatedRoute {
    bool ends = false, commit = false, every_leg = false;
    sharding::Need need;
  };
  std::string coordinated_check(std::optional<ScatterRequest>& req, CoordinatedRoute& route);
  awaitable<bool> run_on_every_leg(const ScatterRequest& req);
  awaitable<bool> coordinated_scatter(const ScatterRequest& req, const sharding::Need& need);
  awaitable<bool> coordinated_write(const ScatterRequest& req, const sharding::Need& need);
  awaitable<bool> lend_legs(std::vector<int> shards, std::vector<ShardLeg>& legs, std::string& error);
  char return_legs(std::vector<ShardLeg>& legs, bool failed);
  awaitable<bool> coordinated_request(size_t& length);
  awaitable<bool> coordinated_prepare(const PrepareOnly& prepare);
  awaitable<ShardLeg*> coordinated_leg(int shard, std::string& error);
  awaitable<bool> relay_on_leg(ShardLeg& leg, const ScatterRequest& req);
  awaitable<bool> relay_leg_answer(ShardLeg& leg, std::string bytes, const ScatterRequest* asked);
  awaitable<bool> coordinated_reply(std::string error, std::string tag, char status);
  awaitable<bool> end_coordinated(bool commit);
  // COPY ... FROM STDIN of a sharded or reference table (client_copy_across.cpp): each row to its shard (a
  // reference table's to every shard), committed on all or none like the writes above. The request's bytes
  // are at the start of client_buf_, and it consumes them. False when the client is gone.
  awaitable<bool> run_copy_across(const ScatterRequest& req, const sharding::Need& need);
  // The same inside a transaction coordinated across shards: on the transaction's parts, committed with it.
  awaitable<bool> coordinated_copy(const ScatterRequest& req, const sharding::Need& need);
  struct CopyRun;
  awaitable<bool> copy_across(WriteRun& run, const sql::ShardTarget& target, sharding::CopyFormat format);
  awaitable<bool> copy_start(WriteRun& run, std::string& copy_in);
  awaitable<bool> copy_rows_in(WriteRun& run, CopyRun& copy, sharding::CopyRows& rows,
                               std::string& fail_reason);
  awaitable<void> copy_flush(CopyRun& copy, size_t at_least);
  awaitable<void> copy_finish(WriteRun& run, CopyRun& copy, std::string fail_reason);
  awaitable<int64_t> client_message(size_t max_length);
  awaitable<bool> client_read_more();  // reads what the client sent next into client_buf_; false: gone
  static std::string scatter_statement(const ScatterRun& run, bool describe_statement);
  static std::pair<std::string, std::string> scatter_refusal(const ScatterRun& run);  // message, hint
  awaitable<void> answer_scatter(ScatterRun& run);
  awaitable<void> answer_copy_out(ScatterRun& run);
  // A write to the client outside the relay (nothing else writes to it then), plain or TLS.
  awaitable<void> client_write_any(const std::string& data, net::error_code& ec);
  // A lone BEGIN while no shard is chosen: answered (reply), and kept to be sent on the shard chosen next.
  bool defer_begin(const char* d, size_t n, std::string& reply);
  std::string deferred_begin_;
  bool deferred_begin_read_only_ = false;
  const control::DatabaseConfig* pools_db_ = nullptr;
  const control::UserConfig* pools_user_ = nullptr;
  bool tx_wrote_ = false;      // this transaction was routed to the primary as a write
  int64_t write_done_at_ = 0;  // steady ms when the client's last write transaction ended (0 = none)
  uint64_t required_lsn_ = 0;  // the primary's WAL position a replica must have replayed for this client
  pool::Clock::time_point
      ryw_give_up_at_{};        // attach_backend: until when a read held by read-your-writes waits
  bool ryw_waited_ = false;     // ... and whether this one did
  bool tx_read_ = false;        // the transaction's first messages are all reads (may be retried)
  bool tx_on_replica_ = false;  // the transaction was routed to a replica
  struct ReadRetry {
    bool window = false;  // client bytes kept since client_buf_'s mark; nothing of the answer relayed yet
    bool busy = false;    // server -> client is replacing the server: client -> server sends nothing
    bool failed = false;  // no backend could take the read: the session ends
    size_t attempts = 0;
    std::string server_sqlstate, server_message;  // the going-away message the server sent, if any
    std::unique_ptr<asio::steady_timer> signal;   // wakes whichever loop waits for the other
  } retry_;

  // Relay state (both directions run on this worker's thread).
  // Small by default (an idle client costs little); grows while reads fill it, shrinks when traffic is small.
  static constexpr size_t kClientBufferInitial = 2048;
  static constexpr size_t kMaxStreamingBuffer = 64 * 1024;
  protocol::Buffer client_buf_{kClientBufferInitial};
  net::SocketReadiness
      client_ready_;       // plain TCP: registered from the login on; the destructor closes the fd first
  int pending_ = 0;        // Query/Sync/FunctionCall sent, ReadyForQuery not yet seen
  bool unsynced_ = false;  // extended-protocol messages sent since the last Sync
  // A server may still be working for this client (or be in a COPY waiting for its data).
  bool request_in_flight() const { return pending_ > 0 || unsynced_; }
  // client -> server stopped in the middle of a message whose body streams through to the server: the rest is
  // still to come from the client, so the server is neither given back nor reused until it is complete.
  bool c2s_mid_message_ = false;
  bool server_copy_in_ = false;  // the server sent CopyInResponse/CopyBothResponse and has not ended the COPY
  bool s2c_relayed_half_ =
      false;  // the server broke off a message part of which reached the client: no FATAL
  bool client_done_ = false;
  void set_server_state(ServerState next);
  void server_attached() { attached_.state = ServerState::in_step; }
  bool server_broken() const { return attached_.state == ServerState::broken; }
  // pool.mode transaction: a server only from first message to ReadyForQuery 'I'; also a held session
  // (hold_servers_), which runs on transaction pooling's machinery.
  bool txn_mode_ = false;
  bool pinned_ = false;  // transaction pooling: a session feature was used, the server stays until the end
  pool::Clock::time_point last_activity_{};  // last bytes from the client or ReadyForQuery to it
  char client_tx_status_ = 'I';              // as in the last ReadyForQuery relayed
  bool c2s_writing_ = false;                 // a write to the server is in progress: never detach under it
  // server -> client is one coroutine for the whole session (server_to_client_loop), parked in s2c_wakeup_
  // while no server is attached: handing it a server resumes it on the caller's stack, where a coroutine
  // spawned per attachment would cost a pass through the scheduler per transaction.
  // The server -> client loop's stage, changed only by set_s2c() (which rejects, in debug builds, a change
  // that cannot happen).
  enum class S2c : uint8_t {
    absent,   // no loop (not spawned yet, or the session is ending)
    parked,   // the loop waits in s2c_wakeup_ for a server
    handed,   // a server was handed over that the loop has not started on
    running,  // relaying one attachment's replies
  };
  S2c s2c_ = S2c::absent;
  void set_s2c(S2c next);
  bool s2c_running() const { return s2c_ == S2c::handed || s2c_ == S2c::running; }  // (or about to)
  net::Wakeup s2c_wakeup_;
  std::unique_ptr<asio::steady_timer> s2c_done_;  // cancelled when an attachment's relay ends
  std::vector<std::pair<std::string, std::string>> wanted_params_;  // startup settings to apply on any server
  TxnTracker::Settings desired_;  // sync_params: the statements that give this client its settings
  std::map<std::string, std::pair<std::string, std::string>>
      startup_raw_;                          // name -> (key as sent, raw value)
  uint64_t desired_version_ = ~uint64_t(0);  // the tracker's settings version desired_ was built for
  uint64_t digest_version_ = ~uint64_t(0);   // and desired_digest_
  pool::ServerConnection::SettingsDigest desired_digest_;  // of wanted_params_ and the tracker's settings
  // RESET/DISCARD ALL back to the startup settings pgrouter applied with SET (empty: none were).
  StartupReset startup_reset_;
  std::string c2s_inject_, s2c_inject_;
  std::unique_ptr<TxnTracker>
      tracker_;  // transaction pooling: statements and settings that follow the client
  std::string c2s_out_, c2s_repl_, s2c_out_, s2c_repl_;  // rewritten batches (only when a message changed)
  std::string pending_fatal_sqlstate_, pending_fatal_message_;
  std::string pending_preface_;  // messages the client gets before that FATAL (encoded)
  // When each request in flight started (query latency, pool.query_timeout), oldest first: a ring of a few
  // entries in place, moved to one of kRing on the heap for a client that pipelines deeper (an idle client
  // keeps 32 bytes, not 512). Requests beyond kRing in flight are not timed.
  static constexpr size_t kRingInline = 4;
  static constexpr size_t kRing = 64;
  std::array<pool::Clock::time_point, kRingInline> started_inline_{};
  std::unique_ptr<pool::Clock::time_point[]> started_more_;
  pool::Clock::time_point* ring() { return started_more_ ? started_more_.get() : started_inline_.data(); }
  size_t ring_capacity() const { return started_more_ ? kRing : kRingInline; }
  size_t ring_head_ = 0, ring_count_ = 0;
  SlowQueryLog slow_;  // log.slow_query_ms: the statements of the requests in the ring
  // A transaction (pgrouter_pool_transaction_duration_seconds) ends at the ReadyForQuery 'I' after its
  // requests. It starts at its first request, or, in transaction pooling, when its server was checked out
  // for it (a pinned client's server stays: then at its first request too).
  bool session_txn_open_ = false;
  pool::Clock::time_point session_txn_started_{};
};

// Spawns a session for an accepted socket on the worker's io_context.
void spawn_session(Worker& worker, int fd, const tcp::endpoint& peer);

// Sends a CancelRequest for (pid, secret) to host:port; best effort.
// Over TLS when the server's sslmode is require or above (libpq's way); plain otherwise, which
// PostgreSQL accepts for a CancelRequest whatever its hba says.
awaitable<void> send_cancel(asio::any_io_executor ex, pool::ServerTarget target, uint32_t pid,
                            uint32_t secret);

}  // namespace pgrouter::session
