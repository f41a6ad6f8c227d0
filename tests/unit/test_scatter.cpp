// Scatter reads: the plan (refusals and the shard text) and the merge (comparisons, the k-way merge,
// aggregates). The avg and numeric vectors were computed by PostgreSQL 15.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/sharding/column_probe.hpp"
#include "pgrouter/sharding/merge.hpp"
#include "pgrouter/sharding/scatter_plan.hpp"

using namespace pgrouter::sharding;
using pgrouter::protocol::put_be16;
using pgrouter::protocol::put_be32;
using pgrouter::protocol::read_be16;
using pgrouter::protocol::read_be32;
using Cell = ScatterMerge::Cell;
using Row = ScatterMerge::Row;

namespace {

constexpr uint32_t INT4 = 23, INT8 = 20, NUMERIC = 1700, TEXT = 25, FLOAT8 = 701, BOOL = 16, INTERVAL = 1186;

std::string refusal(std::string_view sql) {
  auto p = plan_scatter(sql);
  return p.refused ? p.refusal : "(planned: " + p.shard_sql + ")";
}

std::string describe(const std::vector<std::pair<std::string, uint32_t>>& cols) {
  std::string out;
  put_be16(out, uint16_t(cols.size()));
  for (auto& [name, type] : cols) {
    out += name + '\0';
    put_be32(out, 16384);  // table OID
    put_be16(out, 1);
    put_be32(out, type);
    put_be16(out, uint16_t(-1));
    put_be32(out, uint32_t(-1));
    put_be16(out, 0);
  }
  return out;
}

std::string data_row(const Row& row) {
  std::string out;
  put_be16(out, uint16_t(row.size()));
  for (auto& c : row) {
    put_be32(out, c ? uint32_t(c->size()) : uint32_t(-1));
    if (c) out += *c;
  }
  return out;
}

Row parse_data_row(const std::string& body) {
  Row row;
  size_t pos = 2;
  for (size_t i = 0, n = read_be16(body.data()); i < n; ++i) {
    uint32_t len = read_be32(body.data() + pos);
    pos += 4;
    if (len == uint32_t(-1)) {
      row.emplace_back();
    } else {
      row.emplace_back(body.substr(pos, len));
      pos += len;
    }
  }
  return row;
}

// Drives a merge as the relay would: reads only from the shards it needs, one row at a time.
struct Run {
  std::vector<Row> rows;
  std::string tag, error;
  size_t max_queued = 0;  // rows read from a shard the merge was not waiting on (must stay 0)
};

Run run(const std::string& sql, const std::vector<std::pair<std::string, uint32_t>>& cols,
        const std::vector<std::vector<Row>>& shards) {
  auto plan = plan_scatter(sql);
  REQUIRE_MESSAGE(!plan.refused, plan.refusal);
  std::string desc = describe(cols);
  std::vector<std::string_view> descs(shards.size(), desc);
  ScatterMerge m(plan, descs);
  Run r;
  r.error = m.error();
  if (!r.error.empty()) return r;
  std::vector<size_t> next(shards.size());
  for (bool progress = true; progress && !m.done();) {
    progress = false;
    for (size_t s = 0; s < shards.size() && !m.done(); ++s) {
      if (!m.needs(s)) continue;
      progress = true;
      if (next[s] < shards[s].size())
        m.add_row(s, data_row(shards[s][next[s]++]));
      else
        m.finish(s);
    }
  }
  std::string body;
  while (m.next_row(body)) r.rows.push_back(parse_data_row(body));
  r.tag = m.command_tag();
  r.error = m.error();
  return r;
}

Row R(std::initializer_list<Cell> cells) { return Row(cells); }

}  // namespace

// ---- the plan ----

TEST_CASE("scatter plan: refusals name the construct") {
  CHECK(refusal("select x, row_number() over () from t") == "window functions over sharded rows");
  CHECK(refusal("select sum(x) over (partition by y) from t") == "window functions over sharded rows");
  CHECK(refusal("select distinct on (x) x, y from t") == "DISTINCT ON");
  CHECK(refusal("select percentile_cont(0.5) within group (order by x) from t") == "ordered-set aggregates");
  CHECK(refusal("select string_agg(x, ',') from t") == "string_agg/array_agg");
  CHECK(refusal("select array_agg(x) from t") == "string_agg/array_agg");
  CHECK(refusal("select count(distinct x) from t") == "count(DISTINCT ...)");
  CHECK(refusal("select x from t union select x from u") == "set operations (UNION/INTERSECT/EXCEPT)");
  CHECK(refusal("select x from t union all select x from u") == "set operations (UNION/INTERSECT/EXCEPT)");
  CHECK(refusal("select x from t for update") == "FOR UPDATE/SHARE");
  CHECK(refusal("select x from t for share") == "FOR UPDATE/SHARE");
  CHECK(refusal("select x, (select max(y) from u) from t") == "a subquery in the select list");
  CHECK(refusal("select x from t limit (select 1)") == "LIMIT/OFFSET that is not a constant or parameter");
  CHECK(refusal("select x from t limit $1") == "LIMIT/OFFSET parameters");
  CHECK(refusal("select x from t offset $1") == "LIMIT/OFFSET parameters");
  CHECK(refusal("select g, count(*) from t group by rollup (g)") == "GROUP BY ROLLUP/CUBE/GROUPING SETS");
  CHECK(refusal("select g, count(*) from t group by cube (g)") == "GROUP BY ROLLUP/CUBE/GROUPING SETS");
  CHECK(refusal("select sum(x) + 1 from t") == "aggregate inside an expression (e.g. sum(x)+1)");
  CHECK(refusal("select count(*)::int from t") == "aggregate inside an expression (e.g. sum(x)+1)");
  CHECK(refusal("select g, count(*) from t group by g having count(*) > 1 or g = 1") ==
        "HAVING across shards (other than ANDed comparisons)");
  CHECK(refusal("select g, count(*) from t group by g having sum(x) > 1") ==
        "HAVING across shards (other than a select item compared with a constant)");
  CHECK(refusal("select g, count(*) from t group by g having count(*) > $1") ==
        "HAVING across shards (other than a select item compared with a constant)");
  CHECK(refusal("select g, h, count(*) from t group by g") ==
        "a select item that is neither a GROUP BY key nor a supported aggregate");
  CHECK(refusal("select stddev(x) from t") == "the aggregate stddev across shards");
  CHECK(refusal("select sum(distinct x) from t") == "aggregates over DISTINCT values");
  CHECK(refusal("select my_agg(x) from t") ==
        "function my_agg in the select list (it could be an aggregate)");
  CHECK(refusal("select x from (select count(*) x from t) s") ==
        "a subquery that aggregates, groups, de-duplicates or limits rows");
  CHECK(refusal("select x from t where x > (select avg(x) from t)") ==
        "a subquery that aggregates, groups, de-duplicates or limits rows");
  CHECK(refusal("select x from (select x from t limit 3) s") ==
        "a subquery that aggregates, groups, de-duplicates or limits rows");
  CHECK(refusal("select x from (select my_agg(y) x from t) s") ==
        "a function pgrouter does not know in a subquery's select list (it could be an aggregate)");
  CHECK_FALSE(plan_scatter("select x from t where exists (select 1 from u where my_fn(u.y) = t.x)").refused);
  CHECK(refusal("with c as (select 1) select * from c") == "WITH queries");
  CHECK(refusal("select x from t order by x fetch first 3 rows with ties") == "FETCH ... WITH TIES");
  CHECK(refusal("select x from t order by x using <") == "ORDER BY ... USING");
  CHECK(refusal("select avg(x) filter (where y) from t") == "avg(...) FILTER");
  CHECK(refusal("select *, count(*) from t") == "* with aggregates");
  CHECK(refusal("insert into t values (1)") == "anything but one SELECT");
  CHECK(refusal("select 1 from t; select 2 from t") == "anything but one SELECT");
  CHECK(refusal("select now()") == "a SELECT without FROM");
  CHECK(refusal("values (1), (2)") == "VALUES");
  CHECK(refusal("select from where") == "a statement that does not parse");
}

