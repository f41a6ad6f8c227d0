// What the slow-query log says of a statement without its values: libpg_query's fingerprint (the same for
// texts that differ only in constants) and the text with its constants replaced by $n.
#pragma once
#include <string>
#include <string_view>

namespace pgrouter::sql {

struct StatementDigest {
  std::string fingerprint;  // 16 hex digits; empty when the text does not parse
  std::string normalized;   // constants as $1, $2, ...; empty when the text does not parse
};

// Parses the text (microseconds): for statements already known to be worth it, never per query.
StatementDigest digest_statement(std::string_view text);

}  // namespace pgrouter::sql
