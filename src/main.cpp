// pgrouter entry point: command line, config load, workers, admin HTTP, signals (reload, shutdown).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pgrouter/admin/api.hpp"
#include "pgrouter/asio.hpp"
#include "pgrouter/util/strings.hpp"
#include "pgrouter/control/admin_http.hpp"
#include "pgrouter/control/config.hpp"
#include "pgrouter/control/log.hpp"
#include "pgrouter/control/shard_plan.hpp"
#include "pgrouter/control/systemd.hpp"
#include "pgrouter/control/takeover.hpp"
#include "pgrouter/lifecycle.hpp"
#include "pgrouter/net/tls.hpp"
#include "pgrouter/routing/readiness.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/worker.hpp"

using namespace pgrouter;

namespace {

constexpr const char* kHelp = R"(Usage: pgrouter [OPTIONS]
       pgrouter shard-plan --from A.yaml --to B.yaml [--database NAME] [--keys FILE]
       pgrouter shard-of --config FILE --database NAME KEY...

pgrouter is a PostgreSQL proxy: clients connect to it as if it were PostgreSQL, and it relays
their sessions to the servers named in its configuration through per-database connection pools.

Options:
  -c, --config FILE        Run with the YAML configuration FILE
                           (default: /etc/pgrouter/pgrouter.yaml).
      --check-config FILE  Validate FILE and exit: 0 if valid, 1 with one "file:line:column: message"
                           line per problem on stderr.
      --takeover           Replace the pgrouter running with the same listen.takeover_socket without
                           refusing or dropping a connection: its listening sockets (clients and admin)
                           are handed to this process, which serves on them; the old process then stops
                           accepting, serves its clients for up to listen.takeover_client_wait (default
                           30s), drains as on SIGTERM and exits 0. When no process answers on the socket
                           this starts as usual; when one answers but the exchange fails, this exits 1
                           and the old process keeps serving.
  -h, --help               Show this help and exit.
  -V, --version            Show the version and exit.

Sharding commands (see docs/SHARDING.md):
  shard-plan --from A.yaml --to B.yaml [--database NAME] [--keys FILE]
                           Show which keys change shard when the configuration goes from A.yaml to
                           B.yaml (more shards, another strategy, new pins). For each database in both
                           files with more than one shard in either (or only NAME), each key that moves is
                           printed as KEY<TAB>FROM_SHARD<TAB>TO_SHARD, then one summary line,
                           database NAME: M of N keys move (P%). A database with one shard has all its
                           keys on shard 0. The keys are read from FILE, one a line (blank lines skipped);
                           without --keys, the integers 1 to 100000 are used for integer key types (to
                           32767 for smallint) and other key types are an error. Both files are validated
                           as by --check-config; a database sharded in both keeps its key_type. Exit status: 0,
                           1 for an invalid configuration or key, 2 for bad usage.
  shard-of --config FILE --database NAME KEY...
                           Print KEY<TAB>SHARD for each KEY, in order: the shard that owns it under the
                           database's sharding section. Each KEY is read as the database's key_type reads
                           it (as PostgreSQL's input function would); arguments after -- are all keys,
                           even those starting with --. One invalid KEY prints nothing and exits 1.
                           The shards of strategy: hash are the remainders PostgreSQL's PARTITION BY
                           HASH gives with the number of shards as modulus, so they can be checked with
                           satisfies_hash_partition().

Signals:
  SIGHUP                   Re-read the configuration file. An invalid file is rejected whole: the running
                           configuration stays, the errors are logged and pgrouter_config_reload_failures_total
                           is incremented. Pool and server changes apply without closing client connections;
                           listen address, port, workers, scheduling, send_batching, tcp_defer_accept and
                           admin port need a restart.
  SIGTERM                  Drain, then exit 0: the listeners close at once (new connections are refused);
                           idle clients get FATAL 57P01 "terminating connection due to administrator
                           command" and are closed; a client in a transaction finishes it, gets its result,
                           then that FATAL. Once no client is left, or after listen.shutdown_timeout
                           (default 30s; the remaining connections are then closed), pgrouter exits 0.
  SIGINT                   Stop now: close the listeners and all connections, exit 0.

Admin HTTP (admin.host:admin.port): GET /metrics (Prometheus), /livez (200 while the process answers),
/readyz (200 when every database shard has a reachable primary by the health probes; 503 with the reason
otherwise, and from SIGTERM on), and the /v1 API: the admin console's views (GET /v1/pools, ...) and commands
(POST /v1/pause, ...) as JSON, commands with the bearer token of admin.api_token_file or admin.api_token_env.
systemd (Type=notify): READY=1 once listening, RELOADING=1 and READY=1 around a reload, STOPPING=1 when a
drain starts, WATCHDOG=1 every half WatchdogSec= when the unit sets one.
Logs: one JSON object per line on stderr.
Configuration reference: conf/pgrouter.yaml (installed as /etc/pgrouter/pgrouter.yaml).
)";

void print_errors(const std::vector<control::ConfigError>& errors) {
  for (auto& e : errors) std::cerr << e.to_string() << "\n";
}

std::shared_ptr<net::ssl::context> tls_for(const control::Config& c, std::string& err) {
  if (c.tls.cert_file.empty()) return nullptr;
  return net::make_server_tls_context(c.tls.cert_file, c.tls.key_file, err);
}

// A handed-over listener is used only when it listens where this configuration says.
bool listens_at(int fd, const std::string& host, uint16_t port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return false;
  boost::system::error_code ec;
  auto want = asio::ip::make_address(host, ec);
  if (ec) return false;
  if (addr.ss_family == AF_INET && want.is_v4()) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
    return ntohs(a.sin_port) == port && ntohl(a.sin_addr.s_addr) == want.to_v4().to_uint();
  }
  if (addr.ss_family == AF_INET6 && want.is_v6()) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
    return ntohs(a.sin6_port) == port && std::memcmp(&a.sin6_addr, want.to_v6().to_bytes().data(), 16) == 0;
  }
  return false;
}

