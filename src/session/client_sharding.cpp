// Tenant sharding for a transaction-pooled client: the shard a transaction runs on is chosen from its first
// messages (choose_shard), and every later statement of it is checked against that shard (shard_refusal):
// one that needs another shard, or every shard, is answered with 0A000 through the tracker's sentinel, so
// the server skips the rest of its batch exactly as it would after its own error. A lone BEGIN names no
// shard: pgrouter answers it and opens the transaction on the shard the next statement chooses
// (defer_begin).
#include <cctype>
#include <optional>
#include <vector>

#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/sql/session_features.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace fe = pgrouter::protocol::frontend;
using sharding::Need;

namespace {
const std::string kShardKeySetting = "pgrouter.shard_key";

std::string_view unquote_value(std::string_view v) {
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front())
    return v.substr(1, v.size() - 2);
  return v;
}
// PostgreSQL's whitespace and keyword letters are ASCII (its scanner's, not the C library's locale).
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

// Where the first word of a statement starts: past whitespace and comments.
size_t first_word(std::string_view sql) {
  if (!sql.empty() && !is_space(sql[0]) && sql[0] != '-' && sql[0] != '/') return 0;  // the usual text
  size_t i = 0;
  while (i < sql.size()) {  // whitespace and comments before the first word
    if (is_space(sql[i])) {
      ++i;
    } else if (sql.substr(i, 2) == "--") {
      i = sql.find('\n', i);
    } else if (sql.substr(i, 2) == "/*") {  // they nest in PostgreSQL
      int depth = 1;
      for (i += 2; i < sql.size() && depth > 0;) {
        if (sql.substr(i, 2) == "/*" || sql.substr(i, 2) == "*/") {
          depth += sql[i] == '/' ? 1 : -1;
          i += 2;
        } else {
          ++i;
        }
      }
    } else {
      break;
    }
  }
  return i;
}

bool word_at(std::string_view sql, size_t i, std::string_view lower_word) {
  if (sql.size() - std::min(i, sql.size()) < lower_word.size()) return false;
  for (size_t k = 0; k < lower_word.size(); ++k)
    if (ascii_lower(sql[i + k]) != lower_word[k]) return false;
  return true;
}

// A cheap test before the classifier is asked: only texts starting with BEGIN or START can be a BEGIN.
bool may_begin(std::string_view sql) {
  size_t i = first_word(sql);
  return word_at(sql, i, "begin") || word_at(sql, i, "start");
}

// PostgreSQL's CommandComplete tag for a BEGIN statement: "START TRANSACTION" for that spelling.
std::string_view begin_tag(std::string_view sql) {
  return word_at(sql, first_word(sql), "start") ? "START TRANSACTION" : "BEGIN";
}

}  // namespace

sharding::ShardMap* ClientSession::find_shard_map() {
  if (db_->shards.size() < 2) return nullptr;
  if (!shard_map_ || shard_map_db_ != db_) {
    shard_map_ = w_.shard_map(*db_);
    shard_map_db_ = db_;
  }
  return shard_map_.get();
}

std::optional<std::string_view> ClientSession::session_shard_key() const {
  // Asked for every statement routed: no allocation.
  if (tracker_) {
    const auto& settings = tracker_->settings();
    if (auto it = settings.empty() ? settings.end() : settings.find(kShardKeySetting); it != settings.end()) {
      std::string_view stmt = it->second;  // "SET pgrouter.shard_key TO <value>"
      return unquote_value(stmt.substr(stmt.rfind(' ') + 1));
    }
  }
  auto is_key_name = [](std::string_view k) {
    if (k.size() != kShardKeySetting.size()) return false;
    for (size_t i = 0; i < k.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(k[i])) != kShardKeySetting[i]) return false;
    return true;
  };
  for (const auto& [k, v] : wanted_params_)
    if (is_key_name(k)) return std::string_view(v);
  return std::nullopt;
}

