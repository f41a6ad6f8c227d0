#include <doctest/doctest.h>

#include <optional>

#include "pgrouter/session/insert_split.hpp"
#include "pgrouter/sql/insert_rows.hpp"

using namespace pgrouter;

namespace {
std::string rows_of(const sql::InsertText& t) {
  std::string out;
  for (auto r : t.rows) out += std::string(t.text.substr(r.begin, r.end - r.begin)) + "|";
  return out;
}

std::string be16(size_t v) { return {char(v >> 8), char(v & 0xff)}; }
std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16 & 0xff), char(v >> 8 & 0xff), char(v & 0xff)};
}

std::string types(const std::vector<uint32_t>& oids) {
  std::string out = be16(oids.size());
  for (auto o : oids) out += be32(o);
  return out;
}

std::string params(const std::vector<int16_t>& formats,
                   const std::vector<std::optional<std::string>>& values) {
  std::string out = be16(formats.size());
  for (auto f : formats) out += be16(size_t(f));
  out += be16(values.size());
  for (const auto& v : values) out += v ? be32(uint32_t(v->size())) + *v : be32(0xffffffffu);
  return out;
}
}  // namespace

TEST_CASE("an INSERT's rows are found past quotes, comments, dollar quotes and nested parentheses") {
  auto t = sql::insert_text(
      "/* (x */ INSERT INTO t (k, v) VALUES (1, 'a)'), (2, E'\\')'), -- ),\n (3, $q$ ) $q$), (4, f((1), "
      "\")\"))"
      " ON CONFLICT (k) DO NOTHING RETURNING k");
  REQUIRE(t);
  CHECK(rows_of(*t) == "(1, 'a)')|(2, E'\\')')|(3, $q$ ) $q$)|(4, f((1), \")\"))|");
  CHECK(t->text.substr(t->tail.begin) == " ON CONFLICT (k) DO NOTHING RETURNING k");
  CHECK(t->text.substr(0, t->head.end) == "/* (x */ INSERT INTO t (k, v) VALUES ");
  // Case, a CTE's VALUES in parentheses, and a final semicolon.
  auto c = sql::insert_text("WITH w AS (VALUES (9)) insert into t (k) values ($1),($2);");
  REQUIRE(c);
  CHECK(rows_of(*c) == "($1)|($2)|");
  CHECK(c->params.size() == 2);
  CHECK(c->text.substr(c->tail.begin) == ";");
  // No VALUES outside parentheses, or a text cut inside a quote or parenthesis: nothing to split.
  CHECK_FALSE(sql::insert_text("INSERT INTO t (k) SELECT * FROM (VALUES (1)) v"));
  CHECK_FALSE(sql::insert_text("INSERT INTO t (k) VALUES (1), ('2"));
  CHECK_FALSE(sql::insert_text("INSERT INTO t (k) VALUES (1), (2"));
  CHECK_FALSE(sql::insert_text("INSERT INTO t (k) VALUES (1), /* 2"));
  CHECK_FALSE(sql::insert_text("INSERT INTO t (k) VALUES"));
}

TEST_CASE("a subset of the rows keeps its parameters, renumbered in their order") {
  auto t = sql::insert_text("INSERT INTO t (k, v) VALUES ($1, $2), ($3, '$9'), ($4, $2) RETURNING $5::int");
  REQUIRE(t);
  auto odd = sql::with_rows(*t, {0, 2});
  CHECK(odd.sql == "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $2) RETURNING $4::int");
  CHECK(odd.params == std::vector<int>{1, 2, 4, 5});
  auto middle = sql::with_rows(*t, {1});
  CHECK(middle.sql == "INSERT INTO t (k, v) VALUES ($1, '$9') RETURNING $2::int");
  CHECK(middle.params == std::vector<int>{3, 5});
  CHECK(sql::with_rows(*t, {0, 1, 2}).sql == t->text);
}

TEST_CASE("each shard's INSERT gets its parameters' types, formats and values, and the description merges") {
  session::ScatterRequest req;
  req.extended = true;
  req.sql = "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $4)";
  std::string t = types({20, 0, 20});  // $4's type unspecified
  std::string p = params({0, 1, 0, 1}, {"1", std::string("\x01", 1), "2", std::nullopt});
  req.parameter_types = t;
  req.parameters = p;
  auto split = session::split_insert(req, {1, 0});
  REQUIRE(split.error.empty());
  REQUIRE(split.shards.size() == 2);
  CHECK(split.shards[0].shard == 0);
  CHECK(split.shards[0].rows == std::vector<size_t>{1});
  CHECK(split.shards[0].sql == "INSERT INTO t (k, v) VALUES ($1, $2)");
  CHECK(split.shards[0].parameter_types == types({20, 0}));
  CHECK(split.shards[0].parameters == params({0, 1}, {"2", std::nullopt}));
  CHECK(split.shards[1].parameters == params({0, 1}, {"1", std::string("\x01", 1)}));
  CHECK(session::statement_parameters(req, split.shards) == 4);
  std::vector<std::string> described{types({20, 25}), types({20, 25})};
  CHECK(session::merged_parameter_description(req, split.shards, described) == types({20, 25, 20, 25}));
  // One format code for all stays one; a Bind with another number of values than the statement's is refused.
  std::string one = params({1}, {"a", "b", "c", "d"});
  req.parameters = one;
  CHECK(session::split_insert(req, {0, 1}).shards[1].parameters == params({1}, {"c", "d"}));
  std::string short_bind = params({}, {"a", "b", "c"});
  req.parameters = short_bind;
  auto bad = session::split_insert(req, {0, 1});
  CHECK(bad.sqlstate == std::string("08P01"));
  CHECK(bad.error.find("supplies 3 parameters, but the INSERT requires 4") != std::string::npos);
  // Rows the text does not show as the analysis counted them: not split.
  req.parameters = p;
  CHECK(session::split_insert(req, {0, 1, 0}).sqlstate == std::string("0A000"));
}
