// Transaction pooling's session-state tracker, driven message by message with a fake server: how a
// client's Parse/Bind/Describe/Close are rewritten, how replies are matched, dropped and retyped, and
// what an error or a rollback undoes. The same paths run against real PostgreSQL in test_txn_state.py
// and test_parity.py.
#include <doctest/doctest.h>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/session/txn_tracker.hpp"
#include "pgrouter/sql/session_features.hpp"

using pgrouter::session::TxnTracker;
using pgrouter::sql::parse_session_command;
using pgrouter::sql::SessionCommand;
using pgrouter::sql::split_statements;

namespace {

std::string msg(char type, const std::string& body) {
  std::string out(1, type);
  pgrouter::protocol::put_be32(out, uint32_t(body.size() + 4));
  return out + body;
}
std::string cstr(const std::string& s) { return s + std::string(1, '\0'); }
std::string parse_body(const std::string& name, const std::string& sql) {
  return cstr(name) + cstr(sql) + std::string(2, '\0');
}
std::string bind_body(const std::string& stmt) { return cstr("") + cstr(stmt) + std::string(6, '\0'); }

// An ErrorResponse body (severity, code, message, position if given).
std::string error_body(const std::string& code, const std::string& message,
                       const std::string& position = {}) {
  std::string b = "SERROR" + std::string(1, '\0') + "C" + code + '\0' + "M" + message + '\0';
  if (!position.empty()) b += "P" + position + '\0';
  return b + '\0';
}
// The message types in a byte string of whole messages, and the names they carry.
std::string types_of(const std::string& bytes) {
  std::string t;
  for (size_t i = 0; i + 5 <= bytes.size(); i += 1 + pgrouter::protocol::read_be32(bytes.data() + i + 1))
    t.push_back(bytes[i]);
  return t;
}

// The server-side name `t` gives a client's named Parse of `sql` (on a server of its own, which lacks it).
std::string server_name_of(TxnTracker& t, const std::string& stmt, const std::string& sql) {
  pgrouter::pool::ServerStatements server;
  std::string out;
  TxnTracker::Effect effect{};
  std::string wire = msg('P', parse_body(stmt, sql));
  t.client_message('P', std::string_view(wire).substr(5), server, out, effect);
  REQUIRE(types_of(out) == "PD");  // and the Describe that learns its result columns
  return out.substr(5, out.find('\0', 5) - 5);
}

struct Fixture {
  pgrouter::control::WorkerStats stats;
  pgrouter::pool::ServerStatements server;
  TxnTracker::Settings server_settings;
  TxnTracker tracker{stats, 1, 100, false, {}};
  std::string out;
  TxnTracker::Effect effect{};
  Fixture() { tracker.allow_hold(true); }  // as the relay does outside a read retry's resend

  bool client(char type, const std::string& body) {
    out.clear();
    return tracker.client_message(type, body, server, out, effect);
  }
  TxnTracker::Reply reply(char type, const std::string& body = {}) {
    std::string repl;
    return tracker.server_message(type, body, server, server_settings, repl);
  }
  // The answer to a Describe of a statement: ParameterDescription, then RowDescription of `columns` (int4
  // columns of those names), or NoData if none.
  std::vector<TxnTracker::Reply> described(const std::vector<std::string>& columns = {}) {
    std::vector<TxnTracker::Reply> r{reply('t', std::string(2, '\0'))};
    r.push_back(columns.empty() ? reply('n') : reply('T', row_description(columns)));
    return r;
  }
  static std::string row_description(const std::vector<std::string>& columns) {
    std::string b;
    pgrouter::protocol::put_be16(b, uint16_t(columns.size()));
    for (auto& c : columns) {
      b += cstr(c);
      pgrouter::protocol::put_be32(b, 16384);  // table
      pgrouter::protocol::put_be16(b, 1);      // column number
      pgrouter::protocol::put_be32(b, 23);     // int4
      pgrouter::protocol::put_be16(b, 4);
      pgrouter::protocol::put_be32(b, uint32_t(-1));
      pgrouter::protocol::put_be16(b, 0);
    }
    return b;
  }
};

}  // namespace

TEST_CASE("SET, RESET, DEALLOCATE and DISCARD forms pgrouter can carry") {
  auto c = parse_session_command("SET search_path = a, \"B\", 'c'");
  REQUIRE(c);
  CHECK(c->kind == SessionCommand::set);
  CHECK(c->name == "search_path");
  CHECK(c->value == "a, \"B\", 'c'");
  c = parse_session_command("set TIME ZONE 'Asia/Tokyo';");
  REQUIRE(c);
  CHECK((c->name == "timezone" && c->value == "'Asia/Tokyo'"));
  c = parse_session_command("/* x */ SET SESSION statement_timeout TO 5000 -- trailing");
  REQUIRE(c);
  CHECK((c->name == "statement_timeout" && c->value == "5000"));
  CHECK(parse_session_command("SET statement_timeout TO DEFAULT")->kind == SessionCommand::reset);
  CHECK(parse_session_command("RESET ALL")->kind == SessionCommand::reset_all);
  CHECK(parse_session_command("set local search_path = x")->kind == SessionCommand::set_local);
  CHECK(parse_session_command("DEALLOCATE PREPARE \"S_1\"")->name == "S_1");
  CHECK(parse_session_command("deallocate all")->kind == SessionCommand::deallocate_all);
  CHECK(parse_session_command("DISCARD ALL")->kind == SessionCommand::discard_all);
  // Not carried: pinned or refused by the caller instead.
  CHECK_FALSE(parse_session_command("SET ROLE admin"));
  CHECK_FALSE(parse_session_command("SET SESSION AUTHORIZATION bob"));
  CHECK_FALSE(parse_session_command("SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE"));
  CHECK_FALSE(parse_session_command("SET x = 1; SELECT 1"));
  CHECK_FALSE(parse_session_command("SET search_path = E'a\\\\b'"));
  CHECK_FALSE(parse_session_command("DISCARD PLANS"));
}

TEST_CASE("multi-statement strings are split outside quotes, comments and bodies") {
  auto s = split_statements("begin; set x = 'a;b'; select $$;$$, \"q;\" /* ; */ from t; -- ;\n commit;");
  REQUIRE(s.size() == 4);
  CHECK(s[1] == " set x = 'a;b'");
  CHECK(s[3] == " -- ;\n commit");
  CHECK(split_statements("select (1;2)").size() == 1);
  CHECK(split_statements(" ; ;").empty());
}

TEST_CASE("a named statement is prepared once per server under a shared name") {
  Fixture f;
  REQUIRE(f.client('P', parse_body("S1", "select 1")));
  CHECK(types_of(f.out) == "PD");  // the Describe learns the columns the statement keeps
  CHECK(f.out.find("pgr_") != std::string::npos);
  CHECK(f.server.size() == 1);
  CHECK(f.reply('1') == TxnTracker::Reply::forward);  // the client's own ParseComplete
  CHECK(f.described({"a"}) == std::vector{TxnTracker::Reply::drop, TxnTracker::Reply::drop});
  REQUIRE(f.client('B', bind_body("S1")));
  CHECK(types_of(f.out) == "B");
  CHECK_FALSE(f.client('S', ""));
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());

  // Another server: Bind first prepares it there, and that ParseComplete is not the client's.
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  // The copy's columns are checked before the Bind goes: the relay holds it until the Describe answers.
  REQUIRE(f.client('B', bind_body("S1")));
  CHECK(f.tracker.held());
  CHECK(types_of(f.out) == "PDH");
  CHECK(f.tracker.holding());
  CHECK(f.reply('1') == TxnTracker::Reply::drop);
  f.described({"a"});
  CHECK_FALSE(f.tracker.holding());
  REQUIRE(f.client('B', bind_body("S1")));  // the same columns: the Bind goes on
  CHECK_FALSE(f.tracker.held());
  CHECK(types_of(f.out) == "B");
  f.client('S', "");
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);

  // A second client's Parse of the same text on a server that has it: a no-op Close, retyped.
  Fixture g;
  g.server = f.server;
  REQUIRE(g.client('P', parse_body("other_name", "select 1")));
  CHECK(types_of(g.out) == "C");
  CHECK(g.reply('3') == TxnTracker::Reply::as_parse_complete);
  CHECK(g.stats.prepared_statements_reused_total == 1);
}

