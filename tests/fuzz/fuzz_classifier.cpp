// libFuzzer target: statement classification (src/sql/classifier.cpp). The input is up to three statement
// texts separated by a 0xff byte. Each is classified afresh and through one ClassifierCache, in order: the
// cache keys SELECT/DML texts by their shape (literals replaced), so texts of one shape share an entry, and
// whatever it returns must be what classify() says of that very text, or a read could be routed as a write's
// neighbour.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "pgrouter/sql/classifier_cache.hpp"

namespace sql = pgrouter::sql;

namespace {
bool read_only_function(std::string_view name) {
  return name.starts_with("ro_") || name.starts_with("app.ro_");
}

void check_same(const sql::Classification& a, const sql::Classification& b) {
  FUZZ_CHECK(a.cls == b.cls);
  FUZZ_CHECK(a.read_only_begin == b.read_only_begin);
  FUZZ_CHECK(a.read_write_begin == b.read_write_begin);
  FUZZ_CHECK(a.transaction_control == b.transaction_control);
  FUZZ_CHECK(a.sets_session == b.sets_session);
  FUZZ_CHECK(a.set_local == b.set_local);
  FUZZ_CHECK(a.hint == b.hint);
  FUZZ_CHECK(a.session_route == b.session_route);
  FUZZ_CHECK(a.tables == b.tables);
  FUZZ_CHECK(a.parse_error == b.parse_error);
  FUZZ_CHECK(a.statements == b.statements);
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

  sql::ClassifierCache cache(2, read_only_function);
  std::string shape;
  for (std::string_view text : texts) {
    sql::Classification fresh = sql::classify(text, read_only_function);
    FUZZ_CHECK(fresh.parse_error ? fresh.cls == sql::StatementClass::write : true);
    for (size_t i = 1; i < fresh.tables.size(); ++i) FUZZ_CHECK(fresh.tables[i - 1] < fresh.tables[i]);
    const sql::Classification& cached = cache.get(text);
    check_same(fresh, cached);
    check_same(fresh, cache.get(text));  // the exact-text memo's path
    if (sql::ClassifierCache::shape_of(text, shape)) FUZZ_CHECK(shape.size() <= text.size() + 1);
  }
  return 0;
}
