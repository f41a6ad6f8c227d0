// Transactions across shards. A transaction runs on the shard its first keyed statement names; when a later
// request of it (one statement: a simple Query, or Parse/Bind/Describe/Execute/Sync of the unnamed portal)
// needs another shard, and cross_shard_writes is two_phase, the session takes the transaction's server out of
// the relay and coordinates the rest itself: each request runs on its shard's server (a BEGIN opens the
// transaction there first) and its answer is relayed; COMMIT commits every shard's part as a cross-shard
// write's (commit_across: plainly when at most one part wrote, else by two-phase commit), ROLLBACK rolls
// every part back. After an error the transaction is aborted everywhere until ROLLBACK (or a ROLLBACK TO),
// as on one server. Each shard has its own snapshot.
//
// Savepoints and SET LOCAL: SAVEPOINT, RELEASE, ROLLBACK TO and SET LOCAL run on every leg open now and are
// answered once; Coordinated::replay keeps them as PostgreSQL keeps them (TxnReplay), including those made
// while the transaction was on its first shard (followed through the relay by note_transaction_step), and a
// leg opened later runs them after its BEGIN, so a ROLLBACK TO undoes the same on every shard. A session SET
// is refused: its value would have to follow the transaction's outcome on every shard.
#include <algorithm>

#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/sql/savepoint.hpp"
#include "pgrouter/sql/session_features.hpp"
#include "pgrouter/util/strings.hpp"
#include "shard_leg.hpp"
#include "write_run.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;
namespace fe = pgrouter::protocol::frontend;
using sharding::Need;

// A batch that only prepares a statement: Parse, [Describe S of it], Sync (psycopg prepares so).
struct PrepareOnly {
  std::string_view name, sql, types;
  bool describe = false;
};

namespace {
constexpr const char* kInFailedTransaction = "25P02";
constexpr size_t kRelayChunk = 64 * 1024;

// How many bytes at the start of d[0..n) make one request: a Query, or extended messages through their Sync;
// 0 when it is not all here yet. A Terminate is a request of its own.
size_t request_extent(const char* d, size_t n) {
  for (size_t pos = 0; n - pos >= 5;) {
    char type = d[pos];
    uint32_t len = p::read_be32(d + pos + 1);
    if (len < 4 || n - pos - 1 < len) return 0;
    pos += 1 + size_t(len);
    if (type == fe::kQuery || type == fe::kSync || type == fe::kTerminate || type == fe::kFunctionCall)
      return pos;
  }
  return 0;
}
std::optional<PrepareOnly> prepare_only(const char* d, size_t n) {
  PrepareOnly out;
  std::vector<std::pair<char, std::string_view>> msgs;
  for (size_t pos = 0; pos + 5 <= n;) {
    uint32_t len = p::read_be32(d + pos + 1);
    msgs.emplace_back(d[pos], std::string_view(d + pos + 5, len - 4));
    pos += 1 + size_t(len);
  }
  if (msgs.size() < 2 || msgs.size() > 3 || msgs.front().first != fe::kParse ||
      msgs.back().first != fe::kSync)
    return std::nullopt;
  size_t pos = 0;
  auto name = p::read_cstring(msgs[0].second, pos);
  auto sql = name ? p::read_cstring(msgs[0].second, pos) : std::nullopt;
  if (!sql) return std::nullopt;
  out.name = *name;
  out.sql = *sql;
  out.types = msgs[0].second.substr(pos);
  if (msgs.size() == 3) {
    std::string want = "S" + std::string(out.name) + '\0';
    if (msgs[1].first != fe::kDescribe || msgs[1].second != want) return std::nullopt;
    out.describe = true;
  }
  return out;
}

// What a statement is to the replay of a shard reached late: a savepoint statement, a SET LOCAL (or SET
// TRANSACTION, SET CONSTRAINTS: transaction-scoped too), or nothing it keeps.
enum class StepKind : uint8_t { none, savepoint, set_local };
StepKind step_kind(const sql::Classification& c) {
  if (c.statements != 1 || c.parse_error) return StepKind::none;
  if (c.cls == sql::StatementClass::transaction_savepoint) return StepKind::savepoint;
  if (c.cls == sql::StatementClass::set_session && c.set_local && !c.sets_session) return StepKind::set_local;
  return StepKind::none;
}

// A cheap test before the classifier is asked: only texts starting with these words can be such a step.
bool may_be_step(std::string_view sql) {
  size_t i = 0;
  while (i < sql.size()) {
    size_t e = util::sql_comment_end(sql, i);
    if (e != i) {
      i = e;
    } else if (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r' || sql[i] == '\f' ||
               sql[i] == '\v') {
      ++i;
    } else {
      break;
    }
  }
  auto word = [&](std::string_view lower) {
    return sql.size() - i >= lower.size() && util::equals_ascii_ci(sql.substr(i, lower.size()), lower);
  };
  return word("savepoint") || word("release") || word("rollback") || word("set");
}

// COMMIT, ROLLBACK, PREPARE TRANSACTION or ROLLBACK TO: what PostgreSQL still parses and runs in an aborted
// transaction.
bool exits_transaction(const sql::Classification& c, std::string_view sql) {
  if (c.statements != 1) return false;
  if (c.cls == sql::StatementClass::transaction_end) return true;
  auto cmd = c.cls == sql::StatementClass::transaction_savepoint ? sql::parse_savepoint(sql) : std::nullopt;
  return cmd && cmd->kind == sql::SavepointCommand::Kind::rollback_to;
}

// Whether a Query's text may hold several statements: a ';' with more than white space after it.
bool several_statements(std::string_view sql) {
  size_t semi = sql.find(';');
  if (semi == std::string_view::npos) return false;
  return sql.find_first_not_of(" \t\n\r\f\v;", semi) != std::string_view::npos;
}
}  // namespace

