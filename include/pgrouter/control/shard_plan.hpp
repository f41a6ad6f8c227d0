// The two sharding subcommands of the pgrouter binary: `shard-plan` (which keys a config change moves) and
// `shard-of` (the shard of given keys). Both print to `out`, report problems on `err` and return the exit
// status (0 ok, 1 bad config or keys, 2 bad usage).
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

namespace pgrouter::control {

// args: what follows the subcommand's name on the command line.
int shard_plan_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int shard_of_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace pgrouter::control
