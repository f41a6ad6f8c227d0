// Transaction pooling's per-client prepared statements and settings (see the header for the design).
#include "pgrouter/session/txn_tracker.hpp"
#include "pgrouter/util/strings.hpp"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;
namespace fe = pgrouter::protocol::frontend;

const TxnTracker::ExpectMore TxnTracker::kNoMore{};

namespace {

// Names no client statement ever has on a server: a Close of it is a no-op that still answers
// CloseComplete, a Describe of it fails with 26000 naming it (so its error is recognisable).
constexpr std::string_view kNoStatement = "pgr_no_such_statement";
constexpr std::string_view kSentinel = "pgr_sentinel_error";
// The statement a client's Parse of a name it already has is run under (so that the server refuses it:
// 42P05).
constexpr std::string_view kDuplicate = "pgr_duplicate";
// The statement and portal through which pgrouter runs a SQL PREPARE inside an extended-protocol batch.
constexpr std::string_view kHelper = "pgr_prepare";

// Session parameters carried across servers (pgrouter's own, and the usual driver settings);
// pool.track_parameters adds more.
constexpr std::array<std::string_view, 16> kTracked{
    "pgrouter.route",      "pgrouter.shard_key",
    "search_path",         "timezone",
    "datestyle",           "intervalstyle",
    "client_encoding",     "application_name",
    "statement_timeout",   "standard_conforming_strings",
    "lock_timeout",        "idle_in_transaction_session_timeout",
    "extra_float_digits",  "bytea_output",
    "client_min_messages", "default_transaction_read_only"};

// Characters (UTF-8) in s, as PostgreSQL counts error positions.
uint32_t chars(std::string_view s) {
  uint32_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++n;
  return n;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

std::string error_message(std::string_view code, std::string_view message, std::string_view hint = {}) {
  std::string out;
  p::append_error(out, "ERROR", code, message, {}, hint);
  return out;
}

}  // namespace

namespace {
// Bumped (process-wide) by every command through pgrouter that may change what a prepared statement returns:
// a statement's shared name depends on it, so after such a command every client parses and prepares its
// statements afresh instead of meeting a server's stale copy (0A000 "cached plan must not change result
// type"). Commands run on the servers directly are caught by that error instead
// (ServerStatements::forget_stale).
std::atomic<uint64_t> schema_epoch{0};

bool changes_statements(std::string_view tag) {
  return tag.rfind("ALTER ", 0) == 0 || tag.rfind("DROP ", 0) == 0 || tag == "CREATE VIEW" ||
         tag == "CREATE RULE";
}

}  // namespace

// Statements with the same text, parameter types and parse settings are the same statement: names in the text
// are resolved and literals converted at Parse time, so a client with another search_path or TimeZone gets
// its own.
std::string TxnTracker::server_name_for(std::string_view query, std::string_view types) const {
  std::string name;
  name_from(statement_hash(query, types), name);
  return name;
}

XXH128_hash_t TxnTracker::statement_hash(std::string_view query, std::string_view types) const {
  // The bytes hashed are query, '\0', types: in a client's Parse they are already in a row (one-shot hash, no
  // copy); the parse settings are the seed.
  uint64_t seed = parse_context() ^ (schema_epoch.load(std::memory_order_relaxed) * 0xc2b2ae3d27d4eb4full);
  // A SET not yet committed (inside a transaction, or earlier in this batch) may change a parse setting on
  // this server only: what is parsed meanwhile is this client's own.
  if (!tx_sets_.empty() || !group_sets_.empty()) seed ^= (owner_ + 1) * 0x9e3779b97f4a7c15ull;
  if (types.data() == query.data() + query.size() + 1 && query.data()[query.size()] == '\0')
    return XXH3_128bits_withSeed(query.data(), query.size() + 1 + types.size(), seed);
  thread_local std::string joined;
  joined.assign(query);
  joined.push_back('\0');
  joined.append(types);
  return XXH3_128bits_withSeed(joined.data(), joined.size(), seed);
}

void TxnTracker::name_from(const XXH128_hash_t& h, std::string& name) {
  static constexpr char hex[] = "0123456789abcdef";
  name.resize(4 + 32);  // in place: no allocation when `name` had one
  char* at = name.data();
  std::memcpy(at, "pgr_", 4);
  at += 4;
  for (uint64_t part : {h.high64, h.low64})
    for (int byte = 7; byte >= 0; --byte) {
      unsigned b = unsigned(part >> (byte * 8)) & 0xff;
      *at++ = hex[b >> 4];
      *at++ = hex[b & 0xf];
    }
}

namespace {
constexpr std::array<std::string_view, 6> kParseSettings{
    "search_path",    "timezone", "datestyle", "intervalstyle", "standard_conforming_strings",
    "client_encoding"};
}

bool TxnTracker::parse_setting(std::string_view lower_name) {
  return std::find(kParseSettings.begin(), kParseSettings.end(), lower_name) != kParseSettings.end();
}

uint64_t TxnTracker::parse_context() const {
  if (parse_context_version_ == settings_version_) return parse_context_;
  // What the client SET wins over its startup value (as statements, "SET x TO v": the same value spelled
  // either way only costs a second copy of the statement on a server).
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (auto name : kParseSettings) {
    std::string_view value;
    char how = '-';
    if (auto it = settings_.find(std::string(name)); it != settings_.end()) {
      value = it->second;
      how = 's';
    } else {
      for (auto& [k, v] : startup_parse_)
        if (k == name) {
          value = v;
          how = 'p';
        }
    }
    XXH3_64bits_update(&state, &how, 1);
    XXH3_64bits_update(&state, value.data(), value.size());
    XXH3_64bits_update(&state, "\0", 1);
  }
  parse_context_ = XXH3_64bits_digest(&state);
  parse_context_version_ = settings_version_;
  return parse_context_;
}

namespace {
// pool.unnamed_statements: prepare: the unnamed statements this worker thread has seen, by their statement
// hash (direct-mapped). A text is prepared on the servers from its second Parse on: a text sent once
// (literals inlined, an ad-hoc query) stays the server's unnamed statement and never takes a place in a
// server's statement cache.
struct SeenUnnamed {
  static constexpr size_t kSlots = 1024;
  std::array<XXH128_hash_t, kSlots> hash{};
  std::array<bool, kSlots> used{};
  // True if h was seen before; records it otherwise.
  bool check_and_record(const XXH128_hash_t& h) {
    size_t slot = size_t(h.low64) & (kSlots - 1);
    if (used[slot] && XXH128_isEqual(hash[slot], h)) return true;
    hash[slot] = h;
    used[slot] = true;
    return false;
  }
};
thread_local SeenUnnamed seen_unnamed;
}  // namespace

uint32_t TextRewrite::client_position(uint32_t pos) const {
  int64_t shift = 0;  // server characters minus client characters before pos
  for (auto& e : edits) {
    int64_t server_begin = int64_t(e.client_begin) + shift;  // 0-based
    if (pos <= server_begin) break;
    if (pos <= server_begin + e.server_len) return e.client_begin + 1;  // inside the name: its start
    shift += int64_t(e.server_len) - int64_t(e.client_len);
  }
  return uint32_t(std::max<int64_t>(1, int64_t(pos) - shift));
}

namespace {
// The text and parameter types of a whole Parse message (as p::append_parse() builds them).
std::optional<std::pair<std::string_view, std::string_view>> parse_text(std::string_view message) {
  std::string_view body = message.substr(5);
  size_t pos = 0;
  if (!p::read_cstring(body, pos)) return std::nullopt;
  auto query = p::read_cstring(body, pos);
  if (!query) return std::nullopt;
  return std::pair{*query, body.substr(pos)};
}
}  // namespace

std::optional<std::string_view> TxnTracker::statement_query(const std::string& name) const {
  if (auto it = name.empty() ? statements_.end() : statements_.find(name);
      it != statements_.end() && it->second->parse_message.empty())
    return std::string_view(it->second->prepare_sql);  // made by SQL PREPARE
  const std::string* msg = parse_message_of(name);
  auto text = msg ? parse_text(*msg) : std::nullopt;
  if (!text) return std::nullopt;
  return text->first;
}

std::optional<std::string_view> TxnTracker::statement_query_by_server_name(
    std::string_view server_name) const {
  if (!server_name.starts_with("pgr_")) return std::nullopt;  // (name_from's)
  for (const auto& [name, st] : statements_)
    if (st->server_name == server_name) return statement_query(name);
  return std::nullopt;
}

const std::string* TxnTracker::parse_message_of(const std::string& name) const {
  if (name.empty()) return unnamed_valid_ ? &unnamed_parse_ : nullptr;
  auto it = statements_.find(name);
  if (it == statements_.end() || it->second->parse_message.empty()) return nullptr;
  return &it->second->parse_message;
}

std::optional<std::pair<std::string_view, std::string_view>> TxnTracker::statement_parse(
    const std::string& name) const {
  // (A statement whose text pgrouter rewrote is not the client's text: not offered.)
  if (auto it = statements_.find(name); it != statements_.end() && it->second->rewrite) return std::nullopt;
  const std::string* msg = parse_message_of(name);
  return msg ? parse_text(*msg) : std::nullopt;
}

void TxnTracker::define_statement(const std::string& name, std::string_view text, std::string_view types) {
  auto st = std::make_shared<TrackedStatement>();
  name_from(statement_hash(text, types), st->server_name);
  p::append_parse(st->parse_message, st->server_name, text, types);
  statements_[name] = std::move(st);
}

bool TxnTracker::tracks(const std::string& parameter) const {
  if (std::find(kTracked.begin(), kTracked.end(), parameter) != kTracked.end()) return true;
  return std::find(extra_tracked_.begin(), extra_tracked_.end(), parameter) != extra_tracked_.end();
}

namespace {
// Statement texts session_feature() found plain, per worker thread, by XXH3-128 of their
// sql::session_feature_key() (direct-mapped): an application sends the same few texts over and over, and
// looking a text up costs less than scanning it again.
struct PlainTexts {
  static constexpr size_t kSlots = 256;
  std::array<XXH128_hash_t, kSlots> hash{};
  std::array<bool, kSlots> used{};
};
thread_local PlainTexts plain_texts;

bool touches_no_session_state(std::string_view sql, bool simple) {
  // A Parse's text repeats as it is: by its exact hash first. A simple Query's numbers change: by its key
  // only (the key of a text without numbers is the text itself). A text found plain is remembered by both.
  auto& cache = plain_texts;
  auto known = [&cache](const XXH128_hash_t& h) {
    size_t slot = size_t(h.low64) & (PlainTexts::kSlots - 1);
    return cache.used[slot] && XXH128_isEqual(cache.hash[slot], h);
  };
  auto remember = [&cache](const XXH128_hash_t& h) {
    size_t slot = size_t(h.low64) & (PlainTexts::kSlots - 1);
    cache.hash[slot] = h;
    cache.used[slot] = true;
  };
  XXH128_hash_t exact{};
  if (!simple) {
    exact = XXH3_128bits(sql.data(), sql.size());
    if (known(exact)) return true;
  }
  thread_local std::string key_buf;
  std::string_view key = sql::session_feature_key(sql, key_buf);
  XXH128_hash_t shape = !simple && key.data() == sql.data() ? exact : XXH3_128bits(key.data(), key.size());
  if (known(shape)) return true;
  if (!sql::session_feature(sql).empty()) return false;
  remember(shape);
  if (!simple) remember(exact);
  return true;
}
}  // namespace

TxnTracker::Effect TxnTracker::session_effect(std::string_view sql, bool named, bool simple,
                                              std::string& feature) {
  multi_.clear();
  // The cheap lexical check first: most statements touch no session state at all.
  if (sql.data() == known_plain_ || touches_no_session_state(sql, simple)) return Effect::none;
  // A multi-statement query is carried when each of its statements is.
  auto statements = sql::split_statements(sql);
  if (statements.size() > 1) {
    Effect all = Effect::none;
    bool own = sequence_own_;  // "INSERT ...; SELECT lastval()": the INSERT runs first, on the same server
    for (auto one : statements) {
      Effect e = statement_effect(one, named, false, simple, feature);
      if (e == Effect::unsupported || (e == Effect::reads_sequence && !own)) return e;
      if (e == Effect::tracked) all = e;
      own = own || !sql::transaction_control(one);
    }
    return all;
  }
  return statement_effect(sql, named, true, simple, feature);
}

TxnTracker::Effect TxnTracker::statement_effect(std::string_view sql, bool named, bool single, bool simple,
                                                std::string& feature) {
  if (auto cmd = sql::parse_session_command(sql); cmd && !named) {  // a named one could run later, anywhere
    switch (cmd->kind) {
      case sql::SessionCommand::set_local:
        return Effect::none;
      case sql::SessionCommand::set:
      case sql::SessionCommand::reset:
        if (!tracks(cmd->name)) break;
        group_sets_.push_back(std::move(*cmd));
        return Effect::tracked;
      case sql::SessionCommand::reset_all:
        group_sets_.push_back(std::move(*cmd));
        return Effect::tracked;
      case sql::SessionCommand::deallocate_all:
      case sql::SessionCommand::discard_all:
        group_effects_.push_back({cmd->kind == sql::SessionCommand::discard_all ? OnSuccess::discard_all
                                                                                : OnSuccess::deallocate_all,
                                  {},
                                  {}});
        return Effect::tracked;
      case sql::SessionCommand::deallocate:
        if (!single && simple) {
          // Among other statements: its name in the text becomes the server's (carry_multi()), when it is
          // found at the end of the statement as the client spelled it (else the client is pinned).
          std::string_view s = sql;
          while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
          std::string quoted = "\"";
          for (char ch : cmd->name) quoted.append(ch == '"' ? 2 : 1, ch);
          quoted.push_back('"');
          size_t len = 0;
          if (s.size() > quoted.size() && s.substr(s.size() - quoted.size()) == quoted)
            len = quoted.size();
          else if (s.size() > cmd->name.size() &&
                   util::equals_ascii_ci(s.substr(s.size() - cmd->name.size()), cmd->name) &&
                   std::isspace(static_cast<unsigned char>(s[s.size() - cmd->name.size() - 1])))
            len = cmd->name.size();
          if (len == 0) break;
          multi_.push_back({s.data() + s.size() - len, s.data() + s.size(), std::move(cmd->name), false, {}});
          return Effect::tracked;
        }
        if (auto it = statements_.find(cmd->name); it != statements_.end()) {
          if (!single) break;  // in a Parse: not carried
          dealloc_ = it->second;
          group_effects_.push_back({OnSuccess::deallocate, cmd->name, it->second->server_name});
          return Effect::tracked;
        }
        return Effect::none;  // not a statement of ours: PostgreSQL answers as it would
    }
  }
  if (simple && !named) {
    if (auto ref = sql::parse_prepare(sql)) {
      if (!single) {  // among other statements: carry_multi()
        multi_.push_back({sql.data() + ref->begin, sql.data() + ref->end, std::move(ref->name), true,
                          sql.substr(ref->end)});
        return Effect::tracked;
      }
      prepare_ = std::move(ref);
      return Effect::tracked;
    }
  }
  feature = std::string(sql::session_feature(sql));
  if (feature.empty()) return Effect::none;
  // A named statement may run in any later transaction: it pins (or is refused) as other session features.
  if (feature == sql::kSequenceRead && !named) return Effect::reads_sequence;
  feature_ = feature;
  return Effect::unsupported;
}

void TxnTracker::bound(const std::shared_ptr<const TextRewrite>& rewrite) {
  if (!group_bound_) {
    group_bound_ = true;
    if (rewrite) group_rewrite_ = rewrite;
  } else if (group_rewrite_.get() != rewrite.get()) {
    group_mixed_ = true;
  }
}

void TxnTracker::end_group(Expect& z) {
  if (!group_sets_.empty()) z.more().sets = std::move(group_sets_);
  group_sets_.clear();
  if (!group_effects_.empty()) z.more().effects = std::move(group_effects_);
  group_effects_.clear();
}

void TxnTracker::refuse(std::string_view feature, char type, std::string& out) {
  std::string msg = "pgrouter: " + std::string(feature) +
                    " cannot be used with transaction pooling (pool.session_features: refuse)";
  refuse_with(error_message(p::sqlstate::feature_not_supported, msg,
                            "Use pool.mode: session for this database, or pool.session_features: pin to keep "
                            "such clients on one server."),
              type, out);
}

bool TxnTracker::sequence_text(std::string_view sql, char type, std::string& out, Effect& effect) {
  if (effect == Effect::reads_sequence) {
    if (!sequence_own_) {
      // The last nextval() of this server's session may be another client's: PostgreSQL would never give it.
      refuse_with(
          error_message(p::sqlstate::object_not_in_prerequisite_state,
                        "pgrouter: currval()/lastval() under transaction pooling only see a nextval() run "
                        "since this transaction began; the server's last value may be another client's",
                        "Use INSERT ... RETURNING, call nextval() in the same transaction, or use "
                        "pool.mode: session for this database."),
          type, out);
      return false;
    }
    effect = Effect::none;
  } else if (!sequence_own_ && may_call_nextval(sql)) {
    sequence_own_ = true;
  }
  return true;
}

bool TxnTracker::may_call_nextval(std::string_view sql) {
  if (!sql::transaction_control(sql)) return true;
  if (sql.find(';') == std::string_view::npos) return false;
  for (auto one : sql::split_statements(sql))
    if (!sql::transaction_control(one)) return true;
  return false;
}

void TxnTracker::refuse_with(std::string err, char type, std::string& out) {
  stats_.session_features_refused_total.fetch_add(1, std::memory_order_relaxed);
  fail_with(std::move(err), type, out);
}

void TxnTracker::fail_with(std::string err, char type, std::string& out) {
  if (type == fe::kQuery) {
    // A query that fails with a recognisable error; its ReadyForQuery follows as usual.
    p::append_query(out, "DEALLOCATE " + std::string(kSentinel));
    expect_.push_back(Expect{be::kReadyForQuery});
    expect_.back().action = Action::sentinel_error;
    expect_.back().more().error = std::move(err);
  } else {
    p::append_describe(out, 'S', kSentinel);
    expect_.push_back(Expect{be::kParseComplete, Action::sentinel_error, std::move(err)});
  }
}

void TxnTracker::evict_for(const std::string& name, pool::ServerStatements& server, std::string& out) {
  std::string victim = server.insert(name, capacity_);
  if (victim.empty()) return;
  stats_.prepared_statements_evicted_total.fetch_add(1, std::memory_order_relaxed);
  close_copy(std::move(victim), out);
}

void TxnTracker::close_copy(std::string name, std::string& out) {
  p::append_close(out, 'S', name);
  Expect e{be::kCloseComplete, Action::drop};
  e.more().server_name = std::move(name);
  e.evicted = true;  // skipped after an error: the server keeps it (undo() restores it)
  expect_.push_back(std::move(e));
}

bool TxnTracker::ensure_prepared(const TrackedStatement& st, pool::ServerStatements& server,
                                 std::string& out) {
  bool sent = false;
  for (auto& used : st.uses) sent |= ensure_prepared(*used, server, out);
  if (server.use(st.server_name)) return sent;
  evict_for(st.server_name, server, out);
  stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
  if (st.parse_message.empty()) {
    // A SQL PREPARE, run as a statement: Close first (the server may have it after all, and PREPARE would
    // fail), then the helper statement and portal left by an earlier failed run.
    p::append_close(out, 'S', st.server_name);
    p::append_close(out, 'P', kHelper);
    p::append_close(out, 'S', kHelper);
    for (int i = 0; i < 3; ++i) expect_.push_back(Expect{be::kCloseComplete, Action::drop});
    p::append_parse(out, kHelper, st.prepare_sql, p::kNoParameterTypes);
    expect_.push_back(Expect{be::kParseComplete, Action::drop});
    p::append_bind(out, kHelper, kHelper, p::kNoParameters);
    expect_.push_back(Expect{be::kBindComplete, Action::drop});
    p::append_execute(out, kHelper);
    Expect e{be::kCommandComplete, Action::drop};
    e.more().server_name = st.server_name;  // if skipped, the server lacks it (it was closed)
    expect_.push_back(std::move(e));
    return true;
  }
  close_stale(st.server_name, server, out);
  out.append(st.parse_message);
  Expect e{be::kParseComplete, Action::drop};
  e.more().server_name = st.server_name;
  expect_.push_back(std::move(e));
  return true;
}

TxnTracker::Prepared TxnTracker::prepare_checked(const std::shared_ptr<TrackedStatement>& st,
                                                 pool::ServerStatements& server, char type,
                                                 std::string& out) {
  if (hold_.state != HoldState::none) {
    Hold verdict = std::exchange(hold_, Hold{});  // the held message is back: what its probe found
    if (verdict.state == HoldState::changed && verdict.server_name == st->server_name) {
      fail_with(error_message("0A000", "cached plan must not change result type"), type, out);
      return Prepared::refused;
    }
  }
  const std::string& name = st->server_name;
  // Columns the client saw, on a server that answers what comes next (after an error it skips to the Sync,
  // and a hold would wait for a reply that never comes).
  bool check =
      allow_hold_ && st->desc_own && st->desc > kNoRows && !skip_to_sync_ && !st->parse_message.empty();
  if (const uint64_t* here = server.use_desc(name)) {  // the usual case: one lookup
    if (!check || *here == 0 || *here == st->desc) {
      for (auto& used : st->uses) ensure_prepared(*used, server, out);
      return Prepared::ready;
    }
    // This server's copy has other columns: prepared again (the table may be back to the client's columns).
    server.erase(name);
    close_copy(name, out);
  }
  ensure_prepared(*st, server, out);
  if (st->parse_message.empty() || skip_to_sync_ || (!check && st->desc == kNoRows)) return Prepared::ready;
  probe(st, name, check, out);
  return check ? Prepared::hold : Prepared::ready;
}

void TxnTracker::probe(const std::shared_ptr<TrackedStatement>& st, const std::string& server_name,
                       bool verify, std::string& out) {
  p::append_describe(out, 'S', server_name);
  expect_.push_back(Expect{be::kParameterDescription, Action::drop});
  Expect e{be::kRowDescription, Action::probe};
  e.verify = verify;
  e.more().probed = st;
  e.more().server_name = server_name;
  expect_.push_back(std::move(e));
  ++probes_;
  if (!verify) return;
  p::append_flush(out);  // the answer is needed before the client's next message goes
  hold_ = Hold{server_name, HoldState::waiting};
  held_ = true;
}

TxnTracker::Reply TxnTracker::probe_answered(char type, std::string_view body,
                                             pool::ServerStatements& server) {
  if (expect_.empty()) return Reply::forward;
  Expect& head = expect_.front();
  if (type == be::kParameterDescription) {
    if (head.reply != be::kParameterDescription) return Reply::forward;  // a Describe of the client's
    expect_.pop_front();
    return Reply::drop;
  }
  if (head.reply != be::kRowDescription || head.action != Action::probe) return Reply::forward;
  Expect e = std::move(head);
  expect_.pop_front();
  --probes_;
  uint64_t desc = type == be::kNoData ? kNoRows : desc_of(body);
  const ExpectMore& x = e.get();
  server.set_desc(x.server_name, desc);
  TrackedStatement& st = *x.probed;
  if (e.verify) {
    if (hold_.state == HoldState::waiting)
      hold_.state = desc == st.desc ? HoldState::matched : HoldState::changed;
  } else if (!st.desc_own) {
    st.desc = desc;  // the client's own Parse, or a copy prepared since a shared one's columns were taken
    st.desc_own = true;
  }
  return Reply::drop;
}

uint64_t TxnTracker::desc_of(std::string_view body) {
  // Per column: name, table OID, column number, type OID, size, modifier, format. PostgreSQL's
  // equalTupleDescs compares names, types, sizes and modifiers; where a column came from is not part of the
  // result type.
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  size_t pos = 2;
  uint16_t n = body.size() >= 2 ? uint16_t((uint8_t(body[0]) << 8) | uint8_t(body[1])) : 0;
  bool ok = body.size() >= 2;
  for (uint16_t i = 0; ok && i < n; ++i) {
    auto name = p::read_cstring(body, pos);
    ok = name && pos + 18 <= body.size();
    if (!ok) break;
    XXH3_64bits_update(&state, name->data(), name->size() + 1);
    XXH3_64bits_update(&state, body.data() + pos + 6, 10);  // type OID, size, modifier
    pos += 18;
  }
  if (!ok) XXH3_64bits_update(&state, body.data(), body.size());  // malformed: the bytes themselves
  uint64_t h = XXH3_64bits_digest(&state);
  return h > kNoRows ? h : h + 2;
}

void TxnTracker::close_stale(const std::string& name, const pool::ServerStatements& server,
                             std::string& out) {
  if (!server.close_first) return;
  p::append_close(out, 'S', name);
  expect_.push_back(Expect{be::kCloseComplete, Action::drop});
}

void TxnTracker::begin_injected(std::string_view begin_sql, std::string& out) {
  p::append_query(out, begin_sql);
  expect_.push_back(Expect{be::kCommandComplete, Action::drop});
  Expect z{be::kReadyForQuery, Action::drop};
  z.swallow = true;
  expect_.push_back(std::move(z));
}

void TxnTracker::sync_injected(std::string& out) {
  // Ends what ensure_prepared() sent before a Query: a Query after a failed extended message would be
  // skipped by the server (it waits for a Sync), so the injected batch gets its own. Its error, if any, is
  // not shown: the client's statement then fails by itself (25P02 in a failed transaction, as it would).
  // After a request that may fail since the last Sync, no Sync: the server must go on skipping the client's
  // Query if that request failed, as PostgreSQL would (and skips it too if what was injected fails).
  if (may_skip_) return;
  p::append_sync(out);
  Expect z{be::kReadyForQuery, Action::drop};
  z.swallow = true;
  expect_.push_back(std::move(z));
}

bool TxnTracker::rewrite_executes(std::string_view sql, pool::ServerStatements& server, std::string& out,
                                  std::string& text, std::vector<std::shared_ptr<TrackedStatement>>& uses,
                                  std::shared_ptr<const TextRewrite>& rewrite) {
  auto refs = sql::execute_references(sql);
  std::shared_ptr<TextRewrite> rw;
  size_t copied = 0;
  uint32_t copied_chars = 0;
  for (auto& ref : refs) {
    auto it = statements_.find(ref.name);
    if (it == statements_.end()) continue;
    if (!rw) {
      rw = std::make_shared<TextRewrite>();
      text.clear();
    }
    const auto& st = it->second;
    ensure_prepared(*st, server, out);
    uses.push_back(st);
    copied_chars += chars(sql.substr(copied, ref.begin - copied));
    text.append(sql.substr(copied, ref.begin - copied));
    text.append(st->server_name);
    uint32_t client_len = chars(sql.substr(ref.begin, ref.end - ref.begin));
    rw->edits.push_back({copied_chars, client_len, uint32_t(st->server_name.size())});
    rw->names.emplace_back(st->server_name, it->first);
    copied_chars += client_len;
    copied = ref.end;
  }
  if (!rw) return false;
  text.append(sql.substr(copied));
  rewrite = std::move(rw);
  return true;
}

void TxnTracker::carry_prepare(std::string_view sql, pool::ServerStatements& server, std::string& out,
                               Expect& z) {
  sql::NameRef ref = std::move(*prepare_);
  prepare_.reset();
  // What follows the name (types, AS, statement) is the statement; "\1sql" keeps these apart from Parse
  // names.
  std::string_view rest = sql.substr(ref.end);
  auto st = std::make_shared<TrackedStatement>();
  st->server_name = server_name_for(rest, "\1sql");
  auto existing = statements_.find(ref.name);
  // The same statement, created by a request still in flight that may not happen: the server has it exactly
  // when that happened, so it answers 42P05 (named back) or prepares it, as PostgreSQL would.
  Expect* touch = existing != statements_.end() ? pending_touch(ref.name) : nullptr;
  bool server_decides = touch && touch->get().created && touch->get().created->server_name == st->server_name;
  if (existing != statements_.end() && !server_decides) {
    // PostgreSQL refuses to redefine a name; so does the server here, through a sentinel (in a failed
    // transaction it answers 25P02 instead, as PostgreSQL would).
    p::append_query(out, "DEALLOCATE " + std::string(kSentinel));
    z.action = Action::sentinel_error;
    z.more().error = error_message("42P05", "prepared statement \"" + ref.name + "\" already exists");
    return;
  }
  st->prepare_sql = "PREPARE " + st->server_name + std::string(rest);
  evict_for(st->server_name, server, out);
  if (!server_decides) {
    p::append_close(out, 'S', st->server_name);  // another client's copy, if the server has one
    expect_.push_back(Expect{be::kCloseComplete, Action::drop});
  }
  stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
  std::string text(sql.substr(0, ref.begin));
  text.append(st->server_name);
  text.append(rest);
  p::append_query(out, text);
  auto rw = std::make_shared<TextRewrite>();
  rw->edits.push_back({chars(sql.substr(0, ref.begin)), chars(sql.substr(ref.begin, ref.end - ref.begin)),
                       uint32_t(st->server_name.size())});
  rw->names.emplace_back(st->server_name, ref.name);
  z.more().rewrite = std::move(rw);
  // Recorded now, not at its CommandComplete: a Query pipelined after this one may EXECUTE or DEALLOCATE it
  // before that comes. Undone if the PREPARE fails or is skipped.
  Expect c{be::kCommandComplete};
  c.uncertain = true;
  c.more().server_name = st->server_name;
  if (existing != statements_.end()) c.more().prev = existing->second;
  statements_[ref.name] = st;
  c.more().client_name = std::move(ref.name);
  c.more().created = std::move(st);
  expect_.push_back(std::move(c));
}

void TxnTracker::carry_multi(std::string_view sql, pool::ServerStatements& server, std::string& out,
                             Expect& z) {
  struct Edit {
    size_t begin, end;
    char kind;  // 'P' PREPARE, 'D' DEALLOCATE, 'E' EXECUTE
    std::string name;
    std::string_view rest;
  };
  std::vector<Edit> edits;
  for (auto& m : multi_)
    edits.push_back({size_t(m.begin - sql.data()), size_t(m.end - sql.data()), m.prepare ? 'P' : 'D',
                     std::move(m.name), m.rest});
  multi_.clear();
  if (sql::mentions_execute(sql))
    for (auto& r : sql::execute_references(sql))
      edits.push_back({r.begin, r.end, 'E', std::move(r.name), {}});
  std::sort(edits.begin(), edits.end(), [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
  // In the order of the text, as the server runs it: a name means what the statements before it made of it.
  std::string pre, text;
  std::vector<Expect> replies;  // the Query's own CommandCompletes of PREPARE / DEALLOCATE
  std::vector<std::string>
      made;  // server names a PREPARE earlier in the text creates (not to prepare before)
  auto rw = std::make_shared<TextRewrite>();
  bool injected = false;
  size_t copied = 0;
  uint32_t copied_chars = 0;
  for (auto& e : edits) {
    std::string server_name;
    auto it = statements_.find(e.name);
    auto prepared_here = [&](const std::string& n) {
      return std::find(made.begin(), made.end(), n) != made.end();
    };
    if (e.kind == 'P' && it == statements_.end()) {
      auto st = std::make_shared<TrackedStatement>();
      st->server_name = server_name_for(e.rest, "\1sql");
      st->prepare_sql = "PREPARE " + st->server_name + std::string(e.rest);
      evict_for(st->server_name, server, pre);
      p::append_close(pre, 'S', st->server_name);  // another client's copy, if the server has one
      expect_.push_back(Expect{be::kCloseComplete, Action::drop});
      stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
      server_name = st->server_name;
      made.push_back(server_name);
      Expect c{be::kCommandComplete};
      c.uncertain = true;
      c.more().server_name = server_name;
      c.more().client_name = e.name;
      c.more().created = st;
      statements_[e.name] = std::move(st);
      replies.push_back(std::move(c));
    } else if (it != statements_.end()) {
      // EXECUTE, DEALLOCATE, or a PREPARE of a name the client has: under the server's name, which the server
      // must have (a PREPARE of it then fails with the 42P05 PostgreSQL gives, after checking the text).
      auto st = it->second;
      server_name = st->server_name;
      if (!prepared_here(server_name)) injected |= ensure_prepared(*st, server, pre);
      if (e.kind == 'D') {
        Expect c{be::kCommandComplete};
        c.uncertain = true;
        c.more().client_name = e.name;
        c.more().removed = st;
        ghosts_.emplace_back(server_name, e.name);
        statements_.erase(it);
        replies.push_back(std::move(c));
      }
    } else {
      continue;  // not a statement of the client's: the server answers 26000 naming it
    }
    copied_chars += chars(sql.substr(copied, e.begin - copied));
    text.append(sql.substr(copied, e.begin - copied));
    text.append(server_name);
    uint32_t client_len = chars(sql.substr(e.begin, e.end - e.begin));
    rw->edits.push_back({copied_chars, client_len, uint32_t(server_name.size())});
    rw->names.emplace_back(server_name, e.name);
    copied_chars += client_len;
    copied = e.end;
  }
  text.append(sql.substr(copied));
  out.append(pre);
  if (injected) sync_injected(out);
  p::append_query(out, text);
  for (auto& c : replies) expect_.push_back(std::move(c));
  z.more().rewrite = std::move(rw);
}

std::string TxnTracker::marker_name(uint32_t n) const {
  return "pgr_marker_" + std::to_string(owner_) + "_" + std::to_string(n);
}

TxnTracker::Expect* TxnTracker::pending_touch(const std::string& name) {
  // The newest request in flight that creates or removes the name decides; one that cannot fail or be skipped
  // (a Close, a Parse of a statement the server has, after a Sync) makes the name certain again.
  Expect* found = nullptr;
  bool done = false;
  expect_.for_each_newest_first([&](Expect& e) {
    if (done || !e.extra) return;
    auto& x = *e.extra;
    bool touches = x.client_name == name && (x.created || x.removed);
    for (auto& fx : x.effects) touches |= fx.removed && fx.client_name == name;
    if (!touches) return;
    done = true;
    if (e.uncertain) found = &e;
  });
  return found;
}

void TxnTracker::forget_created(const std::string& name, const std::shared_ptr<TrackedStatement>& mine,
                                const std::shared_ptr<TrackedStatement>& prev) {
  ghosts_.emplace_back(mine->server_name, name);  // a request sent meanwhile may still name it
  auto it = statements_.find(name);
  if (it != statements_.end() && it->second == mine) {
    if (prev)
      it->second = prev;
    else
      statements_.erase(it);
    return;
  }
  // Redefined or removed by a later request in flight: that one replaced `prev`, not `mine`.
  expect_.for_each_newest_first([&](Expect& e) {
    if (!e.extra) return;
    auto& x = *e.extra;
    if (x.prev == mine) x.prev = prev;
    if (x.removed == mine) x.removed = prev;
    for (auto& fx : x.effects)
      if (fx.removed == mine) fx.removed = prev;
  });
}

void TxnTracker::prepare_unnamed_here(pool::ServerStatements& server, std::string& out,
                                      std::string_view query, std::string_view types, Action parse_action) {
  evict_for(unnamed_server_, server, out);
  close_stale(unnamed_server_, server, out);
  p::append_parse(out, unnamed_server_, query, types);
  stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
  Expect e{be::kParseComplete, parse_action};
  // The client's own Parse: if it fails or is skipped, the client has no unnamed statement (as in
  // PostgreSQL). One pgrouter sent before a Bind/Describe: its reply is dropped, and the client's statement
  // stays.
  e.unnamed = parse_action == Action::forward;
  e.more().server_name = unnamed_server_;  // if it does not happen, the server lacks it
  expect_.push_back(std::move(e));
}

bool TxnTracker::client_message(char type, std::string_view body, pool::ServerStatements& server,
                                std::string& out, Effect& effect) {
  held_ = false;
  bool replaced;
  if (marker_left_ && expect_.empty() &&
      (type == fe::kParse || type == fe::kBind || type == fe::kDescribe || type == fe::kClose ||
       type == fe::kQuery)) {
    // Nothing in flight can test the last marker statement any more: it goes, before this message.
    marker_left_ = false;
    p::append_close(out, 'S', marker_name(markers_));
    expect_.push_back(Expect{be::kCloseComplete, Action::drop});
    if (!track_client(type, body, server, out, effect)) out.append(body.data() - 5, body.size() + 5);
    replaced = true;
  } else {
    replaced = track_client(type, body, server, out, effect);
  }
  if (held_) {
    may_skip_ = true;  // what was sent (a Parse, a Describe) may fail
    return true;
  }
  // PostgreSQL skips what follows a failed Parse/Bind/Describe/Execute up to the next Sync (a Close cannot
  // fail).
  if (type == fe::kSync)
    may_skip_ = false;
  else if (type == fe::kParse || type == fe::kBind || type == fe::kDescribe || type == fe::kExecute)
    may_skip_ = true;
  return replaced;
}

bool TxnTracker::track_client(char type, std::string_view body, pool::ServerStatements& server,
                              std::string& out, Effect& effect) {
  effect = Effect::none;
  switch (type) {
    case fe::kParse:
      return track_parse(body, server, out, effect);
    case fe::kBind:
    case fe::kDescribe:
      return track_bind_or_describe(type, body, server, out);
    case fe::kClose:
      return track_close(body, server, out);
    case fe::kQuery:
      return track_query(body, server, out, effect);
    case fe::kSync:
    case fe::kFunctionCall:
      track_sync(type);
      return false;
    default:
      return false;
  }
}

bool TxnTracker::track_parse(std::string_view body, pool::ServerStatements& server, std::string& out,
                             Effect& effect) {
  size_t pos = 0;
  auto name = p::read_cstring(body, pos);
  auto query = name ? p::read_cstring(body, pos) : std::nullopt;
  if (!query) {  // malformed: the server answers with a protocol error
    expect_.push_back(Expect{be::kParseComplete});
    return false;
  }
  std::string_view types = body.substr(pos);
  std::string feature;
  effect = session_effect(*query, !name->empty(), false, feature);
  if (effect == Effect::unsupported && refuse_) {
    refuse(feature, fe::kParse, out);
    return true;
  }
  if (!sequence_text(*query, fe::kParse, out, effect)) return true;
  std::string client_name(*name);
  // A request in flight that may or may not create or remove the name: the server decides (below).
  Expect* touch = client_name.empty() ? nullptr : pending_touch(client_name);
  if (!client_name.empty() && !touch && statements_.count(client_name)) {
    parse_duplicate(client_name, *query, types, out);
    return true;
  }
  // Statements the text names get their server names, and are prepared here first.
  std::string rewritten_text;
  std::vector<std::shared_ptr<TrackedStatement>> uses;
  std::shared_ptr<const TextRewrite> rw;
  bool rewritten = rewrite_parse_text(*query, server, out, rewritten_text, uses, rw);
  std::string_view text = rewritten ? std::string_view(rewritten_text) : *query;
  // A Parse that may be skipped, or that PostgreSQL refuses with 25P02 in a failed transaction (or one that
  // may fail before it) unless it ends the transaction, must reach the server: never the no-op reuse.
  bool tx_may_fail = tx_status_ == 'E' || (tx_status_ == 'T' && !expect_.empty());
  bool may_fail = may_skip_ || tx_may_fail;
  if (client_name.empty()) {
    // (Skipped, the reuse and a real Parse leave the same: only a failed transaction matters here.)
    bool shareable = prepare_unnamed_ && !rewritten && effect == Effect::none && !tx_may_fail;
    return parse_unnamed(text, types, rewritten, shareable, std::move(uses), std::move(rw), server, out);
  }
  NamedParse np = define_named(std::move(client_name), text, types, std::move(uses), std::move(rw),
                               !touch && may_fail, server);
  if (touch && touch->marker)
    parse_after_marker(np, *touch, server, out);
  else if (touch && witness(*touch) != np.st->server_name)
    parse_with_witness(np, *touch, server, out);
  else if (!touch && server.use(np.st->server_name))
    parse_reuse(np, server, out);
  else
    parse_real(np, touch != nullptr, server, out);
  return true;
}

void TxnTracker::parse_duplicate(const std::string& client_name, std::string_view query,
                                 std::string_view types, std::string& out) {
  // PostgreSQL refuses to redefine a name, but checks a failed transaction (25P02) and the text (42P01,
  // 42601, ...) first: the server runs the client's Parse under a name it has (an empty statement made just
  // before, which a failed transaction allows), so it answers in that order; its 42P05 names the client's.
  p::append_close(out, 'S', kDuplicate);  // left by an earlier duplicate, if any
  expect_.push_back(Expect{be::kCloseComplete, Action::drop});
  p::append_parse(out, kDuplicate, "", p::kNoParameterTypes);
  expect_.push_back(Expect{be::kParseComplete, Action::drop});
  p::append_parse(out, kDuplicate, query, types);
  Expect e{be::kParseComplete, Action::sentinel_error,
           error_message("42P05", "prepared statement \"" + client_name + "\" already exists")};
  e.more().match = "prepared statement \"" + std::string(kDuplicate) + "\" already exists";
  expect_.push_back(std::move(e));
  ghosts_.emplace_back(kDuplicate, client_name);  // any other mention of it names the client's statement
}

bool TxnTracker::rewrite_parse_text(std::string_view query, pool::ServerStatements& server, std::string& out,
                                    std::string& text, std::vector<std::shared_ptr<TrackedStatement>>& uses,
                                    std::shared_ptr<const TextRewrite>& rewrite) {
  if (dealloc_) {
    // DEALLOCATE of a statement of ours: the server knows it by its own name, and must have it.
    auto st = std::move(dealloc_);
    dealloc_.reset();
    ensure_prepared(*st, server, out);
    text = "DEALLOCATE " + st->server_name;
    return true;
  }
  if (!statements_.empty() && sql::mentions_execute(query))
    return rewrite_executes(query, server, out, text, uses, rewrite);
  return false;
}

bool TxnTracker::parse_unnamed(std::string_view text, std::string_view types, bool rewritten, bool shareable,
                               std::vector<std::shared_ptr<TrackedStatement>> uses,
                               std::shared_ptr<const TextRewrite> rw, pool::ServerStatements& server,
                               std::string& out) {
  if (window_ && !unnamed_saved_) {  // keep the window's starting point for rewind()
    std::swap(unnamed_before_window_, unnamed_parse_);
    std::swap(unnamed_server_before_window_, unnamed_server_);
    std::swap(unnamed_hash_before_window_, unnamed_hash_);
    unnamed_saved_ = true;
  }
  unnamed_valid_ = true;
  unnamed_parse_.clear();
  p::append_parse(unnamed_parse_, "", text, types);
  unnamed_uses_ = std::move(uses);
  unnamed_rewrite_ = rw;
  XXH128_hash_t h;
  if (shareable && seen_unnamed.check_and_record(h = statement_hash(text, types))) {
    parse_unnamed_shared(h, text, types, server, out);
    return true;
  }
  unnamed_server_.clear();
  Expect e{be::kParseComplete};
  e.unnamed = true;
  if (rw) e.more().rewrite = rw;
  expect_.push_back(std::move(e));
  server.unnamed_owner = owner_;
  if (!rewritten) return false;
  out.append(unnamed_parse_);
  return true;
}

void TxnTracker::parse_unnamed_shared(const XXH128_hash_t& h, std::string_view text, std::string_view types,
                                      pool::ServerStatements& server, std::string& out) {
  // Seen before: prepared under its shared name, parsed once per server connection (pool.unnamed_statements).
  // Usually the client's previous unnamed statement again: its name is already there.
  if (unnamed_server_.empty() || !XXH128_isEqual(h, unnamed_hash_)) name_from(h, unnamed_server_);
  unnamed_hash_ = h;
  if (server.use(unnamed_server_)) {
    stats_.prepared_statements_reused_total.fetch_add(1, std::memory_order_relaxed);
    p::append_close(out, 'S', kNoStatement);  // answers CloseComplete, shown as ParseComplete
    Expect e{be::kCloseComplete, Action::as_parse_complete};
    e.unnamed = true;
    expect_.push_back(std::move(e));
    return;
  }
  prepare_unnamed_here(server, out, text, types, Action::forward);
}

TxnTracker::NamedParse TxnTracker::define_named(std::string client_name, std::string_view text,
                                                std::string_view types,
                                                std::vector<std::shared_ptr<TrackedStatement>> uses,
                                                std::shared_ptr<const TextRewrite> rw, bool own_copy,
                                                const pool::ServerStatements& server) {
  auto st = std::make_shared<TrackedStatement>();
  XXH128_hash_t h = statement_hash(text, types);
  name_from(h, st->server_name);
  // A copy made by a request still in flight with a Sync (or Query) after it is no copy to reuse either: that
  // request may have been skipped or failed while this batch runs, and its Bind would meet no statement. (A
  // request in flight on the client's own name decides through its witness instead.)
  if (!own_copy && server.contains(st->server_name) && !pending_touch(client_name)) {
    bool sync_after = false;
    expect_.for_each_newest_first([&](Expect& e) {
      if (e.reply == be::kReadyForQuery) sync_after = true;
      // A creation: undo() takes its server name out of `server` again if it is skipped or fails.
      bool creates = (e.reply == be::kParseComplete || e.reply == be::kCommandComplete) &&
                     e.action != Action::sentinel_error && e.extra && e.extra->server_name == st->server_name;
      own_copy = own_copy || (sync_after && creates);
    });
  }
  // After a request that may fail, this Parse may be skipped, and a later batch of the same write may name
  // the statement before pgrouter knows: a Parse the server really runs (when it lacks the statement) makes
  // the server's answer to that batch follow what happened. Where the server has the shared statement
  // already, the client gets its own copy instead of a no-op that cannot be skipped visibly.
  for (uint64_t k = 1; own_copy && server.contains(st->server_name); ++k) {
    h.low64 ^= (owner_ + k) * 0x9e3779b97f4a7c15ull;
    name_from(h, st->server_name);
  }
  p::append_parse(st->parse_message, st->server_name, text, types);
  st->uses = std::move(uses);
  st->rewrite = std::move(rw);
  NamedParse np{std::move(client_name), st, nullptr};
  if (auto it = statements_.find(np.client_name); it != statements_.end()) np.prev = it->second;
  statements_[np.client_name] = st;
  return np;
}

void TxnTracker::NamedParse::record(Expect& e) {
  e.uncertain = true;
  e.more().client_name = std::move(client_name);
  e.more().created = st;
  e.more().prev = std::move(prev);
}

void TxnTracker::parse_client_text(const TrackedStatement& st, pool::ServerStatements& server,
                                   std::string& out) {
  if (server.use(st.server_name)) return;
  evict_for(st.server_name, server, out);
  close_stale(st.server_name, server, out);
  out.append(st.parse_message);
  stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
  Expect e{be::kParseComplete, Action::drop};
  e.client_text = true;
  e.more().server_name = st.server_name;
  e.more().rewrite = st.rewrite;
  expect_.push_back(std::move(e));
}

void TxnTracker::parse_after_marker(NamedParse& np, const Expect& touch, pool::ServerStatements& server,
                                    std::string& out) {
  // Closed by a request in flight whose marker exists exactly when that Close happened: the client's text
  // is parsed, then a Bind of the marker fails (replaced by PostgreSQL's 42P05) if the Close did not
  // happen; a no-op Close answers the client's ParseComplete.
  parse_client_text(*np.st, server, out);
  const std::string& marker = touch.get().server_name;
  p::append_close(out, 'P', kHelper);  // left by a failed run, if any
  expect_.push_back(Expect{be::kCloseComplete, Action::drop});
  p::append_bind(out, kHelper, marker, p::kNoParameters);
  Expect g{be::kBindComplete, Action::sentinel_error,
           error_message("42P05", "prepared statement \"" + np.client_name + "\" already exists")};
  g.more().match = "prepared statement \"" + marker + "\" does not exist";
  expect_.push_back(std::move(g));
  p::append_close(out, 'P', kHelper);
  expect_.push_back(Expect{be::kCloseComplete, Action::drop});
  p::append_close(out, 'S', kNoStatement);
  Expect e{be::kCloseComplete, Action::as_parse_complete};
  np.record(e);
  expect_.push_back(std::move(e));
}

void TxnTracker::parse_with_witness(NamedParse& np, const Expect& touch, pool::ServerStatements& server,
                                    std::string& out) {
  // Whether the name exists depends on a request in flight; the server knows: its witness exists exactly
  // when the name does. The client's text is parsed first (its errors come before 42P05 in PostgreSQL
  // too), then a Parse of the witness fails with 42P05 (named back) if it exists, or creates an empty
  // statement closed at once.
  std::string w = witness(touch);
  parse_client_text(*np.st, server, out);
  p::append_parse(out, w, "", p::kNoParameterTypes);
  Expect g{be::kParseComplete};
  np.record(g);
  expect_.push_back(std::move(g));
  p::append_close(out, 'S', w);
  expect_.push_back(Expect{be::kCloseComplete, Action::drop});
}

void TxnTracker::parse_reuse(NamedParse& np, const pool::ServerStatements& server, std::string& out) {
  np.st->desc = server.desc(np.st->server_name);  // not desc_own: the copy may predate a change of its table
  stats_.prepared_statements_reused_total.fetch_add(1, std::memory_order_relaxed);
  p::append_close(out, 'S', kNoStatement);  // answers CloseComplete, shown as ParseComplete
  Expect e{be::kCloseComplete, Action::as_parse_complete};
  e.more().client_name = std::move(np.client_name);
  e.more().created = np.st;
  e.more().prev = std::move(np.prev);
  expect_.push_back(std::move(e));
}

void TxnTracker::parse_real(NamedParse& np, bool touched, pool::ServerStatements& server, std::string& out) {
  // The server lacks it, or (touched: the same statement, created or closed by a request in flight) has it
  // exactly when the client has the name: a real Parse, which the server answers as PostgreSQL would.
  const std::shared_ptr<TrackedStatement> st = np.st;
  evict_for(st->server_name, server, out);
  if (!touched) close_stale(st->server_name, server, out);
  out.append(st->parse_message);
  stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
  Expect e{be::kParseComplete};
  e.more().server_name = st->server_name;
  e.more().rewrite = st->rewrite;
  np.record(e);
  expect_.push_back(std::move(e));
  probe(st, st->server_name, false, out);  // the result columns the client's statement keeps
}

namespace {
// The client's Bind (its portal and the rest of its body after the statement name) or Describe of a
// statement, naming the statement's server name.
void append_renamed(std::string& out, char type, std::string_view portal, std::string_view server_name,
                    std::string_view bind_rest) {
  if (type == fe::kBind)
    p::append_bind(out, portal, server_name, bind_rest);
  else
    p::append_describe(out, 'S', server_name);
}
}  // namespace

bool TxnTracker::track_bind_or_describe(char type, std::string_view body, pool::ServerStatements& server,
                                        std::string& out) {
  size_t pos = 0;
  std::string_view portal;
  std::optional<std::string_view> stmt;
  if (type == fe::kBind) {
    auto pt = p::read_cstring(body, pos);
    if (!pt) return false;
    portal = *pt;
    stmt = p::read_cstring(body, pos);
  } else {
    if (body.empty() || body[0] != 'S') return false;
    pos = 1;
    stmt = p::read_cstring(body, pos);
  }
  if (!stmt) return false;
  std::string_view rest = body.substr(pos);
  if (stmt->empty()) return bind_or_describe_unnamed(type, body, portal, rest, server, out);
  auto it = statements_.find(std::string(*stmt));
  if (type == fe::kBind) bound(it == statements_.end() ? nullptr : it->second->rewrite);
  if (it == statements_.end()) return bind_or_describe_closed(type, *stmt, portal, rest, server, out);
  auto st = it->second;
  auto prepared = prepare_checked(st, server, type, out);
  if (prepared != Prepared::ready) return true;
  append_renamed(out, type, portal, st->server_name, rest);
  return true;
}

bool TxnTracker::bind_or_describe_unnamed(char type, std::string_view body, std::string_view portal,
                                          std::string_view rest, pool::ServerStatements& server,
                                          std::string& out) {
  if (type == fe::kBind) bound(unnamed_valid_ ? unnamed_rewrite_ : nullptr);
  if (unnamed_valid_ && !unnamed_server_.empty()) {  // prepared under its shared name
    if (!server.use(unnamed_server_)) {
      auto [query, types] = *parse_text(unnamed_parse_);
      prepare_unnamed_here(server, out, query, types, Action::drop);
    }
    append_renamed(out, type, portal, unnamed_server_, rest);
    return true;
  }
  // The unnamed statement lives on one server until someone else parses there (or the client drops it
  // elsewhere: a simple Query on another server leaves this one's copy, which PostgreSQL would not have).
  if (server.unnamed_owner == owner_ && unnamed_valid_) return false;
  if (unnamed_valid_) {
    for (auto& used : unnamed_uses_) ensure_prepared(*used, server, out);
    out.append(unnamed_parse_);
    Expect e{be::kParseComplete, Action::drop};
    e.unnamed = e.unnamed_resend = true;
    expect_.push_back(std::move(e));
  } else {
    // The client has no unnamed statement, but the server may hold another client's: close it, so
    // this Bind/Describe fails with 26000 as it would in the client's own session.
    p::append_close(out, 'S', "");
    Expect e{be::kCloseComplete, Action::drop};
    e.unnamed = true;
    expect_.push_back(std::move(e));
  }
  server.unnamed_owner = owner_;
  out.append(body.data() - 5, body.size() + 5);
  return true;
}

bool TxnTracker::bind_or_describe_closed(char type, std::string_view name, std::string_view portal,
                                         std::string_view rest, pool::ServerStatements& server,
                                         std::string& out) {
  // Closed by a request in flight that may be skipped: the server still has the statement exactly when
  // that Close did not happen (its 26000 is named back).
  Expect* touch = pending_touch(std::string(name));
  if (!touch || !touch->get().removed) return false;  // unknown: the server says 26000 with the client's name
  if (!touch->marker) {
    append_renamed(out, type, portal, witness(*touch), rest);
    return true;
  }
  // The marker exists if the Close happened: then its Parse fails, and the client gets the 26000 PostgreSQL
  // gives; otherwise the empty statement it made goes again and the statement is bound as it still exists.
  auto st = touch->get().removed;
  const std::string& marker = touch->get().server_name;
  p::append_parse(out, marker, "", p::kNoParameterTypes);
  Expect g{be::kParseComplete, Action::sentinel_error,
           error_message("26000", "prepared statement \"" + std::string(name) + "\" does not exist")};
  g.more().match = "prepared statement \"" + marker + "\" already exists";
  expect_.push_back(std::move(g));
  p::append_close(out, 'S', marker);
  expect_.push_back(Expect{be::kCloseComplete, Action::drop});
  ensure_prepared(*st, server, out);
  append_renamed(out, type, portal, st->server_name, rest);
  return true;
}

bool TxnTracker::track_close(std::string_view body, pool::ServerStatements& server, std::string& out) {
  Expect e{be::kCloseComplete};
  if (body.empty() || body[0] != 'S') {
    expect_.push_back(std::move(e));
    return false;
  }
  size_t pos = 1;
  auto name = p::read_cstring(body, pos);
  if (!name || name->empty()) {
    if (name) {
      unnamed_valid_ = false;
      server.unnamed_owner = 0;  // the server's unnamed statement is gone, whoever parsed it
    }
    expect_.push_back(std::move(e));
    return false;
  }
  // The client's name is forgotten; the server keeps the statement for whoever needs it next.
  auto it = statements_.find(std::string(*name));
  if (it == statements_.end()) {
    // Closed already by a request in flight that may not happen: this one closes it in any case (if that
    // one is undone, the statement stays closed).
    if (Expect* touch = pending_touch(std::string(*name)); touch && touch->get().removed) {
      e.more().client_name = std::string(*name);
      e.more().removed = touch->get().removed;
    }
    expect_.push_back(std::move(e));
    p::append_close(out, 'S', kNoStatement);
    return true;
  }
  close_named(it, std::move(e), server, out);
  return true;
}

void TxnTracker::close_named(StatementMap::iterator it, Expect e, pool::ServerStatements& server,
                             std::string& out) {
  e.more().client_name = it->first;
  e.more().removed = it->second;
  const std::string& server_name = it->second->server_name;
  // After a request that may fail, this Close may be skipped while a later batch of the same write names the
  // statement: the server's copy is really closed, so that its existence follows what happened (unless
  // another name of the client shares it).
  bool shared = may_skip_ && std::any_of(statements_.begin(), statements_.end(), [&](auto& kv) {
                  return kv.first != it->first && kv.second->server_name == server_name;
                });
  if (may_skip_ && !shared && server.contains(server_name)) {
    e.uncertain = true;
    p::append_close(out, 'S', server_name);
    server.erase(server_name);
    ghosts_.emplace_back(server_name, it->first);
    statements_.erase(it);
    expect_.push_back(std::move(e));
    return;
  }
  p::append_close(out, 'S', kNoStatement);
  if (may_skip_) {
    // The server's copy cannot follow it (there is none here, or another name needs it): an empty marker
    // statement made right after the Close exists exactly when the Close happened.
    e.uncertain = e.marker = true;
    marker_left_ = false;  // an older marker stays behind (unique names: it cannot mislead)
    e.more().server_name = marker_name(++markers_);
    p::append_parse(out, e.more().server_name, "", p::kNoParameterTypes);
    statements_.erase(it);
    expect_.push_back(std::move(e));
    expect_.push_back(Expect{be::kParseComplete, Action::drop});
    return;
  }
  statements_.erase(it);
  expect_.push_back(std::move(e));
}

bool TxnTracker::track_query(std::string_view body, pool::ServerStatements& server, std::string& out,
                             Effect& effect) {
  size_t pos = 0;
  auto sql = p::read_cstring(body, pos);
  std::string feature;
  if (sql) effect = session_effect(*sql, false, true, feature);
  last_query_plain_ = sql && effect == Effect::none;
  unnamed_valid_ = false;  // a simple Query drops the unnamed statement
  server.unnamed_owner = 0;
  if (effect == Effect::unsupported && refuse_) {
    refuse(feature, fe::kQuery, out);
    return true;
  }
  if (sql && !sequence_text(*sql, fe::kQuery, out, effect)) return true;
  Expect z{be::kReadyForQuery};
  z.not_sync = true;
  end_group(z);
  group_rewrite_.reset();
  group_bound_ = group_mixed_ = false;
  bool rewritten = false;
  if (!multi_.empty()) {
    carry_multi(*sql, server, out, z);
    rewritten = true;
  } else if (prepare_) {
    carry_prepare(*sql, server, out, z);
    rewritten = true;
  } else if (dealloc_) {
    carry_deallocate(server, out, z);
    rewritten = true;
  } else if (sql && !statements_.empty() && sql::mentions_execute(*sql)) {
    rewritten = carry_executes(*sql, server, out, z);
  }
  expect_.push_back(std::move(z));
  return rewritten;
}

void TxnTracker::carry_deallocate(pool::ServerStatements& server, std::string& out, Expect& z) {
  // DEALLOCATE of a statement of ours: the server knows it by its own name, and must have it.
  auto st = std::move(dealloc_);
  dealloc_.reset();
  if (ensure_prepared(*st, server, out)) sync_injected(out);
  p::append_query(out, "DEALLOCATE " + st->server_name);
  // Forgotten now: a Query pipelined after this one (PREPARE of the same name) must not find it. Put back
  // if the DEALLOCATE fails.
  for (auto& fx : z.more().effects)
    if (fx.kind == OnSuccess::deallocate && fx.server_name == st->server_name) {
      if (auto it = statements_.find(fx.client_name); it != statements_.end() && it->second == st) {
        fx.removed = st;
        statements_.erase(it);
        ghosts_.emplace_back(st->server_name, fx.client_name);
      }
    }
}

bool TxnTracker::carry_executes(std::string_view sql, pool::ServerStatements& server, std::string& out,
                                Expect& z) {
  std::string text;
  std::vector<std::shared_ptr<TrackedStatement>> uses;
  size_t mark = out.size();
  std::shared_ptr<const TextRewrite> rw;
  bool rewritten = false;
  if (rewrite_executes(sql, server, out, text, uses, rw)) {
    if (out.size() > mark) sync_injected(out);
    p::append_query(out, text);
    rewritten = true;
  }
  if (rw) z.more().rewrite = std::move(rw);
  return rewritten;
}

void TxnTracker::track_sync(char type) {
  Expect z{be::kReadyForQuery};
  z.not_sync = type == fe::kFunctionCall;
  end_group(z);
  if (type == fe::kSync && !group_mixed_ && group_rewrite_) z.more().rewrite = std::move(group_rewrite_);
  group_rewrite_.reset();
  group_bound_ = group_mixed_ = false;
  expect_.push_back(std::move(z));
}

void TxnTracker::undo(Expect& e, pool::ServerStatements& server, bool duplicate) {
  // The server skipped this request after an error (or it failed): as in PostgreSQL, it had no effect.
  if (e.unnamed) server.unnamed_owner = 0;  // it still has its unnamed statement, perhaps another client's
  const ExpectMore& x = e.get();
  if (e.action == Action::probe) {
    --probes_;
    if (e.verify && holding()) hold_.state = HoldState::skipped;
    return;
  }
  if (e.reply == be::kParseComplete && e.action != Action::sentinel_error) {
    if (e.unnamed && !e.unnamed_resend) unnamed_valid_ = false;
    if (x.created) forget_created(x.client_name, x.created, x.prev);
    // A 42P05 says the server has it (created by a request before, as the client's name was).
    if (!x.server_name.empty() && !duplicate) server.erase(x.server_name);
  } else if (e.reply == be::kCloseComplete) {
    if (e.action == Action::as_parse_complete) {
      if (e.unnamed)
        unnamed_valid_ = false;
      else if (x.created)
        forget_created(x.client_name, x.created, x.prev);
    } else if (e.evicted) {
      server.restore(x.server_name);
    } else if (x.removed) {
      if (e.uncertain && !e.marker) server.restore(x.removed->server_name);  // it would have closed it
      // The oldest later request in flight that touches the name takes over: a Parse of it replaced nothing
      // as far as it knew (it replaced this), a Close of it closes this; with none, the statement is back.
      Expect* first = nullptr;
      expect_.for_each_newest_first([&](Expect& later) {
        if (&later != &e && later.extra && later.extra->client_name == x.client_name &&
            (later.extra->created || later.extra->removed))
          first = &later;
      });
      if (!first)
        statements_[x.client_name] = x.removed;
      else if (first->extra->created && !first->extra->prev)
        first->extra->prev = x.removed;
    }
  } else if (e.reply == be::kReadyForQuery) {
    // A skipped Query: a DEALLOCATE in it, which forgot its name when sent, did not happen.
    for (auto& fx : x.effects)
      if (fx.removed && !statements_.count(fx.client_name)) statements_[fx.client_name] = fx.removed;
  } else if (e.reply == be::kCommandComplete) {
    // A PREPARE that did not run (or failed) after its statement was closed: the server lacks it.
    if (x.created) forget_created(x.client_name, x.created, x.prev);
    // A DEALLOCATE that did not run: the name is back, unless a later request in flight took it.
    if (x.removed && !statements_.count(x.client_name)) statements_[x.client_name] = x.removed;
    if (!x.server_name.empty() && !duplicate) server.erase(x.server_name);
  }
}

bool TxnTracker::fix_error(std::string_view body, const TextRewrite* rw, bool strip_position,
                           std::string& replacement) const {
  // Server names in the texts become the client's names; a position in a rewritten text becomes one in
  // the client's (in a text the client never sent, it is left out).
  bool names = body.find("pgr_") != std::string_view::npos;
  bool position = false;
  for (size_t i = 0; i < body.size() && body[i] != '\0';) {
    if (body[i] == 'P') position = true;
    size_t e = body.find('\0', i + 1);
    if (e == std::string_view::npos) return false;
    i = e + 1;
  }
  if (!names && !(position && (rw || strip_position))) return false;
  std::string out;
  for (size_t i = 0; i < body.size() && body[i] != '\0';) {
    char code = body[i];
    size_t e = body.find('\0', i + 1);
    std::string value(body.substr(i + 1, e - i - 1));
    i = e + 1;
    if (code == 'P') {
      if (strip_position) continue;
      if (rw) value = std::to_string(rw->client_position(uint32_t(std::strtoul(value.c_str(), nullptr, 10))));
    } else if (names && (code == 'M' || code == 'D' || code == 'H') &&
               value.find("pgr_") != std::string::npos) {
      if (rw)
        for (auto& [server_name, client_name] : rw->names) replace_all(value, server_name, client_name);
      for (auto& [client_name, st] : statements_)
        if (value.find(st->server_name) != std::string::npos)
          replace_all(value, st->server_name, client_name);
      for (auto& [server_name, client_name] : ghosts_)
        if (value.find(server_name) != std::string::npos) replace_all(value, server_name, client_name);
      if (!unnamed_server_.empty())
        replace_all(value, unnamed_server_, "");  // the client's unnamed statement
    }
    out.push_back(code);
    out.append(value);
    out.push_back('\0');
  }
  out.push_back('\0');
  replacement.clear();
  p::append_header(replacement, be::kErrorResponse, out.size());
  replacement.append(out);
  return true;
}

void TxnTracker::rewind() {
  // Latest first (unmatched, then matched), so a Close then a Parse of the same name comes back to the
  // statement before both. Server-side effects (statements prepared or evicted there) go with the
  // server being dropped.
  auto undo_client_side = [this](Expect& e) {
    const ExpectMore& x = e.get();
    if (x.created) {  // a Parse or PREPARE: the name means what it meant before
      if (x.prev)
        statements_[x.client_name] = x.prev;
      else
        statements_.erase(x.client_name);
    } else if ((e.reply == be::kCloseComplete || e.reply == be::kCommandComplete) && x.removed &&
               !e.evicted) {
      statements_[x.client_name] = x.removed;
    }
    for (auto& fx : x.effects)
      if (fx.removed) statements_[fx.client_name] = fx.removed;
  };
  expect_.for_each_newest_first(undo_client_side);
  for (auto it = window_matched_.rbegin(); it != window_matched_.rend(); ++it) undo_client_side(*it);
  window_matched_.clear();
  expect_.clear();
  probes_ = 0;
  if (holding()) hold_.state = HoldState::skipped;
  ghosts_.clear();
  may_skip_ = window_may_skip_;
  skip_to_sync_ = false;
  group_sets_.clear();
  group_effects_.clear();
  dealloc_.reset();
  multi_.clear();
  if (unnamed_saved_) {
    std::swap(unnamed_before_window_, unnamed_parse_);
    std::swap(unnamed_server_before_window_, unnamed_server_);
    std::swap(unnamed_hash_before_window_, unnamed_hash_);
  }
  unnamed_saved_ = false;
  unnamed_valid_ = window_unnamed_valid_;
}

void TxnTracker::parameter_reported(std::string_view name, std::string_view value) {
  reported_[util::ascii_lower(name)] = std::string(value);
}

void TxnTracker::commit_sets(const std::vector<sql::SessionCommand>& sets, Settings& server_settings) {
  if (!sets.empty()) ++settings_version_;
  for (auto& c : sets) {
    if (c.kind == sql::SessionCommand::set) {
      auto reported = reported_.find(c.name);
      std::string stmt = "SET " + c.name + " TO " +
                         (reported != reported_.end() ? p::quote_literal(reported->second) : c.value);
      settings_[c.name] = stmt;
      server_settings[c.name] = std::move(stmt);
    } else if (c.kind == sql::SessionCommand::reset) {
      settings_.erase(c.name);
      server_settings.erase(c.name);
    } else if (c.kind == sql::SessionCommand::reset_all) {
      settings_.clear();
      server_settings.clear();
    }
  }
}

TxnTracker::Reply TxnTracker::server_message(char type, std::string_view body, pool::ServerStatements& server,
                                             Settings& server_settings, std::string& replacement) {
  switch (type) {
    case be::kParseComplete:
    case be::kBindComplete:
    case be::kCloseComplete: {
      if (expect_.empty() || expect_.front().reply != type) return Reply::forward;  // not ours to judge
      Action a = expect_.front().action;
      // The Close happened: so did its marker.
      if (type == be::kCloseComplete && expect_.front().marker) marker_left_ = true;
      // rewind() may need it.
      if (window_ && type != be::kBindComplete) window_matched_.push_back(std::move(expect_.front()));
      expect_.pop_front();
      if (a == Action::drop || a == Action::sentinel_error) return Reply::drop;  // a guard that passed
      if (a == Action::as_parse_complete) return Reply::as_parse_complete;
      return Reply::forward;
    }
    case be::kCommandComplete: {
      size_t pos = 0;
      auto tag = p::read_cstring(body, pos);
      if (tag && changes_statements(*tag)) schema_epoch.fetch_add(1, std::memory_order_relaxed);
      if (tag &&
          (*tag == "PREPARE" || *tag == "DEALLOCATE" || *tag == "BEGIN" || *tag == "START TRANSACTION") &&
          !expect_.empty() && expect_.front().reply == be::kCommandComplete) {
        Expect e = std::move(expect_.front());
        expect_.pop_front();  // a client's PREPARE was recorded when sent (not transactional, as PostgreSQL)
        if (e.get().removed)
          server.erase(e.get().removed->server_name);  // a DEALLOCATE that ran (carry_multi())
        if (e.action == Action::drop) return Reply::drop;
      }
      if (tag) last_tag_.assign(*tag);
      return Reply::forward;
    }
    case be::kErrorResponse: {
      if (server.size() > 0 &&
          body.find("cached plan must not change result type") != std::string_view::npos) {
        // A shared statement outlived a change of its result columns; PostgreSQL does not re-plan it. A
        // client that prepares it again (Rails does, after this error) or parses its unnamed statement anew
        // each time would otherwise get this server's stale copy forever: all of the server's statements are
        // forgotten, each is closed and prepared again at its next use here (one error per server connection
        // and statement).
        server.forget_stale();
      }
      if (expect_.empty()) {
        if ((!statements_.empty() || !unnamed_server_.empty()) &&
            fix_error(body, nullptr, false, replacement))
          return Reply::replace;
        return Reply::forward;
      }
      Reply r = Reply::forward;
      Expect& head = expect_.front();
      if (head.action == Action::sentinel_error &&
          p::parse_error_fields(body).message ==
              (head.get().match.empty()
                   ? "prepared statement \"" + std::string(kSentinel) + "\" does not exist"
                   : head.get().match)) {
        replacement = head.get().error;
        r = Reply::replace;
      }
      // An error of a message pgrouter sent (preparing a statement) has no position in the client's text.
      bool injected = head.action == Action::drop && !head.client_text;
      // A Query's (or its PREPARE's) error.
      bool own_text = head.reply == be::kReadyForQuery || head.reply == be::kCommandComplete;
      std::shared_ptr<const TextRewrite> rw = head.get().rewrite;
      bool duplicate = head.reply != be::kReadyForQuery && p::error_sqlstate(body) == "42P05";
      // The server now skips everything up to the next Sync; after an extended-protocol message's error (not
      // a Query's own, nor its PREPARE's), Queries and FunctionCalls sent before that Sync too.
      bool extended = !(head.reply == be::kReadyForQuery ||
                        (head.reply == be::kCommandComplete && head.action != Action::drop));
      for (bool first = true; !expect_.empty() && (expect_.front().reply != be::kReadyForQuery ||
                                                   (extended && expect_.front().not_sync));
           first = false) {
        undo(expect_.front(), server, first && duplicate);
        expect_.pop_front();
      }
      if (expect_.empty() && extended) skip_to_sync_ = true;  // what the client sends next is ignored too
      if (!expect_.empty()) {
        expect_.front().failed = true;
        if (expect_.front().swallow) return Reply::drop;  // pgrouter's own Sync: the client's statement tells
        if (!rw && own_text) rw = expect_.front().get().rewrite;
      }
      if (r == Reply::forward && fix_error(body, rw.get(), injected, replacement)) r = Reply::replace;
      return r;
    }
    case be::kReadyForQuery: {
      if (skip_to_sync_) {
        // The first Sync after an error: everything sent before it was ignored (Queries too), and it failed.
        skip_to_sync_ = false;
        while (!expect_.empty() &&
               (expect_.front().reply != be::kReadyForQuery || expect_.front().not_sync)) {
          undo(expect_.front(), server);
          expect_.pop_front();
        }
        if (!expect_.empty()) expect_.front().failed = true;
      }
      while (!expect_.empty() &&
             expect_.front().reply != be::kReadyForQuery) {  // cannot happen with a sane server
        undo(expect_.front(), server);
        expect_.pop_front();
      }
      char status = body.empty() ? 'I' : body[0];
      tx_status_ = status;
      if (expect_.empty()) {
        last_tag_.clear();
        ghosts_.clear();
        return Reply::forward;
      }
      Expect z = std::move(expect_.front());
      expect_.pop_front();
      if (expect_.empty()) ghosts_.clear();  // nothing in flight can name them any more
      if (z.swallow) return Reply::drop;     // pgrouter's own Sync: nothing of the client's ends here
      if (z.failed) {
        for (auto& fx : z.get().effects)  // a DEALLOCATE that failed: its name is back
          if (fx.removed && !statements_.count(fx.client_name)) statements_[fx.client_name] = fx.removed;
      } else {
        for (auto& fx : z.get().effects) {
          switch (fx.kind) {
            case OnSuccess::deallocate:
              if (auto it = statements_.find(fx.client_name);
                  !fx.removed && it != statements_.end() && it->second->server_name == fx.server_name)
                statements_.erase(it);
              server.erase(fx.server_name);
              break;
            case OnSuccess::deallocate_all:
              statements_.clear();
              server.clear();
              break;
            case OnSuccess::discard_all:
              statements_.clear();
              server.clear();
              settings_.clear();
              server_settings.clear();
              tx_sets_.clear();
              ++settings_version_;
              break;
          }
        }
      }
      bool rolled_back = last_tag_ == "ROLLBACK";
      if (status == 'T') {
        if (rolled_back && !tx_sets_.empty()) uncertain_ = true;  // ROLLBACK TO SAVEPOINT after a SET
        if (!z.failed) tx_sets_.insert(tx_sets_.end(), z.get().sets.begin(), z.get().sets.end());
      } else if (status == 'I') {
        bool committed = z.failed ? last_tag_ == "COMMIT" : !rolled_back;
        if (committed) commit_sets(tx_sets_, server_settings);
        tx_sets_.clear();
        if (!z.failed && !rolled_back) commit_sets(z.get().sets, server_settings);
        reported_.clear();
      }
      // 'E': the transaction failed; what it SET is dropped when it ends (its tag is ROLLBACK).
      last_tag_.clear();
      return Reply::forward;
    }
    case be::kParameterDescription:
    case be::kRowDescription:
    case be::kNoData:
      return probe_answered(type, body, server);
    default:
      return Reply::forward;
  }
}

}  // namespace pgrouter::session