struct ClientSession::Coordinated {
  std::vector<ShardLeg> legs;   // legs[0]: the shard the transaction began on
  char status = 'T';            // as the client's next ReadyForQuery says: 'T', or 'E' after an error
  std::string begin = "BEGIN";  // what opens the transaction on a shard it reaches later
  std::vector<size_t> lent;     // legs lent to a request of their own (lend_legs), by index
  TxnReplay replay;             // ... and what it runs next: the savepoints and SET LOCALs made so far
  ShardLeg* leg_of(int shard) {
    for (auto& l : legs)
      if (l.shard == shard) return &l;
    return nullptr;
  }
};

std::vector<std::pair<const pool::ServerConnection*, const pool::Pool*>> ClientSession::coordinated_servers()
    const {
  std::vector<std::pair<const pool::ServerConnection*, const pool::Pool*>> out;
  if (auto* c = coord_.get())
    for (const auto& leg : c->legs)
      if (leg.server) out.emplace_back(leg.server.get(), leg.pool);
  return out;
}

ClientSession::CoordinatedPtr::~CoordinatedPtr() { delete p; }
void ClientSession::CoordinatedPtr::reset(Coordinated* next) {
  delete p;
  p = next;
}

// Follows the savepoint statements and SET LOCALs the client sends through the relay while its transaction
// runs on one shard, for the replay on shards the transaction may reach later. A statement's outcome is
// known when nothing before it is unanswered: it runs in a transaction ('T'), ROLLBACK TO also in an aborted
// one, and a RELEASE or ROLLBACK TO of a name not in the stack fails (the transaction is then aborted, and
// any way back to 'T' drops what came after). Otherwise the replay is marked unknown.
void ClientSession::note_transaction_step(char type, std::string_view body) {
  if (type == fe::kSync || type == fe::kExecute) {
    batch_executes_ = type == fe::kExecute;
    return;
  }
  if (type != fe::kQuery && type != fe::kBind) return;
  bool alone = pending_ == 0 && !batch_executes_;
  bool starts_outside = alone && client_tx_status_ == 'I';
  if (starts_outside) tx_replay_.clear();
  // A Bind that starts a request outside a transaction leaves nothing to replay (SAVEPOINT fails there, SET
  // LOCAL ends with its implicit transaction): the statement's text is not even looked up, as that is every
  // transaction's first Bind.
  if (starts_outside && type == fe::kBind) return;
  size_t pos = 0;
  std::optional<std::string_view> text;
  if (type == fe::kQuery) text = p::read_cstring(body, pos);
  if (type == fe::kBind) text = bound_statement_text(body);
  if (!text) return;
  if (type == fe::kQuery && several_statements(*text)) {
    for (auto one : sql::split_statements(*text))
      if (may_be_step(one) && step_kind(w_.classifier().get(one)) != StepKind::none) {
        tx_replay_.mark_unknown();
        break;
      }
    return;
  }
  StepKind kind = may_be_step(*text) ? step_kind(w_.classifier().get(*text)) : StepKind::none;
  if (kind == StepKind::none) return;
  if (!alone) {
    tx_replay_.mark_unknown();
    return;
  }
  if (kind == StepKind::set_local) {
    if (client_tx_status_ == 'T') tx_replay_.set_local(*text);
    return;
  }
  auto cmd = sql::parse_savepoint(*text);
  if (!cmd) {
    tx_replay_.mark_unknown();
    return;
  }
  using Kind = sql::SavepointCommand::Kind;
  if (client_tx_status_ == 'T' || (client_tx_status_ == 'E' && cmd->kind == Kind::rollback_to))
    tx_replay_.apply(*cmd, *text);
}

