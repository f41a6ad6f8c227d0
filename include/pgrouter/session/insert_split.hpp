// One INSERT ... VALUES whose rows are on several shards, as each shard gets it: the statement with that
// shard's rows only (sql/insert_rows.hpp), and, in the extended protocol, the Parse's parameter types and the
// Bind's parameters cut down to the parameters that statement keeps, renumbered from $1. Pure: bytes in,
// bytes out.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "pgrouter/session/scatter_request.hpp"

namespace pgrouter::session {

struct ShardInsert {
  int shard = 0;
  std::vector<size_t> rows;     // the original rows it inserts, ascending
  std::vector<int> params;      // params[i]: the original number of its parameter $i+1
  std::string sql;              // its INSERT
  std::string parameter_types;  // as a Parse body's end: count, then OIDs
  std::string parameters;       // as a Bind body's middle: format codes, then values
};

struct InsertSplit {
  std::vector<ShardInsert> shards;  // ascending by shard
  std::string error;                // why it could not be split, else empty ...
  std::string sqlstate;             // ... and its SQLSTATE
};

// `row_shards[r]`: the shard of row r (sharding::Need::row_shards).
InsertSplit split_insert(const ScatterRequest& req, const std::vector<int>& row_shards);

// The statement's ParameterDescription, from each shard's (in `shards`' order): original parameter n's type
// is the one a shard that kept it reports (a parameter no shard kept: the type the Parse gave).
std::string merged_parameter_description(const ScatterRequest& req, const std::vector<ShardInsert>& shards,
                                         const std::vector<std::string>& descriptions);

// How many parameters the statement has: the Parse's types or its highest $n, whichever is more.
size_t statement_parameters(const ScatterRequest& req, const std::vector<ShardInsert>& shards);

}  // namespace pgrouter::session
