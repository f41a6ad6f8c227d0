#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "pgrouter/sharding/copy_rows.hpp"

using pgrouter::sharding::CopyFormat;
using pgrouter::sharding::CopyRows;

namespace {
struct Seen {
  std::vector<std::string> rows;
  std::vector<std::optional<std::string>> keys;
  std::vector<bool> headers;
};

// Feeds `data` in pieces of `piece` bytes (every cut a CopyData message could make), then finishes.
Seen cut(const CopyFormat& f, std::string_view data, size_t piece, CopyRows::State* state = nullptr) {
  Seen seen;
  CopyRows rows(f, [&](std::string_view row, const std::optional<std::string>& key, bool header) {
    seen.rows.emplace_back(row);
    seen.keys.push_back(key);
    seen.headers.push_back(header);
  });
  for (size_t i = 0; i < data.size(); i += piece) rows.feed(data.substr(i, piece));
  rows.finish();
  if (state) *state = rows.state();
  return seen;
}
}  // namespace

TEST_CASE("text COPY rows are cut at unescaped newlines, whatever the pieces") {
  CopyFormat f;
  f.key_column = 1;
  std::string data = "a\t42\tx\nb\\\nc\t-7\ty\r\nz\t\\N\n\\t\t1\\x32\t\\\t\nshort\n";
  for (size_t piece : {1, 2, 3, 5, 100}) {
    CAPTURE(piece);
    auto s = cut(f, data, piece);
    REQUIRE(s.rows.size() == 5);
    CHECK(s.rows[0] == "a\t42\tx\n");
    CHECK(s.rows[1] == "b\\\nc\t-7\ty\r\n");  // an escaped newline is data
    CHECK(s.keys[0] == "42");
    CHECK(s.keys[1] == "-7");
    CHECK_FALSE(s.keys[2]);    // \N
    CHECK(s.keys[3] == "12");  // \x32 decoded
    CHECK_FALSE(s.keys[4]);    // too few fields
  }
}

TEST_CASE("the end marker ends the data; a header goes first; a last row may lack its newline") {
  CopyFormat f;
  f.key_column = 0;
  f.header = true;
  CopyRows::State state;
  auto s = cut(f, "k\tv\n1\tx\n2\ty", 3, &state);
  REQUIRE(s.rows.size() == 3);
  CHECK(s.headers == std::vector<bool>{true, false, false});
  CHECK(s.keys[2] == "2");
  CHECK(state == CopyRows::State::data);
  f.header = false;
  s = cut(f, "1\tx\n\\.\n2\ty\n", 4, &state);
  CHECK(s.rows.size() == 1);
  CHECK(state == CopyRows::State::ended);
}

TEST_CASE("CSV rows keep quoted newlines and delimiters; quoted keys are values, unquoted empty is NULL") {
  CopyFormat f;
  f.csv = true;
  f.delimiter = ',';
  f.null_text = "";
  f.key_column = 1;
  std::string data = "\"a,\n\"\"b\",\"4\"\"2\"\nx,,y\nq,\"\",r\n\"u\",7\n";
  for (size_t piece : {1, 2, 7, 100}) {
    CAPTURE(piece);
    auto s = cut(f, data, piece);
    REQUIRE(s.rows.size() == 4);
    CHECK(s.rows[0] == "\"a,\n\"\"b\",\"4\"\"2\"\n");
    CHECK(s.keys[0] == "4\"2");
    CHECK_FALSE(s.keys[1]);
    CHECK(s.keys[2] == "");  // quoted empty: a value
    CHECK(s.keys[3] == "7");
  }
  f.escape = '\\';
  auto s = cut(f, "\"x\\\"\n\",5\n", 1);
  REQUIRE(s.rows.size() == 1);
  CHECK(s.keys[0] == "5");
}

TEST_CASE("carriage-return line ends are refused rather than cut wrongly") {
  CopyFormat f;
  f.key_column = 0;
  CopyRows::State state;
  auto s = cut(f, "1\r2\r", 1, &state);
  CHECK(state == CopyRows::State::failed);
  CHECK(s.rows.empty());
}