bool ClientSession::coordination_wanted(const char* d, size_t n) {
  if (!txn_mode_ || pinned_ || !tracker_ || !shard_map() || client_tx_status_ != 'T' || !attached_.server ||
      tx_begin_only_ || !writes_across_allowed() || tx_replay_.unknown() || n < 5)
    return false;
  // A session SET of the transaction is on its first shard's server only: another shard's part would run
  // without it (a search_path, say: a wrong answer).
  if (tracker_->sets_pending()) return false;
  char type = d[0];
  if (type != fe::kQuery && type != fe::kParse && type != fe::kBind) return false;
  uint32_t len = p::read_be32(d + 1);
  if (len < 4 || n - 1 < len) return false;
  std::string_view body(d + 5, len - 4);
  std::string_view text;
  if (type == fe::kParse) {  // a Parse decides nothing; its Bind (in the same batch) does
    auto req = scatter_request(d, n);
    if (!req || !req->extended) return false;
    Need need = shard_need(fe::kBind, req->bind_body, req->sql);
    return leaves_shard(need, req->sql) && !executes_prepared(req->sql);
  }
  Need need = shard_need(type, body, text);
  size_t pos = 0;
  std::optional<std::string_view> sql;
  if (type == fe::kQuery) sql = p::read_cstring(body, pos);
  if (type == fe::kBind && need.kind == Need::Kind::write_across) sql = bound_statement_text(body);
  if (!leaves_shard(need, sql.value_or(std::string_view()))) return false;
  return !(sql && executes_prepared(*sql));
}

// Whether a statement of the open transaction needs another shard than its own: one other shard, or
// several.
bool ClientSession::leaves_shard(const Need& need, std::string_view sql) {
  if (need.kind == Need::Kind::one) return need.shard != shard_;
  if (need.kind == Need::Kind::write_across) return !sql.empty();
  // (A read that cannot be merged is refused there, with what it is that cannot be merged.)
  return need.kind == Need::Kind::scatter && scatter_allowed();
}

bool ClientSession::executes_prepared(std::string_view sql) const {
  // A SQL EXECUTE of one of the client's statements is refused where it is, not coordinated: legs run the
  // client's text, not the tracker's rewrite of it (see coordinated_check).
  if (!sql::mentions_execute(sql)) return false;
  for (const auto& ref : sql::execute_references(sql))
    if (tracker_->statement_query(ref.name) || tracker_->statement_query_by_server_name(ref.name))
      return true;
  return false;
}

awaitable<bool> ClientSession::take_server_for_coordination() {
  if (!server_quiet() || attached_.state != ServerState::in_step || !attached_.server->buffer.empty() ||
      !startup_reset_.idle())
    co_return false;
  coordinating_ = true;
  moving_shard_ = true;
  co_await ask_give_back();
  moving_shard_ = false;
  coordinating_ = false;
  co_return !attached_.server && coord_.get() && !coord_.get()->legs.empty();
}

