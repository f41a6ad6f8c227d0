// libFuzzer target: the lexical scans transaction pooling relies on (src/sql/session_features.cpp). Each must
// stay inside the text and keep the promises its header makes: session_feature() answers the same for a text
// and its session_feature_key() (the tracker remembers answers by key), a command parse_session_command()
// carries is one session_feature() flags, names found lie inside the text, split_statements() gives back the
// whole text in order with only ';' and white space left between pieces, and a piece splits into itself.
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pgrouter/sql/session_features.hpp"

namespace sql = pgrouter::sql;

namespace {
bool inside(std::string_view outer, std::string_view inner) {
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  std::string_view feature = sql::session_feature(text);
  std::string buf;
  std::string_view key = sql::session_feature_key(text, buf);
  FUZZ_CHECK(sql::session_feature(key) == feature);
  std::string buf2;
  FUZZ_CHECK(sql::session_feature_key(key, buf2) == key);

  if (auto cmd = sql::parse_session_command(text)) {
    // set_local ends with the transaction; every other form changes the session and must pin or be carried.
    if (cmd->kind != sql::SessionCommand::set_local) FUZZ_CHECK(!feature.empty());
  }

  if (auto prep = sql::parse_prepare(text)) {
    FUZZ_CHECK(prep->begin < prep->end && prep->end <= text.size());
    FUZZ_CHECK(!feature.empty());
  }

  auto refs = sql::execute_references(text);
  if (!refs.empty()) FUZZ_CHECK(sql::mentions_execute(text));
  size_t last_end = 0;
  for (auto& r : refs) {
    FUZZ_CHECK(r.begin < r.end && r.end <= text.size());
    FUZZ_CHECK(r.begin >= last_end);
    last_end = r.end;
  }

  auto pieces = sql::split_statements(text);
  size_t pos = 0;
  for (std::string_view piece : pieces) {
    FUZZ_CHECK(inside(text, piece) && !piece.empty());
    size_t begin = size_t(piece.data() - text.data());
    FUZZ_CHECK(begin >= pos);
    for (size_t i = pos; i < begin; ++i)
      FUZZ_CHECK(text[i] == ';' || std::isspace(static_cast<unsigned char>(text[i])));
    pos = begin + piece.size();
    auto again = sql::split_statements(piece);
    FUZZ_CHECK(again.size() == 1 && again[0].data() == piece.data() && again[0].size() == piece.size());
  }
  for (size_t i = pos; i < text.size(); ++i)
    FUZZ_CHECK(text[i] == ';' || std::isspace(static_cast<unsigned char>(text[i])));
  return 0;
}
