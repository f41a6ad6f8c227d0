// The admin console's commands (PgBouncer's SHOW, PAUSE, RESUME, ... subset): parsing a simple query's text
// into one command. Pure: the console (session/client_admin.cpp) runs what this returns.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::admin {

enum class Verb {
  show_pools,
  show_clients,
  show_servers,
  show_databases,
  show_stats,
  show_config,
  show_version,
  show_backends,
  reload,
  pause,
  resume,
  disable,
  enable,
  kill,
  shutdown,
  wait_close,
};

struct Command {
  Verb verb = Verb::show_version;
  std::string database;  // PAUSE/RESUME/DISABLE/ENABLE/KILL/WAIT_CLOSE: the database named (empty: all)
};

// One parse's outcome: a command, an empty query (only blanks and semicolons), or an error message.
struct Parsed {
  std::optional<Command> command;
  bool empty = false;
  std::string error;  // set when neither a command nor empty
};

// Case-insensitive keywords, blanks anywhere between words, an optional trailing semicolon; a database name
// as written, or in double quotes ("" for a quote).
Parsed parse_command(std::string_view text);

// Whether the command changes something (stats_users may run only those that do not).
bool mutating(Verb verb);

// The commands the console knows, for the message of an unknown one.
std::string_view valid_commands();

}  // namespace pgrouter::admin