void ClientSession::keep_server_for_coordination() {
  ShardLeg leg;
  leg.shard = shard_;
  leg.pool = attached_.pool;
  leg.server = std::move(attached_.server);
  leg.ready = leg.done = true;
  if (tracker_) tracker_->server_released();
  if (tracker_ && hold_servers_) tracker_->client_pinned();  // (its servers are all its own)
  leg.held = hold_servers_;  // the relay's server of a held session is the shard's held one
  coord_.reset(new Coordinated);
  coord_.get()->legs.push_back(std::move(leg));
  if (!tx_begin_sql_.empty()) coord_.get()->begin = tx_begin_sql_;
  coord_.get()->replay = std::move(tx_replay_);
  tx_replay_.clear();
  w_.stats().shard_transactions_across_total.fetch_add(1, std::memory_order_relaxed);
  log::debug("transaction continues across shards", {{"session", id_}, {"from", uint64_t(shard_)}});
}

// The leg of `shard`, opened (and its transaction begun) on first use; nullptr with `error` set when it
// cannot be.
awaitable<ShardLeg*> ClientSession::coordinated_leg(int shard, std::string& error) {
  auto& c = *coord_.get();
  if (ShardLeg* leg = c.leg_of(shard)) co_return leg;
  std::vector<ShardLeg> opened;
  std::string why;
  std::vector<int> shards(1, shard);
  bool ok = co_await open_legs(opened, shards, 0, true, why);
  if (!ok) {
    release_legs(opened, false);
    error = error_body(p::sqlstate::connection_failure, why);
    co_return nullptr;
  }
  QueryAnswer a;
  std::string begin = c.begin;
  co_await run_on_leg(opened[0], begin, a);
  // Then the savepoints and SET LOCALs the other shards have, in order, so that a later ROLLBACK TO undoes
  // the same on every shard.
  for (size_t i = 0; a.ok() && i < c.replay.steps().size(); ++i) {
    std::string step = c.replay.steps()[i].sql;
    co_await run_on_leg(opened[0], step, a);
  }
  if (!a.ok()) {
    release_legs(opened, false);
    error = a.error;
    co_return nullptr;
  }
  c.legs.push_back(std::move(opened[0]));
  co_return &c.legs.back();
}

// Runs the request on `leg` and relays its answer: the messages the client's request asked for (the leg
// always gets an unnamed Parse and a Describe of the portal), up to the leg's ReadyForQuery.
awaitable<bool> ClientSession::relay_on_leg(ShardLeg& leg, const ScatterRequest& req) {
  std::string bytes = leg_request(req, req.sql, true, true);
  bool ok = co_await relay_leg_answer(leg, std::move(bytes), &req);
  if (req.parses && !req.statement.empty() && leg.parsed)
    tracker_->define_statement(std::string(req.statement), req.sql, req.parameter_types);
  co_return ok;
}

// Sends `bytes` to the leg and relays its answer up to its ReadyForQuery: every message, or with `asked` only
// those the client's request asked for. Then a ReadyForQuery of the transaction's status, 'E' after an error.
awaitable<bool> ClientSession::relay_leg_answer(ShardLeg& leg, std::string bytes,
                                                const ScatterRequest* asked) {
  leg.parsed = false;  // (the leg ran earlier requests: only this one's ParseComplete counts)
  bool sent = co_await leg.send(std::move(bytes));
  if (sent) running_legs_.add(leg.server.get());  // until its answer is complete
  std::string out;
  net::error_code ec;
  char type = 0;
  std::string body;
  bool bound = false;
  while (sent && !leg.ready) {
    bool read = co_await leg.read(type, body);
    if (!read || type == be::kReadyForQuery) break;
    bool forward = true;
    if (asked && asked->extended) {
      if (type == be::kParseComplete) forward = asked->parses;
      if (type == be::kBindComplete) bound = true;
      if ((type == be::kRowDescription || type == be::kNoData) && bound) forward = asked->describe_portal;
    }
    if (forward) append_message(out, type, body);
    if (out.size() >= kRelayChunk) {
      co_await client_write_any(out, ec);
      if (ec) co_return false;
      out.clear();
    }
  }
  running_legs_.remove(leg.server.get());
  auto& c = *coord_.get();
  if (leg.broken) append_message(out, be::kErrorResponse, leg.error);
  if (leg.broken || !leg.error.empty() || leg.server->tx_status == 'E') c.status = 'E';
  leg.error.clear();
  p::append_ready_for_query(out, c.status);
  co_await client_write_any(out, ec);
  co_return !ec;
}

