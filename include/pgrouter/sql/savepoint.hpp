// SAVEPOINT, RELEASE and ROLLBACK TO read lexically: which one a statement is and the savepoint it names, as
// PostgreSQL reads the name, so that a transaction across shards can keep the stack of its savepoints.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::sql {

struct SavepointCommand {
  enum class Kind : uint8_t { savepoint, release, rollback_to };
  Kind kind = Kind::savepoint;
  // As PostgreSQL compares it: an unquoted name in ASCII lower case, a quoted one as written ("" read as "),
  // cut to 63 bytes (NAMEDATALEN - 1) at a character boundary.
  std::string name;
};

// The command when `sql` is exactly one of SAVEPOINT name, RELEASE [SAVEPOINT] name or ROLLBACK [WORK |
// TRANSACTION] TO [SAVEPOINT] name (comments, white space and trailing ';' allowed); nullopt for anything
// else, including spellings this reader does not follow (U&"..." names): the caller then refuses rather than
// guess.
std::optional<SavepointCommand> parse_savepoint(std::string_view sql);

}  // namespace pgrouter::sql