TEST_CASE("an error undoes what the skipped messages would have done") {
  Fixture f;
  f.client('P', parse_body("bad", "selec 1"));
  f.client('S', "");
  CHECK(f.reply('E', "") == TxnTracker::Reply::forward);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.server.size() == 0);
  // "bad" was never created: a Bind of it goes to the server unchanged (which answers 26000).
  CHECK_FALSE(f.client('B', bind_body("bad")));
  f.client('S', "");
  f.reply('E', "");
  f.reply('Z', "I");
  // Redefining an existing name: the client's Parse runs under a name the server has (an empty statement made
  // first), so the server's own checks come in PostgreSQL's order and its 42P05 is renamed to the client's.
  f.client('P', parse_body("S1", "select 2"));
  f.reply('1');
  f.client('S', "");
  f.reply('Z', "I");
  REQUIRE(f.client('P', parse_body("S1", "select 2")));
  CHECK(types_of(f.out) == "CPP");
  CHECK(f.out.find("pgr_duplicate") != std::string::npos);
  f.client('S', "");
  CHECK(f.reply('3') == TxnTracker::Reply::drop);
  CHECK(f.reply('1') == TxnTracker::Reply::drop);
  std::string repl;
  CHECK(f.tracker.server_message('E',
                                 error_body("42P05", "prepared statement \"pgr_duplicate\" already exists"),
                                 f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("42P05") != std::string::npos);
  CHECK(repl.find("\"S1\" already exists") != std::string::npos);
  CHECK(repl.find("pgr_") == std::string::npos);
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  // In a failed transaction (or with a text that does not analyse) the server's error comes first, as it is.
  REQUIRE(f.client('P', parse_body("S1", "select * from nosuchtable")));
  f.client('S', "");
  CHECK(f.reply('3') == TxnTracker::Reply::drop);
  CHECK(f.reply('1') == TxnTracker::Reply::drop);
  CHECK(f.reply('E', error_body("42P01", "relation \"nosuchtable\" does not exist", "15")) ==
        TxnTracker::Reply::forward);
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  // S1 still means what it did.
  REQUIRE(f.client('B', bind_body("S1")));
  CHECK(types_of(f.out) == "B");
}

TEST_CASE("a Query after a failed extended-protocol message is skipped with it, up to the Sync") {
  Fixture f;
  f.client('P', parse_body("s1", "select 1"));
  f.client('S', "");
  f.reply('1');
  f.reply('Z', "I");
  // PostgreSQL skips the Queries too (no ReadyForQuery for them): only the Sync's comes.
  f.client('P', parse_body("", "selec 1"));
  f.client('Q', cstr("select 1"));
  CHECK(f.client('Q', cstr("deallocate s1")));  // sent as DEALLOCATE of the server name
  CHECK(types_of(f.out) == "Q");                // no Sync of pgrouter's: it would end the skipping
  f.client('S', "");
  CHECK(f.reply('E', error_body("42601", "syntax error at or near \"selec\"", "1")) ==
        TxnTracker::Reply::forward);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());
  // The skipped DEALLOCATE did not happen: s1 is still the client's.
  CHECK(f.tracker.statements() == 1);
  REQUIRE(f.client('B', bind_body("s1")));
  CHECK(types_of(f.out) == "B");
  f.client('S', "");
  f.reply('2');
  f.reply('Z', "I");
  // The error comes before the client sends its Sync: what it sends meanwhile is ignored too, and the next
  // thing the server sends is that Sync's ReadyForQuery.
  f.client('P', parse_body("", "selec 1"));
  CHECK(f.reply('E', error_body("42601", "syntax error at or near \"selec\"", "1")) ==
        TxnTracker::Reply::forward);
  f.client('P', parse_body("s2", "select 2"));
  f.client('Q', cstr("select 1"));
  f.client('S', "");
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());
  CHECK(f.tracker.statements() == 1);  // s2 was not created
}

TEST_CASE("the LRU bound closes the least recently used statement first") {
  pgrouter::control::WorkerStats stats;
  pgrouter::pool::ServerStatements server;
  TxnTracker::Settings settings;
  TxnTracker t(stats, 1, 2, false, {});
  std::string out;
  TxnTracker::Effect e;
  for (auto name : {"a", "b", "c"}) {
    out.clear();
    t.client_message('P', parse_body(name, std::string("select '") + name + "'"), server, out, e);
  }
  CHECK(types_of(out) == "CPD");  // Close of a's statement, then Parse of c's (and its Describe)
  CHECK(server.size() == 2);
  CHECK(stats.prepared_statements_evicted_total == 1);
}

TEST_CASE("SET is kept when its transaction commits and dropped when it rolls back") {
  Fixture f;
  f.client('Q', cstr("SET search_path = app"));
  CHECK(f.effect == TxnTracker::Effect::tracked);
  f.reply('C', cstr("SET"));
  f.reply('Z', "I");
  CHECK(f.tracker.settings().at("search_path") == "SET search_path TO app");
  CHECK(f.server_settings.at("search_path") == "SET search_path TO app");

  f.client('Q', cstr("BEGIN"));
  f.reply('C', cstr("BEGIN"));
  f.reply('Z', "T");
  f.client('Q', cstr("SET search_path = other"));
  f.reply('C', cstr("SET"));
  f.reply('Z', "T");
  f.client('Q', cstr("ROLLBACK"));
  f.reply('C', cstr("ROLLBACK"));
  f.reply('Z', "I");
  CHECK(f.tracker.settings().at("search_path") == "SET search_path TO app");

  f.client('Q', cstr("begin; set timezone to 'UTC'; commit"));
  CHECK(f.effect == TxnTracker::Effect::tracked);
  f.reply('C', cstr("BEGIN"));
  f.reply('C', cstr("SET"));
  f.reply('C', cstr("COMMIT"));
  f.reply('Z', "I");
  CHECK(f.tracker.settings().count("timezone") == 1);

  f.client('Q', cstr("set search_path = x; select 1/0"));
  f.reply('C', cstr("SET"));
  f.reply('E', "");
  f.reply('Z', "I");
  CHECK(f.tracker.settings().at("search_path") == "SET search_path TO app");

  f.client('Q', cstr("select pg_advisory_lock(1)"));
  CHECK(f.effect == TxnTracker::Effect::unsupported);
  CHECK(f.tracker.feature() == "session advisory lock");
  f.client('Q', cstr("SET role = x"));
  CHECK(f.effect == TxnTracker::Effect::unsupported);
}