TEST_CASE("scatter plan: LIMIT/OFFSET become LIMIT n+m on the shards") {
  auto p = plan_scatter("select a from t order by a desc limit 5 offset 2");
  REQUIRE_FALSE(p.refused);
  CHECK(p.shard_sql == "select a from t order by a desc LIMIT 7");
  CHECK(p.limit == 5);
  CHECK(p.offset == 2);
  REQUIRE(p.order_by.size() == 1);
  CHECK(p.order_by[0].column == 0);
  CHECK(p.order_by[0].descending);
  CHECK(p.order_by[0].nulls_first);  // DESC defaults to NULLS FIRST

  CHECK(plan_scatter("SELECT a FROM t OFFSET 3 LIMIT 4;").shard_sql == "SELECT a FROM t LIMIT 7");
  CHECK(plan_scatter("select a from t offset 3").shard_sql == "select a from t");
  CHECK(plan_scatter("select a from t fetch first 2 rows only").shard_sql == "select a from t LIMIT 2");
  CHECK(plan_scatter("select a from t offset 1 rows fetch next 2 rows only").shard_sql ==
        "select a from t LIMIT 3");
  CHECK(plan_scatter("select a from t limit all").shard_sql == "select a from t limit all");
  CHECK(plan_scatter("select a from t limit 0").limit == 0);
  CHECK(plan_scatter("select a from t order by a offset 0").shard_sql == "select a from t order by a");
  CHECK(plan_scatter("select a from t limit all offset null").shard_sql == "select a from t");
  // Words that only look like the clause are left alone.
  CHECK(plan_scatter("select a as limit from t where b = 'limit 3' limit 1").shard_sql ==
        "select a as limit from t where b = 'limit 3' LIMIT 1");
  CHECK(plan_scatter("select a from (select a from t) s /* limit 9 */ limit 2 offset 1").shard_sql ==
        "select a from (select a from t) s /* limit 9 */ LIMIT 3");
  CHECK(plan_scatter("select a from t where t.limit = 1 order by a limit 1").shard_sql ==
        "select a from t where t.limit = 1 order by a LIMIT 1");
  CHECK(plan_scatter("select g, count(*) from t where t.order = 1 group by g order by g limit 1").shard_sql ==
        "select g, count(*) from t where t.order = 1 group by g");
  CHECK(plan_scatter("select a from t where x = $$ limit 4 $$ limit 1").shard_sql ==
        "select a from t where x = $$ limit 4 $$ LIMIT 1");
  CHECK(plan_scatter("select pg_catalog.avg(x), \"avg\"(y) from t").shard_sql ==
        "select sum(x), count(x), sum(y), count(y) from t");
  auto plain = plan_scatter("select a, b from t where c = $1");
  CHECK(plain.shard_sql == "select a, b from t where c = $1");
  CHECK_FALSE(plain.aggregate);
  CHECK(plain.columns.size() == 2);
}

TEST_CASE("scatter plan: ORDER BY keys by position, alias or expression; NULLS defaults") {
  auto p = plan_scatter(
      "select a, b as bee, lower(c) from t order by 3, bee nulls first, a desc nulls last, lower(c) desc");
  REQUIRE_MESSAGE(!p.refused, p.refusal);
  REQUIRE(p.order_by.size() == 4);
  CHECK(p.order_by[0].column == 2);
  CHECK_FALSE(p.order_by[0].nulls_first);  // ASC: NULLS LAST
  CHECK(p.order_by[1].column == 1);
  CHECK(p.order_by[1].nulls_first);
  CHECK(p.order_by[2].column == 0);
  CHECK(p.order_by[2].descending);
  CHECK_FALSE(p.order_by[2].nulls_first);
  CHECK(p.order_by[3].column == 2);
  CHECK(p.order_by[3].nulls_first);
  auto c = plan_scatter("select name from t order by name collate \"C\"");
  REQUIRE(c.order_by.size() == 1);
  CHECK(c.order_by[0].collate_c);
  CHECK(c.shard_sql == "select name from t order by name collate \"C\"");
  CHECK(plan_scatter("select * from t order by 2 desc").order_by[0].column == 1);
  CHECK(plan_scatter("select * from t order by 2 desc").star);
  // A position out of the select list is PostgreSQL's error (42P10): the shards get the statement unchanged
  // and report it. A number too large for an integer is a constant to PostgreSQL, not a position.
  for (std::string_view sql : {"select a from t order by 2", "select a, count(*) from t group by 3",
                               "select * from t order by 0", "select a from t order by -1 limit 1",
                               "select a from t limit -1", "select count(*) from t offset - 2"}) {
    auto rejected = plan_scatter(sql);
    CHECK_MESSAGE((!rejected.refused && rejected.star && rejected.order_by.empty()), sql);
    CHECK_MESSAGE(rejected.shard_sql == sql, sql);
  }
  CHECK(refusal("select a from t order by 99999999999") == "a position that is not in the select list");
}

TEST_CASE("scatter plan: integers libpg_query leaves out (zero, negatives) are read from the text") {
  auto h = plan_scatter(
      "select g, count(*), sum(x) from t group by g having count(*) >= - /* c */ 10 and "
      "sum(x) <> 0");
  REQUIRE_MESSAGE(!h.refused, h.refusal);
  REQUIRE(h.having.size() == 2);
  CHECK(h.having[0].constant == "-10");
  CHECK(h.having[1].constant == "0");
  // Expressions that differ only in such a constant are different sort keys.
  auto o = plan_scatter("select n * -1 from t order by n * 0, id limit 2");
  REQUIRE_MESSAGE(!o.refused, o.refusal);
  REQUIRE(o.order_by.size() == 2);
  CHECK(o.order_by[0].hidden);
  CHECK(plan_scatter("select n * -1 from t order by n * -1 limit 2").order_by[0].column == 0);
  // HAVING's left side is a value, never a position.
  CHECK(refusal("select count(*) from t group by g having 1 > 50") ==
        "HAVING across shards (other than a select item compared with a constant)");
}

