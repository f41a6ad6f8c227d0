// What PostgreSQL's built-in functions allow a statement calling them to do, for read/write splitting: most
// are safe on a replica, a few write, take locks, hand out sequence values or must run where an earlier call
// ran.
#pragma once
#include <string_view>

namespace pgrouter::sql {

enum class BuiltinFunction : uint8_t {
  read_only,     // runs on a replica with the same result a client expects from the primary
  primary_only,  // writes, locks, consumes a sequence or transaction id, signals, or is tied to the primary
  unknown,       // not a built-in we know: a user function, so the configuration decides
};

// `schema` is the qualification as written ("" when unqualified). Writers are recognised unqualified or in
// pg_catalog; any other pg_catalog function counts as read-only; other unqualified names are looked up in an
// allowlist of common pure and stable built-ins; anything in another schema is unknown.
BuiltinFunction builtin_function(std::string_view schema, std::string_view name);

}  // namespace pgrouter::sql
