// COPY ... FROM STDIN into a sharded table (each row to its key's shard) or a reference table (every row to
// every shard), sent as a simple Query outside a transaction: each shard's primary runs BEGIN and the COPY;
// the client gets one CopyInResponse; its data is cut into rows (sharding/copy_rows.hpp) and each row sent
// to its shard; at its CopyDone the shards' parts are committed on all or none by two-phase commit, as any
// cross-shard write (client_two_phase.cpp), and the client gets one "COPY n" with the shards' rows summed.
// Inside a transaction coordinated across shards (client_coordinated.cpp) the COPY runs on the
// transaction's parts instead, and is committed or rolled back with the transaction.
#include <cstdio>
#include <map>

#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/sharding/copy_rows.hpp"
#include "shard_leg.hpp"
#include "write_run.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;
namespace fe = pgrouter::protocol::frontend;

namespace {
// A shard's rows are sent in CopyData messages of about this size.
constexpr size_t kCopyChunk = 64 * 1024;

// The position of column `key` in the table's own column order (a COPY without a column list).
std::string key_position_sql(const sql::ShardTarget::CopyFrom& copy, std::string_view key) {
  std::string table = copy.schema.empty()
                          ? "quote_ident(" + p::quote_literal(copy.table) + ")"
                          : "quote_ident(" + p::quote_literal(copy.schema) + ") || '.' || quote_ident(" +
                                p::quote_literal(copy.table) + ")";
  return "SELECT n - 1 FROM (SELECT attname, row_number() OVER (ORDER BY attnum) AS n FROM pg_attribute "
         "WHERE attrelid = to_regclass(" +
         table + ") AND attnum > 0 AND NOT attisdropped) c WHERE attname = " + p::quote_literal(key);
}

// The format the COPY's options give, or why its data cannot be cut into rows here.
std::optional<sharding::CopyFormat> copy_format(const sql::ShardTarget::CopyFrom& c, std::string& why) {
  sharding::CopyFormat f;
  if (!c.from_stdin) {
    why =
        "pgrouter: COPY FROM a server-side file or program into a sharded or reference table is not "
        "supported";
    return std::nullopt;
  }
  if (c.format != "text" && c.format != "csv") {
    why = "pgrouter: COPY FROM in " + c.format + " format into a sharded or reference table is not supported";
    return std::nullopt;
  }
  f.csv = c.format == "csv";
  auto one_byte = [&](const std::optional<std::string>& v, char fallback, const char* what) {
    if (!v) return fallback;
    if (v->size() != 1) why = std::string("pgrouter: a COPY ") + what + " of more than one byte";
    return v->empty() ? fallback : (*v)[0];
  };
  f.delimiter = one_byte(c.delimiter, f.csv ? ',' : '\t', "delimiter");
  f.quote = one_byte(c.quote, '"', "quote");
  f.escape = one_byte(c.escape, f.quote, "escape");
  f.null_text = c.null.value_or(f.csv ? "" : "\\N");
  f.header = c.header;
  if (!why.empty()) return std::nullopt;
  return f;
}

// Why a COPY FROM across shards cannot run (an ErrorResponse body), if it cannot: its data must come as
// CopyData of a simple Query's COPY, in a format cut into rows here (`format`, else `why`).
std::optional<std::string> copy_refusal(bool extended, const std::optional<sharding::CopyFormat>& format,
                                        const std::string& why) {
  if (extended)
    return error_body(
        p::sqlstate::feature_not_supported,
        "pgrouter: a COPY FROM across shards must be sent as a simple query",
        "Send the COPY with the simple query protocol (psql, psycopg's copy(), JDBC's CopyManager do).");
  if (!format) return error_body(p::sqlstate::feature_not_supported, why);
  return std::nullopt;
}
}  // namespace