Need ClientSession::explicit_shard(std::optional<int>& shard) {
  shard.reset();
  auto key = session_shard_key();
  if (!key || key->empty()) return Need::any_shard();
  shard = shard_map()->shard_of_text(*key);
  if (shard) return Need::on(*shard);
  return Need::refused("pgrouter: pgrouter.shard_key \"" + std::string(*key) + "\" is not a valid " +
                           std::string(sharding::to_string(shard_map()->config().key_type)),
                       "SET pgrouter.shard_key to a value of the database's sharding.key_type, or RESET it.");
}

std::optional<std::string_view> ClientSession::bound_statement_text(std::string_view bind) const {
  size_t pos = 0;
  auto portal = p::read_cstring(bind, pos);
  auto stmt = portal ? p::read_cstring(bind, pos) : std::nullopt;
  if (!stmt || !tracker_) return std::nullopt;
  return tracker_->statement_query(std::string(*stmt));
}

Need ClientSession::shard_need(char type, std::string_view body, std::string_view parsed_text) {
  auto* map = shard_map();
  size_t pos = 0;
  std::optional<std::string_view> text;
  const sharding::BoundParams* bound = nullptr;
  std::optional<sharding::BoundParams> params;
  if (type == fe::kQuery) {
    text = p::read_cstring(body, pos);
  } else if (type == fe::kParse) {
    if (p::read_cstring(body, pos)) text = p::read_cstring(body, pos);
  } else if (type == fe::kBind) {
    params = sharding::BoundParams::from_bind(body);
    if (!params) return Need::any_shard();  // malformed: the server says so
    bound = &*params;
    text = parsed_text.data() ? parsed_text : bound_statement_text(body);
  }
  if (!text) return Need::any_shard();  // malformed, or no such statement: the server's error
  const auto& t = map->target(*text);
  // A Parse is refused only for what no bound value can change; the rest is decided at its Bind.
  if (type == fe::kParse && t.scope != sql::ShardScope::refused) return Need::any_shard();
  std::optional<int> session_shard;
  Need ex = explicit_shard(session_shard);
  // An invalid session key refuses what it would route, not SET/RESET and other statements on no table.
  if (ex.kind == Need::Kind::refuse) {
    bool tableless = t.scope == sql::ShardScope::none && t.unsharded_tables.empty() && t.hint_key.empty();
    return tableless ? Need::any_shard() : ex;
  }
  Need need = map->need(t, bound, session_shard);
  if (tracker_ && t.mentions_execute) return executed_need(*text, std::move(need), session_shard, bound);
  return need;
}

Need ClientSession::executed_need(std::string_view text, Need need, std::optional<int> session_shard,
                                  const sharding::BoundParams* bound) {
  // SQL EXECUTE runs a prepared statement whose text says nothing in `text` itself: its needs are those of
  // the statement it runs, with EXECUTE's arguments as that statement's parameters. Only one shard will do:
  // a key pgrouter cannot read, or several shards, are refused, where running on the transaction's shard
  // could answer from the wrong tenant's rows.
  for (const auto& call : sql::execute_calls(text)) {
    // A PREPARE earlier in the same text defines the statement before the tracker records it.
    auto prepared = call.prepared_here.empty() ? tracker_->statement_query(call.name)
                                               : std::optional<std::string_view>(call.prepared_here);
    // A text the tracker keeps (a named Parse's, for its later Binds) names the server's statement.
    if (!prepared) prepared = tracker_->statement_query_by_server_name(call.name);
    if (!prepared) continue;  // not one of the client's statements: the server judges
    std::string why;
    Need ran = executed_one(call, *prepared, session_shard, bound, why);
    if (ran.kind == Need::Kind::refuse) return ran;
    std::string hint =
        "Pass the shard key as a constant (EXECUTE " + call.name + "(42)), or prepare the " +
        "statement through the extended protocol (Parse/Bind, as drivers do), which pgrouter " +
        "routes by its bound values.";
    if (ran.several()) {
      why = "it needs several shards";
      hint = "Execute it once per shard key.";
    } else if (ran.kind == Need::Kind::one && need.kind != Need::Kind::any &&
               !(need.kind == Need::Kind::one && need.shard == ran.shard)) {
      why = "the rest of the query needs another shard";
      hint = "Send it in a Query of its own.";
    }
    if (!why.empty())
      return Need::refused("pgrouter: EXECUTE " + call.name + " cannot be routed to one shard: " + why, hint);
    if (ran.kind == Need::Kind::one) need = std::move(ran);
  }
  return need;
}