TEST_CASE("scatter plan: aggregates, avg split into sum and count, ORDER BY/LIMIT kept for the merge") {
  auto p = plan_scatter(
      "select g, avg(x) as a, count(*), sum(y) from t group by g order by a desc limit 5 offset 2");
  REQUIRE_MESSAGE(!p.refused, p.refusal);
  CHECK(p.shard_sql == "select g, sum(x), count(x) as a, count(*), sum(y) from t group by g");
  CHECK(p.aggregate);
  REQUIRE(p.columns.size() == 5);
  CHECK(p.columns[0].role == ColumnRole::group_key);
  CHECK(p.columns[1].role == ColumnRole::avg_sum);
  CHECK(p.columns[1].client_column == 1);
  CHECK(p.columns[2].role == ColumnRole::avg_count);
  CHECK(p.columns[2].client_column == 1);
  CHECK(p.columns[3].role == ColumnRole::count);
  CHECK(p.columns[3].client_column == 2);
  CHECK(p.columns[4].role == ColumnRole::sum);
  REQUIRE(p.client_columns.size() == 4);
  CHECK(p.client_columns[1].avg);
  CHECK(p.client_columns[1].shard_column == 1);
  CHECK(p.client_columns[1].name == "a");
  CHECK(p.client_columns[2].shard_column == 3);
  REQUIRE(p.order_by.size() == 1);
  CHECK(p.order_by[0].column == 1);  // the client's avg column
  CHECK(p.limit == 5);
  CHECK(p.offset == 2);

  // A GROUP BY position after an avg moves with it.
  auto q =
      plan_scatter("select avg(x), g, min(y), max(z), bool_and(b), bool_or(b), every(b) from t group by 2");
  REQUIRE_MESSAGE(!q.refused, q.refusal);
  CHECK(q.shard_sql ==
        "select sum(x), count(x), g, min(y), max(z), bool_and(b), bool_or(b), every(b) from t group by 3");
  CHECK(q.columns[2].role == ColumnRole::group_key);
  CHECK(q.columns[3].role == ColumnRole::min);
  CHECK(q.columns[7].role == ColumnRole::every);
  CHECK(q.client_columns[0].name == "avg");

  auto g =
      plan_scatter("select count(*), sum(x) filter (where y > 0), min(n collate \"C\") from t where z = 'a'");
  REQUIRE_MESSAGE(!g.refused, g.refusal);
  CHECK(g.shard_sql ==
        "select count(*), sum(x) filter (where y > 0), min(n collate \"C\") from t where z = 'a'");
  CHECK(g.columns[2].collate_c);
  CHECK(plan_scatter("select lower(g), count(*) from t group by lower(g) order by 1").shard_sql ==
        "select lower(g), count(*) from t group by lower(g)");
  CHECK(plan_scatter("select distinct a, b from t").distinct);

  auto h = plan_scatter(
      "select g, count(*), avg(x) from t group by g having count(*) >= 2 and avg(x) < -1.5 and "
      "g <> 'a' order by g limit 3;");
  REQUIRE_MESSAGE(!h.refused, h.refusal);
  CHECK(h.shard_sql == "select g, count(*), sum(x), count(x) from t group by g");
  REQUIRE(h.having.size() == 3);
  CHECK(h.having[0].column == 1);
  CHECK(h.having[0].op == ">=");
  CHECK(h.having[0].constant == "2");
  CHECK(h.having[1].column == 2);
  CHECK(h.having[1].constant == "-1.5");
  CHECK(h.having[2].column == 0);
  CHECK(h.having[2].string_constant);
  CHECK(h.having[2].constant == "a");
}

TEST_CASE("scatter plan: ORDER BY keys not in the select list become hidden columns") {
  auto p = plan_scatter("select a from t order by lower(b) desc nulls first, a, b limit 5 offset 2");
  REQUIRE_MESSAGE(!p.refused, p.refusal);
  CHECK(p.shard_sql ==
        "select a, lower(b) AS pgr_sort_1, b AS pgr_sort_2 from t order by lower(b) desc nulls first, a, b "
        "LIMIT 7");
  CHECK(p.hidden == 2);
  REQUIRE(p.columns.size() == 3);
  CHECK(p.columns[1].role == ColumnRole::plain);
  REQUIRE(p.client_columns.size() == 3);
  CHECK(p.client_columns[2].shard_column == 2);
  REQUIRE(p.order_by.size() == 3);
  CHECK(p.order_by[0].hidden);
  CHECK(p.order_by[0].column == 0);
  CHECK(p.order_by[0].descending);
  CHECK(p.order_by[0].nulls_first);
  CHECK_FALSE(p.order_by[1].hidden);
  CHECK(p.order_by[1].column == 0);
  CHECK(p.order_by[2].hidden);
  CHECK(p.order_by[2].column == 1);

  // The same expression twice is one hidden column; COLLATE "C" is kept in it.
  auto c = plan_scatter("select a from t order by n collate \"C\", n collate \"C\" desc");
  REQUIRE_MESSAGE(!c.refused, c.refusal);
  CHECK(c.shard_sql ==
        "select a, n collate \"C\" AS pgr_sort_1 from t order by n collate \"C\", n collate \"C\" desc");
  CHECK(c.hidden == 1);
  CHECK(c.order_by[1].hidden);
  CHECK(c.order_by[1].column == 0);
  CHECK(c.order_by[1].collate_c);

  CHECK(plan_scatter("select a /* c */ from t order by abs(x - $1) /* d */ desc limit 2;").shard_sql ==
        "select a, abs(x - $1) AS pgr_sort_1 /* c */ from t order by abs(x - $1) /* d */ desc LIMIT 2");
  CHECK(plan_scatter("select a is distinct from b from t order by c").shard_sql ==
        "select a is distinct from b, c AS pgr_sort_1 from t order by c");
  CHECK(plan_scatter("select a from t order by b nulls last;").shard_sql ==
        "select a, b AS pgr_sort_1 from t order by b nulls last;");
  CHECK(plan_scatter("select a from t order by \"B\" asc").shard_sql ==
        "select a, \"B\" AS pgr_sort_1 from t order by \"B\" asc");

  auto star = plan_scatter("select * from t where x > 1 order by x desc, 2");
  REQUIRE_MESSAGE(!star.refused, star.refusal);
  CHECK(star.shard_sql == "select *, x AS pgr_sort_1 from t where x > 1 order by x desc, 2");
  CHECK(star.star);
  CHECK(star.hidden == 1);
  CHECK(star.order_by[0].hidden);
  CHECK_FALSE(star.order_by[1].hidden);
  CHECK(star.order_by[1].column == 1);
}

TEST_CASE("scatter plan: a bare ORDER BY name is an output column's name before an input column") {
  // PostgreSQL names `x::text` "x" and `lower(n)` "lower": the ORDER BY names the select item.
  auto cast = plan_scatter("select x::text from t order by x");
  REQUIRE_MESSAGE(!cast.refused, cast.refusal);
  CHECK(cast.hidden == 0);
  CHECK(cast.order_by[0].column == 0);
  auto fn = plan_scatter("select y, lower(n) from t order by lower");
  CHECK(fn.hidden == 0);
  CHECK(fn.order_by[0].column == 1);
  CHECK(plan_scatter("select t.x from t order by x").hidden == 0);
  // Under COLLATE the name is an input column's, even where an alias has the same name.
  auto collated = plan_scatter("select n as x from t order by x collate \"C\"");
  REQUIRE_MESSAGE(!collated.refused, collated.refusal);
  CHECK(collated.shard_sql == "select n as x, x collate \"C\" AS pgr_sort_1 from t order by x collate \"C\"");
  CHECK(collated.order_by[0].hidden);
  auto int4 = plan_scatter("select y, 1::int from t order by int4");  // a constant's cast: the type's name
  CHECK(int4.hidden == 0);
  CHECK(int4.order_by[0].column == 1);
  // `a + 1` is named ?column?: y is an input column.
  CHECK(plan_scatter("select a + 1 from t order by y").shard_sql ==
        "select a + 1, y AS pgr_sort_1 from t order by y");
}