// An answer of pgrouter's own: an error (the transaction is then aborted) or a command tag, then
// ReadyForQuery.
awaitable<bool> ClientSession::coordinated_reply(std::string error, std::string tag, char status) {
  std::string out;
  if (!error.empty()) append_message(out, be::kErrorResponse, error);
  if (!tag.empty()) p::append_command_complete(out, tag);
  p::append_ready_for_query(out, status);
  net::error_code ec;
  co_await client_write_any(out, ec);
  co_return !ec;
}

namespace {
// What one server answers a statement that runs nothing of the client's data (a savepoint statement, SET
// LOCAL): the extended protocol's replies to the messages of `req`, then the error or the command tag, and
// ReadyForQuery.
std::string statement_answer(const ScatterRequest& req, const std::string& error, const std::string& tag,
                             char status) {
  std::string out;
  if (req.extended) {
    if (req.parses) p::append_header(out, be::kParseComplete, 0);
    if (req.describe_statement) {
      append_message(out, be::kParameterDescription, std::string_view("\0\0", 2));
      p::append_header(out, be::kNoData, 0);
    }
    p::append_header(out, be::kBindComplete, 0);
    if (req.describe_portal) p::append_header(out, be::kNoData, 0);
  }
  if (!error.empty())
    append_message(out, be::kErrorResponse, error);
  else
    p::append_command_complete(out, tag);
  p::append_ready_for_query(out, status);
  return out;
}
}  // namespace

// A savepoint statement or SET LOCAL: run on every leg open now, answered once, and kept for the legs opened
// later. A ROLLBACK TO that every leg took brings an aborted transaction back, as on one server; any error
// leaves it aborted.
awaitable<bool> ClientSession::run_on_every_leg(const ScatterRequest& req) {
  auto& c = *coord_.get();
  std::optional<sql::SavepointCommand> cmd;
  std::string error;
  if (w_.classifier().get(req.sql).cls == sql::StatementClass::transaction_savepoint) {
    cmd = sql::parse_savepoint(req.sql);
    if (!cmd)
      error = error_body(p::sqlstate::feature_not_supported,
                         "pgrouter: this savepoint statement's name could not be read inside a transaction "
                         "across shards",
                         "Name the savepoint with a plain or double-quoted identifier.");
  }
  for (auto& leg : c.legs)
    if (leg.broken && error.empty())
      error = error_body(p::sqlstate::connection_failure,
                         "pgrouter: shard " + std::to_string(leg.shard) +
                             "'s part of the transaction was lost with its server connection",
                         "Roll the transaction back and run it again.");
  std::vector<QueryAnswer> answers;
  if (error.empty()) {
    std::vector<ShardLeg*> legs;
    for (auto& leg : c.legs) legs.push_back(&leg);
    std::string sql(req.sql);
    co_await run_on_legs(legs, sql, answers);
    for (auto& a : answers)
      if (!a.ok() && error.empty()) error = a.error;
    for (auto& leg : c.legs) leg.error.clear();  // (answered here: not an error of the next request)
  }
  std::string tag = answers.empty() || answers[0].tags.empty() ? std::string() : answers[0].tags.back();
  bool back = error.empty() && std::all_of(c.legs.begin(), c.legs.end(), [](const ShardLeg& l) {
                return !l.broken && l.server->tx_status == 'T';
              });
  c.status = back ? 'T' : 'E';
  if (error.empty() && cmd) c.replay.apply(*cmd, req.sql);
  if (error.empty() && !cmd) c.replay.set_local(req.sql);
  if (req.parses && !req.statement.empty() && !tracker_->statement_query(std::string(req.statement)))
    tracker_->define_statement(std::string(req.statement), req.sql, req.parameter_types);
  std::string out = statement_answer(req, error, tag, c.status);
  net::error_code ec;
  co_await client_write_any(out, ec);
  co_return !ec;
}

// COMMIT (or ROLLBACK, or COMMIT of an aborted transaction, which rolls back): every leg's part ended.
awaitable<bool> ClientSession::end_coordinated(bool commit) {
  auto& c = *coord_.get();
  commit = commit && c.status == 'T';
  ScatterRequest none;
  Need need;
  WriteRun run(none, need);
  run.legs = std::move(c.legs);
  if (commit) {
    co_await commit_across(run);
  } else {
    co_await rollback_legs(run.legs);
  }
  release_legs(run.legs, false);
  coord_.reset();
  tx_replay_.clear();
  client_tx_status_ = 'I';
  write_done_at_ = routing::steady_ms();  // read-your-writes: as after any write on the primaries
  required_lsn_ = 0;
  tx_wrote_ = false;
  std::string tag;
  if (run.error.empty()) tag = commit ? "COMMIT" : "ROLLBACK";
  bool ok = co_await coordinated_reply(std::move(run.error), std::move(tag), 'I');
  co_return ok;
}

