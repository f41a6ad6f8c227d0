// Cross-shard reads. A request of scatter_request()'s shapes whose statement needs several shards, sent
// outside a transaction, is planned (sharding::plan_scatter), sent to one server of each shard it needs
// (taken from that shard's pools for this request only, with the client's settings), and answered from the
// merge of their replies (sharding::ScatterMerge) as they stream: rows go to the client in chunks, and only
// the shards the merge is waiting on are read, so memory stays bounded by what the merge keeps (ORDER BY: a
// row per shard; aggregates: a row per group). A shard's error ends the request with that error, as
// PostgreSQL would; what pgrouter cannot merge exactly is refused with 0A000 before anything runs.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/sharding/merge.hpp"
#include "pgrouter/sharding/scatter_plan.hpp"
#include "shard_leg.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

namespace {
constexpr size_t kFlushAt = 64 * 1024;  // client bytes gathered before a write
}  // namespace

// The request itself: legs opened, their replies merged, the client answered.
struct ClientSession::ScatterRun {
  ClientSession& self;
  const ScatterRequest& req;
  const sharding::Need& need;
  std::shared_ptr<const sharding::ScatterPlan> plan_ptr;  // cached per worker (ShardMap::scatter_plan)
  const sharding::ScatterPlan& plan;
  std::vector<ShardLeg> legs;
  std::string out;  // for the client, not yet written
  bool client_gone = false;
  bool failed = false;  // the client's answer ends with an error: legs still running are cancelled

  bool copy_out = false;  // COPY <sharded table> TO STDOUT: each shard's rows in turn, not a merge
  std::string refusal;    // found only on a server (probe_group_names): the read is refused with 0A000

  ScatterRun(ClientSession& s, const ScatterRequest& r, const sharding::Need& n,
             std::shared_ptr<const sharding::ScatterPlan> p)
      : self(s), req(r), need(n), plan_ptr(std::move(p)), plan(*plan_ptr) {}

  // One message from a leg; false when its connection failed (the leg is then broken and done).
  awaitable<bool> read(ShardLeg& leg, char& type, std::string& body) { return leg.read(type, body); }

  // Reads each leg up to its RowDescription (or its error); false when one has none.
  awaitable<bool> read_descriptions() {
    bool all = true;
    for (auto& leg : legs) {
      char type = 0;
      std::string body;
      // (No co_await in a loop condition after &&: g++ 12 evaluates it even when the left side is false.)
      while (!leg.done && leg.description.empty()) {
        if (!co_await read(leg, type, body)) break;
        if (type == be::kRowDescription)
          leg.description = std::move(body);
        else if (type == be::kParameterDescription)
          leg.parameters = std::move(body);
        else if (type == be::kNoData || type == be::kCommandComplete)
          break;
      }
      if (leg.description.empty()) all = false;
    }
    co_return all;
  }

  // Reads every leg to its ReadyForQuery (the rest of its rows are dropped).
  awaitable<void> drain() {
    char type = 0;
    std::string body;
    for (auto& leg : legs)
      while (!leg.ready) {
        if (!co_await read(leg, type, body)) break;
      }
  }

  // The first error any leg sent (by shard order), if any.
  const std::string* first_error() const { return first_leg_error(legs); }

  // Feeds the merge from the legs it waits on until it has every row; false when a leg failed.
  awaitable<bool> stream(sharding::ScatterMerge& merge) {
    std::string row;
    while (!merge.done() && merge.error().empty()) {
      bool read_any = false;
      for (size_t i = 0; i < legs.size() && !merge.done(); ++i) {
        auto& leg = legs[i];
        if (leg.done || !merge.needs(i)) continue;
        char type = 0;
        std::string body;
        read_any = true;
        if (!co_await read(leg, type, body) || !leg.error.empty()) co_return false;
        if (type == be::kDataRow)
          merge.add_row(i, body);
        else if (type == be::kCommandComplete)
          leg.done = true, merge.finish(i);
      }
      while (merge.next_row(row)) append_message(out, be::kDataRow, row);
      if (out.size() >= kFlushAt) {
        if (!co_await flush()) co_return false;
      }
      if (!read_any) break;  // every leg finished
    }
    while (merge.next_row(row)) append_message(out, be::kDataRow, row);
    co_return true;
  }