TEST_CASE("scatter plan: GROUP BY an output name groups by that select item, unless it is an input column") {
  auto p = plan_scatter("select plan as p, count(*) from t group by p order by p");
  REQUIRE_MESSAGE(!p.refused, p.refusal);
  CHECK(p.shard_sql == "select plan as p, count(*) from t group by p");  // the merge sorts
  CHECK(p.hidden == 0);
  REQUIRE(p.columns.size() == 2);
  CHECK(p.columns[0].role == ColumnRole::group_key);
  CHECK(p.columns[1].role == ColumnRole::count);
  REQUIRE(p.order_by.size() == 1);
  CHECK(p.order_by[0].column == 0);
  // PostgreSQL's implicit names count too (`lower(v)` is named lower), with a second key by position.
  auto implicit = plan_scatter("select lower(v), n % 3 as m, sum(x) from t group by lower, 2");
  REQUIRE_MESSAGE(!implicit.refused, implicit.refusal);
  CHECK(implicit.hidden == 0);
  CHECK(implicit.columns[0].role == ColumnRole::group_key);
  CHECK(implicit.columns[1].role == ColumnRole::group_key);
  // A name the statement uses as a column is an input column, which wins in GROUP BY: `n` is t.n, and the
  // select item `n / 2` is then no GROUP BY key.
  CHECK(refusal("select n / 2 as n, count(*) from t group by n") ==
        "a select item that is neither a GROUP BY key nor a supported aggregate");
  CHECK(refusal("select plan as p, count(*) from t where p > 0 group by p") ==
        "a select item that is neither a GROUP BY key nor a supported aggregate");
  // Two select items of that name with different expressions: PostgreSQL's ambiguity (or an input column).
  CHECK(refusal("select plan as p, n as p, count(*) from t group by p") == "an ambiguous GROUP BY name");
  // GROUP BY an aggregate's name is still refused.
  CHECK(refusal("select plan, count(*) as c from t group by plan, c") == "GROUP BY an aggregate");
}

TEST_CASE("scatter plan: an output name in GROUP BY is checked against the server's input columns") {
  auto p = plan_scatter("select plan as p, count(*) from t where n > 1 group by p order by p limit 3");
  REQUIRE_MESSAGE(!p.refused, p.refusal);
  REQUIRE(p.input_column_probes.size() == 1);
  CHECK(p.input_column_probes[0].name == "p");
  CHECK(p.input_column_probes[0].sql == "SELECT p FROM t LIMIT 0");
  // Every FROM form keeps its meaning: joins, subqueries.
  auto join =
      plan_scatter("select t.plan as q, count(*) from (select 1 as a) c join t on t.n = c.a group by q");
  REQUIRE_MESSAGE(!join.refused, join.refusal);
  REQUIRE(join.input_column_probes.size() == 1);
  CHECK(join.input_column_probes[0].sql == "SELECT q FROM (SELECT 1 AS a) c JOIN t ON t.n = c.a LIMIT 0");
  // A GROUP BY key that is an expression, a position or a name used as a column needs no probe.
  CHECK(plan_scatter("select plan, count(*) from t group by plan").input_column_probes.empty());
  CHECK(plan_scatter("select n % 3, count(*) from t group by 1").input_column_probes.empty());
  CHECK(plan_scatter("select n % 3 as m, count(*) from t group by n % 3").input_column_probes.empty());
}

TEST_CASE("input_column_probe: the statement's FROM with the name as its only select item") {
  CHECK(input_column_probe("select a as b from s.t x where x.c = 1 group by b", "b") ==
        "SELECT b FROM s.t x LIMIT 0");
  CHECK(input_column_probe("select g as b from generate_series(1, 3) g", "b") ==
        "SELECT b FROM generate_series(1, 3) g LIMIT 0");
  CHECK(input_column_probe("select 1 as b", "b") == std::nullopt);  // no FROM: no input column
  CHECK(input_column_probe("select 1 from t union select 2 from t", "b") == std::nullopt);
  CHECK(input_column_probe("not sql at all", "b") == std::nullopt);
  CHECK(input_column_probe("with c as (select 1 as a) select a as b from c group by b", "b") ==
        "WITH c AS (SELECT 1 AS a) SELECT b FROM c LIMIT 0");
}

TEST_CASE("scatter plan: GROUP BY keys and ORDER BY aggregates not in the select list are hidden") {
  auto g = plan_scatter("select count(*) from t group by plan");
  REQUIRE_MESSAGE(!g.refused, g.refusal);
  CHECK(g.shard_sql == "select count(*), plan AS pgr_group_1 from t group by plan");
  CHECK(g.hidden == 1);
  REQUIRE(g.columns.size() == 2);
  CHECK(g.columns[0].role == ColumnRole::count);
  CHECK(g.columns[1].role == ColumnRole::group_key);
  CHECK(g.columns[1].client_column == 1);
  CHECK(g.client_columns.size() == 2);

  auto o = plan_scatter("SELECT plan FROM t GROUP BY plan ORDER BY count(*) DESC, plan LIMIT 3");
  REQUIRE_MESSAGE(!o.refused, o.refusal);
  CHECK(o.shard_sql == "SELECT plan, count(*) AS pgr_sort_1 FROM t GROUP BY plan");
  CHECK(o.hidden == 1);
  CHECK(o.columns[0].role == ColumnRole::group_key);
  CHECK(o.columns[1].role == ColumnRole::count);
  REQUIRE(o.order_by.size() == 2);
  CHECK(o.order_by[0].hidden);
  CHECK(o.order_by[0].column == 0);
  CHECK(o.order_by[0].descending);
  CHECK_FALSE(o.order_by[1].hidden);
  CHECK(o.limit == 3);

  // ORDER BY a hidden GROUP BY key reuses it; an avg is sent as its sum and count.
  auto a = plan_scatter("select max(x) from t group by g, lower(h) order by lower(h), avg(y) desc, g");
  REQUIRE_MESSAGE(!a.refused, a.refusal);
  CHECK(a.shard_sql ==
        "select max(x), g AS pgr_group_1, lower(h) AS pgr_group_2, sum(y) AS pgr_sort_1, count(y) AS "
        "pgr_sort_1_count from t group by g, lower(h)");
  CHECK(a.hidden == 3);
  REQUIRE(a.columns.size() == 5);
  CHECK(a.columns[3].role == ColumnRole::avg_sum);
  CHECK(a.columns[4].role == ColumnRole::avg_count);
  CHECK(a.client_columns[3].avg);
  REQUIRE(a.order_by.size() == 3);
  CHECK(a.order_by[0].column == 1);
  CHECK(a.order_by[1].column == 2);
  CHECK(a.order_by[2].column == 0);
  for (auto& k : a.order_by) CHECK(k.hidden);

  auto d = plan_scatter("select distinct count(*) from t group by g");
  REQUIRE_MESSAGE(!d.refused, d.refusal);
  CHECK(d.shard_sql == "select distinct count(*), g AS pgr_group_1 from t group by g");
}

