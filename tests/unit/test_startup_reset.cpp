// RESET / RESET ALL / DISCARD ALL back to the client's startup values: how a Query is rewritten and how
// the replies to what pgrouter added are dropped or merged. Against real PostgreSQL: the parity scripts
// set_application_name_and_reset, startup_options_and_reset_all and
// startup_values_after_reset_all_and_default.
#include <doctest/doctest.h>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/session/startup_reset.hpp"

using pgrouter::session::StartupReset;
namespace p = pgrouter::protocol;
using Params = std::vector<std::pair<std::string, std::string>>;

namespace {

std::string cstr(const std::string& s) { return s + std::string(1, '\0'); }

// The Query texts in a byte string of whole Query messages.
std::vector<std::string> queries(const std::string& bytes) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 5 <= bytes.size(); i += 1 + p::read_be32(bytes.data() + i + 1)) {
    REQUIRE(bytes[i] == 'Q');
    uint32_t len = p::read_be32(bytes.data() + i + 1);
    out.emplace_back(bytes.data() + i + 5, len - 5);
  }
  return out;
}

std::string row_description(const std::string& column) {
  std::string b;
  p::put_be16(b, 1);
  b += cstr(column) + std::string(18, '\0');
  return b;
}
std::string parameter_status_body(const std::string& k, const std::string& v) { return cstr(k) + cstr(v); }

struct Server {
  StartupReset& sr;
  std::map<std::string, std::string> params;
  std::string replacement;
  char status = 0;
  StartupReset::Reply operator()(char type, const std::string& body = {}) {
    replacement.clear();
    return sr.server_message(type, body, params, replacement, status);
  }
};

const std::string kSetApp = "pg_catalog.set_config('application_name', 'app', false)";
const std::string kSetTz = "pg_catalog.set_config('timezone', 'Asia/Tokyo', false)";

}  // namespace

TEST_CASE("startup reset: which queries are rewritten, and how") {
  StartupReset none;
  std::string out;
  CHECK(none.empty());
  CHECK_FALSE(none.client_query("RESET ALL", 0, out));

  StartupReset sr(
      Params{{"application_name", "app"}, {"TimeZone", "Europe/Paris"}, {"timezone", "Asia/Tokyo"}});
  CHECK_FALSE(sr.empty());
  CHECK(sr.reapply_all() == "SELECT " + kSetApp + " AS pgrouter_startup_reset, " + kSetTz);
  CHECK_FALSE(sr.client_query("select 1", 0, out));
  CHECK_FALSE(sr.client_query("reset statement_timeout", 0, out));  // not a startup setting
  CHECK_FALSE(sr.client_query("insert into t values (default)", 0, out));
  CHECK(out.empty());
  CHECK(sr.idle());

  CHECK(sr.client_query("RESET application_name", 0, out));
  CHECK(queries(out) == std::vector<std::string>{"RESET application_name\n;SELECT " + kSetApp +
                                                 " AS pgrouter_startup_reset"});
  CHECK_FALSE(sr.idle());

  out.clear();
  CHECK(sr.client_query("set time zone local;", 0, out));
  CHECK(queries(out) ==
        std::vector<std::string>{"set time zone local\n;SELECT " + kSetTz + " AS pgrouter_startup_reset;"});

  out.clear();
  CHECK(sr.client_query("set application_name to default; select 1; reset all -- done", 0, out));
  CHECK(queries(out) ==
        std::vector<std::string>{"set application_name to default\n;SELECT " + kSetApp +
                                 " AS pgrouter_startup_reset; select 1; reset all -- done\n;SELECT " +
                                 kSetApp + " AS pgrouter_startup_reset, " + kSetTz});

  out.clear();
  CHECK(sr.client_query("DISCARD ALL;", 0, out));
  CHECK(queries(out) == std::vector<std::string>{"DISCARD ALL;", sr.reapply_all()});
  // DISCARD ALL with other statements fails in PostgreSQL: left alone.
  out.clear();
  CHECK_FALSE(sr.client_query("select 1; discard all", 0, out));
}