  awaitable<bool> flush() {
    if (out.empty() || client_gone) co_return !client_gone;
    net::error_code ec;
    co_await self.client_write_any(out, ec);
    out.clear();
    client_gone = bool(ec);
    co_return !client_gone;
  }
};

awaitable<void> ClientSession::client_write_any(const std::string& data, net::error_code& ec) {
  if (tls_) {
    ec = co_await net::write_all(*tls_, data.data(), data.size());
  } else {
    co_await client_ready_.write_all(data.data(), data.size(), ec);
  }
}

std::optional<ScatterRequest> ClientSession::scatter_candidate(const char* d, size_t n, sharding::Need& need,
                                                               bool& explain) {
  // (A transaction whose BEGIN pgrouter answered has run nothing yet: its first request may need several
  // shards too, and the transaction then goes on across shards from its start.)
  bool begun = !deferred_begin_.empty();
  if (!tracker_ || pinned_ || (client_tx_status_ != 'I' && !begun)) return std::nullopt;
  auto req = scatter_request(d, n);
  if (!req) return std::nullopt;
  if (req->extended) {
    std::string name(req->statement);
    if (req->parses && !name.empty() && tracker_->statement_query(name)) return std::nullopt;  // 42P05
    if (!req->parses) {  // a statement the client prepared before
      auto known = tracker_->statement_parse(name);
      if (!known) return std::nullopt;
      std::tie(req->sql, req->parameter_types) = *known;
    }
  }
  need = req->extended ? shard_need(protocol::frontend::kBind, req->bind_body, req->sql)
                       : shard_need(protocol::frontend::kQuery, std::string_view(d + 5, req->length - 5), {});
  explain = shard_map()->target(req->sql).explain && !begun;  // (ignored inside a transaction)
  using Kind = sharding::Need::Kind;
  if (need.kind == Kind::one) {
    known_ = {need.shard, nullptr, nullptr, nullptr, req->sql, req->statement};
    if (!req->extended)
      known_.query = d + 5;
    else
      known_.bind = req->bind_body.data();
    if (req->parses) known_.parse = d + 5;  // (a request with a Parse starts with it)
  }
  bool runs = (need.kind == Kind::scatter && scatter_allowed()) ||
              (need.kind == Kind::write_across && writes_across_allowed());
  if (begun) runs = runs && writes_across_allowed();
  if (!explain && !runs) return std::nullopt;
  return req;
}

bool ClientSession::scatter_allowed() const {
  auto mode = user_cfg_->cross_shard.value_or(db_->sharding.cross_shard);
  return mode == control::CrossShard::scatter;
}

// Takes a server of each of `shards` (for a read, a replica when reads go to replicas; for a write, the
// primary), with the client's settings; false with `why` set when one could not be had.
awaitable<bool> ClientSession::open_legs(std::vector<ShardLeg>& legs, const std::vector<int>& shards,
                                         size_t request_length, bool writes, std::string& why) {
  int home = shard_;
  for (int shard : shards) {
    ShardLeg leg;
    leg.shard = shard;
    shard_ = shard;
    int backend = writes ? primary_backend() : choose_backend(client_buf_.data(), request_length);
    if (backend < 0) backend = primary_backend();
    if (backend >= 0) leg.pool = &pool_at(backend);
    shard_ = home;
    if (!leg.pool) {
      why = "pgrouter: shard " + std::to_string(shard) + " has no primary now";
      co_return false;
    }
    pool::ServerError err;
    if (hold_servers_) leg.server = take_held(shard, *leg.pool);  // the session's own, when it holds one
    leg.held = leg.server != nullptr;
    if (!leg.server) leg.server = co_await leg.pool->acquire(err);
    if (leg.server) {
      if (!co_await sync_params(*leg.server, err)) leg.pool->release(std::move(leg.server), false);
    }
    if (!leg.server) {
      why = "pgrouter: no server of shard " + std::to_string(shard) + " for a cross-shard " +
            (writes ? "write: " : "read: ") + err.message;
      co_return false;
    }
    w_.stats().servers_active.fetch_add(1, std::memory_order_relaxed);
    leg.ready = true;  // idle until something is sent: a request that ends before that reads nothing of it
    legs.push_back(std::move(leg));
  }
  co_return true;
}