TEST_CASE("scatter plan: hidden columns keep the refusals that protect exactness") {
  CHECK(refusal("select distinct a from t order by b") ==
        "ORDER BY an expression not in the select list with DISTINCT");
  CHECK(refusal("select 1 from t order by count(*)") == "ORDER BY an aggregate without GROUP BY");
  CHECK(refusal("select g, count(*) from t group by g order by lower(h)") ==
        "ORDER BY an expression that is neither in the select list, a GROUP BY key nor an aggregate");
  CHECK(refusal("select g from t group by g order by string_agg(x, ',')") == "string_agg/array_agg");
  CHECK(refusal("select g from t group by g order by count(distinct x)") == "count(DISTINCT ...)");
  CHECK(refusal("select g from t group by g order by stddev(x)") == "the aggregate stddev across shards");
  CHECK(refusal("select g from t group by g order by percentile_cont(0.5) within group (order by x)") ==
        "ordered-set aggregates");
  CHECK(refusal("select a from t order by row_number() over ()") == "window functions over sharded rows");
  CHECK(refusal("select a from t order by (select max(b) from u)") ==
        "a subquery that aggregates, groups, de-duplicates or limits rows");
  CHECK(refusal("select a from t order by (select b from u where u.c = t.c)") ==
        "a subquery in the select list");
  CHECK(refusal("select a from t order by my_fn(b)") ==
        "function my_fn in the select list (it could be an aggregate)");
  CHECK(refusal("select count(*) from t group by my_fn(b)") ==
        "function my_fn in the select list (it could be an aggregate)");
  CHECK(refusal("select *, a + 1 as k from t order by k") ==
        "ORDER BY a select item's name with * in the select list");
  CHECK(refusal("select a, b[1] from t order by c") ==
        "ORDER BY a name pgrouter cannot tell from a select item's");
  CHECK(refusal("select a from t order by pgr_sort_1") ==
        "names starting with pgr_sort_ or pgr_group_ (pgrouter's hidden columns)");
  CHECK(refusal("select a, pgr_sort_1 from t order by b") ==
        "names starting with pgr_sort_ or pgr_group_ (pgrouter's hidden columns)");
  CHECK(refusal("select g, count(*) from t group by g having count(*) > 1 or g = 1 order by sum(x)") ==
        "HAVING across shards (other than ANDed comparisons)");
}

// ---- comparisons and numeric arithmetic ----

TEST_CASE("scatter compare: integers, numeric, floats, dates") {
  auto cmp = [](ValueType t, std::string_view a, std::string_view b) {
    return compare_values(t, a, b).value_or(99);
  };
  CHECK(cmp(ValueType::integer, "-9223372036854775808", "9223372036854775807") < 0);
  CHECK(cmp(ValueType::integer, "9223372036854775807", "9223372036854775806") > 0);
  CHECK(cmp(ValueType::integer, "-10", "9") < 0);
  CHECK(cmp(ValueType::numeric, "-0.50", "-0.5") == 0);
  CHECK(cmp(ValueType::numeric, "0", "-0.000") == 0);
  CHECK(cmp(ValueType::numeric, "10.01", "9.999") > 0);
  CHECK(cmp(ValueType::numeric, "-10.01", "-9.999") < 0);
  CHECK(cmp(ValueType::numeric, "NaN", "99999999999999999999") > 0);
  CHECK(cmp(ValueType::numeric, "NaN", "Infinity") > 0);
  CHECK(cmp(ValueType::numeric, "NaN", "NaN") == 0);
  CHECK(cmp(ValueType::numeric, "-Infinity", "-99999") < 0);
  CHECK(cmp(ValueType::numeric, "123456789012345678901234567890.1", "123456789012345678901234567890.09") > 0);
  CHECK(cmp(ValueType::floating, "NaN", "Infinity") > 0);
  CHECK(cmp(ValueType::floating, "-0", "0") == 0);
  CHECK(cmp(ValueType::floating, "1e+300", "-Infinity") > 0);
  CHECK(cmp(ValueType::floating, "1.5", "1.25") > 0);
  CHECK(cmp(ValueType::boolean, "f", "t") < 0);
  CHECK(cmp(ValueType::datetime, "2024-01-02", "2024-01-10") < 0);
  CHECK(cmp(ValueType::datetime, "12345-01-01", "2024-01-10") > 0);
  CHECK(cmp(ValueType::datetime, "0044-03-15 BC", "0001-01-01") < 0);
  CHECK(cmp(ValueType::datetime, "infinity", "2024-01-10 00:00:00") > 0);
  CHECK(cmp(ValueType::datetime, "2024-01-02 10:00:00.5", "2024-01-02 10:00:00.25") > 0);
  // The same instant under two offsets (DST), and an earlier one with a larger local time.
  CHECK(cmp(ValueType::datetime, "2024-03-31 03:00:00+02", "2024-03-31 01:00:00+00") == 0);
  CHECK(cmp(ValueType::datetime, "2024-03-31 03:30:00+05:30", "2024-03-31 01:00:00+00") < 0);
  CHECK(compare_values(ValueType::datetime, "01/02/2024", "2024-01-02") == std::nullopt);
  CHECK(cmp(ValueType::text, "B", "a") < 0);  // C collation: bytes
  CHECK(cmp(ValueType::text, "\xc3\xa9", "z") > 0);
  CHECK(cmp(ValueType::bpchar, "ab  ", "ab") == 0);
  CHECK(cmp(ValueType::uuid, "0a000000-0000-0000-0000-000000000000", "a0000000-0000-0000-0000-000000000000") <
        0);
}

TEST_CASE("scatter numeric: sums keep the larger scale, avg is PostgreSQL's numeric_div") {
  CHECK(numeric_add("1.50", "-7") == "-5.50");
  CHECK(numeric_add("-5.50", "2.125") == "-3.375");  // PostgreSQL 15: sum of 1.50, 2.125, -7
  CHECK(numeric_add("0.10", "-0.1") == "0.00");      // PostgreSQL 15: sum of 0.10, -0.1
  CHECK(numeric_add("9223372036854775807", "9223372036854775807") == "18446744073709551614");
  CHECK(numeric_add("NaN", "1") == "NaN");
  CHECK(numeric_add("Infinity", "-Infinity") == "NaN");
  CHECK(numeric_add("Infinity", "1") == "Infinity");
  // PostgreSQL 15: select avg(x) from (values ...) v(x), as (sum, count).
  CHECK(numeric_avg("5", 3) == "1.6666666666666667");                      // 1, 2, 2
  CHECK(numeric_avg("-3.375", 3) == "-1.12500000000000000000");            // 1.50, 2.125, -7
  CHECK(numeric_avg("30000000", 2) == "15000000.000000000000");            // 10000000, 20000000
  CHECK(numeric_avg("123456789015", 2) == "61728394507.50000000");         // 123456789012::bigint, 3
  CHECK(numeric_avg("0.0007", 3) == "0.00023333333333333333");             // 0.0001, 0.0002, 0.0004
  CHECK(numeric_avg("-3", 2) == "-1.5000000000000000");                    // -1, -2
  CHECK(numeric_avg("-5", 3) == "-1.6666666666666667");                    // -5, 0, 0
  CHECK(numeric_avg("100000000.00", 2) == "50000000.000000000000");        // 99999999.99, 0.01
  CHECK(numeric_avg("NaN", 2) == "NaN");                                   // 1, NaN
  CHECK(numeric_avg("Infinity", 2) == "Infinity");                         // 1, Infinity
  CHECK(numeric_avg("18446744073709551614", 2) == "9223372036854775807");  // bigint max twice
  CHECK(numeric_avg("0.000000000000000000001", 2) == "0.0000000000000000000005000000000000000000");
  CHECK(numeric_avg("5", 2) == "2.5000000000000000");  // 2, 3
  CHECK(numeric_avg("0", 2) == "0.00000000000000000000");
  CHECK(numeric_avg("2", 3) == "0.66666666666666666667");                    // 1, 1, 0: rounds up
  CHECK(numeric_avg("-2", 3) == "-0.66666666666666666667");                  // away from zero
  CHECK(numeric_avg("12346.679", 3) == "4115.5596666666666667");             // 12345.678, 0.001, 1
  CHECK(numeric_avg("100000000000000000001", 2) == "50000000000000000001");  // 1e20, 1 (rounds up)
  CHECK(numeric_avg("-2", 2) == "-1.00000000000000000000");                  // 5, -7, NULL
}