struct ClientSession::CopyRun {
  std::vector<ShardLeg>& legs;
  std::vector<std::string> out;  // rows waiting to go to each leg
  std::string error;             // the client's error (an ErrorResponse body), once known
  CopyRun(std::vector<ShardLeg>& l) : legs(l), out(l.size()) {}
};

// Sends each leg the rows waiting for it, when they are more than `at_least` bytes.
awaitable<void> ClientSession::copy_flush(CopyRun& run, size_t at_least) {
  for (size_t i = 0; i < run.legs.size(); ++i) {
    if (run.out[i].empty() || run.out[i].size() < at_least || run.legs[i].broken) continue;
    std::string bytes;
    append_message(bytes, be::kCopyData, run.out[i]);  // (CopyData's type byte is the same both ways)
    run.out[i].clear();
    co_await run.legs[i].send(std::move(bytes));
  }
}

// BEGIN (unless the legs are a transaction's parts, begun already) and the COPY on every leg, each read up
// to its CopyInResponse (or its error and ReadyForQuery).
awaitable<bool> ClientSession::copy_start(WriteRun& run, std::string& copy_in) {
  std::string bytes;
  if (!run.begun) p::append_query(bytes, "BEGIN");
  p::append_query(bytes, run.req.sql);
  int readies_when_failed = run.begun ? 1 : 2;
  for (auto& leg : run.legs) {
    std::string b = bytes;
    leg.ready = leg.done = false;
    bool sent = co_await leg.send(std::move(b));
    if (sent) running_legs_.add(leg.server.get());  // until copy_finish has its answer
  }
  char type = 0;
  std::string body;
  for (auto& leg : run.legs) {
    for (int ready = 0; !leg.broken;) {
      bool read = co_await leg.read(type, body);
      if (!read) break;
      if (type == be::kReadyForQuery && ++ready == readies_when_failed) break;  // the COPY failed
      if (type == be::kReadyForQuery) leg.ready = leg.done = false;
      if (type == be::kCopyInResponse) {
        if (copy_in.empty()) copy_in = body;
        break;
      }
    }
  }
  co_return first_leg_error(run.legs) == nullptr;
}

// The next whole client message at the start of client_buf_ (read as needed): its length with the type
// byte, or 0 when the client is gone, -1 when it sent an invalid length.
awaitable<int64_t> ClientSession::client_message(size_t max_length) {
  auto& buf = client_buf_;
  for (;;) {
    if (buf.size() >= 5) {
      uint32_t len = p::read_be32(buf.data() + 1);
      if (len < 4 || len > max_length) co_return -1;
      if (buf.size() >= 1 + size_t(len)) co_return int64_t(1 + size_t(len));
      buf.reserve_message(1 + size_t(len));
    }
    bool more = co_await client_read_more();
    if (!more) co_return 0;
  }
}

awaitable<bool> ClientSession::client_read_more() {
  client_buf_.prepare_read();
  net::error_code ec;
  size_t n = 0;
  if (tls_)
    n = co_await tls_->async_read_some(asio::buffer(client_buf_.write_ptr(), client_buf_.write_space()),
                                       asio::redirect_error(use_awaitable, ec));
  else
    n = co_await client_ready_.read_some(client_buf_.write_ptr(), client_buf_.write_space(), ec);
  if (ec) co_return false;
  client_buf_.commit(n);
  co_return true;
}