void ClientSession::release_legs(std::vector<ShardLeg>& legs, bool client_gone) {
  for (auto& leg : legs) {
    if (!leg.server) continue;
    running_legs_.remove(leg.server.get());  // before it is given back: no cancel may reach it there
    if (park_leg(leg, client_gone)) continue;
    // (Bytes after its ReadyForQuery, which a server sends only unasked, would be lost: not reused then.)
    w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
    leg.pool->release(std::move(leg.server), leg.clean() && !client_gone);
  }
}

// Whether the plan's reading of its GROUP BY names holds on the first leg's server (ScatterPlan::
// input_column_probes): false with run.refusal set when a name is an input column there, or with `why` set
// when the server failed. The leg is left idle, as it was.
awaitable<bool> ClientSession::probe_group_names(ScatterRun& run, std::string& why) {
  auto& leg = run.legs.front();
  // Inside a transaction the probe's expected error would abort it: a savepoint keeps the error to itself.
  bool in_transaction = leg.server->tx_status != 'I';
  for (const auto& probe : run.plan.input_column_probes) {
    QueryAnswer answer, savepoint;
    bool alive = true;
    if (in_transaction) alive = co_await run_on_leg(leg, "SAVEPOINT pgrouter_probe", savepoint);
    if (alive && savepoint.ok()) alive = co_await run_on_leg(leg, probe.sql, answer);
    if (alive && savepoint.ok() && in_transaction)
      alive = co_await run_on_leg(
          leg, "ROLLBACK TO SAVEPOINT pgrouter_probe; RELEASE SAVEPOINT pgrouter_probe", savepoint);
    if (!savepoint.ok()) {
      why = p::parse_error_fields(savepoint.error).message;
      co_return false;
    }
    if (!alive) {
      why = "pgrouter: shard " + std::to_string(leg.shard) + "'s server closed the connection";
      co_return false;
    }
    leg.error.clear();  // the probe's own error is no answer of the client's statement
    leg.parsed = false;
    std::string_view code = answer.ok() ? std::string_view() : p::error_sqlstate(answer.error);
    if (answer.ok() || code == "42702") {  // an input column (or several): PostgreSQL groups by it
      run.refusal = "pgrouter: GROUP BY " + probe.name +
                    " names an input column as well as an output column of a cross-shard read; PostgreSQL "
                    "groups by the input column, which pgrouter cannot merge";
      co_return false;
    }
  }
  co_return true;
}

void ClientSession::cancel_unfinished_legs(std::vector<ShardLeg>& legs) {
  for (auto& leg : legs)
    if (!leg.ready && running_legs_.contains(leg.server.get())) cancel_server(*leg.server);
}

// Sends each leg the shard's statement (after the probes its plan asks for); false with `why` set, or with
// run.refusal set when a probe found the read cannot be merged exactly.
awaitable<bool> ClientSession::start_scatter_legs(ScatterRun& run, std::string& why) {
  if (!run.plan.input_column_probes.empty()) {
    bool holds = co_await probe_group_names(run, why);
    if (!holds) co_return false;
  }
  for (size_t i = 0; i < run.legs.size(); ++i) {
    // Only the first shard is asked for the statement's parameter types (Describe S).
    std::string statement = scatter_statement(run, i == 0);
    bool sent = co_await run.legs[i].send(std::move(statement));
    if (sent) running_legs_.add(run.legs[i].server.get());  // until its answer is complete
    if (!sent) {
      why = "pgrouter: shard " + std::to_string(run.legs[i].shard) + "'s server closed the connection";
      co_return false;
    }
  }
  co_return true;
}

std::string ClientSession::scatter_statement(const ScatterRun& run, bool describe_statement) {
  std::string_view sql = run.copy_out ? run.req.sql : std::string_view(run.plan.shard_sql);
  // Results in text (the merge reads them) unless the client wants binary ones, which only a merge that
  // compares nothing passes through (scatter_refusal).
  return leg_request(run.req, sql, describe_statement, run.req.any_binary());
}