// ---- the merge ----

TEST_CASE("scatter merge: without ORDER BY rows pass straight through; OFFSET/LIMIT after") {
  auto r = run("select a from t", {{"a", INT4}}, {{R({"1"}), R({"2"})}, {}, {R({"3"})}});
  CHECK(r.rows.size() == 3);
  CHECK(r.tag == "SELECT 3");
  auto l =
      run("select a from t limit 2 offset 1", {{"a", INT4}}, {{R({"1"}), R({"2"})}, {R({"3"}), R({"4"})}});
  CHECK(l.rows.size() == 2);
  CHECK(l.tag == "SELECT 2");
}

TEST_CASE("scatter merge: three shards, ORDER BY DESC with LIMIT/OFFSET, reading only what it needs") {
  // Each shard's rows in the order the shard sends them for the ORDER BY.
  std::vector<std::vector<Row>> shards = {
      {R({std::nullopt, "n1"}), R({"9", "a"}), R({"7", "b"}), R({"3", "c"})},
      {R({std::nullopt, "n0"}), R({"8", "d"}), R({"6", "e"}), R({"-9223372036854775808", "f"})},
      {R({"9223372036854775807", "g"}), R({"1", "h"})},
  };
  // DESC: NULLS FIRST by default.
  auto all = run("select k, v from t order by k desc", {{"k", INT8}, {"v", TEXT}}, shards);
  std::vector<std::string> got;
  for (auto& row : all.rows) got.push_back(*row[1]);
  CHECK(got.size() == 10);
  CHECK(got[0].substr(0, 1) == "n");
  CHECK(got[1].substr(0, 1) == "n");
  CHECK(std::vector<std::string>(got.begin() + 2, got.end()) ==
        std::vector<std::string>{"g", "a", "d", "b", "e", "c", "h", "f"});
  for (auto* shard : {&shards[0], &shards[1]}) std::rotate(shard->begin(), shard->begin() + 1, shard->end());
  auto page = run("select k, v from t order by k desc nulls last limit 3 offset 2",
                  {{"k", INT8}, {"v", TEXT}}, shards);
  REQUIRE(page.rows.size() == 3);
  CHECK(*page.rows[0][1] == "d");
  CHECK(*page.rows[2][1] == "e");
  CHECK(page.tag == "SELECT 3");
  auto asc = run("select k, v from t order by 1 nulls first", {{"k", INT8}, {"v", TEXT}},
                 {{R({std::nullopt, "n"}), R({"1", "x"})}, {R({"0", "y"})}});
  REQUIRE(asc.rows.size() == 3);
  CHECK(*asc.rows[0][1] == "n");
  CHECK(*asc.rows[1][1] == "y");
}

TEST_CASE("scatter merge: needs() holds the caller to one row per shard") {
  auto plan = plan_scatter("select k from t order by k");
  std::string desc = describe({{"k", INT4}});
  ScatterMerge m(plan, {desc, desc});
  REQUIRE(m.error().empty());
  CHECK(m.needs(0));
  m.add_row(0, data_row(R({"1"})));
  CHECK_FALSE(m.needs(0));  // waiting on shard 1 before 1 can go out
  CHECK(m.needs(1));
  std::string body;
  CHECK_FALSE(m.next_row(body));
  m.add_row(1, data_row(R({"2"})));
  CHECK(m.next_row(body));
  CHECK(parse_data_row(body)[0] == "1");
  CHECK(m.needs(0));
  CHECK_FALSE(m.needs(1));
  m.finish(0);
  CHECK(m.next_row(body));
  CHECK_FALSE(m.done());
  m.finish(1);
  CHECK(m.done());
  CHECK(m.command_tag() == "SELECT 2");
  ScatterMerge limited(plan_scatter("select k from t order by k limit 1"), {desc, desc});
  limited.add_row(0, data_row(R({"1"})));
  limited.add_row(1, data_row(R({"1"})));
  CHECK(limited.done());  // the caller may stop reading the shards
  CHECK_FALSE(limited.needs(0));
}

TEST_CASE("scatter merge: type checks at construction") {
  auto err = [](std::string_view sql, std::vector<std::pair<std::string, uint32_t>> cols) {
    std::string d = describe(cols);
    return ScatterMerge(plan_scatter(sql), {d, d}).error();
  };
  CHECK(err("select n from t order by n", {{"n", TEXT}}) ==
        "ORDER BY a text column across shards needs COLLATE \"C\"");
  CHECK(err("select n from t order by n collate \"C\"", {{"n", TEXT}}).empty());
  CHECK(err("select i from t order by i", {{"i", INTERVAL}}) ==
        "ORDER BY a column of this type across shards (type OID 1186)");
  CHECK(err("select sum(f) from t", {{"sum", FLOAT8}}) ==
        "sum/avg of floating point across shards is not exact");
  CHECK(err("select avg(f) from t", {{"sum", FLOAT8}, {"count", INT8}}) ==
        "sum/avg of floating point across shards is not exact");
  CHECK(err("select min(n) from t", {{"min", TEXT}}) ==
        "min/max of a text column across shards needs COLLATE \"C\"");
  CHECK(err("select a, b from t", {{"a", INT4}}) == "the shards returned an unexpected number of columns");
  std::string d1 = describe({{"a", INT4}}), d2 = describe({{"a", INT8}});
  CHECK(ScatterMerge(plan_scatter("select a from t"), {d1, d2}).error() ==
        "the shards' result columns differ (names, types or type modifiers)");
  ScatterMerge ok(plan_scatter("select a, avg(b) as m from t group by a"),
                  {describe({{"a", INT4}, {"sum", INT8}, {"count", INT8}})});
  REQUIRE(ok.error().empty());
  CHECK(ok.row_description() ==
        describe({{"a", INT4}}).substr(2).insert(0, std::string("\0\2", 2)) +
            std::string("m\0\0\0\0\0\0\0\0\0\x06\xa4\xff\xff\xff\xff\xff\xff\0\0", 20));
}

TEST_CASE("scatter merge: DISTINCT de-duplicates equal values across shards") {
  auto r =
      run("select distinct a, b from t", {{"a", NUMERIC}, {"b", TEXT}},
          {{R({"1.0", "x"}), R({"2", "x"})}, {R({"1.00", "x"}), R({"1", std::nullopt})}, {R({"2", "x"})}});
  CHECK(r.rows.size() == 3);
}

