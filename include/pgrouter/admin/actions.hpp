// What the admin console and the HTTP API run for a command, shared so that both answer alike: the SHOW
// result sets (gathering the workers' snapshots where needed) and the commands that change something. Both
// run on `home`, the caller's thread (a worker's for the console, the control thread's for the API), and read
// other workers only through gather().
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "pgrouter/admin/command.hpp"
#include "pgrouter/admin/result_set.hpp"
#include "pgrouter/asio.hpp"
#include "pgrouter/control/config.hpp"
#include "pgrouter/worker.hpp"

namespace pgrouter::admin {

// A command's outcome: done, or refused with a SQLSTATE (the console's error; the API maps it to a status).
struct Outcome {
  std::string sqlstate;  // empty: done
  std::string message, hint;
  bool ok() const { return sqlstate.empty(); }
};

// The rows of a SHOW command (verb: one of the show_* verbs).
awaitable<ResultSet> show(Verb verb, asio::io_context& home, Runtime& rt,
                          std::shared_ptr<const control::Config> config);

// Runs a command that changes something. PAUSE returns once no client of the database holds a server (or a
// RESUME came first), KILL after its two passes, RELOAD once every worker has the new config.
awaitable<Outcome> run(Command cmd, asio::io_context& home, Runtime& rt,
                       std::shared_ptr<const control::Config> config);

// The console's command tag for a command done ("PAUSE", "RELOAD", ...).
std::string_view command_tag(Verb verb);

}  // namespace pgrouter::admin