// Why a request cannot be answered exactly by a scatter (empty: it can).
std::pair<std::string, std::string> ClientSession::scatter_refusal(const ScatterRun& run) {
  const auto& plan = run.plan;
  if (run.copy_out) return {};
  if (plan.refused)
    return {run.need.message + ", and a cross-shard read cannot be answered exactly with " + plan.refusal,
            "Limit the statement to one shard key, or run it on each shard (SET pgrouter.shard_key)."};
  if (run.req.max_rows != 0)
    return {"pgrouter: a cross-shard read cannot be fetched in parts (an Execute with a row limit)",
            "Fetch every row at once (no fetch size or server-side cursor), or limit it to one shard key."};
  bool compares = plan.aggregate || !plan.order_by.empty() || plan.distinct || !plan.having.empty();
  if (run.req.any_binary() && compares)
    return {
        "pgrouter: a cross-shard read with ORDER BY, aggregates or DISTINCT must ask for its results in "
        "text format",
        "Ask for text results, or limit the statement to one shard key."};
  return {};
}

awaitable<void> ClientSession::answer_scatter(ScatterRun& run) {
  auto& out = run.out;
  auto error = [&](std::string_view body) {
    run.failed = true;
    append_message(out, be::kErrorResponse, body);
  };
  bool described = co_await run.read_descriptions();
  if (auto* e = run.first_error()) co_return error(*e);
  if (!described)
    co_return error(error_body(p::sqlstate::feature_not_supported,
                               "pgrouter: a cross-shard read must return rows on each shard"));
  std::vector<std::string_view> descriptions;
  for (auto& leg : run.legs) descriptions.push_back(leg.description);
  sharding::ScatterMerge merge(run.plan, descriptions);
  if (!merge.error().empty())
    co_return error(error_body(
        p::sqlstate::feature_not_supported,
        "pgrouter: the shards' answers to a cross-shard read cannot be merged exactly: " + merge.error()));
  if (run.req.extended) {
    if (run.req.parses) p::append_header(out, be::kParseComplete, 0);
    if (run.req.describe_statement) {
      append_message(out, be::kParameterDescription, run.legs[0].parameters);
      append_message(out, be::kRowDescription, statement_description(merge.row_description()));
    }
    p::append_header(out, be::kBindComplete, 0);
  }
  if (!run.req.extended || run.req.describe_portal)
    append_message(out, be::kRowDescription, merge.row_description());
  bool streamed = co_await run.stream(merge);
  if (auto* e = run.first_error()) co_return error(*e);
  if (!streamed) co_return;  // the client is gone
  if (!merge.error().empty())
    co_return error(error_body(
        p::sqlstate::feature_not_supported,
        "pgrouter: the shards' rows of a cross-shard read cannot be merged exactly: " + merge.error()));
  p::append_command_complete(out, merge.command_tag());
}

// COPY <sharded table> TO STDOUT: the first shard's CopyOutResponse, every shard's rows in turn (the others
// wait on their sockets meanwhile), one CopyDone and the summed count.
awaitable<void> ClientSession::answer_copy_out(ScatterRun& run) {
  auto& out = run.out;
  if (run.req.extended) {
    if (run.req.parses) p::append_header(out, be::kParseComplete, 0);
    p::append_header(out, be::kBindComplete, 0);
    if (run.req.describe_portal) p::append_header(out, be::kNoData, 0);
  }
  std::string header;
  uint64_t rows = 0;
  char type = 0;
  std::string body;
  for (auto& leg : run.legs) {
    for (;;) {
      if (!co_await run.read(leg, type, body) || !leg.error.empty()) break;
      if (type == be::kCopyOutResponse) {
        if (header.empty()) append_message(out, be::kCopyOutResponse, body);
        if (header.empty()) header = body;
        if (body != header)
          leg.error =
              error_body(p::sqlstate::feature_not_supported, "pgrouter: the shards' COPY formats differ");
      } else if (type == be::kCopyData) {
        append_message(out, be::kCopyData, body);
        if (out.size() >= kFlushAt) {
          if (!co_await run.flush()) co_return;
        }
      } else if (type == be::kCommandComplete) {
        if (body.starts_with("COPY ")) rows += std::strtoull(body.c_str() + 5, nullptr, 10);
        break;
      }
      if (!leg.error.empty()) break;
    }
    if (run.first_error()) break;
  }
  if (auto* e = run.first_error()) {
    run.failed = true;
    co_return append_message(out, be::kErrorResponse, *e);
  }
  p::append_header(out, be::kCopyDone, 0);
  p::append_command_complete(out, "COPY " + std::to_string(rows));
}

