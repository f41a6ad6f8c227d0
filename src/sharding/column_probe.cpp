// input_column_probe (see the header): the statement's tree, as protobuf, with its select list replaced by
// the name and every clause but FROM and WITH taken out, then deparsed.
#include "pgrouter/sharding/column_probe.hpp"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <vector>

namespace pgrouter::sharding {
namespace {

std::optional<std::string> deparse(const PgQuery__ParseResult& tree) {
  std::vector<uint8_t> packed(pg_query__parse_result__get_packed_size(&tree));
  pg_query__parse_result__pack(&tree, packed.data());
  PgQueryProtobuf pb{packed.size(), reinterpret_cast<char*>(packed.data())};
  PgQueryDeparseResult out = pg_query_deparse_protobuf(pb);
  std::optional<std::string> text;
  if (!out.error && out.query) text = std::string(out.query) + " LIMIT 0";
  pg_query_free_deparse_result(out);
  return text;
}

std::optional<std::string> probe_of(PgQuery__ParseResult& tree, std::string_view name) {
  if (tree.n_stmts != 1 || !tree.stmts[0]->stmt ||
      tree.stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT)
    return std::nullopt;
  PgQuery__SelectStmt& sel = *tree.stmts[0]->stmt->select_stmt;
  if (sel.n_from_clause == 0 || sel.op != PG_QUERY__SET_OPERATION__SETOP_NONE) return std::nullopt;

  std::string column(name);
  PgQuery__String str = PG_QUERY__STRING__INIT;
  str.sval = column.data();
  PgQuery__Node str_node = PG_QUERY__NODE__INIT;
  str_node.node_case = PG_QUERY__NODE__NODE_STRING;
  str_node.string = &str;
  PgQuery__Node* fields[] = {&str_node};
  PgQuery__ColumnRef ref = PG_QUERY__COLUMN_REF__INIT;
  ref.n_fields = 1;
  ref.fields = fields;
  ref.location = -1;
  PgQuery__Node ref_node = PG_QUERY__NODE__INIT;
  ref_node.node_case = PG_QUERY__NODE__NODE_COLUMN_REF;
  ref_node.column_ref = &ref;
  PgQuery__ResTarget target = PG_QUERY__RES_TARGET__INIT;
  target.val = &ref_node;
  target.location = -1;
  PgQuery__Node target_node = PG_QUERY__NODE__INIT;
  target_node.node_case = PG_QUERY__NODE__NODE_RES_TARGET;
  target_node.res_target = &target;
  PgQuery__Node* targets[] = {&target_node};

  PgQuery__SelectStmt kept = sel;  // the original fields come back before the tree is freed
  sel.n_distinct_clause = 0;
  sel.into_clause = nullptr;
  sel.n_target_list = 1;
  sel.target_list = targets;
  sel.where_clause = nullptr;
  sel.n_group_clause = 0;
  sel.group_distinct = 0;
  sel.having_clause = nullptr;
  sel.n_window_clause = 0;
  sel.n_sort_clause = 0;
  sel.limit_offset = nullptr;
  sel.limit_count = nullptr;
  sel.limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_DEFAULT;
  sel.n_locking_clause = 0;
  auto text = deparse(tree);
  sel = kept;
  return text;
}

}  // namespace

std::optional<std::string> input_column_probe(std::string_view select_sql, std::string_view name) {
  std::string sql(select_sql);
  PgQueryProtobufParseResult parsed = pg_query_parse_protobuf(sql.c_str());
  std::optional<std::string> probe;
  if (!parsed.error) {
    auto* tree = pg_query__parse_result__unpack(nullptr, parsed.parse_tree.len,
                                                reinterpret_cast<const uint8_t*>(parsed.parse_tree.data));
    if (tree) {
      probe = probe_of(*tree, name);
      pg_query__parse_result__free_unpacked(tree, nullptr);
    }
  }
  pg_query_free_protobuf_parse_result(parsed);
  return probe;
}

}  // namespace pgrouter::sharding