Need ClientSession::executed_one(const sql::ExecuteCall& call, std::string_view prepared,
                                 std::optional<int> session_shard, const sharding::BoundParams* bound,
                                 std::string& why) {
  auto* map = shard_map();
  const auto& t = map->target(prepared);
  if (t.scope == sql::ShardScope::none && t.unsharded_tables.empty() && t.hint_key.empty())
    return Need::any_shard();
  // The arguments routed as a Bind of them in text format would be (the same key parse, the same hash).
  sharding::ExecuteBind b = map->execute_bind(t, call.arguments, bound);
  if (b.missing) return Need::any_shard();  // PostgreSQL refuses the EXECUTE's arity on any shard
  if (b.unread) {
    why = "its argument " + std::to_string(b.unread) +
          " gives the shard key, and it is not a constant (pgrouter does not evaluate expressions, function "
          "calls, columns or ARRAY[...] there)";
    return Need::any_shard();
  }
  auto params = sharding::BoundParams::from_bind(b.body);
  return map->need(t, params ? &*params : nullptr, session_shard);
}

// Calls f(type, body, text) for each whole message of a batch: text is a Query's or Parse's SQL, and a Bind's
// statement text when its Parse is in the same batch (not yet tracked), else empty (null data). f returns
// false to stop.
template <typename F>
void ClientSession::each_statement(const char* d, size_t n, F&& f) {
  // Statement name -> text of this batch's Parses: a few in place (this runs for every transaction's first
  // batch), more in a vector.
  std::pair<std::string_view, std::string_view> parsed_few[4];
  size_t n_parsed = 0;
  std::vector<std::pair<std::string_view, std::string_view>> parsed_more;
  for (size_t i = 0; i + 5 <= n;) {
    char type = d[i];
    uint32_t len = p::read_be32(d + i + 1);
    if (len < 4 || i + 1 + len > n) break;
    std::string_view body(d + i + 5, len - 4);
    i += 1 + len;
    std::string_view text;
    size_t pos = 0;
    if (type == fe::kParse) {
      auto name = p::read_cstring(body, pos);
      auto sql = name ? p::read_cstring(body, pos) : std::nullopt;
      if (sql && n_parsed < std::size(parsed_few))
        parsed_few[n_parsed++] = {*name, *sql};
      else if (sql)
        parsed_more.emplace_back(*name, *sql);
      if (sql) text = *sql;
    } else if (type == fe::kBind) {
      auto portal = p::read_cstring(body, pos);
      auto stmt = portal ? p::read_cstring(body, pos) : std::nullopt;
      // The last Parse of that name wins (the vector's come after the array's).
      for (size_t k = 0; stmt && k < n_parsed; ++k)
        if (parsed_few[k].first == *stmt) text = parsed_few[k].second;
      for (auto& [nm, sql] : parsed_more)
        if (stmt && nm == *stmt) text = sql;
    } else if (type == fe::kQuery) {
      if (auto sql = p::read_cstring(body, pos)) text = *sql;
    }
    if (!f(type, body, text)) return;
  }
}

std::optional<int> ClientSession::named_shard(const char* d, size_t n) {
  std::optional<int> found;
  each_statement(d, n, [&](char type, std::string_view body, std::string_view text) {
    if (type != fe::kQuery && type != fe::kParse && type != fe::kBind) return true;
    Need need = shard_need(type, body, type == fe::kBind ? text : std::string_view());
    if (need.kind == Need::Kind::one) found = need.shard;
    return !found;
  });
  return found;
}

int ClientSession::choose_shard(const char* d, size_t n) {
  // The first statement that names a shard chooses; a batch that names none runs on the session key's
  // shard or the default one. A statement of the batch that needs another shard is refused when the scan
  // reaches it. (A known request is the batch's first, and the Parse before its Bind names no shard.)
  if (auto s = known_.shard ? known_.shard : named_shard(d, n)) {
    w_.stats().shard_routed_total.fetch_add(1, std::memory_order_relaxed);
    return *s;
  }
  w_.stats().shard_default_total.fetch_add(1, std::memory_order_relaxed);
  std::optional<int> session_shard;
  explicit_shard(session_shard);
  return session_shard.value_or(shard_map()->default_shard());
}