// --takeover: the running process's sockets, or none (a fresh start). False: do not start.
bool take_over(const control::Config& c, control::takeover::Sockets& got) {
  namespace takeover = control::takeover;
  if (c.listen.takeover_socket.empty()) {
    log::error("--takeover needs listen.takeover_socket in the configuration (the running process's too)");
    return false;
  }
  std::string why;
  switch (takeover::ask(c.listen.takeover_socket, got, why)) {
    case takeover::Asked::nothing_there:
      log::info("takeover: no pgrouter answers on listen.takeover_socket; starting on fresh sockets",
                {{"takeover_socket", c.listen.takeover_socket}, {"reason", why}});
      return true;
    case takeover::Asked::failed:
      log::error("takeover failed; the running pgrouter keeps serving",
                 {{"takeover_socket", c.listen.takeover_socket}, {"error", why}});
      return false;
    case takeover::Asked::taken:
      break;
  }
  log::info("takeover: sockets received",
            {{"old_pid", got.old_pid}, {"listeners", int(got.listeners.size())}, {"admin", got.admin >= 0}});
  bool client_ok = true;
  for (int fd : got.listeners) client_ok = client_ok && listens_at(fd, c.listen.host, c.listen.port);
  if (!client_ok) {
    log::warn("takeover: the running process listens elsewhere than listen.host/port; opening new listeners");
    for (int fd : got.listeners) ::close(fd);
    got.listeners.clear();
  }
  if (got.admin >= 0 && (c.admin.port == 0 || !listens_at(got.admin, c.admin.host, c.admin.port))) {
    ::close(got.admin);
    got.admin = -1;
  }
  return true;
}

// Each worker accepts on the handed-over listeners (spread over the workers) or on one of its own.
void start_listening(Runtime& rt, const control::Config& c, const std::vector<int>& inherited) {
  for (size_t j = 0; j < inherited.size(); ++j) rt.workers[j % rt.workers.size()]->adopt(inherited[j]);
  for (size_t i = inherited.size(); i < rt.workers.size(); ++i)
    rt.workers[i]->listen(c.listen.host, c.listen.port);
}

}  // namespace

