// Arrays of shard keys (`key = ANY('{1,2}')`, `key = ANY($1)`): their elements as PostgreSQL's array_in and
// array_recv read them, so that each element's shard can be found like a single key's.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgrouter/sharding/key.hpp"

namespace pgrouter::sharding {

// The elements of an array in PostgreSQL's text form, nested braces flattened in order: each element's text
// with quotes and backslashes removed and unquoted surrounding whitespace dropped; nullopt for an unquoted
// NULL. nullopt when the text is not an array pgrouter reads (a dimension decoration such as
// '[0:1]={1,2}', unbalanced braces or quotes, an empty element): the caller then assumes any key.
std::optional<std::vector<std::optional<std::string>>> array_elements(std::string_view text);

// The elements of an array in binary format (array_send: dimensions, flags, element type oid, each
// dimension's size and lower bound, then each element's length, -1 for NULL, and bytes) as values of `type`.
// An element that is NULL, or that no key of `type` equals (an int8 beyond an int4 key's range), is nullopt:
// it matches no row. nullopt for the whole when the array cannot be read or its element type is not one a
// key of `type` is compared with (int2/int4/int8 for integer keys, text/varchar for text, uuid for uuid).
std::optional<std::vector<std::optional<KeyValue>>> array_values_binary(std::string_view bytes, KeyType type);

}  // namespace pgrouter::sharding