// Whether the coordinated transaction can take the request (its statement's text filled in for a named
// one): the error to answer it with, else empty, and where it goes (`route`).
std::string ClientSession::coordinated_check(std::optional<ScatterRequest>& req, CoordinatedRoute& route) {
  auto& c = *coord_.get();
  if (req && req->extended && !req->parses) {
    auto known = tracker_->statement_parse(std::string(req->statement));
    if (!known)
      return error_body("26000", "prepared statement \"" + std::string(req->statement) + "\" does not exist");
    std::tie(req->sql, req->parameter_types) = *known;
  }
  if (!req || w_.classifier().get(req->sql).statements != 1 || req->max_rows != 0)
    return error_body(
        p::sqlstate::feature_not_supported,
        "pgrouter: inside a transaction across shards, each request must be one statement (a simple "
        "Query, or Parse/Bind/Execute/Sync of the unnamed portal, without a row limit)",
        "Send the statements one by one, or keep the transaction on one shard key.");
  const auto& cls = w_.classifier().get(req->sql);
  if (cls.cls == sql::StatementClass::transaction_end) {
    using Ending = sql::Classification::Ending;
    if (cls.chain || cls.ending == Ending::prepare)
      return error_body(p::sqlstate::feature_not_supported,
                        std::string("pgrouter: ") + (cls.chain ? "AND CHAIN" : "PREPARE TRANSACTION") +
                            " of a transaction across shards is not supported",
                        "End it with COMMIT or ROLLBACK.");
    route.ends = true;
    route.commit = cls.ending == Ending::commit;
    return {};
  }
  StepKind step = step_kind(cls);
  // In an aborted transaction only ROLLBACK TO runs, as in PostgreSQL (it may bring the transaction back).
  if (c.status == 'E' && !exits_transaction(cls, req->sql))
    return error_body(kInFailedTransaction,
                      "current transaction is aborted, commands ignored until end of transaction block");
  if (step != StepKind::none) {
    route.every_leg = true;
    return {};
  }
  if (cls.cls == sql::StatementClass::set_session)
    return error_body(p::sqlstate::feature_not_supported,
                      "pgrouter: SET or RESET of a session setting inside a transaction across shards is not "
                      "supported",
                      "Use SET LOCAL inside the transaction (every shard it reaches gets it), or SET the "
                      "setting before BEGIN.");
  // A SQL PREPARE would make the statement under the client's own name on one leg's server, which goes back
  // to the pool with it, unknown to the client's other servers and visible to the next client's.
  if (sql::parse_prepare(req->sql))
    return error_body(
        p::sqlstate::feature_not_supported,
        "pgrouter: SQL PREPARE inside a transaction across shards is not supported",
        "PREPARE the statement before BEGIN, or use the extended protocol's prepared statements "
        "(Parse/Bind, as drivers do).");
  if (executes_prepared(req->sql))
    return error_body(p::sqlstate::feature_not_supported,
                      "pgrouter: SQL EXECUTE inside a transaction across shards is not supported",
                      "Use the extended protocol's prepared statements (Parse/Bind), or keep the transaction "
                      "on one shard key.");
  std::string query;
  if (!req->extended) query = std::string(req->sql) + '\0';
  Need& need = route.need;
  need = req->extended ? shard_need(fe::kBind, req->bind_body, req->sql) : shard_need(fe::kQuery, query, {});
  if (need.kind == Need::Kind::any) need = Need::on(c.legs[0].shard);
  if (need.kind == Need::Kind::one || need.kind == Need::Kind::write_across ||
      (need.kind == Need::Kind::scatter && scatter_allowed()))
    return {};
  if (need.kind == Need::Kind::refuse)
    return error_body(p::sqlstate::feature_not_supported, need.message, need.hint);
  return error_body(p::sqlstate::feature_not_supported, need.message + ", inside a transaction across shards",
                    "Name one shard key per statement inside the transaction.");
}