// The reference: each group computed from all shards' raw rows at once.
TEST_CASE("scatter merge: aggregates match a reference computed from the raw rows") {
  // Raw rows (g, x) per shard; each shard answers the shard text over its own rows.
  std::vector<std::vector<std::pair<std::string, std::optional<int64_t>>>> raw = {
      {{"a", 1}, {"a", 2}, {"b", 5}, {"c", std::nullopt}},
      {{"a", 2}, {"b", -7}, {"b", std::nullopt}},
      {},
      {{"d", 9223372036854775807}, {"d", 1}},
  };
  auto shard_answer = [](const std::vector<std::pair<std::string, std::optional<int64_t>>>& rows) {
    std::map<std::string, std::vector<std::optional<int64_t>>> groups;
    for (auto& [g, x] : rows) groups[g].push_back(x);
    std::vector<Row> out;
    for (auto& [g, xs] : groups) {
      __int128 sum = 0;
      int64_t n = 0, star = 0;
      std::optional<int64_t> mn, mx;
      for (auto x : xs) {
        ++star;
        if (!x) continue;
        sum += *x, ++n;
        mn = mn ? std::min(*mn, *x) : *x;
        mx = mx ? std::max(*mx, *x) : *x;
      }
      Cell s = n ? Cell(std::to_string(int64_t(sum))) : std::nullopt;
      if (sum > INT64_MAX) s = "9223372036854775808";
      auto str = [](std::optional<int64_t> v) { return v ? Cell(std::to_string(*v)) : std::nullopt; };
      out.push_back(R({g, s, std::to_string(n), std::to_string(star), s, str(mn), str(mx)}));
    }
    return out;
  };
  std::vector<std::vector<Row>> shards;
  for (auto& rows : raw) shards.push_back(shard_answer(rows));
  auto r =
      run("select g, avg(x), count(*), sum(x), min(x), max(x) from t group by g order by g collate \"C\"",
          {{"g", TEXT},
           {"sum", NUMERIC},
           {"count", INT8},
           {"count", INT8},
           {"sum", NUMERIC},
           {"min", INT8},
           {"max", INT8}},
          shards);
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  REQUIRE(r.rows.size() == 4);
  // Expected, from all raw rows together (avg strings from PostgreSQL 15 for the same values).
  CHECK(r.rows[0] == R({"a", "1.6666666666666667", "3", "5", "1", "2"}));
  CHECK(r.rows[1] == R({"b", "-1.00000000000000000000", "3", "-2", "-7", "5"}));
  CHECK(r.rows[2] == R({"c", std::nullopt, "1", std::nullopt, std::nullopt, std::nullopt}));
  CHECK(r.rows[3] == R({"d", "4611686018427387904", "2", "9223372036854775808", "1", "9223372036854775807"}));
  CHECK(r.tag == "SELECT 4");
}

TEST_CASE("scatter merge: a global aggregate is one row; ORDER BY/LIMIT over groups") {
  auto g = run("select count(*), sum(x), bool_and(b), bool_or(b), every(b) from t",
               {{"count", INT8}, {"sum", INT8}, {"bool_and", BOOL}, {"bool_or", BOOL}, {"every", BOOL}},
               {{R({"2", "10", "t", "f", "t"})},
                {R({"0", std::nullopt, std::nullopt, std::nullopt, std::nullopt})},
                {R({"3", "-4", "f", "t", "t"})}});
  REQUIRE(g.rows.size() == 1);
  CHECK(g.rows[0] == R({"5", "6", "f", "t", "t"}));
  auto empty = run("select count(*), sum(x) from t", {{"count", INT8}, {"sum", INT8}}, {{}, {}});
  REQUIRE(empty.rows.size() == 1);
  CHECK(empty.rows[0] == R({"0", std::nullopt}));
  auto none = run("select g, count(*) from t group by g", {{"g", INT4}, {"count", INT8}}, {{}, {}});
  CHECK(none.rows.empty());
  CHECK(none.tag == "SELECT 0");
  auto over = run("select sum(x) from t", {{"sum", INT8}}, {{R({"9223372036854775807"})}, {R({"1"})}});
  CHECK(over.error == "bigint out of range");
  auto top =
      run("select g, count(*) as n from t group by g order by n desc, g limit 2 offset 1",
          {{"g", INT4}, {"n", INT8}},
          {{R({"1", "5"}), R({"2", "1"}), R({"3", "2"})}, {R({"2", "3"}), R({"3", "2"}), R({"4", "9"})}});
  REQUIRE(top.rows.size() == 2);
  CHECK(top.rows[0] == R({"1", "5"}));
  CHECK(top.rows[1] == R({"2", "4"}));
  auto mm = run("select min(n collate \"C\"), max(d) from t", {{"min", TEXT}, {"max", 1082}},
                {{R({"b", "2024-01-01"})}, {R({"B", "2023-12-31"})}, {R({std::nullopt, std::nullopt})}});
  REQUIRE(mm.rows.size() == 1);
  CHECK(mm.rows[0] == R({"B", "2024-01-01"}));
  // Numeric group keys that PostgreSQL considers equal are one group.
  auto nk = run("select k, count(*) from t group by k", {{"k", NUMERIC}, {"count", INT8}},
                {{R({"1.0", "1"})}, {R({"1.00", "2"})}});
  REQUIRE(nk.rows.size() == 1);
  CHECK(nk.rows[0][1] == "3");
}

TEST_CASE("scatter merge: SELECT * takes its columns from the shards; malformed input is an error") {
  auto star = run("select * from t order by 2 desc", {{"a", INT4}, {"b", INT8}},
                  {{R({"1", "5"}), R({"2", "3"})}, {R({"3", "4"})}});
  REQUIRE(star.rows.size() == 3);
  CHECK(star.rows[0] == R({"1", "5"}));
  CHECK(star.rows[1] == R({"3", "4"}));
  std::string d = describe({{"a", INT4}});
  ScatterMerge bad(plan_scatter("select a from t"), {d});
  bad.add_row(0, data_row(R({"1", "2"})));  // two columns where one was described
  CHECK(bad.error() == "a malformed DataRow");
  CHECK(bad.done());
  std::string binary = d;
  binary[binary.size() - 1] = 1;  // format code 1
  // Binary values pass through a merge that compares nothing, and are refused where it must compare them.
  CHECK(ScatterMerge(plan_scatter("select a from t limit 3"), {binary, binary}).error().empty());
  CHECK(ScatterMerge(plan_scatter("select a from t order by a"), {binary}).error() ==
        "binary-format results");
  auto dates = run("select d from t order by d", {{"d", 1082}}, {{R({"01/02/2024"})}, {R({"2024-01-03"})}});
  CHECK(dates.error == "a sort key value pgrouter cannot compare (dates must be in DateStyle ISO)");
}

TEST_CASE("scatter merge: avg over no rows is NULL, and a shard without rows adds nothing") {
  std::vector<std::pair<std::string, uint32_t>> cols = {{"sum", INT8}, {"count", INT8}};
  auto none = run("select avg(x) from t", cols, {{R({std::nullopt, "0"})}, {R({std::nullopt, "0"})}});
  REQUIRE(none.rows.size() == 1);
  CHECK(none.rows[0] == R({std::nullopt}));
  auto some = run("select avg(x) from t", cols, {{R({std::nullopt, "0"})}, {R({"5", "3"})}});
  CHECK(some.rows[0] == R({"1.6666666666666667"}));  // PostgreSQL 15: avg of 1, 2, 2
}

TEST_CASE("scatter merge: HAVING is evaluated on the combined groups") {
  // Each shard alone has count 1 for g=1: a shard-side HAVING would have dropped the group.
  auto r =
      run("select g, count(*) from t group by g having count(*) > 1 order by g",
          {{"g", INT4}, {"count", INT8}}, {{R({"1", "1"}), R({"2", "1"})}, {R({"1", "1"})}, {R({"3", "5"})}});
  REQUIRE_MESSAGE(r.rows.size() == 2, r.error);
  CHECK(r.rows[0] == R({"1", "2"}));
  CHECK(r.rows[1] == R({"3", "5"}));
  auto avg =
      run("select g, avg(x) from t group by g having avg(x) >= 1.5 and g <> 'b'",
          {{"g", TEXT}, {"sum", INT8}, {"count", INT8}},
          {{R({"a", "3", "2"}), R({"b", "9", "1"}), R({"c", "1", "1"})}, {R({"c", std::nullopt, "0"})}});
  REQUIRE(avg.rows.size() == 1);
  CHECK(avg.rows[0] == R({"a", "1.5000000000000000"}));
  std::string d = describe({{"g", INT4}, {"n", TEXT}});
  CHECK(
      ScatterMerge(
          plan_scatter("select g, min(n collate \"C\") from t group by g having min(n collate \"C\") > 'a'"),
          {d})
          .error() ==
      "HAVING across shards (other than numbers compared with numbers, or text with = or <>)");
}