TEST_CASE("startup reset: an inserted SELECT's replies are dropped, the rest forwarded") {
  StartupReset sr(Params{{"application_name", "app"}});
  Server srv{sr, {}, {}};
  std::string out;
  REQUIRE(sr.client_query("select 2; reset all; select 3", 1, out));  // one request before it
  using R = StartupReset::Reply;
  // The earlier request's reply, even one that looks like ours, is not touched.
  CHECK(srv('T', row_description("pgrouter_startup_reset")) == R::forward);
  CHECK(srv('C', cstr("SELECT 1")) == R::forward);
  CHECK(srv('Z', "I") == R::forward);
  CHECK(srv('T', row_description("?column?")) == R::forward);
  CHECK(srv('D') == R::forward);
  CHECK(srv('C', cstr("SELECT 1")) == R::forward);
  CHECK(srv('C', cstr("RESET")) == R::forward);
  CHECK(srv('T', row_description("pgrouter_startup_reset")) == R::drop);
  CHECK(srv('D') == R::drop);
  CHECK(srv('C', cstr("SELECT 1")) == R::drop);
  CHECK(srv('T', row_description("?column?")) == R::forward);
  CHECK(srv('D') == R::forward);
  CHECK(srv('C', cstr("SELECT 1")) == R::forward);
  CHECK(srv('S', parameter_status_body("application_name", "app")) == R::forward);  // PostgreSQL's own report
  CHECK(srv('Z', "I") == R::forward);
  CHECK(sr.idle());

  // A failed statement before it: nothing of ours comes, the ReadyForQuery ends it.
  REQUIRE(sr.client_query("select 1/0; reset application_name", 0, out));
  CHECK(srv('E') == R::forward);
  CHECK(srv('Z', "I") == R::forward);
  CHECK(sr.idle());
}

TEST_CASE("startup reset: DISCARD ALL's ParameterStatus is merged with the second query's") {
  StartupReset sr(Params{{"application_name", "app"}, {"TimeZone", "Asia/Tokyo"}});
  Server srv{sr, {}, {}};
  srv.params = {{"application_name", "changed"}, {"TimeZone", "Asia/Tokyo"}, {"DateStyle", "ISO, MDY"}};
  std::string out;
  using R = StartupReset::Reply;
  REQUIRE(sr.client_query("discard all", 0, out));
  CHECK(srv('C', cstr("DISCARD ALL")) == R::forward);
  // Back to the server's login values...
  CHECK(srv('S', parameter_status_body("application_name", "")) == R::drop);
  CHECK(srv('S', parameter_status_body("TimeZone", "UTC")) == R::drop);
  CHECK(srv('S', parameter_status_body("DateStyle", "ISO, DMY")) == R::drop);
  CHECK(srv('Z', "I") == R::drop);
  // ... then to the client's startup values.
  CHECK(srv('T', row_description("pgrouter_startup_reset")) == R::drop);
  CHECK(srv('D') == R::drop);
  CHECK(srv('C', cstr("SELECT 1")) == R::drop);
  CHECK(srv('S', parameter_status_body("application_name", "app")) == R::drop);
  CHECK(srv('S', parameter_status_body("TimeZone", "Asia/Tokyo")) == R::drop);
  REQUIRE(srv('Z', "I") == R::replace);
  CHECK(srv.status == 'I');
  // Only what differs from what the client was shown, in PostgreSQL's (name) order.
  std::string want;
  p::append_parameter_status(want, "application_name", "app");
  p::append_parameter_status(want, "DateStyle", "ISO, DMY");
  p::append_ready_for_query(want, 'I');
  CHECK(srv.replacement == want);
  CHECK(srv.params["application_name"] == "app");
  CHECK(srv.params["TimeZone"] == "Asia/Tokyo");
  CHECK(srv.params["DateStyle"] == "ISO, DMY");
  CHECK(sr.idle());

  // In a transaction block DISCARD ALL fails, and so does the second query: the client gets DISCARD
  // ALL's error and its ReadyForQuery.
  REQUIRE(sr.client_query("discard all", 0, out));
  CHECK(srv('E') == R::forward);
  CHECK(srv('Z', "E") == R::drop);
  CHECK(srv('E') == R::drop);
  REQUIRE(srv('Z', "E") == R::replace);
  CHECK(srv.status == 'E');
  std::string z;
  p::append_ready_for_query(z, 'E');
  CHECK(srv.replacement == z);
  CHECK(sr.idle());
}

TEST_CASE("startup reset: pipelined rewritten queries each find their replies") {
  StartupReset sr(Params{{"application_name", "app"}});
  Server srv{sr, {}, {}};
  std::string out;
  using R = StartupReset::Reply;
  REQUIRE(sr.client_query("discard all", 0, out));
  REQUIRE(sr.client_query("reset all", 1, out));
  CHECK(srv('C', cstr("DISCARD ALL")) == R::forward);
  CHECK(srv('Z', "I") == R::drop);
  CHECK(srv('T', row_description("pgrouter_startup_reset")) == R::drop);
  CHECK(srv('D') == R::drop);
  CHECK(srv('C', cstr("SELECT 1")) == R::drop);
  CHECK(srv('Z', "I") == R::replace);
  CHECK(srv('C', cstr("RESET")) == R::forward);
  CHECK(srv('T', row_description("pgrouter_startup_reset")) == R::drop);
  CHECK(srv('D') == R::drop);
  CHECK(srv('C', cstr("SELECT 1")) == R::drop);
  CHECK(srv('Z', "I") == R::forward);
  CHECK(sr.idle());
}