// The client's data, cut into rows for the legs, up to its CopyDone or CopyFail. False when the client is
// gone; an error for the client (its CopyFail, a message that has no place in a COPY) is left in run.error,
// `fail_reason` what the legs' COPY is failed with.
awaitable<bool> ClientSession::copy_rows_in(WriteRun& run, CopyRun& copy, sharding::CopyRows& rows,
                                            std::string& fail_reason) {
  size_t max = config_->listen.max_message_size;
  for (;;) {
    int64_t length = co_await client_message(max);
    if (length <= 0) {
      fail_reason = "pgrouter: the client is gone";
      if (length < 0) run.fail(error_body(p::sqlstate::protocol_violation, "invalid message length"));
      co_return false;
    }
    char type = client_buf_.data()[0];
    std::string_view body(client_buf_.data() + 5, size_t(length) - 5);
    if (type == fe::kCopyData) {
      rows.feed(body);
      client_buf_.consume(size_t(length));
      co_await copy_flush(copy, kCopyChunk);
      continue;
    }
    if (type == fe::kCopyDone) rows.finish();
    if (type == fe::kCopyFail) fail_reason = std::string(body.substr(0, body.find('\0')));
    if (type != fe::kCopyDone && type != fe::kCopyFail && type != fe::kFlush && type != fe::kSync) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(type));
      fail_reason = std::string("unexpected message type ") + hex + " during COPY from stdin";
      run.fail(error_body(p::sqlstate::protocol_violation, fail_reason));
    }
    client_buf_.consume(size_t(length));
    if (type == fe::kCopyDone || !fail_reason.empty()) co_return true;
  }
}

// Ends every leg's COPY (CopyDone, or CopyFail with `fail_reason`) and reads its answer; on any error every
// leg rolls back, else the parts are committed on all or none (a transaction's parts: both wait for its end).
awaitable<void> ClientSession::copy_finish(WriteRun& run, CopyRun& copy, std::string fail_reason) {
  if (fail_reason.empty()) co_await copy_flush(copy, 0);
  std::vector<QueryAnswer> answers(run.legs.size());
  for (size_t i = 0; i < run.legs.size(); ++i) {
    auto& leg = run.legs[i];
    if (leg.ready) continue;  // its COPY failed at the start, or it broke
    std::string end;
    if (fail_reason.empty()) {
      p::append_header(end, fe::kCopyDone, 0);
    } else {
      std::string body = fail_reason;
      body += '\0';
      append_message(end, fe::kCopyFail, body);
    }
    bool sent = co_await leg.send(std::move(end));
    if (sent) co_await read_answer(leg, answers[i]);
    if (!answers[i].error.empty() && leg.error.empty()) leg.error = answers[i].error;
    for (auto& tag : answers[i].tags) run.tags.push_back(tag);
  }
  for (auto& leg : run.legs) running_legs_.remove(leg.server.get());
  if (const auto* e = first_leg_error(run.legs)) run.fail(*e);
  if (run.begun) co_return;
  if (run.error.empty()) {
    co_await commit_across(run);
    co_return;
  }
  co_await rollback_legs(run.legs);
}

// The COPY on every leg, the client's rows cut between them (all to the one leg when there is one), then
// ended by copy_finish. False when the client is gone.
awaitable<bool> ClientSession::copy_across(WriteRun& run, const sql::ShardTarget& target,
                                           sharding::CopyFormat format) {
  bool reference = target.copy.key.empty() || run.legs.size() == 1;
  format.key_column = target.copy_key_column;
  if (!reference && format.key_column < 0) {  // no column list: the table's own column order
    QueryAnswer a;
    co_await run_on_leg(run.legs[0], key_position_sql(target.copy, target.copy.key), a);
    if (a.ok() && !a.rows.empty() && !a.rows[0].empty() && a.rows[0][0])
      format.key_column = std::stoi(*a.rows[0][0]);
  }
  CopyRun copy(run.legs);
  std::string copy_in;
  bool started = co_await copy_start(run, copy_in);
  if (!started) {
    co_await copy_finish(run, copy, "pgrouter: another shard refused the COPY");
    co_return true;
  }
  std::string response;
  append_message(response, be::kCopyInResponse, copy_in);
  net::error_code ec;
  co_await client_write_any(response, ec);
  std::map<int, size_t> leg_of;
  for (size_t i = 0; i < run.legs.size(); ++i) leg_of[run.legs[i].shard] = i;
  auto* map = shard_map();
  sharding::CopyRows rows(format,
                          [&](std::string_view row, const std::optional<std::string>& key, bool header) {
                            if (reference || header) {
                              for (auto& out : copy.out) out.append(row);
                              return;
                            }
                            // A NULL or invalid key: the default shard's COPY answers it as PostgreSQL would.
                            std::optional<int> shard = key ? map->shard_of_text(*key) : std::nullopt;
                            copy.out[leg_of[shard.value_or(map->default_shard())]].append(row);
                          });
  std::string fail_reason;
  bool alive = !ec;
  if (alive)
    alive = co_await copy_rows_in(run, copy, rows, fail_reason);
  else
    fail_reason = "pgrouter: the client is gone";
  if (fail_reason.empty() && rows.state() == sharding::CopyRows::State::failed) {
    fail_reason = rows.error();
    run.fail(error_body(p::sqlstate::feature_not_supported, rows.error(),
                        "Use newline (or CR LF) line ends, or COPY each shard's rows through a shard key."));
  }
  co_await copy_finish(run, copy, fail_reason);
  co_return alive;
}

