// The question a cross-shard read must put to a server before it can trust its reading of a GROUP BY name:
// is the name an input column of the statement's FROM? PostgreSQL groups by an input column of that name when
// there is one, else by the select item with that output name, and only the server knows the tables' columns.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::sharding {

// `SELECT name FROM <the statement's FROM, WITH included> LIMIT 0`, written by libpg_query's deparser from
// the statement's own tree, so every FROM form (joins, subqueries, functions, CTEs) resolves the name exactly
// as the statement's GROUP BY would. Run on a server it fails with 42703 when the name is no input column,
// and returns no row (nothing of the FROM is executed) when it is one. nullopt when select_sql is not one
// SELECT with a FROM.
std::optional<std::string> input_column_probe(std::string_view select_sql, std::string_view name);

}  // namespace pgrouter::sharding
