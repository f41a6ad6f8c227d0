// Statement classification cost: parse + classify per statement, a ClassifierCache hit, and the
// libpg_query output formats the classifier could have read (why it reads JSON). Results: bench/RESULTS.md.
#include <benchmark/benchmark.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <string>
#include <vector>

#include "pgrouter/sql/classifier_cache.hpp"

#ifdef PGROUTER_BENCH_NLOHMANN
#include <nlohmann/json.hpp>
#endif

namespace {

using pgrouter::sql::ClassifierCache;
using pgrouter::sql::classify;

const std::string pgbench_select = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const std::string pgbench_update =
    "UPDATE pgbench_accounts SET abalance = abalance + -4096 WHERE aid = 48213;";
const std::string join_with_cte =
    "WITH recent AS (SELECT o.id, o.customer_id, o.total FROM orders o WHERE o.created_at > now() - interval "
    "'1 day' AND o.deleted_at IS NULL) SELECT c.name, count(*), sum(r.total) FROM recent r JOIN customers c "
    "ON "
    "c.id = r.customer_id LEFT JOIN public.regions g ON g.id = c.region_id WHERE c.tenant_id = $1 GROUP BY "
    "c.name "
    "ORDER BY 3 DESC LIMIT 20";
const std::string locking_read =
    "SELECT id, payload FROM jobs WHERE state = 'ready' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1";
const std::string multi_statement =
    "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1; SELECT abalance FROM "
    "pgbench_accounts WHERE aid = 1; INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, "
    "1, 1, "
    "CURRENT_TIMESTAMP); COMMIT;";

std::string long_in_list() {
  std::string s = "SELECT id, name FROM products WHERE deleted_at IS NULL AND id IN (";
  for (int i = 0; i < 1000; ++i) s += (i ? ", " : "") + std::to_string(100000 + i * 7);
  return s + ")";
}
const std::string in_list_1000 = long_in_list();

void BM_classify(benchmark::State& state, const std::string* sql) {
  for (auto _ : state) benchmark::DoNotOptimize(classify(*sql));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(sql->size()));
}
BENCHMARK_CAPTURE(BM_classify, pgbench_select, &pgbench_select);
BENCHMARK_CAPTURE(BM_classify, pgbench_update, &pgbench_update);
BENCHMARK_CAPTURE(BM_classify, join_with_cte, &join_with_cte);
BENCHMARK_CAPTURE(BM_classify, locking_read, &locking_read);
BENCHMARK_CAPTURE(BM_classify, in_list_1000, &in_list_1000);
BENCHMARK_CAPTURE(BM_classify, multi_statement_5, &multi_statement);

// A worker's steady state for a repeated statement text (extended protocol, or simple protocol with the same
// literals): one XXH3-128 of the text, the exact-text memo, a hash-map probe.
void BM_cache_hit(benchmark::State& state, const std::string* sql) {
  ClassifierCache cache(1024);
  cache.get(*sql);
  for (auto _ : state) benchmark::DoNotOptimize(&cache.get(*sql));
}
BENCHMARK_CAPTURE(BM_cache_hit, pgbench_select, &pgbench_select);
BENCHMARK_CAPTURE(BM_cache_hit, join_with_cte, &join_with_cte);
BENCHMARK_CAPTURE(BM_cache_hit, in_list_1000, &in_list_1000);

// Simple-protocol traffic with its values inlined: each text is new (the exact-text memo misses), its shape
// (literals replaced) is the cached one. 4,096 texts in turn, so the memo's 256 slots do not hold them.
void BM_cache_shape_hit(benchmark::State& state) {
  std::vector<std::string> texts;
  for (int i = 0; i < 4096; ++i)
    texts.push_back("SELECT abalance FROM pgbench_accounts WHERE aid = " + std::to_string(100000 + i * 13) +
                    ";");
  ClassifierCache cache(1024);
  cache.get(texts[0]);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(&cache.get(texts[i]));
    i = (i + 1) & 4095;
  }
}
BENCHMARK(BM_cache_shape_hit);

// What reading the tree costs before any classification, per output format of libpg_query.
void BM_libpg_query_json(benchmark::State& state, const std::string* sql) {
  for (auto _ : state) {
    PgQueryParseResult r = pg_query_parse(sql->c_str());
    benchmark::DoNotOptimize(r.parse_tree);
    pg_query_free_parse_result(r);
  }
}
void BM_libpg_query_protobuf_unpacked(benchmark::State& state, const std::string* sql) {
  for (auto _ : state) {
    PgQueryProtobufParseResult r = pg_query_parse_protobuf(sql->c_str());
    auto* tree = pg_query__parse_result__unpack(nullptr, r.parse_tree.len,
                                                reinterpret_cast<const uint8_t*>(r.parse_tree.data));
    benchmark::DoNotOptimize(tree);
    pg_query__parse_result__free_unpacked(tree, nullptr);
    pg_query_free_protobuf_parse_result(r);
  }
}
BENCHMARK_CAPTURE(BM_libpg_query_json, pgbench_select, &pgbench_select);
BENCHMARK_CAPTURE(BM_libpg_query_json, join_with_cte, &join_with_cte);
BENCHMARK_CAPTURE(BM_libpg_query_protobuf_unpacked, pgbench_select, &pgbench_select);
BENCHMARK_CAPTURE(BM_libpg_query_protobuf_unpacked, join_with_cte, &join_with_cte);
#ifdef PGROUTER_BENCH_NLOHMANN
void BM_libpg_query_json_nlohmann(benchmark::State& state, const std::string* sql) {
  for (auto _ : state) {
    PgQueryParseResult r = pg_query_parse(sql->c_str());
    auto doc = nlohmann::json::parse(r.parse_tree);
    benchmark::DoNotOptimize(doc);
    pg_query_free_parse_result(r);
  }
}
BENCHMARK_CAPTURE(BM_libpg_query_json_nlohmann, pgbench_select, &pgbench_select);
BENCHMARK_CAPTURE(BM_libpg_query_json_nlohmann, join_with_cte, &join_with_cte);
#endif

}  // namespace

BENCHMARK_MAIN();