TEST_CASE("scatter merge: hidden sort keys are merged on and stripped from the description and rows") {
  std::vector<std::pair<std::string, uint32_t>> cols = {{"v", TEXT}, {"pgr_sort_1", INT8}};
  std::string sql = "select v from t order by k desc nulls first";
  auto plan = plan_scatter(sql);
  REQUIRE_MESSAGE(!plan.refused, plan.refusal);
  std::string d = describe(cols);
  ScatterMerge m(plan, {d, d});
  REQUIRE(m.error().empty());
  CHECK(m.row_description() == describe({{"v", TEXT}}));
  // Each shard's rows as it sends them for `order by k desc nulls first`.
  std::vector<std::vector<Row>> shards = {
      {R({"n", std::nullopt}), R({"a", "9"}), R({"c", "3"})},
      {R({"b", "5"}), R({"d", "1"}), R({"e", "-2"})},
  };
  auto all = run(sql, cols, shards);
  REQUIRE_MESSAGE(all.error.empty(), all.error);
  std::vector<Row> expected = {R({"n"}), R({"a"}), R({"b"}), R({"c"}), R({"d"}), R({"e"})};
  CHECK(all.rows == expected);
  CHECK(all.tag == "SELECT 6");
  // NULLS LAST, LIMIT/OFFSET on the hidden key.
  std::rotate(shards[0].begin(), shards[0].begin() + 1, shards[0].end());
  auto page = run("select v from t order by k desc nulls last limit 3 offset 2", cols, shards);
  REQUIRE_MESSAGE(page.error.empty(), page.error);
  CHECK(page.rows == std::vector<Row>{R({"c"}), R({"d"}), R({"e"})});
  CHECK(page.tag == "SELECT 3");
  // Text hidden keys need COLLATE "C", as visible ones do.
  std::string dt = describe({{"v", INT4}, {"pgr_sort_1", TEXT}});
  CHECK(ScatterMerge(plan_scatter("select v from t order by n"), {dt, dt}).error() ==
        "ORDER BY a text column across shards needs COLLATE \"C\"");
  CHECK(ScatterMerge(plan_scatter("select v from t order by n collate \"C\""), {dt, dt}).error().empty());
}

TEST_CASE("scatter merge: SELECT * with a hidden sort key shows the shards' columns but the hidden ones") {
  std::vector<std::pair<std::string, uint32_t>> cols = {{"a", INT4}, {"b", TEXT}, {"pgr_sort_1", INT4}};
  auto plan = plan_scatter("select * from t order by x, 1 desc");
  std::string d = describe(cols);
  ScatterMerge m(plan, {d, d});
  REQUIRE(m.error().empty());
  CHECK(m.row_description() == describe({{"a", INT4}, {"b", TEXT}}));
  auto r = run("select * from t order by x, 1 desc", cols,
               {{R({"2", "p", "1"}), R({"1", "q", "1"}), R({"5", "r", std::nullopt})},
                {R({"3", "s", "1"}), R({"4", "u", "2"})}});
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  CHECK(r.rows ==
        std::vector<Row>{R({"3", "s"}), R({"2", "p"}), R({"1", "q"}), R({"4", "u"}), R({"5", "r"})});
}

TEST_CASE("scatter merge: a GROUP BY key absent from the output still matches the shards' groups") {
  std::vector<std::pair<std::string, uint32_t>> cols = {{"count", INT8}, {"pgr_group_1", TEXT}};
  auto r = run(
      "select count(*) from t group by plan", cols,
      {{R({"2", "free"}), R({"1", "pro"})}, {R({"3", "free"}), R({"4", std::nullopt})}, {R({"7", "team"})}});
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  std::vector<std::string> counts;
  for (auto& row : r.rows) {
    REQUIRE(row.size() == 1);
    counts.push_back(*row[0]);
  }
  std::sort(counts.begin(), counts.end());
  CHECK(counts == std::vector<std::string>{"1", "4", "5", "7"});
  std::string d = describe(cols);
  CHECK(ScatterMerge(plan_scatter("select count(*) from t group by plan"), {d, d}).row_description() ==
        describe({{"count", INT8}}));
  // Grouped, so no rows at all is no groups (not the one row of a global count).
  auto none = run("select count(*) from t group by plan", cols, {{}, {}});
  CHECK(none.rows.empty());
  CHECK(none.tag == "SELECT 0");
  // HAVING on the combined groups, whose key is hidden.
  auto having = run("select count(*) from t group by plan having count(*) >= 5", cols,
                    {{R({"2", "free"}), R({"4", "pro"})}, {R({"3", "free"})}});
  CHECK(having.rows == std::vector<Row>{R({"5"})});
  // DISTINCT is over what the client sees: the groups free and team both count 5.
  auto distinct = run("select distinct count(*) from t group by plan", cols,
                      {{R({"2", "free"}), R({"5", "team"})}, {R({"3", "free"})}});
  CHECK(distinct.rows == std::vector<Row>{R({"5"})});
}

TEST_CASE("scatter merge: ORDER BY an aggregate not in the select list, combined before sorting") {
  std::vector<std::pair<std::string, uint32_t>> cols = {{"plan", TEXT}, {"pgr_sort_1", INT8}};
  // Per shard: free 1 + 4 = 5, pro 3 + 3 = 6, team 2; a shard alone would rank them otherwise.
  std::vector<std::vector<Row>> shards = {{R({"free", "1"}), R({"pro", "3"}), R({"team", "2"})},
                                          {R({"free", "4"}), R({"pro", "3"})}};
  auto r = run("select plan from t group by plan order by count(*) desc, plan collate \"C\"", cols, shards);
  REQUIRE_MESSAGE(r.error.empty(), r.error);
  CHECK(r.rows == std::vector<Row>{R({"pro"}), R({"free"}), R({"team"})});
  auto top = run("select plan from t group by plan order by count(*) limit 1 offset 1", cols, shards);
  CHECK(top.rows == std::vector<Row>{R({"free"})});
  CHECK(top.tag == "SELECT 1");
  // avg as a hidden sum and count; a hidden GROUP BY key as a sort key.
  auto a = run("select max(x) from t group by g order by avg(y) desc nulls first, g",
               {{"max", INT4}, {"pgr_group_1", INT4}, {"pgr_sort_1", NUMERIC}, {"pgr_sort_1_count", INT8}},
               {{R({"10", "1", "4", "2"}), R({"20", "2", "9", "1"}), R({"30", "3", std::nullopt, "0"})},
                {R({"11", "1", "6", "1"}), R({"5", "4", "1", "1"})}});
  REQUIRE_MESSAGE(a.error.empty(), a.error);
  // avg: g=1 10/3, g=2 9, g=3 NULL (first), g=4 1.
  CHECK(a.rows == std::vector<Row>{R({"30"}), R({"20"}), R({"11"}), R({"5"})});
}
