// Cross-shard writes. A request of scatter_request()'s shapes whose one statement writes on several shards
// (a write to a reference table: every shard), sent outside a transaction, runs on each shard's primary in a
// transaction of its own; if every shard succeeds, each PREPAREs it, the decision is recorded on the default
// shard (sharding/two_phase.hpp), and each is committed; otherwise each is rolled back. The client gets
// one answer, as from one PostgreSQL: the rows of RETURNING from every shard, and one CommandComplete whose
// count is the shards' sum. An INSERT ... VALUES whose rows are on several shards gives each shard an INSERT
// of its rows only (session/insert_split.hpp), and its RETURNING rows come back in the VALUES' order.
#include <algorithm>

#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/session/insert_split.hpp"
#include "pgrouter/sharding/two_phase.hpp"
#include "shard_leg.hpp"
#include "write_run.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;
namespace tp = pgrouter::sharding::two_phase;

namespace {
std::vector<ShardLeg*> leg_pointers(std::vector<ShardLeg>& legs) {
  std::vector<ShardLeg*> out;
  for (auto& leg : legs) out.push_back(&leg);
  return out;
}

// RETURNING rows are held until the outcome is known (a client must not see rows of a write that is then
// rolled back); beyond this the write is refused.
constexpr size_t kMaxReturning = 16u << 20;
constexpr const char* kInsufficientResources = "53000";
constexpr const char* kSerializationFailure = "40001";
constexpr const char* kCompletionUnknown = "40003";
constexpr const char* kUndefinedTable = "42P01";

std::string sqlstate_of(std::string_view error) { return std::string(p::error_sqlstate(error)); }

}  // namespace

namespace {
// The split's statements as requests like the client's, for leg_request().
std::vector<ScatterRequest> shares_of(const ScatterRequest& req, const InsertSplit& split) {
  std::vector<ScatterRequest> out;
  for (const auto& s : split.shards) {
    ScatterRequest share = req;
    share.sql = s.sql;
    share.parameter_types = s.parameter_types;
    share.parameters = s.parameters;
    out.push_back(share);
  }
  return out;
}

// RETURNING rows in the order of the statement's rows: each shard returns its rows in the order it got them.
// When a shard returned another number of rows than it inserted (ON CONFLICT DO NOTHING skipped some), the
// rows cannot be matched to theirs and come shard after shard (SQL promises no order either way).
std::string rows_in_order(const InsertSplit& split, const std::vector<std::vector<std::string>>& rows) {
  std::string out;
  bool matched = rows.size() == split.shards.size();
  for (size_t i = 0; matched && i < rows.size(); ++i) matched = rows[i].size() == split.shards[i].rows.size();
  if (!matched) {
    for (const auto& leg : rows)
      for (const auto& r : leg) out += r;
    return out;
  }
  std::vector<std::pair<size_t, const std::string*>> ordered;
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t k = 0; k < rows[i].size(); ++k) ordered.emplace_back(split.shards[i].rows[k], &rows[i][k]);
  std::sort(ordered.begin(), ordered.end());
  for (const auto& [row, message] : ordered) out += *message;
  return out;
}
}  // namespace

bool ClientSession::writes_across_allowed() const {
  return db_->sharding.cross_shard_writes == control::CrossShardWrites::two_phase;
}