// Answers with the refusal when the scatter cannot be answered exactly; false when it can.
bool ClientSession::refuse_scatter(ScatterRun& run) {
  auto [refusal, hint] = scatter_refusal(run);
  if (refusal.empty()) return false;
  w_.stats().shard_refused_total.fetch_add(1, std::memory_order_relaxed);
  run.failed = true;
  append_message(run.out, be::kErrorResponse, error_body(p::sqlstate::feature_not_supported, refusal, hint));
  return true;
}

// The request on legs had for it (the shards' statements not yet sent): answered into run.out, and every leg
// read to its ReadyForQuery unless the client is gone. run.failed when the answer ends with an error.
awaitable<void> ClientSession::scatter_on_legs(ScatterRun& run) {
  std::string why;
  bool started = co_await start_scatter_legs(run, why);
  if (!started) {
    run.failed = true;  // the legs that got the statement are cancelled
    if (!run.refusal.empty()) w_.stats().shard_refused_total.fetch_add(1, std::memory_order_relaxed);
    append_message(run.out, be::kErrorResponse,
                   run.refusal.empty()
                       ? error_body(p::sqlstate::connection_failure, why)
                       : error_body(p::sqlstate::feature_not_supported, run.refusal,
                                    "Give the select item an alias no column has, or group by the column "
                                    "qualified with its table (t.name)."));
  } else {
    w_.stats().shard_scatters_total.fetch_add(1, std::memory_order_relaxed);
    w_.stats().shard_scatter_legs_total.fetch_add(run.legs.size(), std::memory_order_relaxed);
    if (run.copy_out)
      co_await answer_copy_out(run);
    else
      co_await answer_scatter(run);
    define_if_parsed(run.req, run.legs);
  }
  if (run.failed && !run.client_gone) cancel_unfinished_legs(run.legs);
  if (!run.client_gone) co_await run.drain();
}

awaitable<bool> ClientSession::run_scatter(const ScatterRequest& req, const sharding::Need& need) {
  ScatterRun run(*this, req, need, shard_map()->scatter_plan(req.sql));
  run.copy_out = shard_map()->target(req.sql).copy_out;
  std::string why;
  if (!refuse_scatter(run)) {
    bool opened = co_await open_legs(run.legs, need.shards, req.length, false, why);
    if (opened) co_await scatter_on_legs(run);
    if (!opened)
      append_message(run.out, be::kErrorResponse, error_body(p::sqlstate::connection_failure, why));
  }
  release_legs(run.legs, run.client_gone);
  p::append_ready_for_query(run.out, 'I');
  co_return co_await run.flush();
}

// A read across shards inside a transaction coordinated across shards (client_coordinated.cpp): run on the
// transaction's part on each shard, so it sees the transaction's own writes there; each part has its shard's
// snapshot. Any failure aborts the transaction, as an error does on one server.
awaitable<bool> ClientSession::coordinated_scatter(const ScatterRequest& req, const sharding::Need& need) {
  ScatterRun run(*this, req, need, shard_map()->scatter_plan(req.sql));
  run.copy_out = shard_map()->target(req.sql).copy_out;
  if (!refuse_scatter(run)) {
    std::string error;
    bool lent = co_await lend_legs(need.shards, run.legs, error);
    if (lent) co_await scatter_on_legs(run);
    if (!lent) {
      run.failed = true;
      append_message(run.out, be::kErrorResponse, error);
    }
  }
  char status = return_legs(run.legs, run.failed);
  p::append_ready_for_query(run.out, status);
  co_return co_await run.flush();
}

namespace {
void append_text_field(std::string& out, std::string_view name) {
  out.append(name);
  out += '\0';
  out.append(std::string_view("\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0", 18));  // text, typmod -1
}

void append_text_row(std::string& out, const std::vector<std::optional<std::string>>& cells) {
  std::string body;
  body += char(cells.size() >> 8);
  body += char(cells.size() & 0xff);
  for (auto& c : cells) {
    uint32_t len = c ? uint32_t(c->size()) : 0xffffffffu;
    for (int shift : {24, 16, 8, 0}) body += char((len >> shift) & 0xff);
    if (c) body += *c;
  }
  append_message(out, be::kDataRow, body);
}

std::string shard_list(const std::vector<int>& shards) {
  std::string out;
  for (int s : shards) out += (out.empty() ? "" : ", ") + std::to_string(s);
  return out;
}
}  // namespace

