// The merge of a scatter's answers (see scatter_plan.hpp): the shards' RowDescription and text-format
// DataRows in, the client's RowDescription, DataRows and CommandComplete tag out; the plan's hidden columns
// are sorted and grouped on but never reach the client. Pure: the caller reads the shards and writes the
// client.
//
// Memory: without ORDER BY, aggregates or DISTINCT nothing is buffered; with ORDER BY, the rows the caller
// has read but the merge could not emit yet (one per shard when the caller reads only the shards needs()
// names); DISTINCT keeps one key per distinct row; aggregates keep one entry per group until every shard is
// finished.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pgrouter/sharding/scatter_plan.hpp"

namespace pgrouter::sharding {

// How the merge compares and combines the text output of a type, by its OID.
enum class ValueType : uint8_t {
  integer,   // int2, int4, int8, oid
  numeric,   // exact decimal; NaN above every number, as PostgreSQL sorts it
  floating,  // float4, float8: NaN above every number, -0 = 0
  boolean,
  datetime,  // date, timestamp, timestamptz in DateStyle ISO (timestamptz compared in UTC)
  uuid,
  text,    // text, varchar, name: bytewise, so sorting them needs COLLATE "C"
  bpchar,  // likewise, trailing spaces ignored
  bytea,   // equality only
  other,   // none of these: cannot be a sort key, min/max, GROUP BY key or DISTINCT column
};
ValueType value_type(uint32_t type_oid);

// <0, 0 or >0; nullopt when a value is not in the expected text form (a date not in ISO style).
std::optional<int> compare_values(ValueType type, std::string_view a, std::string_view b);

// Exact numeric arithmetic on PostgreSQL's text output (NaN, Infinity, -Infinity included): the sum keeps the
// larger display scale, as PostgreSQL's addition does; nullopt for malformed input.
std::optional<std::string> numeric_add(std::string_view a, std::string_view b);
// avg() as PostgreSQL computes it from the sum and the count: numeric_div with select_div_scale's scale.
std::optional<std::string> numeric_avg(std::string_view sum, int64_t count);

class ScatterMerge {
 public:
  // One RowDescription body per shard. Check error() before anything else.
  ScatterMerge(const ScatterPlan& plan, const std::vector<std::string_view>& row_descriptions);

  // Non-empty when the shards disagree, a column's type cannot be merged exactly, or a row was malformed;
  // the caller then answers the client with an error (0A000) instead of the merge's rows.
  const std::string& error() const { return error_; }
  const std::string& row_description() const { return client_description_; }  // the client's 'T' body

  // True while the merge waits for a row (or the end) from `shard`: the caller reads from those shards.
  bool needs(size_t shard) const;
  void add_row(size_t shard, std::string_view data_row);  // a 'D' body from that shard
  void finish(size_t shard);                              // that shard's CommandComplete arrived
  bool next_row(std::string& data_row);                   // pops the next client 'D' body, if one is ready
  // No further client row will be produced (possibly early: LIMIT), though next_row() may still hold some;
  // also true after an error.
  bool done() const;
  std::string command_tag() const { return "SELECT " + std::to_string(sent_); }

  using Cell = std::optional<std::string>;
  using Row = std::vector<Cell>;

 private:
  struct Column {
    std::string name;
    std::string description;  // the field's bytes in RowDescription
    uint32_t type_oid = 0;
    ValueType type = ValueType::other;
    std::string signature;  // what must agree between shards: name, type OID, length, modifier, format
  };
  struct Group {
    Row cells;  // per shard column, combined so far
  };

  void read_descriptions(const std::vector<std::string_view>& descriptions);
  void resolve_columns();
  void check_types();
  void build_client_description();
  void fail(std::string why);
  bool parse_row(std::string_view body, Row& row);
  int compare_rows(const Row& a, const Row& b);
  void emit(Row row);
  void emit_body(std::string body);
  void drain_ordered();
  void combine(Group& g, const Row& row);
  void combine_cell(size_t column, Cell& acc, const Cell& v);
  void finish_aggregates();
  bool having_holds(const Row& row);
  std::string distinct_key(const Row& row) const;

  ScatterPlan plan_;
  std::vector<Column> columns_;         // the shards' columns
  std::vector<Column> client_columns_;  // the client's, then the hidden ones
  size_t visible_ = 0;                  // client columns the client sees
  std::string client_description_;
  std::string error_;
  size_t shards_ = 0;
  std::vector<bool> finished_;
  std::vector<std::deque<Row>> queues_;  // ORDER BY without aggregates: rows waiting for the k-way merge
  std::unordered_map<std::string, size_t> group_index_;
  std::vector<Group> groups_;             // in order of first appearance
  std::unordered_set<std::string> seen_;  // DISTINCT
  std::deque<std::string> out_;
  int64_t skipped_ = 0;  // OFFSET rows dropped so far
  int64_t sent_ = 0;     // rows produced (the CommandComplete count)
  bool limit_reached_ = false;
  bool aggregated_ = false;
};

}  // namespace pgrouter::sharding