// Each leg: BEGIN, then the statement; their answers read (rows kept); on any error every leg rolls back.
awaitable<void> ClientSession::write_on_legs(WriteRun& run) {
  std::string begin;
  if (!run.begun) p::append_query(begin, "BEGIN");
  run.parameters.assign(run.legs.size(), {});
  run.rows.assign(run.legs.size(), {});
  for (size_t i = 0; i < run.legs.size(); ++i) {
    // A leg whose send fails is broken (its error kept) and is not read below.
    const ScatterRequest& req = run.request(i);
    std::string bytes = begin + leg_request(req, req.sql, i == 0 || run.splits(), true);
    bool sent = co_await run.legs[i].send(std::move(bytes));
    if (sent) running_legs_.add(run.legs[i].server.get());  // a cancel of the client's reaches it
  }
  char type = 0;
  std::string body;
  for (size_t i = 0; i < run.legs.size(); ++i) {
    auto& leg = run.legs[i];
    for (int answers = run.begun ? 1 : 0; answers < 2 && !leg.broken;) {  // BEGIN's, then the statement's
      bool read = co_await leg.read(type, body);
      if (!read) break;
      if (type == be::kReadyForQuery) {
        if (++answers < 2) leg.ready = leg.done = false;
      } else if (type == be::kCommandComplete && answers == 1) {
        run.tags.emplace_back(body.c_str());
      } else if (type == be::kParameterDescription) {
        run.parameters[i] = std::move(body);
      } else if (type == be::kRowDescription && i == 0) {
        run.description = std::move(body);
      } else if (type == be::kDataRow) {
        run.row_bytes += 5 + body.size();
        append_message(run.rows[i].emplace_back(), be::kDataRow, body);
        if (run.row_bytes > kMaxReturning)
          run.fail(error_body(kInsufficientResources,
                              "pgrouter: a cross-shard write's RETURNING rows exceed 16 MiB",
                              "Return fewer rows, or limit the statement to one shard key."));
      }
    }
  }
  // The statement's answers are complete: what follows (PREPARE and COMMIT PREPARED, or ROLLBACK) is
  // pgrouter's, as a COMMIT is PostgreSQL's, and not cancelled.
  for (auto& leg : run.legs) running_legs_.remove(leg.server.get());
  if (const auto* e = first_leg_error(run.legs)) run.fail(*e);
  if (run.error.empty() || run.begun) co_return;  // (a transaction's parts roll back at its ROLLBACK)
  co_await rollback_legs(run.legs);
}

// PREPARE on every leg, the decision recorded, then COMMIT PREPARED (or ROLLBACK PREPARED) on every leg.
awaitable<void> ClientSession::prepare_and_commit(WriteRun& run) {
  run.gid = tp::new_gid();
  std::vector<QueryAnswer> prepared;
  std::vector<ShardLeg*> every = leg_pointers(run.legs);
  std::string prepare = tp::prepare_sql(run.gid);
  co_await run_on_legs(every, prepare, prepared);
  auto failed = std::find_if(prepared.begin(), prepared.end(), [](auto& a) { return !a.ok(); });
  if (failed != prepared.end()) {
    auto f = p::parse_error_fields(failed->error);
    int shard = run.legs[size_t(failed - prepared.begin())].shard;
    run.fail(error_body(
        f.code, "pgrouter: PREPARE TRANSACTION failed on shard " + std::to_string(shard) + ": " + f.message,
        "A cross-shard write needs max_prepared_transactions above 0 on every shard."));
    std::vector<ShardLeg*> done;
    for (size_t i = 0; i < run.legs.size(); ++i)
      if (prepared[i].ok()) done.push_back(&run.legs[i]);
    std::vector<QueryAnswer> ignored;
    std::string rollback = tp::finish_sql(run.gid, tp::Outcome::abort);
    co_await run_on_legs(done, rollback, ignored);
    co_return;
  }
  tp::crash_point("after_prepare");
  auto outcome = co_await decide(run);
  tp::crash_point("after_decision");
  if (!outcome) {
    w_.stats().two_phase_in_doubt_total.fetch_add(1, std::memory_order_relaxed);
    run.fail(
        error_body(kCompletionUnknown,
                   "pgrouter: the outcome of the cross-shard write could not be recorded; it is committed "
                   "on every shard or on none, and recovery settles which within seconds",
                   "Check whether the write took effect before repeating it."));
    co_return;
  }
  // Every leg at once; under the test hook the first alone, then the rest, so it can stop between them.
  std::vector<ShardLeg*> first, rest;
  for (auto& leg : run.legs) (first.empty() || !tp::crash_points_armed() ? first : rest).push_back(&leg);
  std::vector<QueryAnswer> finished, finished_rest;
  std::string finish = tp::finish_sql(run.gid, *outcome);
  co_await run_on_legs(first, finish, finished);
  tp::crash_point("after_first_commit");
  co_await run_on_legs(rest, finish, finished_rest);
  finished.insert(finished.end(), finished_rest.begin(), finished_rest.end());
  for (size_t i = 0; i < finished.size(); ++i)
    if (!finished[i].ok())
      log::warn("a shard did not finish its part of a cross-shard write: recovery will",
                {{"session", id_},
                 {"shard", uint64_t(run.legs[i].shard)},
                 {"gid", run.gid},
                 {"error", p::parse_error_fields(finished[i].error).message}});
  if (*outcome == tp::Outcome::commit) {
    w_.stats().two_phase_committed_total.fetch_add(1, std::memory_order_relaxed);
  } else {
    w_.stats().two_phase_aborted_total.fetch_add(1, std::memory_order_relaxed);
    run.fail(
        error_body(kSerializationFailure,
                   "pgrouter: the cross-shard write was rolled back: recovery decided it before its commit "
                   "was recorded",
                   "Run the statement again."));
  }
}