// The rows of `/* pgrouter: explain */`: (shard, statement it gets, why).
std::vector<std::vector<std::optional<std::string>>> ClientSession::explain_rows(const ScatterRequest& req,
                                                                                 const sharding::Need& need) {
  using Kind = sharding::Need::Kind;
  std::string sql(req.sql);
  if (need.kind == Kind::one) {
    const auto& t = shard_map()->target(req.sql);
    std::string why = t.scope == sql::ShardScope::keyed ? "its shard key values are on this shard"
                      : !t.unsharded_tables.empty()     ? "its tables live on the default shard"
                                                    : "the explicit shard key (SET pgrouter.shard_key, the "
                                                      "startup option or a comment) is on this shard";
    return {{std::to_string(need.shard), sql, why}};
  }
  if (need.kind == Kind::any) {
    std::optional<int> session_shard;
    explicit_shard(session_shard);
    int shard = session_shard.value_or(shard_map()->default_shard());
    return {{std::to_string(shard), sql,
             session_shard ? "it names no shard key: the session's pgrouter.shard_key shard"
                           : "it names no shard key: sharding.default_shard"}};
  }
  if (need.kind == Kind::refuse) return {{std::nullopt, std::nullopt, "refused (0A000): " + need.message}};
  if (need.kind == Kind::write_across) {
    if (!writes_across_allowed())
      return {{std::nullopt, std::nullopt,
               "refused (0A000): " + need.message + ", and sharding.cross_shard_writes is reject"}};
    std::vector<std::vector<std::optional<std::string>>> rows;
    for (int s : need.shards)
      rows.push_back({std::to_string(s), sql,
                      "cross-shard write on shards " + shard_list(need.shards) +
                          ", committed on all or none by two-phase commit"});
    return rows;
  }
  if (!scatter_allowed())
    return {{std::nullopt, std::nullopt,
             "refused (0A000): " + need.message + ", and sharding.cross_shard is reject"}};
  if (shard_map()->target(req.sql).copy_out) {
    std::vector<std::vector<std::optional<std::string>>> rows;
    for (int s : need.shards)
      rows.push_back(
          {std::to_string(s), sql, "COPY TO of shards " + shard_list(need.shards) + ", rows in turn"});
    return rows;
  }
  const auto& plan = *shard_map()->scatter_plan(req.sql);
  if (plan.refused)
    return {{std::nullopt, std::nullopt,
             "refused (0A000): a cross-shard read cannot be answered exactly with " + plan.refusal}};
  std::vector<std::vector<std::optional<std::string>>> rows;
  for (int s : need.shards)
    rows.push_back({std::to_string(s), plan.shard_sql,
                    "cross-shard read on shards " + shard_list(need.shards) + ", merged by pgrouter"});
  return rows;
}

awaitable<bool> ClientSession::explain_shards(const ScatterRequest& req, const sharding::Need& need) {
  std::string out;
  std::string description("\0\3", 2);
  for (auto name : {"shard", "statement", "reason"}) append_text_field(description, name);
  if (req.extended) {
    if (req.parses) p::append_header(out, be::kParseComplete, 0);
    if (req.describe_statement) {
      // A Parse's parameter types are laid out as a ParameterDescription's body.
      append_message(out, be::kParameterDescription,
                     req.parameter_types.empty() ? std::string_view("\0\0", 2) : req.parameter_types);
      append_message(out, be::kRowDescription, description);
    }
    p::append_header(out, be::kBindComplete, 0);
  }
  if (!req.extended || req.describe_portal) append_message(out, be::kRowDescription, description);
  auto rows = explain_rows(req, need);
  for (auto& row : rows) append_text_row(out, row);
  p::append_command_complete(out, "EXPLAIN");
  p::append_ready_for_query(out, 'I');
  net::error_code ec;
  co_await client_write_any(out, ec);
  co_return !ec;
}

}  // namespace pgrouter::session