// One request of the coordinated transaction, at the start of client_buf_ (`length` bytes; set to 0 when
// the request consumed itself, as a COPY does before its data is read).
awaitable<bool> ClientSession::coordinated_request(size_t& length) {
  if (auto prepare = prepare_only(client_buf_.data(), length)) {
    bool ok = co_await coordinated_prepare(*prepare);
    co_return ok;
  }
  auto req = scatter_request(client_buf_.data(), length);
  if (req && !req->sql.empty() && coord_.get()->status == 'T') {
    // DEALLOCATE of the client's statements: done in the tracker, as it names them on no leg's server (and,
    // as in PostgreSQL, not undone by a rollback).
    auto cmd = sql::parse_session_command(req->sql);
    using Kind = sql::SessionCommand::Kind;
    if (cmd && (cmd->kind == Kind::deallocate || cmd->kind == Kind::deallocate_all)) {
      std::string error;
      if (cmd->kind == Kind::deallocate && !tracker_->statement_query(cmd->name))
        error = error_body("26000", "prepared statement \"" + cmd->name + "\" does not exist");
      else if (cmd->kind == Kind::deallocate)
        tracker_->forget_statement(cmd->name);
      else
        tracker_->forget_named_statements();
      if (!error.empty()) coord_.get()->status = 'E';
      std::string tag = cmd->kind == Kind::deallocate ? "DEALLOCATE" : "DEALLOCATE ALL";
      std::string out = statement_answer(*req, error, tag, coord_.get()->status);
      net::error_code ec;
      co_await client_write_any(out, ec);
      co_return !ec;
    }
  }
  CoordinatedRoute route;
  std::string error = coordinated_check(req, route);
  if (error.empty() && route.ends) {
    bool ok = co_await end_coordinated(route.commit);
    co_return ok;
  }
  if (error.empty() && route.every_leg) {
    bool ok = co_await run_on_every_leg(*req);
    co_return ok;
  }
  if (error.empty() && route.need.kind == Need::Kind::scatter) {
    bool ok = co_await coordinated_scatter(*req, route.need);
    co_return ok;
  }
  bool copy_in = error.empty() && shard_map()->target(req->sql).copy_from &&
                 (route.need.kind == Need::Kind::write_across || route.need.kind == Need::Kind::one);
  if (copy_in) {
    length = 0;
    bool ok = co_await coordinated_copy(*req, route.need);
    co_return ok;
  }
  if (error.empty() && route.need.kind == Need::Kind::write_across) {
    bool ok = co_await coordinated_write(*req, route.need);
    co_return ok;
  }
  ShardLeg* leg = nullptr;
  if (error.empty()) leg = co_await coordinated_leg(route.need.shard, error);
  if (!leg) {
    if (coord_.get()->status == 'T' && p::error_sqlstate(error) != kInFailedTransaction)
      coord_.get()->status = 'E';
    std::string no_tag;
    char status = coord_.get()->status;
    bool ok = co_await coordinated_reply(std::move(error), std::move(no_tag), status);
    co_return ok;
  }
  bool ok = co_await relay_on_leg(*leg, *req);
  co_return ok;
}

// The transaction's parts on `shards`, each opened (and its transaction begun) where it has none yet, moved
// into `legs` for a request of their own (a cross-shard read: coordinated_scatter); false with `error` set
// when one could not be opened. return_legs() puts them back.
awaitable<bool> ClientSession::lend_legs(std::vector<int> shards, std::vector<ShardLeg>& legs,
                                         std::string& error) {
  for (int shard : shards) {
    ShardLeg* opened = co_await coordinated_leg(shard, error);
    if (!opened) co_return false;
  }
  auto& c = *coord_.get();
  for (int shard : shards) {
    size_t at = size_t(c.leg_of(shard) - c.legs.data());
    ShardLeg& leg = c.legs[at];
    leg.description.clear();
    leg.parameters.clear();
    leg.error.clear();
    leg.parsed = false;
    c.lent.push_back(at);
    legs.push_back(std::move(leg));
  }
  co_return true;
}

