// libFuzzer target: shard key extraction (src/sql/shard_key.cpp). The input is up to three statement texts
// separated by a 0xff byte, each analysed against one fixed sharding schema. Besides never crashing, the
// answer must be self-consistent (keys only when keyed, a refusal message exactly when refused), the same on
// a second call, and agree with classify() on whether the text parses. Each text's SQL EXECUTEs are read too
// (execute_calls): a PREPARE it finds is a piece of the text, and a parameter argument has its number.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "fuzz_check.hpp"
#include "pgrouter/sql/classifier.hpp"
#include "pgrouter/sql/shard_key.hpp"

namespace sql = pgrouter::sql;

namespace {
const sql::ShardingSchema& schema() {
  static const sql::ShardingSchema s{
      {{"users", "tenant_id"}, {"orders", "tenant_id"}, {"app.items", "tid"}, {"t", "a"}},
      {"countries", "app.currencies"}};
  return s;
}

bool key_less(const sql::KeyRef& a, const sql::KeyRef& b) {
  return std::tie(a.null, a.param, a.literal) < std::tie(b.null, b.param, b.literal);
}

void check_consistent(const sql::ShardTarget& t) {
  FUZZ_CHECK((t.scope == sql::ShardScope::keyed) == !t.keys.empty());
  FUZZ_CHECK((t.scope == sql::ShardScope::refused) == !t.refusal.empty());
  for (size_t i = 1; i < t.keys.size(); ++i) FUZZ_CHECK(key_less(t.keys[i - 1], t.keys[i]));
  for (const sql::KeyRef& k : t.keys)
    FUZZ_CHECK(k.param >= 0 && (k.param == 0 || (k.literal.empty() && !k.null)));
  for (size_t i = 1; i < t.unsharded_tables.size(); ++i)
    FUZZ_CHECK(t.unsharded_tables[i - 1] < t.unsharded_tables[i]);
  FUZZ_CHECK(t.copy_key_column >= -1);
  FUZZ_CHECK(t.copy_key_column == -1 || t.copy_from);
  FUZZ_CHECK(!t.writes_reference || t.writes);
  if (t.parse_error) FUZZ_CHECK(t.scope == sql::ShardScope::none || t.scope == sql::ShardScope::refused);
}

void check_same(const sql::ShardTarget& a, const sql::ShardTarget& b) {
  FUZZ_CHECK(a.scope == b.scope);
  FUZZ_CHECK(a.keys == b.keys);
  FUZZ_CHECK(a.unsharded_tables == b.unsharded_tables);
  FUZZ_CHECK(a.writes == b.writes && a.writes_reference == b.writes_reference);
  FUZZ_CHECK(a.refusal == b.refusal && a.hint_key == b.hint_key && a.parse_error == b.parse_error);
  FUZZ_CHECK(a.copy_from == b.copy_from && a.copy_key_column == b.copy_key_column);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> texts;
  for (size_t start = 0; texts.size() < 3;) {
    size_t sep = input.find('\xff', start);
    texts.push_back(input.substr(start, sep == std::string_view::npos ? sep : sep - start));
    if (sep == std::string_view::npos) break;
    start = sep + 1;
  }
  for (std::string_view text : texts) {
    sql::ShardTarget t = sql::shard_target(text, schema());
    check_consistent(t);
    check_same(t, sql::shard_target(text, schema()));
    FUZZ_CHECK(t.parse_error == sql::classify(text).parse_error);
    for (const sql::ExecuteCall& call : sql::execute_calls(text)) {
      FUZZ_CHECK(!t.parse_error);
      FUZZ_CHECK(call.prepared_here.empty() ||
                 (call.prepared_here.data() >= text.data() &&
                  call.prepared_here.data() + call.prepared_here.size() <= text.data() + text.size()));
      for (const sql::ExecuteArgument& a : call.arguments)
        FUZZ_CHECK((a.kind == sql::ExecuteArgument::Kind::parameter) == (a.param > 0));
    }
  }
  return 0;
}
