// Transaction pooling's per-client prepared statements and settings (see the header for the design).
#include "pgrouter/session/txn_tracker.hpp"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <algorithm>
#include <array>

#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;

namespace {

// Names no client statement ever has on a server: a Close of it is a no-op that still answers
// CloseComplete, a Describe of it fails with 26000 naming it (so its error is recognisable).
constexpr std::string_view kNoStatement = "pgr_no_such_statement";
constexpr std::string_view kSentinel = "pgr_sentinel_error";

// Session parameters carried across servers (the list plus the usual driver settings);
// pool.track_parameters adds more.
constexpr std::array<std::string_view, 15> kTracked{"pgrouter.route",
    "search_path",  "timezone",       "datestyle",        "intervalstyle", "client_encoding",
    "application_name", "statement_timeout", "standard_conforming_strings", "lock_timeout",
    "idle_in_transaction_session_timeout", "extra_float_digits", "bytea_output", "client_min_messages",
    "default_transaction_read_only"};

void begin_message(std::string& out, char type, size_t body_len) {
  out.push_back(type);
  p::put_be32(out, uint32_t(body_len + 4));
}
void append_cstr(std::string& out, std::string_view s) {
  out.append(s);
  out.push_back('\0');
}
void append_parse(std::string& out, std::string_view name, std::string_view query, std::string_view types) {
  begin_message(out, 'P', name.size() + 1 + query.size() + 1 + types.size());
  append_cstr(out, name);
  append_cstr(out, query);
  out.append(types);
}
void append_named(std::string& out, char type, char kind, std::string_view name) {  // Close / Describe
  begin_message(out, type, 1 + name.size() + 1);
  out.push_back(kind);
  append_cstr(out, name);
}
void append_bind(std::string& out, std::string_view portal, std::string_view stmt, std::string_view rest) {
  begin_message(out, 'B', portal.size() + 1 + stmt.size() + 1 + rest.size());
  append_cstr(out, portal);
  append_cstr(out, stmt);
  out.append(rest);
}

std::string error_message(std::string_view code, std::string_view message, std::string_view hint = {}) {
  std::string out;
  p::append_error(out, "ERROR", code, message, {}, hint);
  return out;
}

}  // namespace

// Statements with the same text, parameter types and search_path are the same statement: names in
// the text are resolved at Parse time, so a client with another search_path gets its own.
std::string TxnTracker::server_name_for(std::string_view query, std::string_view types) const {
  XXH3_state_t state;
  XXH3_state_t* st = &state;
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, query.data(), query.size());
  XXH3_128bits_update(st, "\0", 1);
  XXH3_128bits_update(st, types.data(), types.size());
  auto sp = settings_.find("search_path");
  const std::string& path = sp != settings_.end() ? sp->second : startup_search_path_;
  XXH3_128bits_update(st, "\0", 1);
  XXH3_128bits_update(st, path.data(), path.size());
  XXH128_hash_t h = XXH3_128bits_digest(st);
  static constexpr char hex[] = "0123456789abcdef";
  std::string name = "pgr_";
  for (uint64_t part : {h.high64, h.low64})
    for (int i = 60; i >= 0; i -= 4) name.push_back(hex[(part >> i) & 0xf]);
  return name;
}

std::optional<std::string_view> TxnTracker::statement_query(const std::string& name) const {
  const std::string* msg = nullptr;
  if (name.empty()) {
    if (!unnamed_valid_) return std::nullopt;
    msg = &unnamed_parse_;
  } else {
    auto it = statements_.find(name);
    if (it == statements_.end()) return std::nullopt;
    msg = &it->second->parse_message;
  }
  std::string_view body = std::string_view(*msg).substr(5);
  size_t pos = 0;
  if (!p::read_cstring(body, pos)) return std::nullopt;
  return p::read_cstring(body, pos);
}

bool TxnTracker::tracks(const std::string& parameter) const {
  if (std::find(kTracked.begin(), kTracked.end(), parameter) != kTracked.end()) return true;
  return std::find(extra_tracked_.begin(), extra_tracked_.end(), parameter) != extra_tracked_.end();
}

TxnTracker::Effect TxnTracker::session_effect(std::string_view sql, bool named, std::string& feature) {
  // The cheap lexical check first: most statements touch no session state at all.
  if (sql::session_feature(sql).empty()) return Effect::none;
  // A multi-statement query is carried when each of its statements is.
  auto statements = sql::split_statements(sql);
  if (statements.size() > 1) {
    Effect all = Effect::none;
    for (auto one : statements) {
      Effect e = statement_effect(one, named, feature);
      if (e == Effect::unsupported) return e;
      if (e == Effect::tracked) all = e;
    }
    return all;
  }
  return statement_effect(sql, named, feature);
}

