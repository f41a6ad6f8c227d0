// A cheap lexical check for statements whose effects outlive the transaction (session state that
// transaction pooling cannot carry to another server yet). It errs towards "yes": a false positive
// only pins a client to its server, a false negative would leak state between clients.
#pragma once
#include <string_view>

namespace pgrouter::sql {

// Non-empty name of the session feature the statement text uses, or empty: "LISTEN", "session advisory
// lock", "temporary table", "WITH HOLD cursor", "LOAD", "PREPARE", "SET", "DISCARD" or "DEALLOCATE".
std::string_view session_feature(std::string_view sql);

}  // namespace pgrouter::sql