std::optional<std::string> ClientSession::begin_only(const char* d, size_t n) {
  // A batch that does nothing but open a transaction (a named statement's BEGIN, which defer_begin cannot
  // take: the client's statement must exist on the server).
  std::optional<std::string> begin;
  bool other = false;
  int runs = 0;
  each_statement(d, n, [&](char type, std::string_view body, std::string_view text) {
    // A Parse runs nothing (pgbench -M prepared parses a script's statements with its first BEGIN), and the
    // tracker prepares the statement again wherever it is bound.
    if (type == fe::kSync || type == fe::kDescribe || type == fe::kParse) return true;
    if (type == fe::kExecute) return ++runs, true;
    if (type == fe::kBind && text.data() == nullptr) {
      if (auto known = bound_statement_text(body)) text = *known;
    }
    if ((type != fe::kQuery && type != fe::kBind) || text.data() == nullptr) {
      other = true;
      return false;
    }
    runs += type == fe::kQuery;
    if (!may_begin(text)) {
      other = true;
      return false;
    }
    const auto& c = w_.classifier().get(text);
    if (c.cls != sql::StatementClass::transaction_begin || c.statements != 1 || c.parse_error) other = true;
    if (!other) begin.emplace(text);
    return !other;
  });
  if (other || runs != 1) return std::nullopt;
  return begin;
}

bool ClientSession::runs_nothing(const char* d, size_t n) {
  bool runs = false;
  each_statement(d, n, [&](char type, std::string_view, std::string_view) {
    runs = type != fe::kParse && type != fe::kDescribe && type != fe::kSync && type != fe::kClose &&
           type != fe::kFlush;
    return !runs;
  });
  return !runs;
}

void ClientSession::note_begin_only(const char* d, size_t n) {
  tx_begin_only_ = false;
  // (A known request runs first, and its statement is no BEGIN: begin_only() would stop there.)
  if (known_.shard && !may_begin(known_.text)) return;
  // (A held session does not move a begun transaction: its server, with the session's state, would go back
  // to its pool. A statement for another shard is coordinated or refused instead.)
  if (!tracker_ || !shard_map() || pinned_ || hold_servers_ || session_shard_key()) return;
  if (auto b = begin_only(d, n)) {
    tx_begin_only_ = true;
    begin_text_ = std::move(*b);
  }
}

awaitable<void> ClientSession::leave_begun_shard(int shard) {
  // Nothing but BEGIN ran on this server: it goes back to its pool (which rolls the transaction back), and
  // the BEGIN is sent again, before the batch, on the shard the batch names.
  moving_shard_ = true;
  co_await ask_give_back();
  moving_shard_ = false;
  if (attached_.server) co_return;  // not given back: the batch is refused on this shard
  deferred_begin_ = std::move(begin_text_);
  deferred_begin_read_only_ = w_.classifier().get(deferred_begin_).read_only_begin;
  w_.stats().shard_begins_moved_total.fetch_add(1, std::memory_order_relaxed);
  log::debug("transaction moved to the shard its first statement names",
             {{"session", id_}, {"from", uint64_t(shard_)}, {"to", uint64_t(shard)}});
}

bool ClientSession::can_move_server() const {
  return moving_shard_ && txn_mode_ && !pinned_ && attached_.server && attached_.server->tx_status == 'T' &&
         !client_done_ && server_quiet() && attached_.state == ServerState::in_step &&
         attached_.server->buffer.empty() && startup_reset_.idle();
}