awaitable<bool> ClientSession::run_copy_across(const ScatterRequest& client_req, const sharding::Need& need) {
  // The request leaves client_buf_ before the data is read into it: the run keeps its own copy.
  std::string sql(client_req.sql);
  ScatterRequest req;
  req.sql = sql;
  bool extended = client_req.extended;
  client_buf_.consume(client_req.length);
  sql::ShardTarget target = shard_map()->target(sql);
  WriteRun run(req, need);
  std::string why;
  auto format = copy_format(target.copy, why);
  bool alive = true;
  if (!writes_across_allowed()) {
    run.fail(error_body(p::sqlstate::feature_not_supported,
                        need.message + ", and cross_shard_writes is reject",
                        "Set sharding.cross_shard_writes: two_phase, or COPY each shard key's rows with "
                        "SET pgrouter.shard_key."));
  } else if (auto refused = copy_refusal(extended, format, why)) {
    run.fail(std::move(*refused));
  } else {
    bool opened = co_await open_legs(run.legs, need.shards, 0, true, why);
    if (opened)
      alive = co_await copy_across(run, target, *format);
    else
      run.fail(error_body(p::sqlstate::connection_failure, why));
  }
  release_legs(run.legs, !alive);
  write_done_at_ = routing::steady_ms();  // read-your-writes: as after any write on the primaries
  required_lsn_ = 0;
  if (!alive) co_return false;
  bool sent = co_await send_write_answer(run);
  co_return sent;
}

// A COPY FROM of the coordinated transaction: the rows of each shard on the transaction's part there (opened
// where it has none yet); a COPY that explicitly targets one shard (a shard key set, an unsharded table)
// sends every row to that shard, as it would outside. An error aborts the transaction, as on one server.
awaitable<bool> ClientSession::coordinated_copy(const ScatterRequest& client_req,
                                                const sharding::Need& need) {
  std::string sql(client_req.sql);
  ScatterRequest req;
  req.sql = sql;
  bool extended = client_req.extended;
  client_buf_.consume(client_req.length);
  sql::ShardTarget target = shard_map()->target(sql);
  sharding::Need on = need;
  if (need.kind == sharding::Need::Kind::one) on.shards = {need.shard};
  WriteRun run(req, on);
  run.begun = true;
  std::string why;
  auto format = copy_format(target.copy, why);
  bool alive = true;
  if (auto refused = copy_refusal(extended, format, why)) {
    run.fail(std::move(*refused));
  } else {
    bool lent = co_await lend_legs(on.shards, run.legs, why);
    if (lent)
      alive = co_await copy_across(run, target, *format);
    else
      run.fail(std::move(why));
  }
  char status = return_legs(run.legs, !alive || !run.error.empty());
  write_done_at_ = routing::steady_ms();
  required_lsn_ = 0;
  if (!alive) co_return false;
  bool sent = co_await send_write_answer(run, status);
  co_return sent;
}

}  // namespace pgrouter::session
