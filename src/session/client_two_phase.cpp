// Cross-shard writes. A request of scatter_request()'s shapes whose one statement writes on several shards
// (a write to a reference table: every shard), sent outside a transaction, runs on each shard's primary in a
// transaction of its own, with the question whether its part wrote (was given a transaction id) behind it; if
// any shard fails, each is rolled back. Otherwise commit_across() commits the parts that wrote nothing
// plainly first, so that if one of those COMMITs fails (a serialization failure) nothing is committed yet and
// all roll back; then a lone writing part commits plainly (one part is atomic by itself), and two or more are
// committed by two-phase commit: each PREPAREs, the decision is recorded on the default shard
// (sharding/two_phase.hpp), each is committed. Transactions across shards (client_coordinated.cpp) and COPY
// across shards end the same way, their parts asked at commit. The client gets one answer, as from one
// PostgreSQL: the rows of RETURNING from every shard, and one CommandComplete whose count is the shards' sum.
// An INSERT ... VALUES whose rows are on several shards gives each shard an INSERT of its rows only
// (session/insert_split.hpp), and its RETURNING rows come back in the VALUES' order.
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
// RETURNING rows are held until the outcome is known (a client must not see rows of a write that is then
// rolled back); beyond this the write is refused.
constexpr size_t kMaxReturning = 16u << 20;
constexpr const char* kInsufficientResources = "53000";
constexpr const char* kSerializationFailure = "40001";
constexpr const char* kCompletionUnknown = "40003";
constexpr const char* kUndefinedTable = "42P01";

std::string sqlstate_of(std::string_view error) { return std::string(p::error_sqlstate(error)); }

bool answers_xid_probe(const ShardLeg& leg) {
  auto version = leg.server->params.find("server_version");
  return version != leg.server->params.end() && tp::answers_xid_probe(version->second);
}

// The probe's one value: NULL when the part was given no transaction id.
PartWrote wrote_of(const std::vector<std::optional<std::string>>& row) {
  return row.size() == 1 && !row[0] ? PartWrote::no : PartWrote::yes;
}

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

// Each leg: BEGIN, then the statement, then (with several legs) the question whether its part wrote, all in
// one round trip; their answers read (rows kept); on any error every leg rolls back.
awaitable<void> ClientSession::write_on_legs(WriteRun& run) {
  std::string begin, probe;
  if (!run.begun) p::append_query(begin, "BEGIN");
  p::append_query(probe, tp::kXidProbe);
  run.parameters.assign(run.legs.size(), {});
  run.rows.assign(run.legs.size(), {});
  run.wrote.assign(run.legs.size(), PartWrote::unknown);
  std::vector<bool> asked(run.legs.size(), false);
  for (size_t i = 0; i < run.legs.size(); ++i) {
    // A leg whose send fails is broken (its error kept) and is not read below.
    const ScatterRequest& req = run.request(i);
    asked[i] = !run.begun && run.legs.size() > 1 && answers_xid_probe(run.legs[i]);
    std::string bytes = begin + leg_request(req, req.sql, i == 0 || run.splits(), true);
    if (asked[i]) bytes += probe;
    bool sent = co_await run.legs[i].send(std::move(bytes));
    if (sent) running_legs_.add(run.legs[i].server.get());  // a cancel of the client's reaches it
  }
  for (size_t i = 0; i < run.legs.size(); ++i)
    co_await read_write_answers(run, i, run.begun ? 1 : 0, asked[i] ? 3 : 2);
  // The statement's answers are complete: what follows (the commit, or ROLLBACK) is pgrouter's, as a COMMIT
  // is PostgreSQL's, and not cancelled.
  for (auto& leg : run.legs) running_legs_.remove(leg.server.get());
  if (const auto* e = first_leg_error(run.legs)) run.fail(*e);
  if (run.error.empty() || run.begun) co_return;  // (a transaction's parts roll back at its ROLLBACK)
  co_await rollback_legs(run.legs);
}