TEST_CASE("rewind takes the client's statements back to the start of a read retry window") {
  Fixture f;
  // Before the window: S0 exists, the unnamed statement is "select 'before'".
  f.client('P', parse_body("S0", "select 0"));
  f.reply('1');
  f.described({"x"});
  f.client('P', parse_body("", "select 'before'"));
  f.reply('1');
  f.client('S', "");
  f.reply('Z', "I");
  REQUIRE(f.tracker.idle());

  f.tracker.begin_window();
  f.client('C', std::string("S") + cstr("S0"));      // closes S0
  f.client('P', parse_body("S1", "select 1"));       // creates S1
  f.client('P', parse_body("", "select 'inside'"));  // replaces the unnamed statement
  f.client('B', bind_body("S1"));
  f.client('S', "");
  CHECK(f.reply('3') == TxnTracker::Reply::forward);  // replies matched before the server broke
  CHECK(f.reply('1') == TxnTracker::Reply::forward);
  CHECK(f.tracker.statement_query("S1") == "select 1");
  CHECK_FALSE(f.tracker.statement_query("S0"));

  f.tracker.rewind();  // the server broke: back to where the window began
  CHECK(f.tracker.idle());
  CHECK(f.tracker.statement_query("S0") == "select 0");
  CHECK_FALSE(f.tracker.statement_query("S1"));
  CHECK(f.tracker.statement_query("") == "select 'before'");

  // The same messages again, on another server: S1 is a new statement there, not a duplicate (no 42P05).
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  f.client('C', std::string("S") + cstr("S0"));
  REQUIRE(f.client('P', parse_body("S1", "select 1")));
  CHECK(types_of(f.out) == "PD");
  CHECK(f.tracker.statement_query("S1") == "select 1");
  f.client('P', parse_body("", "select 'inside'"));
  f.client('S', "");
  f.reply('3');
  f.reply('1');
  f.described({"x"});
  f.reply('1');
  f.reply('Z', "I");
  f.tracker.end_window();
  CHECK(f.tracker.idle());
  CHECK(f.tracker.statement_query("") == "select 'inside'");

  // A Query inside a window drops the unnamed statement; rewind brings it back.
  f.tracker.begin_window();
  f.client('Q', cstr("select 2"));
  CHECK_FALSE(f.tracker.statement_query(""));
  f.tracker.rewind();
  CHECK(f.tracker.statement_query("") == "select 'inside'");
}

TEST_CASE("a client's Bind of the unnamed statement never runs another client's") {
  // Two clients on one server: A (owner 1) and B (owner 2).
  pgrouter::control::WorkerStats stats;
  pgrouter::pool::ServerStatements server;
  TxnTracker::Settings server_settings;
  TxnTracker a{stats, 1, 100, false, {}}, b{stats, 2, 100, false, {}};
  std::string out, repl;
  TxnTracker::Effect effect{};
  std::string wire;  // the message with its header: a rewrite copies the client's bytes from there
  auto send = [&](TxnTracker& t, char type, const std::string& body) {
    out.clear();
    wire = msg(type, body);
    t.client_message(type, std::string_view(wire).substr(5), server, out, effect);
    return types_of(out);
  };
  auto reply = [&](TxnTracker& t, char type, const std::string& body = {}) {
    return t.server_message(type, body, server, server_settings, repl);
  };
  send(a, 'P', parse_body("", "select 'A'"));
  send(a, 'S', "");
  reply(a, '1');
  reply(a, 'Z', "I");
  send(b, 'P', parse_body("", "select 'B'"));  // the server's unnamed statement is B's now
  send(b, 'S', "");
  reply(b, '1');
  reply(b, 'Z', "I");

  SUBCASE("a re-sent Parse skipped after an error leaves the server's owner unknown") {
    send(a, 'P', parse_body("bad", "selec"));
    CHECK(send(a, 'B', bind_body("")) == "PB");  // A's statement is re-sent ahead of its Bind
    send(a, 'S', "");
    CHECK(reply(a, 'E') == TxnTracker::Reply::forward);  // the bad Parse; the rest is skipped
    CHECK(reply(a, 'Z', "I") == TxnTracker::Reply::forward);
    CHECK(a.idle());
    // The server still has B's statement: A's next Bind must bring A's again, not run B's.
    CHECK(send(a, 'B', bind_body("")) == "PB");
  }
  SUBCASE("a client without an unnamed statement gets 26000, not another client's") {
    send(a, 'Q', cstr("select 1"));  // a simple Query drops A's unnamed statement
    reply(a, 'Z', "I");
    send(b, 'P', parse_body("", "select 'B again'"));
    send(b, 'S', "");
    reply(b, '1');
    reply(b, 'Z', "I");
    CHECK(send(a, 'B', bind_body("")) == "CB");  // B's is closed first, so the Bind fails as in PostgreSQL
    send(a, 'S', "");
    CHECK(reply(a, '3') == TxnTracker::Reply::drop);
  }
}

namespace {
// The Query text in a byte string of whole messages (the first Query's).
std::string query_of(const std::string& bytes) {
  for (size_t i = 0; i + 5 <= bytes.size(); i += 1 + pgrouter::protocol::read_be32(bytes.data() + i + 1))
    if (bytes[i] == 'Q') return std::string(bytes.c_str() + i + 5);
  return {};
}
}  // namespace

TEST_CASE("SQL PREPARE is carried: a shared server name, recorded when sent, kept after ROLLBACK") {
  Fixture f;
  REQUIRE(f.client('Q', cstr("PREPARE s (int) AS select $1 * 2")));
  CHECK(f.effect == TxnTracker::Effect::tracked);
  CHECK(types_of(f.out) == "CQ");  // a Close of the server name (another client's copy), then the PREPARE
  std::string sent = query_of(f.out);
  CHECK(sent.rfind("PREPARE pgr_", 0) == 0);
  CHECK(sent.find(" (int) AS select $1 * 2") != std::string::npos);
  std::string server_name = sent.substr(8, 36);
  CHECK(f.reply('3') == TxnTracker::Reply::drop);
  CHECK(f.tracker.statement_query("s"));  // a Query pipelined after this one may EXECUTE it
  CHECK(f.reply('C', cstr("PREPARE")) == TxnTracker::Reply::forward);
  CHECK(f.tracker.statement_query("s"));
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());
  CHECK(f.server.contains(server_name));

  // EXECUTE on the same server: only the name changes.
  REQUIRE(f.client('Q', cstr("execute S (21)")));
  CHECK(types_of(f.out) == "Q");
  CHECK(query_of(f.out) == "execute " + server_name + " (21)");
  f.reply('C', cstr("SELECT 1"));
  f.reply('Z', "I");

  // On a server that lacks it: prepared through the helper, in a batch of its own whose replies are dropped.
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  REQUIRE(f.client('Q', cstr("EXPLAIN EXECUTE s(1)")));
  CHECK(types_of(f.out) == "CCCPBESQ");
  CHECK(query_of(f.out) == "EXPLAIN EXECUTE " + server_name + "(1)");
  for (char t : std::string("3331")) CHECK(f.reply(t) == TxnTracker::Reply::drop);
  CHECK(f.reply('2') == TxnTracker::Reply::drop);
  CHECK(f.reply('C', cstr("PREPARE")) == TxnTracker::Reply::drop);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::drop);
  CHECK(f.reply('C', cstr("EXPLAIN")) == TxnTracker::Reply::forward);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());

  // PREPARE is not transactional: inside a transaction that rolls back, it stays (as in PostgreSQL).
  f.client('Q', cstr("begin"));
  f.reply('C', cstr("BEGIN"));
  f.reply('Z', "T");
  f.client('Q', cstr("prepare t as select 2"));
  f.reply('3');
  f.reply('C', cstr("PREPARE"));
  f.reply('Z', "T");
  f.client('Q', cstr("rollback"));
  f.reply('C', cstr("ROLLBACK"));
  f.reply('Z', "I");
  CHECK(f.tracker.statement_query("t"));
  CHECK(f.tracker.statements() == 2);
  CHECK(f.stats.prepared_statements_prepared_total == 3);  // s, its copy on the other server, t
}