bool ClientSession::known_answer(char type, std::string_view body) const {
  // The message analysed before the attach, with the same inputs: its bytes, and for a Bind the text the
  // tracker now gives its statement (a Parse the tracker did not take would leave another).
  if (!known_.shard || *known_.shard != shard_) return false;
  if (type == fe::kQuery) return body.data() == known_.query;
  if (type == fe::kParse) return body.data() == known_.parse;  // no Parse of a keyed text is refused
  if (type != fe::kBind || body.data() != known_.bind) return false;
  auto text = tracker_->statement_query(std::string(known_.statement));  // (the same bytes: the same name)
  if (!text) return false;
  if (known_.parse) return *text == known_.text;  // the Parse's text, in the client's buffer
  // A statement prepared before: the tracker's own text, the same bytes as long as nothing redefined it.
  return text->data() == known_.text.data() && text->size() == known_.text.size();
}

bool ClientSession::shard_refusal(char type, std::string_view body) {
  if (type != fe::kQuery && type != fe::kParse && type != fe::kBind) return false;
  return !known_answer(type, body) && refuse_elsewhere(type, body);
}

bool ClientSession::refuse_elsewhere(char type, std::string_view body) {
  Need need = shard_need(type, body, {});
  if (need.kind == Need::Kind::any || (need.kind == Need::Kind::one && need.shard == shard_)) return false;
  if (need.kind == Need::Kind::one)
    need.message = "pgrouter: this statement's rows are on shard " + std::to_string(need.shard) +
                   ", but its transaction runs on shard " + std::to_string(shard_);
  if (txn_mode_ && writes_across_allowed() && tracker_->sets_pending()) {  // (coordination_wanted()'s no)
    need.message +=
        ", and the transaction SET a session setting there, which pgrouter cannot carry to another shard's "
        "part of it";
    need.hint =
        "SET the setting before BEGIN, or use SET LOCAL (it goes with the transaction to every shard).";
  } else if (need.kind == Need::Kind::one) {
    need.message +=
        (!writes_across_allowed() ? ", and sharding.cross_shard_writes is reject"
         : tx_replay_.unknown()
             ? ", and the transaction cannot go on across shards: a savepoint statement or SET LOCAL of it "
               "was "
               "pipelined behind an unanswered request or sent among other statements, so pgrouter cannot "
               "replay it on another shard"
             : ", and it came where the transaction cannot go on across shards (pipelined behind "
               "an unanswered request, in a batch of several statements, or on a pinned connection)");
    need.hint =
        "Commit the transaction before working on another tenant's rows, or send its statements one "
        "request at a time.";
  } else if (need.kind == Need::Kind::write_across && !writes_across_allowed()) {
    need.message += ", and sharding.cross_shard_writes is reject";
    need.hint = "Limit the statement to one shard key.";
  } else if (need.kind == Need::Kind::write_across) {
    need.message +=
        ", and a statement that writes on several shards runs only outside a transaction, as a request of "
        "its "
        "own (a simple Query, or Parse/Bind/Execute/Sync of the unnamed statement)";
    need.hint = "Inside the transaction, write each shard key's rows with a statement of its own.";
  } else if (need.kind == Need::Kind::scatter && !scatter_allowed()) {
    need.message += ", and sharding.cross_shard is reject for this connection";
  } else if (need.kind == Need::Kind::scatter && !writes_across_allowed()) {
    need.message +=
        ", and inside a transaction a cross-shard read needs sharding.cross_shard_writes: two_phase (the "
        "transaction then goes on across shards)";
    need.hint = "Send it outside BEGIN ... COMMIT, or limit it to one shard key.";
  } else if (need.kind == Need::Kind::scatter) {
    need.message +=
        ", and inside a transaction a cross-shard read runs only as a request of its own (a simple Query, or "
        "Parse/Bind/Execute/Sync of the unnamed statement) whose rows pgrouter can merge exactly";
    need.hint = "Send it on its own, or outside BEGIN ... COMMIT, or limit it to one shard key.";
  }
  w_.stats().shard_refused_total.fetch_add(1, std::memory_order_relaxed);
  log::debug("statement refused by sharding",
             {{"session", id_}, {"shard", uint64_t(shard_)}, {"reason", need.message}});
  c2s_repl_.clear();
  std::string err;
  p::append_error(err, "ERROR", p::sqlstate::feature_not_supported, need.message, {}, need.hint);
  tracker_->refuse_message(std::move(err), type, c2s_repl_);
  return true;
}