// Leg i's answers, from the `from`-th up to its `answers`-th ReadyForQuery: BEGIN's (0), the statement's (1:
// descriptions, rows and tag kept), then the probe's (2), if it was sent (whether the part wrote).
awaitable<void> ClientSession::read_write_answers(WriteRun& run, size_t i, int from, int answers) {
  auto& leg = run.legs[i];
  char type = 0;
  std::string body;
  for (int done = from; done < answers && !leg.broken;) {
    bool read = co_await leg.read(type, body);
    if (!read) break;
    if (type == be::kReadyForQuery) {
      if (++done < answers) leg.ready = leg.done = false;
    } else if (done == 2) {
      if (type == be::kDataRow) run.wrote[i] = wrote_of(p::data_row_texts(body));
    } else if (type == be::kCommandComplete && done == 1) {
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

// Every part done, commits them: those that wrote nothing plainly and first, then a lone writing part
// plainly, or two or more by two-phase commit. Whatever fails first is the client's error, and every part not
// committed yet rolls back.
awaitable<void> ClientSession::commit_across(WriteRun& run) {
  std::vector<ShardLeg*> readers, writers;
  co_await sort_parts(run, readers, writers);
  if (!run.error.empty()) {
    co_await rollback_legs(run.legs);
    co_return;
  }
  co_await commit_readers(run, readers);
  if (!run.error.empty()) {
    co_await rollback_parts(writers);
    co_return;
  }
  if (writers.size() >= 2) {
    co_await prepare_and_commit(run, writers);
    co_return;
  }
  if (writers.size() == 1) co_await commit_one_part(run, *writers[0]);
  if (run.error.empty()) w_.stats().one_phase_commits_total.fetch_add(1, std::memory_order_relaxed);
}

// Which parts wrote: as their statement's answer said, else asked of all at once (kXidProbe). A lone part
// is not asked (it commits plainly either way), and a server too old to answer counts as having written. A
// part whose answer failed sets the error.
awaitable<void> ClientSession::sort_parts(WriteRun& run, std::vector<ShardLeg*>& readers,
                                          std::vector<ShardLeg*>& writers) {
  run.wrote.resize(run.legs.size(), PartWrote::unknown);
  std::vector<ShardLeg*> asked;
  for (size_t i = 0; i < run.legs.size(); ++i)
    if (run.wrote[i] == PartWrote::unknown && run.legs.size() > 1 && answers_xid_probe(run.legs[i]))
      asked.push_back(&run.legs[i]);
  std::vector<QueryAnswer> answers;
  std::string probe(tp::kXidProbe);
  co_await run_on_legs(asked, probe, answers);
  for (size_t i = 0, k = 0; i < run.legs.size(); ++i) {
    ShardLeg* leg = &run.legs[i];
    if (k < asked.size() && asked[k] == leg) {
      const QueryAnswer& a = answers[k++];
      if (!a.ok()) run.fail(a.error);
      run.wrote[i] = a.ok() && a.rows.size() == 1 ? wrote_of(a.rows[0]) : PartWrote::yes;
    }
    (run.wrote[i] == PartWrote::no ? readers : writers).push_back(leg);
  }
}

// COMMIT of the parts that wrote nothing, before any writing part commits or prepares: one that fails (a
// serialization failure, a broken connection) is the client's error while nothing is committed that matters.
awaitable<void> ClientSession::commit_readers(WriteRun& run, std::vector<ShardLeg*> readers) {
  std::vector<QueryAnswer> committed;
  std::string commit = "COMMIT";
  co_await run_on_legs(readers, commit, committed);
  for (size_t i = 0; i < committed.size() && run.error.empty(); ++i) {
    if (committed[i].ok()) continue;
    auto f = p::parse_error_fields(committed[i].error);
    run.fail(error_body(f.code, "pgrouter: COMMIT failed on shard " + std::to_string(readers[i]->shard) +
                                    ": " + f.message + "; the transaction was rolled back on every shard"));
  }
}

// The one part that wrote, committed plainly: one part is atomic by itself. PostgreSQL's error when it rolls
// the part back at COMMIT (a deferred constraint, a serialization failure) is the client's; a connection
// that breaks before the answer leaves the outcome unknown, and the client is told so.
awaitable<void> ClientSession::commit_one_part(WriteRun& run, ShardLeg& leg) {
  QueryAnswer a;
  std::string commit = "COMMIT";
  bool alive = co_await run_on_leg(leg, commit, a);
  if (alive) {
    if (!a.ok()) run.fail(a.error);
    co_return;
  }
  log::warn(
      "a shard's server broke during the COMMIT of the one part that wrote: its outcome is unknown",
      {{"session", id_}, {"shard", uint64_t(leg.shard)}, {"error", p::parse_error_fields(a.error).message}});
  run.fail(error_body(kCompletionUnknown,
                      "pgrouter: shard " + std::to_string(leg.shard) +
                          "'s server broke before it answered the COMMIT of the only part that wrote: that "
                          "part may or may not be committed (the other parts wrote nothing)",
                      "Check whether the write took effect before repeating it."));
}

awaitable<void> ClientSession::rollback_parts(std::vector<ShardLeg*> parts) {
  std::vector<ShardLeg*> alive;
  for (auto* leg : parts)
    if (!leg->broken) alive.push_back(leg);
  std::vector<QueryAnswer> ignored;
  std::string rollback = "ROLLBACK";
  co_await run_on_legs(alive, rollback, ignored);
}

// PREPARE on every part, the decision recorded, then COMMIT PREPARED (or ROLLBACK PREPARED) on every part.
awaitable<void> ClientSession::prepare_and_commit(WriteRun& run, std::vector<ShardLeg*> parts) {
  run.gid = tp::new_gid();
  std::vector<QueryAnswer> prepared;
  std::string prepare = tp::prepare_sql(run.gid);
  co_await run_on_legs(parts, prepare, prepared);
  auto failed = std::find_if(prepared.begin(), prepared.end(), [](auto& a) { return !a.ok(); });
  if (failed != prepared.end()) {
    auto f = p::parse_error_fields(failed->error);
    int shard = parts[size_t(failed - prepared.begin())]->shard;
    run.fail(error_body(
        f.code, "pgrouter: PREPARE TRANSACTION failed on shard " + std::to_string(shard) + ": " + f.message,
        "A cross-shard write needs max_prepared_transactions above 0 on every shard."));
    std::vector<ShardLeg*> done;
    for (size_t i = 0; i < parts.size(); ++i)
      if (prepared[i].ok()) done.push_back(parts[i]);
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
  for (auto* leg : parts) (first.empty() || !tp::crash_points_armed() ? first : rest).push_back(leg);
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
                 {"shard", uint64_t(parts[i]->shard)},
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

awaitable<bool> ClientSession::send_write_answer(WriteRun& run, char status) {
  std::string out;
  answer_write(run, out);
  p::append_ready_for_query(out, status);
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
  if (run.error.empty()) co_await commit_across(run);
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
  bool sent = co_await send_write_answer(run, status);
  co_return sent;
}

}  // namespace pgrouter::session