// Records the commit decision on the default shard (over the leg there, else a server taken for it): the
// outcome, or nullopt when it is unknown (the record's COMMIT may or may not have happened).
awaitable<std::optional<tp::Outcome>> ClientSession::decide(WriteRun& run) {
  int home = shard_map()->default_shard();
  std::vector<ShardLeg> extra;
  ShardLeg* leg = nullptr;
  for (auto& l : run.legs)
    if (l.shard == home) leg = &l;
  if (!leg) {
    std::string why;
    std::vector<int> shards(1, home);
    bool opened = co_await open_legs(extra, shards, 0, true, why);
    if (!opened) {
      release_legs(extra, false);
      co_return tp::Outcome::abort;  // nothing recorded: no commit was promised
    }
    leg = &extra[0];
  }
  std::optional<tp::Outcome> outcome;
  QueryAnswer a;
  for (int attempt = 0; attempt < 2; ++attempt) {
    a = {};
    std::string decide = tp::decide_sql(run.gid, tp::Outcome::commit);
    bool alive = co_await run_on_leg(*leg, decide, a);
    if (!alive) break;  // unknown: the COMMIT may have been done
    if (a.ok()) {
      outcome = tp::decision_won(a.tags).value_or(false) ? tp::Outcome::commit : tp::Outcome::abort;
      break;
    }
    QueryAnswer ignored;
    co_await run_on_leg(*leg, "ROLLBACK", ignored);  // the record's transaction failed: nothing recorded
    outcome = tp::Outcome::abort;
    if (attempt > 0 || sqlstate_of(a.error) != kUndefinedTable) break;
    std::string create = tp::create_table_sql();
    co_await run_on_leg(*leg, create, ignored);  // first use: the table is made
  }
  if (outcome == tp::Outcome::abort && !a.ok())
    log::warn("the decision of a cross-shard write could not be recorded: rolled back",
              {{"session", id_}, {"gid", run.gid}, {"error", p::parse_error_fields(a.error).message}});
  release_legs(extra, false);
  co_return outcome;
}

void ClientSession::answer_write(WriteRun& run, std::string& out) {
  if (!run.error.empty()) {
    append_message(out, be::kErrorResponse, run.error);
    return;
  }
  auto tag = tp::combined_tag(run.tags);
  if (!tag) {
    append_message(out, be::kErrorResponse,
                   error_body(p::sqlstate::internal_error, "pgrouter: the shards' command tags differ"));
    return;
  }
  auto describe = [&](std::string_view description) {
    if (description.empty())
      p::append_header(out, be::kNoData, 0);
    else
      append_message(out, be::kRowDescription, description);
  };
  if (run.req.extended) {
    if (run.req.parses) p::append_header(out, be::kParseComplete, 0);
    if (run.req.describe_statement) {
      append_message(out, be::kParameterDescription,
                     run.splits() ? merged_parameter_description(run.req, run.split.shards, run.parameters)
                                  : run.parameters.at(0));
      describe(statement_description(run.description));
    }
    p::append_header(out, be::kBindComplete, 0);
    if (run.req.describe_portal) describe(run.description);
  } else if (!run.description.empty()) {
    append_message(out, be::kRowDescription, run.description);
  }
  if (run.splits()) {
    out += rows_in_order(run.split, run.rows);
  } else {
    for (const auto& leg : run.rows)
      for (const auto& r : leg) out += r;
  }
  p::append_command_complete(out, *tag);
}

