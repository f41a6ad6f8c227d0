// How a read that needs every shard is sent to all of them and its answers merged exactly: plan_scatter()
// reads one SELECT with libpg_query and either refuses it, naming the construct pgrouter cannot merge
// exactly (the caller answers SQLSTATE 0A000), or returns the text to send to each shard and what the merge
// (sharding/merge.hpp) must do with the shards' rows. Pure: no I/O.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::sharding {

// What a shard's output column is to the merge.
enum class ColumnRole : uint8_t {
  plain,      // copied (without aggregates: every column; with them: a constant, taken from any shard)
  group_key,  // a GROUP BY expression: rows with equal keys are one group
  count,      // count(*) / count(x): the shards' counts are added
  sum,        // added exactly (integers and numeric; floating point sums are refused by the merge)
  min,
  max,
  bool_and,
  bool_or,
  every,    // bool_and under its SQL-standard name
  avg_sum,  // avg(x) sent as sum(x), count(x): the client column is their quotient
  avg_count,
};

struct ShardColumn {
  ColumnRole role = ColumnRole::plain;
  size_t client_column = 0;  // the client column this one feeds
  bool collate_c = false;    // min/max over `x COLLATE "C"`: text compares bytewise
};

struct ClientColumn {
  size_t shard_column = 0;  // the shard column copied or combined (for avg: the sum; the count follows it)
  bool avg = false;
  std::string name;  // avg only: the column's name (its alias, else "avg"); others keep the shard's
};

// ORDER BY keys, as client columns; without avg a client column's index is also its shard column's.
struct SortKey {
  size_t column = 0;    // with `hidden`: which of the hidden columns (0 for the first)
  bool hidden = false;  // the key is a hidden column (see ScatterPlan::hidden)
  bool descending = false;
  bool nulls_first = false;  // PostgreSQL's default: NULLS LAST for ASC, NULLS FIRST for DESC
  bool collate_c = false;    // the key is sorted under COLLATE "C" (required for text keys)
};

// One term of a HAVING the merge evaluates after combining groups (the terms are ANDed): a client column
// compared with a constant.
struct HavingTerm {
  size_t column = 0;
  std::string op;        // <, <=, =, <>, >, >=
  std::string constant;  // as written (a number, or a string's value)
  bool string_constant = false;
};

struct ScatterPlan {
  bool refused = false;
  std::string refusal;  // names the construct, e.g. "DISTINCT ON"

  std::string shard_sql;   // sent to every shard
  bool star = false;       // the select list has `*`: the columns are the shards' columns, all plain
  bool aggregate = false;  // aggregates or GROUP BY: the shards' rows are combined into groups
  std::vector<ShardColumn> columns;          // per shard column (empty when `star`)
  std::vector<ClientColumn> client_columns;  // per client column (empty when `star`)
  // The last `hidden` client columns (with `star`: the shards' last `hidden` columns) are ORDER BY or GROUP
  // BY expressions the select list lacks, added to the shard text so the merge can sort or group on them; the
  // merge strips them from the client's RowDescription and DataRows.
  size_t hidden = 0;
  std::vector<SortKey> order_by;
  std::optional<int64_t> limit;    // applied by the merge after ordering
  std::optional<int64_t> offset;   // likewise (shards get LIMIT limit+offset and no OFFSET)
  bool distinct = false;           // SELECT DISTINCT: the merge drops duplicate rows
  std::vector<HavingTerm> having;  // evaluated by the merge; the shards get no HAVING
  // A GROUP BY name read as a select item's output name holds only if no input column has that name (which
  // PostgreSQL would group by instead): each probe (sharding/column_probe.hpp) must fail with 42703 on a
  // shard before the scatter runs, else the read is refused.
  struct ColumnProbe {
    std::string name;
    std::string sql;
  };
  std::vector<ColumnProbe> input_column_probes;
};

ScatterPlan plan_scatter(std::string_view select_sql);

}  // namespace pgrouter::sharding