TxnTracker::Effect TxnTracker::statement_effect(std::string_view sql, bool named, std::string& feature) {
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
                                  {}, {}});
        return Effect::tracked;
      case sql::SessionCommand::deallocate:
        if (auto it = statements_.find(cmd->name); it != statements_.end()) {
          dealloc_ = it->second;
          group_effects_.push_back({OnSuccess::deallocate, cmd->name, it->second->server_name});
          return Effect::tracked;
        }
        return Effect::none;  // not a protocol statement of ours: PostgreSQL answers as it would
    }
  }
  feature = std::string(sql::session_feature(sql));
  if (feature.empty()) return Effect::none;
  feature_ = feature;
  return Effect::unsupported;
}

void TxnTracker::end_group(Expect& z) {
  z.sets = std::move(group_sets_);
  group_sets_.clear();
  z.effects = std::move(group_effects_);
  group_effects_.clear();
}

void TxnTracker::refuse(std::string_view feature, char type, std::string& out) {
  stats_.session_features_refused_total.fetch_add(1, std::memory_order_relaxed);
  std::string msg = "pgrouter: " + std::string(feature) +
                    " cannot be used with transaction pooling (pool.session_features: refuse)";
  std::string err = error_message(p::sqlstate::feature_not_supported, msg,
                                  "Use pool.mode: session for this database, or pool.session_features: pin to "
                                  "keep such clients on one server.");
  if (type == 'Q') {
    // A query that fails with a recognisable error; its ReadyForQuery follows as usual.
    p::append_query(out, "DEALLOCATE " + std::string(kSentinel));
    expect_.push_back(Expect{'Z'});
    expect_.back().action = Action::sentinel_error;
    expect_.back().error = std::move(err);
  } else {
    append_named(out, 'D', 'S', kSentinel);
    expect_.push_back(Expect{'1', Action::sentinel_error, std::move(err)});
  }
}

void TxnTracker::evict_for(const std::string& name, pool::ServerStatements& server, std::string& out) {
  std::string victim = server.insert(name, capacity_);
  if (victim.empty()) return;
  stats_.prepared_statements_evicted_total.fetch_add(1, std::memory_order_relaxed);
  append_named(out, 'C', 'S', victim);
  Expect e{'3', Action::drop};
  e.server_name = std::move(victim);
  e.evicted = true;
  expect_.push_back(std::move(e));
}

void TxnTracker::ensure_prepared(const TrackedStatement& st, pool::ServerStatements& server, std::string& out) {
  if (server.use(st.server_name)) return;
  evict_for(st.server_name, server, out);
  out.append(st.parse_message);
  stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
  Expect e{'1', Action::drop};
  e.server_name = st.server_name;
  expect_.push_back(std::move(e));
}