int main(int argc, char** argv) {
  // Subcommands: offline tools that never start the proxy.
  if (argc > 1 && (std::strcmp(argv[1], "shard-plan") == 0 || std::strcmp(argv[1], "shard-of") == 0)) {
    std::vector<std::string> args(argv + 2, argv + argc);
    return std::strcmp(argv[1], "shard-plan") == 0 ? control::shard_plan_main(args, std::cout, std::cerr)
                                                   : control::shard_of_main(args, std::cout, std::cerr);
  }
  std::string config_path = "/etc/pgrouter/pgrouter.yaml";
  bool want_takeover = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* opt) -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "pgrouter: " << opt << " needs a FILE argument\nTry 'pgrouter --help'.\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kHelp;
      return 0;
    } else if (a == "-V" || a == "--version") {
      std::cout << "pgrouter " << PGROUTER_VERSION << "\n";
      return 0;
    } else if (a == "--takeover") {
      want_takeover = true;
    } else if (a == "-c" || a == "--config") {
      config_path = next("--config");
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--check-config") {
      auto r = control::load_config_file(next("--check-config"));
      if (!r.ok()) {
        print_errors(r.errors);
        return 1;
      }
      std::string err;
      if (!r.config->tls.cert_file.empty() && !tls_for(*r.config, err)) {
        std::cerr << r.config->source << ": " << err << "\n";
        return 1;
      }
      std::cout << r.config->source << ": configuration is valid\n";
      return 0;
    } else {
      std::cerr << "pgrouter: unknown option '" << a << "'\nTry 'pgrouter --help'.\n";
      return 2;
    }
  }

  auto loaded = control::load_config_file(config_path);
  if (!loaded.ok()) {
    print_errors(loaded.errors);
    std::cerr << "pgrouter: not started: the configuration has errors\n";
    return 1;
  }
  auto config = loaded.config;
  log::Level level;
  if (log::parse_level(config->log.level, level)) log::set_level(level);
  std::string tls_err;
  auto tls = tls_for(*config, tls_err);
  if (!config->tls.cert_file.empty() && !tls) {
    log::error("cannot start: TLS configuration is invalid", {{"error", tls_err}});
    return 1;
  }

  std::signal(SIGPIPE, SIG_IGN);
  control::takeover::Sockets inherited;
  if (want_takeover && !take_over(*config, inherited)) return 1;
  int nworkers = config->listen.workers > 0 ? config->listen.workers
                                            : std::max(1, int(std::thread::hardware_concurrency()) / 2);
  if (nworkers > 126) nworkers = 126;  // the worker index is encoded in cancel keys

  Runtime rt;
  rt.stats = std::make_shared<control::Stats>(size_t(nworkers));
  rt.stats->pool_labels.set_limit(size_t(config->metrics.max_pools));
  unsigned char secret[32];
  RAND_bytes(secret, sizeof secret);
  rt.mock_secret.assign(reinterpret_cast<char*>(secret), sizeof secret);
  for (int i = 0; i < nworkers; ++i) rt.workers.push_back(std::make_unique<Worker>(rt, i, config, tls));
  try {
    start_listening(rt, *config, inherited.listeners);
  } catch (const std::exception& e) {
    log::error("cannot listen",
               {{"host", config->listen.host}, {"port", config->listen.port}, {"error", e.what()}});
    return 1;
  }

  asio::io_context control_io(1);
  Lifecycle lifecycle(control_io, rt);
  // Runs on control_io's thread, where reloads replace `config`.
  auto not_ready = [&lifecycle, &rt, &config] {
    return lifecycle.draining() ? std::string("draining: pgrouter is shutting down")
                                : routing::unserved(*config, rt.health);
  };
  std::unique_ptr<control::AdminServer> admin;
  if (config->admin.port != 0) {
    // The /v1 API reads the running config on control_io's thread, where reloads replace it.
    auto api = pgrouter::admin::make_api_handler(control_io, rt, [&config] { return config; });
    admin = std::make_unique<control::AdminServer>(control_io, config->admin.host, config->admin.port,
                                                   rt.stats, not_ready, std::move(api));
    try {
      admin->start(inherited.admin);
    } catch (const std::exception& e) {
      log::error("cannot start admin HTTP server",
                 {{"host", config->admin.host}, {"port", config->admin.port}, {"error", e.what()}});
      return 1;
    }
  }
  rt.health.update(*config);
  rt.health.start();
  rt.stats->extra_metrics = [&rt, &config] {
    // Per-backend families, written by hand: their label set changes with the config. Backends a reload took
    // out of the configuration are left out (their health records live on while a pool still uses them).
    // Runs on control_io's thread, where reloads replace `config`.
    std::set<std::string> configured;
    // Which database shard each backend serves, as an info metric to join on `backend` (a server may serve
    // several databases).
    std::string shards =
        "# HELP pgrouter_backend_shard_info 1 for each database shard a backend serves (join on backend).\n"
        "# TYPE pgrouter_backend_shard_info gauge\n";
    auto label_value = [](std::string v) {  // Prometheus text format escapes
      std::string out;
      for (char c : v) out += c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : std::string(1, c);
      return out;
    };
    for (const auto& db : config->databases)
      for (size_t s = 0; s < db.shards.size(); ++s)
        for (size_t i = 0; i < db.shards[s].backends(); ++i) {
          auto name = util::host_port(db.shards[s].backend(i).host, db.shards[s].backend(i).port);
          configured.insert(name);
          shards +=
              fmt::format("pgrouter_backend_shard_info{{database=\"{}\",shard=\"{}\",backend=\"{}\"}} 1\n",
                          label_value(db.name), s, name);
        }
    std::string up =
        "# HELP pgrouter_backend_up 1 when the backend answers probes (reads are routed to it).\n"
        "# TYPE pgrouter_backend_up gauge\n";
    std::string rec =
        "# HELP pgrouter_backend_in_recovery 1 for a replica (pg_is_in_recovery()).\n"
        "# TYPE pgrouter_backend_in_recovery gauge\n";
    std::string lsn =
        "# HELP pgrouter_backend_wal_lsn_bytes WAL position: current on a primary, replayed on a "
        "replica.\n# TYPE pgrouter_backend_wal_lsn_bytes gauge\n";
    std::string ej =
        "# HELP pgrouter_backend_ejections_total Times the backend was taken out of rotation.\n"
        "# TYPE pgrouter_backend_ejections_total counter\n";
    std::string lag =
        "# HELP pgrouter_backend_replay_lag_seconds A replica's replay delay: 0 when it replayed all "
        "it received, else the age of the last transaction it replayed.\n"
        "# TYPE pgrouter_backend_replay_lag_seconds gauge\n";
    std::string probed =
        "# HELP pgrouter_backend_probed 1 once a probe of the backend has answered (before that, "
        "pgrouter_backend_up 1 is an assumption).\n# TYPE pgrouter_backend_probed gauge\n";
    for (auto& h : rt.health.all()) {
      if (!configured.count(h->name)) continue;
      std::string label = "{backend=\"" + h->name + "\"} ";
      up += "pgrouter_backend_up" + label + (h->up.load() ? "1\n" : "0\n");
      probed += "pgrouter_backend_probed" + label + (h->probed.load() ? "1\n" : "0\n");
      rec += "pgrouter_backend_in_recovery" + label + (h->in_recovery.load() ? "1\n" : "0\n");
      lsn += "pgrouter_backend_wal_lsn_bytes" + label + std::to_string(h->lsn.load()) + "\n";
      ej += "pgrouter_backend_ejections_total" + label + std::to_string(h->ejections.load()) + "\n";
      lag += "pgrouter_backend_replay_lag_seconds" + label +
             fmt::format("{:.3f}", double(h->replay_lag_ms.load()) / 1000) + "\n";
    }
    return up + probed + rec + lsn + ej + lag + shards;
  };
  // SIGHUP and the admin console's RELOAD: re-reads the file; on the control thread. True when applied, else
  // the first error.
  auto reload = [&]() -> std::pair<bool, std::string> {
    control::systemd::notify("RELOADING=1");
    rt.stats->config_reloads_total.fetch_add(1);
    auto r = control::load_config_file(config_path);
    std::string err;
    std::shared_ptr<net::ssl::context> new_tls;
    if (r.ok() && !r.config->tls.cert_file.empty()) {
      new_tls = tls_for(*r.config, err);
      if (!new_tls) r.errors.push_back({config_path, 0, 0, err}), r.config = nullptr;
    }
    if (!r.ok()) {
      rt.stats->config_reload_failures_total.fetch_add(1);
      for (auto& e : r.errors) log::error("config reload rejected", {{"error", e.to_string()}});
      log::error("config reload failed: keeping the running configuration", {{"config", config_path}});
      control::systemd::notify("READY=1");
      return {false, r.errors.empty() ? std::string("invalid configuration") : r.errors.front().to_string()};
    }
    if (r.config->listen.host != config->listen.host || r.config->listen.port != config->listen.port ||
        r.config->listen.workers != config->listen.workers || r.config->admin.port != config->admin.port ||
        r.config->listen.scheduling != config->listen.scheduling ||
        r.config->listen.send_batching != config->listen.send_batching ||
        r.config->listen.tcp_defer_accept != config->listen.tcp_defer_accept)
      log::warn(
          "listen/admin address, workers, scheduling, send_batching and tcp_defer_accept changes need a "
          "restart; other changes applied");
    config = r.config;
    if (log::parse_level(config->log.level, level)) log::set_level(level);
    rt.stats->pool_labels.set_limit(size_t(config->metrics.max_pools));
    for (auto& w : rt.workers) w->publish(config, new_tls);
    rt.health.update(*config);
    rt.stats->config_last_reload_success_unixtime.store(int64_t(::time(nullptr)));
    log::info("configuration reloaded", {{"config", config_path}});
    control::systemd::notify("READY=1");
    return {true, {}};
  };
  // The admin console's RELOAD and SHUTDOWN, run here on the control thread.
  rt.admin.reload = [&](std::function<void(bool, std::string)> done) {
    asio::post(control_io, [&, done = std::move(done)] {
      if (lifecycle.draining()) return done(false, "pgrouter is shutting down");
      auto [ok, message] = reload();
      done(ok, std::move(message));
    });
  };
  rt.admin.shutdown = [&] {
    asio::post(control_io, [&] {
      log::info("shutting down", {{"command", "SHUTDOWN"}});
      lifecycle.drain(config->listen.shutdown_timeout);
    });
  };
  // Signals are caught before anything is announced: a SIGHUP or SIGTERM sent as soon as the port accepts, or
  // as soon as systemd hears READY=1, would otherwise end the process with the default action.
  asio::signal_set signals(control_io, SIGHUP, SIGTERM, SIGINT);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP && lifecycle.draining()) {
          log::info("reload ignored: pgrouter is shutting down");
          signals.async_wait(on_signal);
          return;
        }
        if (sig == SIGHUP) {
          reload();
          signals.async_wait(on_signal);
          return;
        }
        log::info("shutting down", {{"signal", sig}});
        if (sig == SIGTERM) {
          lifecycle.drain(config->listen.shutdown_timeout);
          signals.async_wait(on_signal);  // a SIGINT may still cut the drain short
          return;
        }
        lifecycle.stop();
      };
  signals.async_wait(on_signal);
  for (auto& w : rt.workers) w->start();
  rt.stats->config_last_reload_success_unixtime.store(int64_t(::time(nullptr)));
  log::info("pgrouter started",
            {{"version", PGROUTER_VERSION},
             {"config", config_path},
             {"listen", util::host_port(config->listen.host, config->listen.port)},
             {"workers", nworkers},
             {"scheduling", config->listen.scheduling == control::Scheduling::batch ? "batch" : "normal"},
             {"send_batching",
              config->listen.send_batching == control::SendBatching::io_uring ? "io_uring" : "off"},
             {"admin_port", config->admin.port}});
  lifecycle.serving();
  // A successor started with --takeover asks here for the sockets; then this process hands over.
  std::unique_ptr<control::takeover::Giver> giver;
  if (!config->listen.takeover_socket.empty()) {
    control::takeover::Giver::Handlers handlers;
    handlers.give = [&] {
      control::takeover::Sockets s;
      if (lifecycle.draining()) return s;
      for (auto& w : rt.workers)
        s.listeners.insert(s.listeners.end(), w->listener_fds().begin(), w->listener_fds().end());
      s.admin = admin ? admin->listener_fd() : -1;
      return s;
    };
    handlers.handed_over = [&](int new_pid) {
      log::info("takeover: the new process serves", {{"new_pid", new_pid}});
      if (admin) admin->stop_accepting();
      lifecycle.hand_over(config->listen.takeover_client_wait, config->listen.shutdown_timeout);
    };
    handlers.cancel = [&rt](uint32_t pid, uint32_t secret) {
      session::ClientSession::cancel_by_key(rt, pid, secret);
    };
    giver = std::make_unique<control::takeover::Giver>(control_io, config->listen.takeover_socket,
                                                       std::move(handlers));
    try {
      giver->start();
    } catch (const std::exception& e) {
      log::warn("listen.takeover_socket: cannot listen; this process cannot be taken over",
                {{"error", e.what()}});
      giver.reset();
    }
  }
  if (inherited.channel >= 0) {
    if (control::takeover::confirm_ready(inherited.channel))
      rt.predecessor.attach(inherited.channel);
    else
      log::warn("takeover: the old process was gone before this one served",
                {{"old_pid", inherited.old_pid}});
  }

  control_io.run();
  giver.reset();
  for (auto& w : rt.workers) w->join();
  rt.health.stop();
  admin.reset();
  rt.workers.clear();
  return 0;
}