// The lent parts back in the transaction, which is aborted when the request `failed` or a part is; the
// transaction's status for the client's ReadyForQuery.
char ClientSession::return_legs(std::vector<ShardLeg>& legs, bool failed) {
  auto& c = *coord_.get();
  for (auto& leg : legs) running_legs_.remove(leg.server.get());  // its answer is complete
  for (size_t i = 0; i < c.lent.size(); ++i) c.legs[c.lent[i]] = std::move(legs[i]);
  c.lent.clear();
  legs.clear();
  if (failed) c.status = 'E';
  for (auto& leg : c.legs)
    if (leg.broken || leg.server->tx_status == 'E') c.status = 'E';
  return c.status;
}

// A statement prepared inside the coordinated transaction: parsed (and described) on the first shard's server
// as its unnamed statement, and known to the client's tracker from then on, to be run wherever it is bound.
awaitable<bool> ClientSession::coordinated_prepare(const PrepareOnly& prepare) {
  auto& c = *coord_.get();
  std::string name(prepare.name), error;
  if (c.status == 'E' && !exits_transaction(w_.classifier().get(prepare.sql), prepare.sql))
    error = error_body(kInFailedTransaction,
                       "current transaction is aborted, commands ignored until end of transaction block");
  else if (!name.empty() && tracker_->statement_query(name))
    error = error_body("42P05", "prepared statement \"" + name + "\" already exists");
  if (!error.empty()) {
    c.status = 'E';
    std::string no_tag;
    bool ok = co_await coordinated_reply(std::move(error), std::move(no_tag), 'E');
    co_return ok;
  }
  ShardLeg& leg = c.legs[0];
  std::string bytes;
  p::append_parse(bytes, "", prepare.sql, prepare.types);
  if (prepare.describe) p::append_describe(bytes, 'S', "");
  p::append_sync(bytes);
  bool ok = co_await relay_leg_answer(leg, std::move(bytes), nullptr);
  if (leg.parsed && !name.empty()) tracker_->define_statement(name, prepare.sql, prepare.types);
  co_return ok;
}

// A transaction whose first request, after a BEGIN pgrouter answered, needs several shards goes on across
// shards from its start: the request runs on a part of it on each of those shards (each begun with the
// client's BEGIN), then the rest of the transaction as any coordinated one. The request's bytes are at the
// start of client_buf_, and it consumes them. False when the client is gone.
awaitable<bool> ClientSession::coordinate_from_begin(const ScatterRequest& req, const Need& need) {
  coord_.reset(new Coordinated);
  coord_.get()->begin = deferred_begin_;
  tx_begin_sql_ = std::move(deferred_begin_);
  deferred_begin_.clear();
  if (tracker_ && hold_servers_) tracker_->client_pinned();  // (its servers are all its own)
  w_.stats().shard_transactions_across_total.fetch_add(1, std::memory_order_relaxed);
  bool alive = false;
  bool copy_in = shard_map()->target(req.sql).copy_from;
  if (copy_in)
    alive = co_await coordinated_copy(req, need);  // (consumes the request itself)
  else if (need.kind == Need::Kind::scatter)
    alive = co_await coordinated_scatter(req, need);
  else
    alive = co_await coordinated_write(req, need);
  if (!copy_in) client_buf_.consume(req.length);
  if (alive) alive = co_await coordinate_transaction();
  if (coord_.get()) {
    release_legs(coord_.get()->legs, true);
    coord_.reset();
  }
  co_return alive;
}

awaitable<bool> ClientSession::coordinate_transaction() {
  size_t max = config_->listen.max_message_size;
  while (coord_.get()) {
    size_t length = request_extent(client_buf_.data(), client_buf_.size());
    if (length == 0) {
      int64_t got = co_await client_message(max);  // reads until at least one whole message is here
      if (got <= 0) break;
      if (request_extent(client_buf_.data(), client_buf_.size()) == 0) {
        // More messages of the batch: read on (client_message returns at once while one is whole).
        bool more = co_await client_read_more();
        if (!more) break;
      }
      continue;
    }
    if (client_buf_.data()[0] == fe::kTerminate) break;
    bool alive = co_await coordinated_request(length);
    client_buf_.consume(length);
    last_activity_ = net::BatchClock::now();
    if (!alive) break;
  }
  if (!coord_.get()) co_return true;
  release_legs(coord_.get()->legs, true);  // the client is gone: each part rolls back as its server closes
  coord_.reset();
  tx_replay_.clear();
  co_return false;
}

}  // namespace pgrouter::session