awaitable<bool> ClientSession::run_write_across(const ScatterRequest& req, const sharding::Need& need) {
  WriteRun run(req, need);
  if (w_.classifier().get(req.sql).statements != 1) {
    w_.stats().shard_refused_total.fetch_add(1, std::memory_order_relaxed);
    run.fail(error_body(p::sqlstate::feature_not_supported,
                        need.message + ", and a cross-shard write must be a statement of its own",
                        "Send each statement as a query of its own."));
  } else if (req.max_rows != 0) {
    w_.stats().shard_refused_total.fetch_add(1, std::memory_order_relaxed);
    run.fail(
        error_body(p::sqlstate::feature_not_supported,
                   "pgrouter: a cross-shard write cannot be fetched in parts (an Execute with a row limit)"));
  } else {
    co_await write_across(run);
  }
  release_legs(run.legs, false);
  bool sent = co_await send_write_answer(run);
  co_return sent;
}

awaitable<bool> ClientSession::send_write_answer(WriteRun& run) {
  std::string out;
  answer_write(run, out);
  p::append_ready_for_query(out, 'I');
  net::error_code ec;
  co_await client_write_any(out, ec);
  co_return !ec;
}

// An INSERT whose rows are on several shards: each leg's statement; false (with the error) when it cannot be
// cut.
bool ClientSession::split_write(WriteRun& run) {
  if (!run.splits()) return true;
  run.split = split_insert(run.req, run.need.row_shards);
  if (!run.split.error.empty()) {
    run.fail(
        error_body(run.split.sqlstate, run.split.error, "Send one INSERT per shard key (or per shard)."));
    return false;
  }
  run.shares = shares_of(run.req, run.split);
  return true;
}

// A named Parse that every shard accepted created the client's statement, as on one server.
void ClientSession::define_if_parsed(const ScatterRequest& req, const std::vector<ShardLeg>& legs) {
  bool parsed = std::all_of(legs.begin(), legs.end(), [](auto& l) { return l.parsed; });
  if (req.parses && !req.statement.empty() && parsed)
    tracker_->define_statement(std::string(req.statement), req.sql, req.parameter_types);
}

awaitable<void> ClientSession::write_across(WriteRun& run) {
  if (!split_write(run)) co_return;
  std::string why;
  bool opened = co_await open_legs(run.legs, run.need.shards, run.req.length, true, why);
  if (!opened) co_return run.fail(error_body(p::sqlstate::connection_failure, why));
  co_await write_on_legs(run);
  if (run.error.empty()) co_await prepare_and_commit(run);
  define_if_parsed(run.req, run.legs);
  write_done_at_ = routing::steady_ms();  // read-your-writes: as after any write on the primaries
  required_lsn_ = 0;
}

// A statement that writes on several shards inside a transaction coordinated across shards
// (client_coordinated.cpp): run on the transaction's part on each of those shards, committed with the rest
// of the transaction. An error aborts the transaction, as on one server.
awaitable<bool> ClientSession::coordinated_write(const ScatterRequest& req, const sharding::Need& need) {
  WriteRun run(req, need);
  run.begun = true;
  if (split_write(run)) {
    std::string error;
    bool lent = co_await lend_legs(need.shards, run.legs, error);
    if (lent) co_await write_on_legs(run);
    if (!lent) run.fail(std::move(error));
    define_if_parsed(req, run.legs);
  }
  char status = return_legs(run.legs, !run.error.empty());
  std::string out;
  answer_write(run, out);
  p::append_ready_for_query(out, status);
  net::error_code ec;
  co_await client_write_any(out, ec);
  co_return !ec;
}

}  // namespace pgrouter::session