bool TxnTracker::client_message(char type, std::string_view body, pool::ServerStatements& server, std::string& out,
                                Effect& effect) {
  effect = Effect::none;
  size_t pos = 0;
  switch (type) {
    case 'P': {
      auto name = p::read_cstring(body, pos);
      auto query = name ? p::read_cstring(body, pos) : std::nullopt;
      if (!query) {  // malformed: the server answers with a protocol error
        expect_.push_back(Expect{'1'});
        return false;
      }
      std::string_view types = body.substr(pos);
      std::string feature;
      effect = session_effect(*query, !name->empty(), feature);
      if (effect == Effect::unsupported && refuse_) {
        refuse(feature, type, out);
        return true;
      }
      if (name->empty()) {
        Expect e{'1'};
        e.unnamed = true;
        expect_.push_back(std::move(e));
        server.unnamed_owner = owner_;
        if (window_ && !unnamed_saved_) {  // keep the window's starting point for rewind()
          std::swap(unnamed_before_window_, unnamed_parse_);
          unnamed_saved_ = true;
        }
        unnamed_valid_ = true;
        unnamed_parse_.clear();
        if (dealloc_) {
          // DEALLOCATE of a protocol statement: the server knows it by its own name, and must have it.
          auto st = std::move(dealloc_);
          dealloc_.reset();
          ensure_prepared(*st, server, out);
          append_parse(unnamed_parse_, "", "DEALLOCATE " + st->server_name, types);
          out.append(unnamed_parse_);
          return true;
        }
        append_parse(unnamed_parse_, "", *query, types);
        return false;
      }
      std::string client_name(*name);
      if (statements_.count(client_name)) {
        // PostgreSQL refuses to redefine a name; so does the server here, through a sentinel.
        append_named(out, 'D', 'S', kSentinel);
        expect_.push_back(Expect{'1', Action::sentinel_error,
                                 error_message("42P05", "prepared statement \"" + client_name + "\" already exists")});
        return true;
      }
      auto st = std::make_shared<TrackedStatement>();
      st->server_name = server_name_for(*query, types);
      append_parse(st->parse_message, st->server_name, *query, types);
      statements_[client_name] = st;
      if (server.use(st->server_name)) {
        stats_.prepared_statements_reused_total.fetch_add(1, std::memory_order_relaxed);
        append_named(out, 'C', 'S', kNoStatement);  // answers CloseComplete, shown as ParseComplete
        Expect e{'3', Action::as_parse_complete};
        e.client_name = std::move(client_name);
        expect_.push_back(std::move(e));
        return true;
      }
      evict_for(st->server_name, server, out);
      out.append(st->parse_message);
      stats_.prepared_statements_prepared_total.fetch_add(1, std::memory_order_relaxed);
      Expect e{'1'};
      e.client_name = std::move(client_name);
      e.server_name = st->server_name;
      expect_.push_back(std::move(e));
      return true;
    }
    case 'B':
    case 'D': {
      std::string_view portal;
      std::optional<std::string_view> stmt;
      if (type == 'B') {
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
      if (stmt->empty()) {
        // The unnamed statement lives on one server until someone else parses there.
        if (server.unnamed_owner == owner_) return false;
        if (unnamed_valid_) {
          out.append(unnamed_parse_);
          Expect e{'1', Action::drop};
          e.unnamed = e.unnamed_resend = true;
          expect_.push_back(std::move(e));
        } else {
          // The client has no unnamed statement, but the server may hold another client's: close it, so
          // this Bind/Describe fails with 26000 as it would in the client's own session.
          append_named(out, 'C', 'S', "");
          Expect e{'3', Action::drop};
          e.unnamed = true;
          expect_.push_back(std::move(e));
        }
        server.unnamed_owner = owner_;
        out.append(body.data() - 5, body.size() + 5);
        return true;
      }
      auto it = statements_.find(std::string(*stmt));
      if (it == statements_.end()) return false;  // unknown: the server says 26000 with the client's name
      auto st = it->second;
      ensure_prepared(*st, server, out);
      if (type == 'B') append_bind(out, portal, st->server_name, body.substr(pos));
      else append_named(out, 'D', 'S', st->server_name);
      return true;
    }
    case 'C': {
      Expect e{'3'};
      if (body.empty() || body[0] != 'S') {
        expect_.push_back(std::move(e));
        return false;
      }
      pos = 1;
      auto name = p::read_cstring(body, pos);
      if (!name || name->empty()) {
        if (name) unnamed_valid_ = false;
        expect_.push_back(std::move(e));
        return false;
      }
      // The client's name is forgotten; the server keeps the statement for whoever needs it next.
      if (auto it = statements_.find(std::string(*name)); it != statements_.end()) {
        e.client_name = it->first;
        e.removed = it->second;
        statements_.erase(it);
      }
      expect_.push_back(std::move(e));
      append_named(out, 'C', 'S', kNoStatement);
      return true;
    }
    case 'Q': {
      auto sql = p::read_cstring(body, pos);
      std::string feature;
      if (sql) effect = session_effect(*sql, false, feature);
      unnamed_valid_ = false;  // a simple Query drops the unnamed statement
      server.unnamed_owner = 0;
      if (effect == Effect::unsupported && refuse_) {
        refuse(feature, type, out);
        return true;
      }
      Expect z{'Z'};
      end_group(z);
      bool rewritten = false;
      if (dealloc_) {
        // DEALLOCATE of a protocol statement: the server knows it by its own name, and must have it
        // (a Parse before a Query runs in the Query's transaction).
        auto st = std::move(dealloc_);
        dealloc_.reset();
        ensure_prepared(*st, server, out);
        p::append_query(out, "DEALLOCATE " + st->server_name);
        rewritten = true;
      }
      expect_.push_back(std::move(z));
      return rewritten;
    }
    case 'S':
    case 'F': {
      Expect z{'Z'};
      end_group(z);
      expect_.push_back(std::move(z));
      return false;
    }
    default:
      return false;
  }
}

void TxnTracker::undo(Expect& e, pool::ServerStatements& server) {
  // The server skipped this request after an error: as in PostgreSQL, it had no effect.
  if (e.unnamed) server.unnamed_owner = 0;  // it still has its unnamed statement, perhaps another client's
  if (e.reply == '1' && e.action != Action::sentinel_error) {
    if (e.unnamed && !e.unnamed_resend) unnamed_valid_ = false;
    if (!e.client_name.empty()) statements_.erase(e.client_name);
    if (!e.server_name.empty()) server.erase(e.server_name);
  } else if (e.reply == '3') {
    if (e.action == Action::as_parse_complete) statements_.erase(e.client_name);
    else if (e.evicted) server.restore(e.server_name);
    else if (e.removed) statements_[e.client_name] = e.removed;
  }
}

void TxnTracker::rewind() {
  // Latest first (unmatched, then matched), so a Close then a Parse of the same name comes back to the
  // statement before both. Server-side effects (statements prepared or evicted there) go with the
  // server being dropped.
  auto undo_client_side = [this](Expect& e) {
    if (e.reply == '1' && e.action != Action::sentinel_error) {
      if (!e.client_name.empty()) statements_.erase(e.client_name);
    } else if (e.reply == '3') {
      if (e.action == Action::as_parse_complete) statements_.erase(e.client_name);
      else if (e.removed) statements_[e.client_name] = e.removed;
    }
  };
  for (auto it = expect_.rbegin(); it != expect_.rend(); ++it) undo_client_side(*it);
  for (auto it = window_matched_.rbegin(); it != window_matched_.rend(); ++it) undo_client_side(*it);
  window_matched_.clear();
  expect_.clear();
  group_sets_.clear();
  group_effects_.clear();
  dealloc_.reset();
  if (unnamed_saved_) std::swap(unnamed_before_window_, unnamed_parse_);
  unnamed_saved_ = false;
  unnamed_valid_ = window_unnamed_valid_;
}

void TxnTracker::commit_sets(const std::vector<sql::SessionCommand>& sets, Settings& server_settings) {
  if (!sets.empty()) ++settings_version_;
  for (auto& c : sets) {
    if (c.kind == sql::SessionCommand::set) {
      std::string stmt = "SET " + c.name + " TO " + c.value;
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
    case '1':
    case '3': {
      if (expect_.empty() || expect_.front().reply != type) return Reply::forward;  // not ours to judge
      Action a = expect_.front().action;
      if (window_) window_matched_.push_back(std::move(expect_.front()));  // rewind() may need it
      expect_.pop_front();
      if (a == Action::drop) return Reply::drop;
      if (a == Action::as_parse_complete) return Reply::as_parse_complete;
      return Reply::forward;
    }
    case 'C': {
      size_t pos = 0;
      if (auto tag = p::read_cstring(body, pos)) last_tag_.assign(*tag);
      return Reply::forward;
    }
    case 'E': {
      if (expect_.empty()) return Reply::forward;
      Reply r = Reply::forward;
      Expect& head = expect_.front();
      if (head.action == Action::sentinel_error &&
          p::parse_error_fields(body).message == "prepared statement \"" + std::string(kSentinel) + "\" does not exist") {
        replacement = head.error;
        r = Reply::replace;
      }
      // The server now skips everything up to the next Sync.
      while (!expect_.empty() && expect_.front().reply != 'Z') {
        undo(expect_.front(), server);
        expect_.pop_front();
      }
      if (!expect_.empty()) expect_.front().failed = true;
      return r;
    }
    case 'Z': {
      while (!expect_.empty() && expect_.front().reply != 'Z') {  // cannot happen with a sane server
        undo(expect_.front(), server);
        expect_.pop_front();
      }
      char status = body.empty() ? 'I' : body[0];
      if (expect_.empty()) {
        last_tag_.clear();
        return Reply::forward;
      }
      Expect z = std::move(expect_.front());
      expect_.pop_front();
      if (!z.failed) {
        for (auto& fx : z.effects) {
          switch (fx.kind) {
            case OnSuccess::deallocate:
              if (auto it = statements_.find(fx.client_name);
                  it != statements_.end() && it->second->server_name == fx.server_name)
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
        if (!z.failed) tx_sets_.insert(tx_sets_.end(), z.sets.begin(), z.sets.end());
      } else if (status == 'I') {
        bool committed = z.failed ? last_tag_ == "COMMIT" : !rolled_back;
        if (committed) commit_sets(tx_sets_, server_settings);
        tx_sets_.clear();
        if (!z.failed && !rolled_back) commit_sets(z.sets, server_settings);
      }
      // 'E': the transaction failed; what it SET is dropped when it ends (its tag is ROLLBACK).
      last_tag_.clear();
      return Reply::forward;
    }
    default:
      return Reply::forward;
  }
}

}  // namespace pgrouter::session