namespace {

struct Msg {
  char type;
  std::string_view body;
};

// The messages of d[0..n), if it holds only whole ones (at most 5): no allocation, this runs for every
// transaction's first batch.
struct Batch {
  Msg m[5];
  size_t size = 0;
  const Msg& operator[](size_t i) const { return m[i]; }
  const Msg& back() const { return m[size - 1]; }
};
std::optional<Batch> whole_messages(const char* d, size_t n) {
  Batch out;
  for (size_t i = 0; i < n;) {
    if (n - i < 5 || out.size == std::size(out.m)) return std::nullopt;
    uint32_t len = p::read_be32(d + i + 1);
    if (len < 4 || n - i - 1 < len) return std::nullopt;
    out.m[out.size++] = {d[i], std::string_view(d + i + 5, len - 4)};
    i += 1 + len;
  }
  return out;
}

// The text of a BEGIN sent as Parse/Bind/[Describe portal]/Execute/Sync of the unnamed statement and portal
// with no parameters (libpq's PQsendQueryParams: psycopg, pgbench -M extended), and whether it was described.
std::optional<std::string_view> extended_begin(const Batch& m, bool& described) {
  described = m.size == 5;
  if (m.size != 4 && m.size != 5) return std::nullopt;
  const Msg& parse = m[0];
  const Msg& bind = m[1];
  const Msg& exec = m[m.size - 2];
  if (parse.type != fe::kParse || bind.type != fe::kBind || exec.type != fe::kExecute ||
      m.back().type != fe::kSync || (described && m[2].type != fe::kDescribe))
    return std::nullopt;
  size_t pos = 0;
  auto name = p::read_cstring(parse.body, pos);
  auto sql = name ? p::read_cstring(parse.body, pos) : std::nullopt;
  if (!sql || !name->empty() || parse.body.substr(pos) != std::string_view("\0\0", 2)) return std::nullopt;
  // Unnamed portal and statement, no parameter formats or values (result formats do not matter: no rows).
  if (bind.body.substr(0, 6) != std::string_view("\0\0\0\0\0\0", 6)) return std::nullopt;
  if (described && m[2].body != std::string_view("P\0", 2)) return std::nullopt;
  if (exec.body.substr(0, 1) != std::string_view("\0", 1)) return std::nullopt;
  return sql;
}

}  // namespace

bool ClientSession::defer_begin(const char* d, size_t n, std::string& reply) {
  // A transaction opened by a lone BEGIN (psql and node-postgres send a simple Query, psycopg and pgbench -M
  // extended an unnamed Parse/Bind/Execute) names no shard: it is answered here and sent, as a simple Query,
  // on the shard the next statement chooses (its replies dropped).
  if (known_.shard && !may_begin(known_.text)) return false;  // the batch starts with that statement
  if (pinned_ || session_shard_key()) return false;
  auto msgs = whole_messages(d, n);
  if (!msgs || msgs->size == 0) return false;
  bool extended = false, described = false;
  std::optional<std::string_view> sql;
  if (msgs->size == 1 && (*msgs)[0].type == fe::kQuery) {
    size_t pos = 0;
    sql = p::read_cstring((*msgs)[0].body, pos);
  } else {
    sql = extended_begin(*msgs, described);
    extended = true;
  }
  if (!sql || !may_begin(*sql)) return false;
  const auto& c = w_.classifier().get(*sql);
  if (c.cls != sql::StatementClass::transaction_begin || c.statements != 1 || c.parse_error) return false;
  deferred_begin_.assign(*sql);
  deferred_begin_read_only_ = c.read_only_begin;
  if (extended) {
    namespace be = pgrouter::protocol::backend;
    p::append_header(reply, be::kParseComplete, 0);
    p::append_header(reply, be::kBindComplete, 0);
    if (described) p::append_header(reply, be::kNoData, 0);
  }
  p::append_command_complete(reply, begin_tag(*sql));
  p::append_ready_for_query(reply, 'T');
  w_.stats().shard_begins_deferred_total.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace pgrouter::session
