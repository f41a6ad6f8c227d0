// RESET / RESET ALL / DISCARD ALL back to the client's startup values (see the header for the design).
#include "pgrouter/session/startup_reset.hpp"

#include <algorithm>
#include <array>

#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/sql/session_features.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

namespace {

// Whether a statement may reset a parameter, the cheap test before any parsing: it contains RESET, DEFAULT
// (SET x TO DEFAULT, SET TIME ZONE DEFAULT), LOCAL (SET TIME ZONE LOCAL) or DISCARD, in any case. Every Query
// of such a client gets it, so it is one pass dispatching on the first letter.
bool may_reset(std::string_view sql) {
  auto at = [&](size_t i, std::string_view lower_word) {
    return util::equals_ascii_ci(sql.substr(i, lower_word.size()), lower_word);
  };
  static constexpr auto kFirst = [] {  // the letters a word of interest starts with, either case
    std::array<bool, 256> t{};
    for (char c : {'r', 'R', 'd', 'D', 'l', 'L'}) t[static_cast<unsigned char>(c)] = true;
    return t;
  }();
  for (size_t i = 0; i < sql.size(); ++i) {
    if (!kFirst[static_cast<unsigned char>(sql[i])]) continue;
    switch (util::ascii_lower(sql[i])) {
      case 'r':
        if (at(i, "reset")) return true;
        break;
      case 'd':
        if (at(i, "default") || at(i, "discard")) return true;
        break;
      case 'l':
        if (at(i, "local")) return true;
        break;
      default:
        break;
    }
  }
  return false;
}

bool name_less(const std::string& a, const std::string& b) {  // PostgreSQL's GUC order (case-insensitive)
  return util::ascii_lower(a) < util::ascii_lower(b);
}

}  // namespace

StartupReset::StartupReset(const std::vector<std::pair<std::string, std::string>>& params) {
  for (auto& [k, v] : params) {
    std::string name = util::ascii_lower(k);
    auto it = std::find_if(params_.begin(), params_.end(), [&](auto& e) { return e.first == name; });
    if (it != params_.end())
      it->second = v;
    else
      params_.emplace_back(std::move(name), v);
  }
}

std::string StartupReset::reapply(const std::vector<size_t>& which) const {
  std::string sql = "SELECT ";
  for (size_t i = 0; i < which.size(); ++i) {
    auto& [name, value] = params_[which[i]];
    if (i > 0) sql += ", ";
    sql += "pg_catalog.set_config(" + p::quote_literal(name) + ", " + p::quote_literal(value) + ", false)";
    if (i == 0) {
      sql += " AS ";
      sql += kMarker;
    }
  }
  return sql;
}

std::string StartupReset::reapply_all() const {
  std::vector<size_t> all(params_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  return reapply(all);
}

bool StartupReset::client_query(std::string_view sql, int ahead, std::string& replacement) {
  if (params_.empty() || !may_reset(sql)) return false;
  auto statements = sql::split_statements(sql);
  if (statements.size() == 1) {
    if (auto cmd = sql::parse_session_command(statements[0]);
        cmd && cmd->kind == sql::SessionCommand::discard_all) {
      // DISCARD ALL refuses to share its query string: the startup values follow in a second query.
      p::append_query(replacement, sql);
      p::append_query(replacement, reapply_all());
      Pending e(ahead);
      e.discard = true;
      pending_.push_back(std::move(e));
      return true;
    }
  }
  std::string text;
  size_t copied = 0;
  for (auto st : statements) {
    auto cmd = sql::parse_session_command(st);
    if (!cmd) continue;
    std::vector<size_t> which;
    if (cmd->kind == sql::SessionCommand::reset_all) {
      for (size_t i = 0; i < params_.size(); ++i) which.push_back(i);
    } else if (cmd->kind == sql::SessionCommand::reset) {
      for (size_t i = 0; i < params_.size(); ++i)
        if (params_[i].first == cmd->name) which.push_back(i);
    }
    if (which.empty()) continue;
    // Right after the statement (a newline ends a trailing "--" comment); the ';' that ended it follows.
    size_t end = size_t(st.data() - sql.data()) + st.size();
    text.append(sql.substr(copied, end - copied));
    text += "\n;";
    text += reapply(which);
    copied = end;
  }
  if (copied == 0) return false;
  text.append(sql.substr(copied));
  p::append_query(replacement, text);
  pending_.emplace_back(ahead);
  return true;
}

StartupReset::Reply StartupReset::server_message(char type, std::string_view body,
                                                 std::map<std::string, std::string>& params,
                                                 std::string& replacement, char& status) {
  if (pending_.empty()) return Reply::forward;
  Pending& e = pending_.front();
  auto finish = [this] {
    pending_.pop_front();
    for (auto& later : pending_) --later.ahead;  // counted the finished request's ReadyForQuery
    dropping_ = false;
  };
  if (e.ahead > 0) {  // the reply of an earlier request
    if (type == be::kReadyForQuery)
      for (auto& x : pending_) --x.ahead;
    return Reply::forward;
  }
  if (!e.discard) {
    switch (type) {
      case be::kRowDescription: {
        std::string_view first = body.size() >= 2 ? body.substr(2) : std::string_view();
        if (first.size() > kMarker.size() && first.substr(0, kMarker.size()) == kMarker &&
            first[kMarker.size()] == '\0') {
          dropping_ = true;
          return Reply::drop;
        }
        return Reply::forward;
      }
      case be::kDataRow:
      case be::kCommandComplete:
        if (!dropping_) return Reply::forward;
        if (type == be::kCommandComplete) dropping_ = false;
        return Reply::drop;
      case be::kReadyForQuery:
        finish();
        return Reply::forward;
      default:
        return Reply::forward;
    }
  }
  // DISCARD ALL, then the second query.
  if (type == be::kParameterStatus) {
    if (auto kv = p::parse_parameter_status(body)) {
      std::string name(kv->first);
      auto it = std::find_if(e.held.begin(), e.held.end(), [&](auto& h) { return h.first == name; });
      if (it != e.held.end()) {
        it->second = std::string(kv->second);
      } else {
        auto at =
            std::find_if(e.held.begin(), e.held.end(), [&](auto& h) { return name_less(name, h.first); });
        e.held.insert(at, {std::move(name), std::string(kv->second)});
      }
    }
    return Reply::drop;
  }
  if (type != be::kReadyForQuery) return e.discard_done ? Reply::drop : Reply::forward;
  if (!e.discard_done) {
    e.discard_done = true;
    e.status = body.empty() ? 'I' : body[0];
    return Reply::drop;
  }
  for (auto& [name, value] : e.held) {
    auto it = params.find(name);
    if (it != params.end() && it->second == value) continue;
    p::append_parameter_status(replacement, name, value);
    params[name] = value;
  }
  status = e.status;
  p::append_ready_for_query(replacement, status);
  finish();
  return Reply::replace;
}

}  // namespace pgrouter::session
