// Which client requests can run as a cross-shard read (scatter_request), from the bytes clients send.
#include <doctest/doctest.h>

#include <string>

#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/session/scatter_request.hpp"

using pgrouter::session::scatter_request;
namespace p = pgrouter::protocol;

namespace {
// A Bind's body after its names: parameter formats, values (text) and result formats.
std::string bind_rest(std::vector<std::string> values, std::vector<int16_t> results = {}) {
  std::string out("\0\0", 2);
  out += char(values.size() >> 8);
  out += char(values.size());
  for (auto& v : values) {
    out += std::string{0, 0, 0, char(v.size())};
    out += v;
  }
  out += char(results.size() >> 8);
  out += char(results.size());
  for (auto f : results) out += std::string{0, char(f)};
  return out;
}

std::string extended(std::string_view sql, std::string rest, bool describe_portal = true,
                     int32_t max_rows = 0) {
  std::string out;
  p::append_parse(out, "", sql, p::kNoParameterTypes);
  p::append_bind(out, "", "", rest);
  if (describe_portal) p::append_describe(out, 'P', "");
  p::append_header(out, 'E', 5);
  out += std::string{0, char(max_rows >> 24), char(max_rows >> 16), char(max_rows >> 8), char(max_rows)};
  p::append_sync(out);
  return out;
}
}  // namespace

TEST_CASE("scatter_request: a simple Query, or the unnamed statement's Parse/Bind/Describe/Execute/Sync") {
  std::string q;
  p::append_query(q, "SELECT * FROM t");
  auto simple = scatter_request(q.data(), q.size());
  REQUIRE(simple);
  CHECK_FALSE(simple->extended);
  CHECK(simple->sql == "SELECT * FROM t");
  CHECK(simple->length == q.size());

  std::string e = extended("SELECT * FROM t WHERE k = $1", bind_rest({"42"}));
  std::string pipelined = e + q;  // what follows the request is not part of it
  auto ext = scatter_request(pipelined.data(), pipelined.size());
  REQUIRE(ext);
  CHECK(ext->extended);
  CHECK(ext->sql == "SELECT * FROM t WHERE k = $1");
  CHECK(ext->describe_portal);
  CHECK_FALSE(ext->describe_statement);
  CHECK(ext->length == e.size());
  CHECK_FALSE(ext->any_binary());
  CHECK(ext->parameters == std::string_view(bind_rest({"42"})).substr(0, bind_rest({"42"}).size() - 2));

  auto binary_rest = bind_rest({}, {0, 1});
  std::string b = extended("SELECT a, b FROM t", binary_rest, false, 10);
  auto bin = scatter_request(b.data(), b.size());
  REQUIRE(bin);
  CHECK(bin->any_binary());
  CHECK_FALSE(bin->binary_column(0));
  CHECK(bin->binary_column(1));
  CHECK(bin->max_rows == 10);
  CHECK_FALSE(bin->describe_portal);
}

TEST_CASE("scatter_request: other shapes are not scatter requests") {
  std::string e = extended("SELECT 1", bind_rest({}));
  CHECK_FALSE(scatter_request(e.data(), e.size() - 1));  // no Sync yet
  std::string named;
  p::append_parse(named, "s1", "SELECT 1", p::kNoParameterTypes);
  p::append_bind(named, "", "s1", bind_rest({}));
  p::append_execute(named, "");
  p::append_sync(named);
  auto prepared = scatter_request(named.data(), named.size());  // a named statement, parsed and run
  REQUIRE(prepared);
  CHECK(prepared->parses);
  CHECK(prepared->statement == "s1");
  std::string rerun = named.substr(named.find('B'));  // run again: Bind, Execute, Sync
  auto again = scatter_request(rerun.data(), rerun.size());
  REQUIRE(again);
  CHECK_FALSE(again->parses);
  CHECK(again->statement == "s1");
  CHECK(again->sql.empty());  // the caller knows the statement's text
  std::string other;
  p::append_parse(other, "s1", "SELECT 1", p::kNoParameterTypes);
  p::append_bind(other, "", "s2", bind_rest({}));
  p::append_execute(other, "");
  p::append_sync(other);
  CHECK_FALSE(scatter_request(other.data(), other.size()));  // binds another statement than it parses
  std::string portal;
  p::append_bind(portal, "p1", "s1", bind_rest({}));
  p::append_execute(portal, "p1");
  p::append_sync(portal);
  CHECK_FALSE(scatter_request(portal.data(), portal.size()));  // a named portal
  std::string two_queries;
  p::append_query(two_queries, "SELECT 1");
  CHECK(scatter_request(two_queries.data(), two_queries.size()));
  std::string no_execute;
  p::append_parse(no_execute, "", "SELECT 1", p::kNoParameterTypes);
  p::append_sync(no_execute);
  CHECK_FALSE(scatter_request(no_execute.data(), no_execute.size()));
  std::string bad_format = extended("SELECT 1", bind_rest({}, {2}));
  CHECK_FALSE(scatter_request(bad_format.data(), bad_format.size()));
  std::string cut = extended("SELECT 1", bind_rest({"7"}));
  cut[cut.find("\0\0\0\1"
               "7",
               0, 5) +
      3] = 9;  // a value longer than its message
  CHECK_FALSE(scatter_request(cut.data(), cut.size()));
}
