// The admin commands shared by the console and the HTTP API (see the header).
#include "pgrouter/admin/actions.hpp"

#include <tuple>

#include "pgrouter/admin/show.hpp"
#include "pgrouter/admin/snapshot.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/session/client_session.hpp"

namespace pgrouter::admin {
namespace sqlstate = pgrouter::protocol::sqlstate;

namespace {
constexpr auto kPauseCheck = std::chrono::milliseconds(100);
using ConfigPtr = std::shared_ptr<const control::Config>;

Outcome refused(const char* code, std::string message, std::string hint = {}) {
  return {code, std::move(message), std::move(hint)};
}

bool needs_snapshots(Verb verb) {
  return verb == Verb::show_pools || verb == Verb::show_clients || verb == Verb::show_servers ||
         verb == Verb::show_databases;
}

ResultSet show_from(Verb verb, Runtime& rt, const control::Config& config,
                    const std::vector<WorkerSnapshot>& parts) {
  switch (verb) {
    case Verb::show_pools:
      return show_pools(parts);
    case Verb::show_clients:
      return show_clients(parts);
    case Verb::show_servers:
      return show_servers(parts);
    case Verb::show_databases:
      return show_databases(config, rt.admin, parts);
    case Verb::show_stats:
      return show_stats(*rt.stats);
    case Verb::show_config:
      return show_config(config);
    case Verb::show_backends:
      return show_backends(config, rt.health);
    default:
      return show_version();
  }
}

// A name the commands may act on: a listed database, or any name the fallback "*" entry serves (commands go
// by the name clients connect with, so PAUSE holds a name's clients whether or not one is connected yet).
std::optional<Outcome> unknown_database(const control::Config& config, const std::string& db) {
  bool fallback = db == control::kFallbackDatabase;
  if (!fallback && (config.find_database(db) || config.fallback_database())) return std::nullopt;
  return refused(sqlstate::unknown_database, "database \"" + db + "\" does not exist",
                 fallback ? "\"*\" serves other names: name the database its clients connect to."
                          : "The admin commands name the databases listed under \"databases:\".");
}

// Sessions of db (every database when empty) that hold a server, on one worker; with retired_only, only a
// server a reload retired (close_needed).
int holding_servers(Worker& w, const std::string& db, bool retired_only) {
  int n = 0;
  for (const auto& [pid, session] : w.sessions()) {
    auto row = session->admin_row();
    if (row.console || !row.server || (retired_only && !row.server->close_needed)) continue;
    if (db.empty() || row.client.database == db) ++n;
  }
  return n;
}

// Polls the workers until no session of db holds such a server; gone_by_then() is asked between polls and
// ends the wait with its outcome (PAUSE: a RESUME came first).
awaitable<Outcome> until_no_server_held(std::string db, bool retired_only, asio::io_context& home,
                                        Runtime& rt, std::function<std::optional<Outcome>()> gone_by_then) {
  std::function<int(Worker&)> holding = [db, retired_only](Worker& w) {
    return holding_servers(w, db, retired_only);
  };
  asio::steady_timer poll(home);
  for (;;) {
    auto counts = co_await gather(home, rt, holding);
    int left = 0;
    for (int n : counts) left += n;
    if (left == 0) co_return Outcome{};
    if (auto outcome = gone_by_then()) co_return *outcome;
    poll.expires_after(kPauseCheck);
    boost::system::error_code ec;
    co_await poll.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

awaitable<Outcome> pause(std::string db, asio::io_context& home, Runtime& rt, ConfigPtr config) {
  if (!db.empty()) {
    if (auto problem = unknown_database(*config, db)) co_return *problem;
  }
  rt.admin.pause(db);
  // Answered once no client of the database holds a server (its transactions are over), or refused when a
  // RESUME lifted the pause first.
  std::function<std::optional<Outcome>()> resumed = [db, &rt]() -> std::optional<Outcome> {
    if (rt.admin.paused(db)) return std::nullopt;
    return refused(sqlstate::object_not_in_prerequisite_state, "RESUME came before the pause took effect");
  };
  Outcome outcome = co_await until_no_server_held(db, false, home, rt, std::move(resumed));
  co_return outcome;
}

// As PgBouncer's: answered once no server opened before the last reload changed its target is in use (idle
// ones are closed by the reload itself), so a switchover script knows the new target serves everything.
awaitable<Outcome> wait_close(std::string db, asio::io_context& home, Runtime& rt, ConfigPtr config) {
  if (!db.empty()) {
    if (auto problem = unknown_database(*config, db)) co_return *problem;
  }
  std::function<std::optional<Outcome>()> never = [] { return std::optional<Outcome>(); };
  Outcome outcome = co_await until_no_server_held(db, true, home, rt, std::move(never));
  co_return outcome;
}

// On one worker: ends db's sessions and closes its pools' idle servers.
int kill_on(Worker& w, const std::string& db) {
  int n = 0;
  for (const auto& [pid, session] : w.sessions()) {
    auto row = session->admin_row();
    if (row.console || row.client.database != db) continue;
    session->admin_kill();
    ++n;
  }
  for (const auto& [key, pool] : w.pools())
    if (std::get<0>(key) == db) pool->close_idle();
  return n;
}

awaitable<Outcome> kill(std::string db, asio::io_context& home, Runtime& rt, ConfigPtr config) {
  if (auto problem = unknown_database(*config, db)) co_return *problem;
  // As PgBouncer: the database stays paused until RESUME, so its clients do not reconnect at once.
  rt.admin.pause(db);
  std::function<int(Worker&)> end_sessions = [db](Worker& w) { return kill_on(w, db); };
  co_await gather(home, rt, end_sessions);
  // The killed clients' servers come back to their pools as their relays end: closed on a second pass.
  asio::steady_timer later(home);
  later.expires_after(kPauseCheck);
  boost::system::error_code ec;
  co_await later.async_wait(asio::redirect_error(use_awaitable, ec));
  co_await gather(home, rt, end_sessions);
  co_return Outcome{};
}

awaitable<Outcome> reload(asio::io_context& home, Runtime& rt) {
  if (!rt.admin.reload)
    co_return refused(sqlstate::feature_not_supported, "RELOAD is not available in this process");
  struct Result {
    explicit Result(asio::io_context& io) : done(io) {}
    asio::steady_timer done;
    bool ok = false;
    std::string message = "the reload did not finish in time";
  };
  auto result = std::make_shared<Result>(home);
  result->done.expires_after(std::chrono::seconds(30));
  // Answered on home after the control thread has published the new config to every worker (posted before
  // this, so a worker has applied it when its caller resumes).
  rt.admin.reload([result, &home](bool ok, std::string message) {
    asio::post(home, [result, ok, message = std::move(message)] {
      result->ok = ok;
      result->message = message;
      result->done.cancel();
    });
  });
  boost::system::error_code ec;
  co_await result->done.async_wait(asio::redirect_error(use_awaitable, ec));
  if (result->ok) co_return Outcome{};
  co_return refused(sqlstate::invalid_parameter_value, "RELOAD failed: " + result->message,
                    "The running configuration stays; pgrouter's log has every error.");
}

// The commands that take effect at once.
Outcome run_now(const Command& cmd, Runtime& rt, const control::Config& config) {
  auto& controls = rt.admin;
  switch (cmd.verb) {
    case Verb::resume:
      if (auto problem = controls.resume(cmd.database); !problem.empty())
        return refused(sqlstate::object_not_in_prerequisite_state, problem);
      return {};
    case Verb::disable:
    case Verb::enable:
      if (auto problem = unknown_database(config, cmd.database)) return *problem;
      if (cmd.verb == Verb::disable)
        controls.disable(cmd.database);
      else
        controls.enable(cmd.database);
      return {};
    case Verb::shutdown:
      if (!controls.shutdown)
        return refused(sqlstate::feature_not_supported, "SHUTDOWN is not available in this process");
      controls.shutdown();
      return {};
    default:
      return refused(sqlstate::feature_not_supported, "not an admin command that changes something");
  }
}

}  // namespace

awaitable<ResultSet> show(Verb verb, asio::io_context& home, Runtime& rt, ConfigPtr config) {
  std::vector<WorkerSnapshot> parts;
  if (needs_snapshots(verb)) {
    std::function<WorkerSnapshot(Worker&)> snap = [](Worker& w) { return snapshot(w); };
    parts = co_await gather(home, rt, snap);
  }
  co_return show_from(verb, rt, *config, parts);
}

awaitable<Outcome> run(Command cmd, asio::io_context& home, Runtime& rt, ConfigPtr config) {
  switch (cmd.verb) {
    case Verb::reload:
      co_return co_await reload(home, rt);
    case Verb::pause:
      co_return co_await pause(cmd.database, home, rt, config);
    case Verb::kill:
      co_return co_await kill(cmd.database, home, rt, config);
    case Verb::wait_close:
      co_return co_await wait_close(cmd.database, home, rt, config);
    default:
      co_return run_now(cmd, rt, *config);
  }
}

std::string_view command_tag(Verb verb) {
  switch (verb) {
    case Verb::reload:
      return "RELOAD";
    case Verb::pause:
      return "PAUSE";
    case Verb::resume:
      return "RESUME";
    case Verb::disable:
      return "DISABLE";
    case Verb::enable:
      return "ENABLE";
    case Verb::kill:
      return "KILL";
    case Verb::shutdown:
      return "SHUTDOWN";
    case Verb::wait_close:
      return "WAIT_CLOSE";
    default:
      return "SHOW";
  }
}

}  // namespace pgrouter::admin