TEST_CASE("a failed or duplicate SQL PREPARE is answered as PostgreSQL would") {
  Fixture f;
  REQUIRE(f.client('Q', cstr("prepare bad as select nosuchcol")));
  std::string sent = query_of(f.out);
  std::string server_name = sent.substr(8, 36);
  f.reply('3');
  std::string repl;
  // The position is in the rewritten text: translated back to the client's.
  CHECK(f.tracker.server_message('E', error_body("42703", "column \"nosuchcol\" does not exist", "56"),
                                 f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find(std::string("P23") + '\0') != std::string::npos);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK_FALSE(f.tracker.statement_query("bad"));
  CHECK_FALSE(f.server.contains(server_name));  // it was closed and not prepared again

  f.client('Q', cstr("prepare good as select 1"));
  f.reply('3');
  f.reply('C', cstr("PREPARE"));
  f.reply('Z', "I");
  REQUIRE(f.client('Q', cstr("PREPARE \"good\" AS select 2")));
  CHECK(types_of(f.out) == "Q");
  CHECK(query_of(f.out) == "DEALLOCATE pgr_sentinel_error");
  CHECK(f.tracker.server_message(
            'E', error_body("26000", "prepared statement \"pgr_sentinel_error\" does not exist"), f.server,
            f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("prepared statement \"good\" already exists") != std::string::npos);
  f.reply('Z', "I");

  // An error naming the server's statement names the client's.
  f.client('Q', cstr("execute good(1, 2)"));
  CHECK(f.tracker.server_message('E',
                                 error_body("42601", "wrong number of parameters for prepared statement \"" +
                                                         query_of(f.out).substr(8, 36) + "\""),
                                 f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("prepared statement \"good\"") != std::string::npos);
  f.reply('Z', "I");

  // Where the server lacks it and preparing it fails (a failed transaction), that error is not shown: the
  // client's statement fails by itself.
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  f.client('Q', cstr("execute good"));
  for (char t : std::string("333")) f.reply(t);
  CHECK(f.reply('E', error_body("25P02", "current transaction is aborted")) == TxnTracker::Reply::drop);
  CHECK(f.reply('Z', "E") == TxnTracker::Reply::drop);
  CHECK(f.reply('E', error_body("25P02", "current transaction is aborted")) == TxnTracker::Reply::forward);
  CHECK(f.reply('Z', "E") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());
  CHECK(f.server.size() == 0);
}

TEST_CASE("SQL-prepared statements in the extended protocol: EXECUTE in a Parse, Bind by name, DEALLOCATE") {
  Fixture f;
  f.client('Q', cstr("prepare s as select 7"));
  std::string server_name = query_of(f.out).substr(8, 36);
  f.reply('3');
  f.reply('C', cstr("PREPARE"));
  f.reply('Z', "I");
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  // psycopg sends "EXECUTE s" with parameters as an unnamed Parse.
  REQUIRE(f.client('P', parse_body("", "execute s")));
  CHECK(types_of(f.out) == "CCCPBEP");
  CHECK(f.out.find("execute " + server_name) != std::string::npos);
  CHECK(f.tracker.statement_query("") == "execute " + server_name);
  f.client('S', "");
  for (char t : std::string("3331")) CHECK(f.reply(t) == TxnTracker::Reply::drop);
  CHECK(f.reply('2') == TxnTracker::Reply::drop);
  CHECK(f.reply('C', cstr("PREPARE")) == TxnTracker::Reply::drop);
  CHECK(f.reply('1') == TxnTracker::Reply::forward);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());
  // PostgreSQL shares one namespace: a Bind of the SQL name uses the same statement.
  std::swap(f.server, other);
  REQUIRE(f.client('B', bind_body("s")));
  CHECK(types_of(f.out) == "B");
  CHECK(f.out.find(server_name) != std::string::npos);
  // A named protocol statement that EXECUTEs it brings it along wherever it is prepared.
  f.client('P', parse_body("wrap", "execute s"));
  f.client('S', "");
  f.reply('1');
  f.described({"v"});
  f.reply('Z', "I");
  pgrouter::pool::ServerStatements third;
  std::swap(f.server, third);
  REQUIRE(f.client('B', bind_body("wrap")));
  CHECK(types_of(f.out) == "CCCPBEPDH");  // held: wrap's columns are checked first
  for (char t : std::string("3331")) f.reply(t);
  f.reply('2');
  f.reply('C', cstr("PREPARE"));
  f.reply('1');
  f.described({"v"});
  REQUIRE(f.client('B', bind_body("wrap")));
  CHECK(types_of(f.out) == "B");
  // DEALLOCATE s (simple Query) on a server that lacks it: prepared first, in a batch of its own.
  f.client('S', "");
  f.reply('Z', "I");
  pgrouter::pool::ServerStatements fourth;
  std::swap(f.server, fourth);
  REQUIRE(f.client('Q', cstr("DEALLOCATE s")));
  CHECK(types_of(f.out) == "CCCPBESQ");
  CHECK(query_of(f.out) == "DEALLOCATE " + server_name);
  for (char t : std::string("3331")) f.reply(t);
  f.reply('2');
  f.reply('C', cstr("PREPARE"));
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::drop);
  f.reply('C', cstr("DEALLOCATE"));
  f.reply('Z', "I");
  CHECK_FALSE(f.tracker.statement_query("s"));
  CHECK(f.tracker.statement_query("wrap"));
}

TEST_CASE("PREPARE and DEALLOCATE among other statements are carried: their names become server names") {
  Fixture f;
  REQUIRE(f.client('Q', cstr("prepare s as select 1; set statement_timeout = '5s'")));
  CHECK(f.effect == TxnTracker::Effect::tracked);
  CHECK(types_of(f.out) == "CQ");  // a Close of the server name (another client's copy), then the Query
  CHECK(query_of(f.out).find("prepare pgr_") == 0);
  CHECK(query_of(f.out).find("; set statement_timeout = '5s'") != std::string::npos);
  CHECK(f.tracker.statement_query("s"));  // recorded when sent
  f.reply('3');
  CHECK(f.reply('C', cstr("PREPARE")) == TxnTracker::Reply::forward);
  f.reply('C', cstr("SET"));
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  // In a Parse: not carried (a Parse holds one statement).
  Fixture g;
  CHECK_FALSE(g.client('P', parse_body("", "prepare s as select 1")));
  CHECK(g.effect == TxnTracker::Effect::unsupported);
  // DEALLOCATE among other statements: of the server name; the name is gone once it ran, back if it did not.
  Fixture h;
  h.client('Q', cstr("prepare s2 as select 1"));
  h.reply('3');
  h.reply('C', cstr("PREPARE"));
  h.reply('Z', "I");
  REQUIRE(h.tracker.statement_query("s2"));
  REQUIRE(h.client('Q', cstr("select 1/0; deallocate s2")));
  CHECK(query_of(h.out).find("select 1/0; deallocate pgr_") == 0);
  h.reply('E', error_body("22012", "division by zero"));
  h.reply('Z', "I");
  CHECK(h.tracker.statement_query("s2"));
  REQUIRE(h.client('Q', cstr("select 1; deallocate s2")));
  h.reply('C', cstr("SELECT 1"));
  h.reply('C', cstr("DEALLOCATE"));
  h.reply('Z', "I");
  CHECK_FALSE(h.tracker.statement_query("s2"));
  CHECK(h.tracker.idle());
}

TEST_CASE(
    "texts found plain are remembered by their shape with numbers as 0, and only what has the same answer") {
  Fixture f;
  auto effect_of = [&f](const std::string& sql) {
    f.client('Q', cstr(sql));
    f.reply('Z', "I");
    return f.effect;
  };
  // A plain text, then texts differing only in numbers: plain (the memo's shared entry).
  CHECK(effect_of("select abalance from pgbench_accounts where aid = 12345") == TxnTracker::Effect::none);
  CHECK(effect_of("select abalance from pgbench_accounts where aid = 7") == TxnTracker::Effect::none);
  // A number right before a statement's first word hides it ("5 set" is no SET); the same text without the
  // number is a SET and must not share its entry.
  CHECK(effect_of("select 1;5 set work_mem = 64") == TxnTracker::Effect::none);
  CHECK(effect_of("select 1; set search_path = x") == TxnTracker::Effect::tracked);
  CHECK(effect_of("select 1;  set work_mem = 64") != TxnTracker::Effect::none);
  // Digits inside a word are part of it: temp1 is a name, temp a keyword.
  CHECK(effect_of("select * from temp1") == TxnTracker::Effect::none);
  CHECK(effect_of("select * from temp") == TxnTracker::Effect::unsupported);
  CHECK(effect_of("select pg_advisory_lock(12)") == TxnTracker::Effect::unsupported);
  CHECK(effect_of("select pg_advisory_lock(13)") == TxnTracker::Effect::unsupported);
}

TEST_CASE("a simple Query with no session statement is marked plain (StartupReset then skips it)") {
  Fixture f;
  auto query = [](const std::string& sql) { return sql + std::string(1, '\0'); };
  f.client('Q', query("select abalance from pgbench_accounts where aid = 42;"));
  CHECK(f.tracker.last_query_plain());
  f.client('Q', query("select abalance from pgbench_accounts where aid = 43;"));  // the memo's answer
  CHECK(f.tracker.last_query_plain());
  for (const char* sql : {"RESET search_path", "/* c */ reset all", "set statement_timeout to default",
                          "discard all", "select 1; -- x\n RESET ALL"}) {
    f.client('Q', query(sql));
    CHECK_MESSAGE(!f.tracker.last_query_plain(), sql);
  }
  f.client('Q', query("select 2"));
  CHECK(f.tracker.last_query_plain());
}

TEST_CASE("pool.unnamed_statements: prepare: the unnamed statement is a shared statement on each server") {
  pgrouter::control::WorkerStats stats;
  pgrouter::pool::ServerStatements server;
  TxnTracker::Settings server_settings;
  TxnTracker tracker{stats, 1, 100, false, {}, {}, /*prepare_unnamed*/ true};
  std::string out, repl;
  TxnTracker::Effect effect{};
  std::string wire;  // the message with its header: a forwarded-as-is Bind is copied from there
  auto client = [&](char type, const std::string& body) {
    out.clear();
    wire = msg(type, body);
    return tracker.client_message(type, std::string_view(wire).substr(5), server, out, effect);
  };
  auto reply = [&](char type, const std::string& body = {}) {
    return tracker.server_message(type, body, server, server_settings, repl);
  };
  // The statement name the k-th message of `out` carries (Parse, Close, Describe: the first string after the
  // kind byte if any; Bind: the second string).
  auto name_in = [&](size_t k) {
    size_t at = 0;
    for (size_t i = 0; i < k; ++i) at += 1 + pgrouter::protocol::read_be32(out.data() + at + 1);
    char type = out[at];
    size_t p = at + 5 + ((type == 'C' || type == 'D') ? 1 : 0);
    if (type == 'B') p = out.find('\0', p) + 1;
    return out.substr(p, out.find('\0', p) - p);
  };

  // The first Parse of a text this worker has not seen stays the server's unnamed statement.
  CHECK_FALSE(client('P', parse_body("", "select 1")));
  CHECK_FALSE(client('B', bind_body("")));
  client('S', "");
  CHECK(reply('1') == TxnTracker::Reply::forward);
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(server.size() == 0);

  // Seen before, on this server for the first time: a Parse of the shared name.
  REQUIRE(client('P', parse_body("", "select 1")));
  CHECK(types_of(out) == "P");
  std::string shared = name_in(0);
  CHECK(shared.rfind("pgr_", 0) == 0);
  CHECK(server.contains(shared));
  REQUIRE(client('B', bind_body("")));
  CHECK(types_of(out) == "B");
  CHECK(name_in(0) == shared);
  client('S', "");
  CHECK(reply('1') == TxnTracker::Reply::forward);
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(tracker.statement_query("") == "select 1");

  // Again: the server has it; the Parse becomes a Close of nothing, answered as ParseComplete.
  REQUIRE(client('P', parse_body("", "select 1")));
  CHECK(types_of(out) == "C");
  client('B', bind_body(""));
  client('S', "");
  CHECK(reply('3') == TxnTracker::Reply::as_parse_complete);
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);

  // On another server, a Bind prepares it first; those replies are pgrouter's.
  pgrouter::pool::ServerStatements other;
  std::swap(server, other);
  REQUIRE(client('B', bind_body("")));
  CHECK(types_of(out) == "PB");
  client('S', "");
  CHECK(reply('1') == TxnTracker::Reply::drop);
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  std::swap(server, other);

  // A failed Parse leaves no unnamed statement and no shared one.
  CHECK_FALSE(client('P', parse_body("", "selec 1")));  // the first time: passed on, fails on its own
  client('S', "");
  reply('E', "SERROR\0C42601\0Msyntax error\0\0");
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK_FALSE(tracker.statement_query(""));
  REQUIRE(client('P', parse_body("", "selec 1")));
  std::string broken = name_in(0);
  CHECK(broken != shared);
  CHECK(server.contains(broken));
  client('S', "");
  reply('E', "SERROR\0C42601\0Msyntax error\0\0");
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK_FALSE(tracker.statement_query(""));
  CHECK_FALSE(server.contains(broken));
  CHECK(server.contains(shared));

  // A Bind then goes to the server's own unnamed statement (closed first: 26000, as in the client's session).
  REQUIRE(client('B', bind_body("")));
  CHECK(types_of(out) == "CB");
  client('S', "");
  CHECK(reply('3') == TxnTracker::Reply::drop);
  reply('E', std::string("SERROR\0C26000\0Munnamed prepared statement does not exist\0\0", 58));
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(tracker.idle());

  // An error naming the shared statement names the client's unnamed one, as PostgreSQL does.
  REQUIRE(client('P', parse_body("", "select 1")));
  CHECK(types_of(out) == "C");
  client('B', bind_body(""));
  client('S', "");
  CHECK(reply('3') == TxnTracker::Reply::as_parse_complete);
  std::string err =
      std::string("SERROR\0C08P01\0Mbind message supplies 0 parameters, but prepared statement \"", 75) +
      shared + std::string("\" requires 1\0\0", 14);
  CHECK(reply('E', err) == TxnTracker::Reply::replace);
  CHECK(repl.find("prepared statement \"\" requires 1") != std::string::npos);
  CHECK(repl.find("pgr_") == std::string::npos);
  CHECK(reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(tracker.idle());

  // "cached plan must not change result type": the server's statements are forgotten, so the next Parse
  // prepares it again, after a Close of the stale one; so is a named statement.
  REQUIRE(client('P', parse_body("S1", "select 2")));
  CHECK(types_of(out) == "PD");
  client('S', "");
  reply('1');
  reply('t', std::string(2, '\0'));
  reply('T', Fixture::row_description({"v"}));
  reply('Z', "I");
  std::string stale("SERROR\0C0A000\0Mcached plan must not change result type\0\0", 56);
  reply('E', stale);
  CHECK(server.size() == 0);
  CHECK(server.close_first);
  REQUIRE(client('P', parse_body("", "select 1")));
  CHECK(types_of(out) == "CP");
  CHECK(name_in(0) == shared);
  CHECK(name_in(1) == shared);
  tracker.allow_hold(true);
  REQUIRE(client('B', bind_body("S1")));
  CHECK(types_of(out) ==
        "CPDH");  // prepared again, and held until its columns are compared with the client's
}

TEST_CASE("statements are shared only between clients that parse them alike (search_path, TimeZone, ...)") {
  pgrouter::control::WorkerStats stats;
  TxnTracker::Settings server_settings;
  using Startup = std::vector<std::pair<std::string, std::string>>;
  TxnTracker utc{stats, 1, 100, false, {}, Startup{{"timezone", "UTC"}}};
  TxnTracker utc2{stats, 2, 100, false, {}, Startup{{"timezone", "UTC"}, {"application_name", "x"}}};
  TxnTracker paris{stats, 3, 100, false, {}, Startup{{"timezone", "Europe/Paris"}}};
  TxnTracker dmy{stats, 4, 100, false, {}, Startup{{"timezone", "UTC"}, {"datestyle", "SQL, DMY"}}};
  std::string wire, out, repl;
  TxnTracker::Effect effect{};
  auto name_of = [](TxnTracker& t, const std::string& stmt) {
    return server_name_of(t, stmt, "select '2020-01-02 10:00'::timestamptz");
  };
  std::string a = name_of(utc, "s1");
  CHECK(a.rfind("pgr_", 0) == 0);
  CHECK(name_of(utc2, "s1") == a);  // application_name does not change a parse
  CHECK(name_of(paris, "s1") != a);
  CHECK(name_of(dmy, "s1") != a);
  CHECK(name_of(paris, "s2") != name_of(dmy, "s2"));

  // A committed SET TimeZone moves the client to the statements of that zone.
  pgrouter::pool::ServerStatements server;
  out.clear();
  wire = msg('Q', cstr("SET TimeZone TO 'Europe/Paris'"));
  utc.client_message('Q', std::string_view(wire).substr(5), server, out, effect);
  utc.server_message('C', cstr("SET"), server, server_settings, repl);
  utc.server_message('Z', "I", server, server_settings, repl);
  REQUIRE(utc.settings().count("timezone"));
  std::string after = name_of(utc, "s3");
  CHECK(after != a);
  CHECK(after != name_of(paris, "s3"));  // spelled as a SET, not a startup value: its own copy
}

TEST_CASE("a schema change through pgrouter moves every client to freshly parsed statements") {
  pgrouter::control::WorkerStats stats;
  TxnTracker::Settings server_settings;
  TxnTracker a{stats, 1, 100, false, {}}, b{stats, 2, 100, false, {}};
  pgrouter::pool::ServerStatements server;
  std::string repl;
  auto name_of = [](TxnTracker& t, const std::string& stmt) {
    return server_name_of(t, stmt, "select * from t");
  };
  std::string before = name_of(a, "s1");
  CHECK(name_of(b, "s1") == before);
  // b runs a DELETE and a COMMIT (no change), then an ALTER TABLE (a change) on its server.
  for (const char* tag : {"DELETE 3", "COMMIT", "DISCARD ALL"})
    b.server_message('C', cstr(tag), server, server_settings, repl);
  CHECK(name_of(a, "s2") == before);
  b.server_message('C', cstr("ALTER TABLE"), server, server_settings, repl);
  std::string after = name_of(a, "s3");
  CHECK(after != before);
  CHECK(name_of(b, "s3") == after);  // still shared between clients
}

namespace {
// The statement name of the first Parse/Bind (after the portal) or Close/Describe in `bytes` of type `type`.
std::string name_in(const std::string& bytes, char type) {
  for (size_t i = 0; i + 5 <= bytes.size(); i += 1 + pgrouter::protocol::read_be32(bytes.data() + i + 1)) {
    if (bytes[i] != type) continue;
    size_t at = i + 5;
    if (type == 'B') at = bytes.find('\0', at) + 1;
    if (type == 'C' || type == 'D') ++at;
    return bytes.substr(at, bytes.find('\0', at) - at);
  }
  return {};
}
}  // namespace

TEST_CASE("pipelined SQL PREPARE, EXECUTE, DEALLOCATE: each Query sees what the Queries sent before it did") {
  Fixture f;
  // All sent before any reply, as a pipelining client does.
  REQUIRE(f.client('Q', cstr("prepare ps as select $1::int")));
  std::string server_name = query_of(f.out).substr(8, 36);
  REQUIRE(f.client('Q', cstr("execute ps(1)")));
  CHECK(types_of(f.out) == "Q");
  CHECK(query_of(f.out) == "execute " + server_name + "(1)");
  REQUIRE(f.client('Q', cstr("deallocate ps")));
  CHECK(query_of(f.out) == "DEALLOCATE " + server_name);
  CHECK_FALSE(f.tracker.statement_query("ps"));
  REQUIRE(f.client('Q', cstr("prepare ps as select 2")));  // the name is free once the DEALLOCATE runs
  CHECK(types_of(f.out) == "CQ");
  CHECK(query_of(f.out).rfind("prepare pgr_", 0) == 0);
  CHECK(f.reply('3') == TxnTracker::Reply::drop);
  CHECK(f.reply('C', cstr("PREPARE")) == TxnTracker::Reply::forward);
  f.reply('Z', "I");
  f.reply('C', cstr("SELECT 1"));
  f.reply('Z', "I");
  f.reply('C', cstr("DEALLOCATE"));
  f.reply('Z', "I");
  f.reply('3');
  f.reply('C', cstr("PREPARE"));
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  CHECK(f.tracker.statement_query("ps")->ends_with(" as select 2"));
  CHECK_FALSE(f.server.contains(server_name));

  // A PREPARE that fails takes its name with it; the EXECUTE sent after it fails naming the client's
  // statement, and so does a DEALLOCATE (which then does not put the name back).
  REQUIRE(f.client('Q', cstr("prepare bad as select nosuchcol")));
  std::string bad = query_of(f.out).substr(8, 36);
  REQUIRE(f.client('Q', cstr("execute bad")));
  CHECK(query_of(f.out) == "execute " + bad);
  REQUIRE(f.client('Q', cstr("deallocate bad")));
  CHECK(query_of(f.out) == "DEALLOCATE " + bad);
  f.reply('3');
  f.reply('E', error_body("42703", "column \"nosuchcol\" does not exist"));
  f.reply('Z', "I");
  CHECK_FALSE(f.tracker.statement_query("bad"));
  std::string repl;
  for (int i = 0; i < 2; ++i) {
    CHECK(f.tracker.server_message('E',
                                   error_body("26000", "prepared statement \"" + bad + "\" does not exist"),
                                   f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
    CHECK(repl.find("prepared statement \"bad\" does not exist") != std::string::npos);
    f.reply('Z', "I");
  }
  CHECK(f.tracker.idle());
  CHECK_FALSE(f.tracker.statement_query("bad"));
  CHECK(f.tracker.statements() == 1);
}

TEST_CASE("a Parse skipped after an error: a later batch of the same write is answered as PostgreSQL would") {
  Fixture f;
  std::string repl;
  // [Parse "" bad, Parse s2, Sync] [Bind s2, Execute, Sync] [Parse s2 (other text), Sync], in one write.
  f.client('P', parse_body("", "selec 1"));
  REQUIRE(f.client('P', parse_body("s2", "select 2")));
  CHECK(types_of(f.out) == "PD");  // a real Parse: the server has it exactly when it ran
  std::string s2 = name_in(f.out, 'P');
  f.client('S', "");
  REQUIRE(f.client('B', bind_body("s2")));
  CHECK(name_in(f.out, 'B') == s2);
  f.client('E', std::string(5, '\0'));
  f.client('S', "");
  REQUIRE(f.client('P', parse_body("s2", "select 3")));
  // The client's text first, then a Parse of s2's server name: 42P05 if it exists, else an empty statement,
  // closed.
  CHECK(types_of(f.out) == "PPC");
  std::string s3 = name_in(f.out, 'P');
  CHECK(f.out.find(cstr(s2) + cstr("")) != std::string::npos);
  f.client('S', "");

  CHECK(f.reply('E', error_body("42601", "syntax error at or near \"selec\"")) == TxnTracker::Reply::forward);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK_FALSE(f.server.contains(s2));
  // The Bind of the skipped statement fails as in PostgreSQL, naming the client's statement.
  CHECK(f.tracker.server_message('E', error_body("26000", "prepared statement \"" + s2 + "\" does not exist"),
                                 f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("prepared statement \"s2\" does not exist") != std::string::npos);
  CHECK(repl.find("pgr_") == std::string::npos);
  f.reply('Z', "I");
  CHECK(f.reply('1') == TxnTracker::Reply::drop);     // the client's text, parsed
  CHECK(f.reply('1') == TxnTracker::Reply::forward);  // s2 did not exist: the client's ParseComplete
  CHECK(f.reply('3') == TxnTracker::Reply::drop);
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  CHECK(*f.tracker.statement_query("s2") == "select 3");
  CHECK(f.server.contains(s3));

  // Had s2 existed, the Parse of its server name fails: PostgreSQL's 42P05 naming the client's statement.
  f.client('P', parse_body("t", "select 4"));
  std::string t4 = name_in(f.out, 'P');
  f.client('S', "");
  REQUIRE(f.client('P', parse_body("t", "select 5")));
  CHECK(types_of(f.out) == "PPC");
  f.client('S', "");
  f.reply('1');
  f.reply('Z', "I");
  CHECK(f.reply('1') == TxnTracker::Reply::drop);
  CHECK(f.tracker.server_message('E', error_body("42P05", "prepared statement \"" + t4 + "\" already exists"),
                                 f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("prepared statement \"t\" already exists") != std::string::npos);
  f.reply('Z', "I");
  CHECK(*f.tracker.statement_query("t") == "select 4");
  CHECK(f.server.contains(t4));
}

TEST_CASE("after a request that may fail, a Parse of a statement the server has gets the client's own copy") {
  Fixture f;
  f.client('P', parse_body("a", "select 4"));
  std::string shared = name_in(f.out, 'P');
  f.client('S', "");
  f.reply('1');
  f.reply('Z', "I");
  REQUIRE(f.client('P', parse_body("b", "select 4")));  // first in its batch: the shared copy, a no-op Close
  CHECK(types_of(f.out) == "C");
  f.client('B', bind_body("b"));
  REQUIRE(f.client('P', parse_body("c", "select 4")));  // after a Bind that may fail: a Parse the server runs
  CHECK(types_of(f.out) == "PD");
  CHECK(name_in(f.out, 'P') != shared);
  f.client('S', "");
  f.reply('3');
  f.reply('2');
  f.reply('1');
  f.reply('Z', "I");

  // In a failed transaction PostgreSQL refuses a Parse with 25P02: the server must run it to say so.
  f.client('Q', cstr("select 1/0"));
  f.reply('E', error_body("22012", "division by zero"));
  f.reply('Z', "E");
  REQUIRE(f.client('P', parse_body("d", "select 4")));
  CHECK(types_of(f.out) == "PD");
  CHECK(name_in(f.out, 'P') != shared);
  f.client('S', "");
  f.reply('E', error_body("25P02",
                          "current transaction is aborted, commands ignored until end of transaction block"));
  f.reply('Z', "E");
  CHECK_FALSE(f.tracker.statement_query("d"));
  CHECK(f.tracker.idle());
}

TEST_CASE("a Parse in a later batch never reuses a copy that a skipped Parse of an earlier batch made") {
  // [Parse "" bad, Parse a, Sync] [Parse b (a's text), Bind b, Sync], in one write: a's Parse is skipped, so
  // the server lacks its copy, while b's batch runs. The fuzzer met it as [Bind "" failing, ... Parse fs2
  // 'commit'] then, in the next round's write, [Parse fs0 'commit', Bind fs0, ...]. With the error answered
  // before (early) or after pgrouter reads a's Parse, both orders the relay can see.
  for (bool early : {false, true}) {
    CAPTURE(early);
    Fixture f;
    std::string repl;
    f.client('P', parse_body("", "selec 1"));
    if (early)
      CHECK(f.reply('E', error_body("42601", "syntax error at or near \"selec\"")) ==
            TxnTracker::Reply::forward);
    REQUIRE(f.client('P', parse_body("a", "select 4")));
    CHECK(types_of(f.out) == "PD");
    std::string shared = name_in(f.out, 'P');
    f.client('S', "");
    REQUIRE(f.client('P', parse_body("b", "select 4")));
    // Not the no-op Close: the server's copy exists only if a's Parse ran. b gets a copy of its own.
    CHECK(types_of(f.out) == "PD");
    std::string own = name_in(f.out, 'P');
    CHECK(own != shared);
    REQUIRE(f.client('B', bind_body("b")));
    CHECK(name_in(f.out, 'B') == own);
    f.client('S', "");

    if (!early)
      CHECK(f.reply('E', error_body("42601", "syntax error at or near \"selec\"")) ==
            TxnTracker::Reply::forward);
    CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
    CHECK_FALSE(f.server.contains(shared));
    CHECK_FALSE(f.tracker.statement_query("a"));
    CHECK(f.reply('1') == TxnTracker::Reply::forward);  // b's ParseComplete
    CHECK(f.described() == std::vector{TxnTracker::Reply::drop, TxnTracker::Reply::drop});
    CHECK(f.reply('2') == TxnTracker::Reply::forward);
    CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
    CHECK(f.tracker.idle());
    CHECK(*f.tracker.statement_query("b") == "select 4");
    CHECK(f.server.contains(own));
  }
}

TEST_CASE("a Close skipped after an error leaves the statement, also for a later batch of the same write") {
  Fixture f;
  std::string repl;
  f.client('P', parse_body("pc", "select 5"));
  std::string pc = name_in(f.out, 'P');
  f.client('S', "");
  f.reply('1');
  f.reply('Z', "I");

  // On the server that has it: the Close is real, and a Bind sent meanwhile names the server's copy.
  f.client('P', parse_body("", "selec 1"));
  REQUIRE(f.client('C', "S" + cstr("pc")));
  CHECK(name_in(f.out, 'C') == pc);
  CHECK_FALSE(f.server.contains(pc));
  f.client('S', "");
  REQUIRE(f.client('B', bind_body("pc")));
  CHECK(types_of(f.out) == "B");
  CHECK(name_in(f.out, 'B') == pc);
  f.client('S', "");
  f.reply('E', error_body("42601", "syntax error"));
  f.reply('Z', "I");
  CHECK(f.tracker.statement_query("pc"));
  CHECK(f.server.contains(pc));
  CHECK(f.reply('2') == TxnTracker::Reply::forward);
  f.reply('Z', "I");

  // Skipped, but closed again by a Close that cannot be skipped: gone once both are answered.
  f.client('P', parse_body("", "selec 1"));
  f.client('C', "S" + cstr("pc"));
  f.client('S', "");
  REQUIRE(f.client('C', "S" + cstr("pc")));
  f.client('S', "");
  REQUIRE_FALSE(f.client('B', bind_body("pc")));  // sent as the client wrote it: the server says 26000
  f.client('S', "");
  f.reply('E', error_body("42601", "syntax error"));
  f.reply('Z', "I");
  CHECK(f.reply('3') == TxnTracker::Reply::forward);
  f.reply('Z', "I");
  f.reply('E', error_body("26000", "prepared statement \"pc\" does not exist"));
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  CHECK_FALSE(f.tracker.statement_query("pc"));
  f.client('P', parse_body("pc", "select 5"));
  f.client('S', "");
  f.reply('3');  // the server has it: the no-op Close, as ParseComplete
  f.reply('Z', "I");

  // On a server without a copy: a marker statement follows the Close; a Bind sent meanwhile tests it.
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  f.client('P', parse_body("", "select 1"));
  REQUIRE(f.client('C', "S" + cstr("pc")));
  CHECK(types_of(f.out) == "CP");
  std::string marker = name_in(f.out, 'P');
  CHECK(marker.rfind("pgr_marker_", 0) == 0);
  f.client('S', "");
  REQUIRE(f.client('B', bind_body("pc")));
  CHECK(types_of(f.out) == "PCPB");  // marker test, its Close, the statement prepared here, the Bind
  CHECK(name_in(f.out, 'B') == pc);
  f.client('S', "");
  CHECK(f.reply('1') == TxnTracker::Reply::forward);
  CHECK(f.reply('3') == TxnTracker::Reply::forward);  // the Close ran
  CHECK(f.reply('1') == TxnTracker::Reply::drop);     // and so did its marker
  f.reply('Z', "I");
  CHECK_FALSE(f.tracker.statement_query("pc"));
  // So the marker exists: the Bind fails as PostgreSQL's does.
  CHECK(f.tracker.server_message('E',
                                 error_body("42P05", "prepared statement \"" + marker + "\" already exists"),
                                 f.server, f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("prepared statement \"pc\" does not exist") != std::string::npos);
  CHECK(repl.find("C26000") != std::string::npos);
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  // The marker is closed before the next request.
  std::string wire = msg('Q', cstr("select 1"));
  f.out.clear();
  REQUIRE(f.tracker.client_message('Q', std::string_view(wire).substr(5), f.server, f.out, f.effect));
  CHECK(types_of(f.out) == "CQ");
  CHECK(name_in(f.out, 'C') == marker);
}

TEST_CASE("currval()/lastval() pass only where this client may have called nextval() on the server") {
  Fixture f;
  auto types_sent = [&f](char type, const std::string& body) {
    bool replaced = f.client(type, body);
    return replaced ? types_of(f.out) : std::string(1, type);
  };
  // First thing on a server: its last value may be another client's, so the client's Query is replaced by a
  // sentinel whose error it gets instead (the ReadyForQuery passes as usual).
  CHECK(types_sent('Q', cstr("select currval('s')")) == "Q");
  CHECK(f.out.find("pgr_sentinel") != std::string::npos);
  CHECK(f.reply('E', error_body("26000", "prepared statement \"pgr_sentinel_error\" does not exist")) ==
        TxnTracker::Reply::replace);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  // BEGIN calls nothing: still refused. An INSERT may have called nextval(): from then on they pass.
  CHECK(types_sent('Q', cstr("begin")) == "Q");
  CHECK(f.out.empty());
  CHECK(f.reply('Z', "T") == TxnTracker::Reply::forward);
  f.client('Q', cstr("select lastval()"));
  CHECK(f.out.find("pgr_sentinel") != std::string::npos);
  f.reply('E', error_body("26000", "prepared statement \"pgr_sentinel_error\" does not exist"));
  f.reply('Z', "E");
  CHECK_FALSE(f.client('Q', cstr("insert into t default values")));
  f.reply('Z', "T");
  CHECK_FALSE(f.client('Q', cstr("select currval('s')")));
  CHECK(f.effect == TxnTracker::Effect::none);
  f.reply('Z', "T");
  // Another server: refused again until something runs; in one Query, an INSERT before it counts.
  f.tracker.server_released();
  f.client('P', parse_body("", "select lastval()"));
  CHECK(types_of(f.out) == "D");
  f.reply('E', error_body("26000", "prepared statement \"pgr_sentinel_error\" does not exist"));
  f.client('S', "");
  f.reply('Z', "I");
  CHECK_FALSE(f.client('Q', cstr("insert into t default values; select lastval()")));
  f.reply('Z', "I");
  // A named statement may run in any later transaction: it pins (Effect::unsupported), as other features.
  f.tracker.server_released();
  f.client('P', parse_body("s1", "select currval('s')"));
  CHECK(f.effect == TxnTracker::Effect::unsupported);
  CHECK(f.tracker.feature() == "currval()/lastval()");
}

TEST_CASE("a statement keeps the result columns it was parsed with, as PostgreSQL's cached plans do") {
  Fixture f;
  std::string repl;
  f.client('P', parse_body("S1", "select * from t"));
  std::string name = f.out.substr(5, f.out.find('\0', 5) - 5);
  f.client('S', "");
  f.reply('1');
  f.described({"a"});
  f.reply('Z', "I");

  // On a server that lacks it, the table has gained a column: the Bind fails as PostgreSQL's does, nothing
  // runs.
  pgrouter::pool::ServerStatements other;
  std::swap(f.server, other);
  REQUIRE(f.client('B', bind_body("S1")));
  REQUIRE(f.tracker.held());
  f.reply('1');
  f.described({"a", "b"});
  CHECK_FALSE(f.tracker.holding());
  REQUIRE(f.client('B', bind_body("S1")));
  CHECK_FALSE(f.tracker.held());
  CHECK(types_of(f.out) == "D");  // the sentinel whose error the client gets as 0A000
  CHECK(f.out.find(name) == std::string::npos);
  f.client('E', std::string(5, '\0'));
  f.client('S', "");
  CHECK(f.tracker.server_message(
            'E', error_body("26000", "prepared statement \"pgr_sentinel_error\" does not exist"), f.server,
            f.server_settings, repl) == TxnTracker::Reply::replace);
  CHECK(repl.find("C0A000") != std::string::npos);
  CHECK(repl.find("cached plan must not change result type") != std::string::npos);
  CHECK(f.reply('Z', "I") == TxnTracker::Reply::forward);
  CHECK(f.tracker.idle());

  // The same server later: its copy has other columns, so it is closed and prepared again; the table is back
  // to the client's columns, and the Bind goes on.
  REQUIRE(f.client('B', bind_body("S1")));
  REQUIRE(f.tracker.held());
  CHECK(types_of(f.out) == "CPDH");
  CHECK(f.reply('3') == TxnTracker::Reply::drop);
  CHECK(f.reply('1') == TxnTracker::Reply::drop);
  CHECK(f.described({"a"}) == std::vector{TxnTracker::Reply::drop, TxnTracker::Reply::drop});
  REQUIRE(f.client('B', bind_body("S1")));
  CHECK(types_of(f.out) == "B");
  CHECK(f.out.find(name) != std::string::npos);
  f.client('S', "");
  f.reply('Z', "I");

  // An error before the held message: the server skips the preparation too, and so the message.
  pgrouter::pool::ServerStatements third;
  std::swap(f.server, third);
  f.client('P', parse_body("", "selec"));
  REQUIRE(f.client('B', bind_body("S1")));
  REQUIRE(f.tracker.held());
  f.reply('E', error_body("42601", "syntax error at or near \"selec\""));
  CHECK_FALSE(f.tracker.holding());
  CHECK_FALSE(f.tracker.probing());
  REQUIRE(f.client('B', bind_body("S1")));
  CHECK_FALSE(f.tracker.held());
  CHECK(types_of(f.out) == "PB");  // ignored by the server until the Sync
  f.client('S', "");
  f.reply('Z', "I");
  CHECK(f.tracker.idle());
  CHECK_FALSE(f.server.contains(name));

  // Columns taken from a shared copy (another client's) are not the client's own: a copy prepared again
  // reports them, without holding.
  Fixture g;
  g.server.insert(name, 100);
  g.server.set_desc(name, TxnTracker::desc_of(Fixture::row_description({"a"})));
  REQUIRE(g.client('P', parse_body("T1", "select * from t")));
  CHECK(types_of(g.out) == "C");
  g.reply('3');
  pgrouter::pool::ServerStatements fourth;
  std::swap(g.server, fourth);
  REQUIRE(g.client('B', bind_body("T1")));
  CHECK_FALSE(g.tracker.held());
  CHECK(types_of(g.out) == "PDB");
  g.reply('1');
  g.described({"a", "b"});
  CHECK(g.server.desc(name) == TxnTracker::desc_of(Fixture::row_description({"a", "b"})));
}
