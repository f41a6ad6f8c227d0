#include "pgrouter/session/two_phase_recovery.hpp"

#include "pgrouter/control/log.hpp"
#include "pgrouter/routing/router.hpp"
#include "pgrouter/sharding/two_phase.hpp"
#include "pgrouter/worker.hpp"
#include "shard_leg.hpp"

namespace pgrouter::session {
namespace tp = pgrouter::sharding::two_phase;

namespace {
constexpr const char* kUndefinedTable = "42P01";

struct PreparedPart {
  std::string gid, owner;
  bool past_grace = false;
  int shard = 0;
};

// The backend that is the shard's primary now: with role: auto the one the health probes found (a failover
// may have made another host of the list the primary, and prepared parts live there), else the first.
int primary_of(Worker& w, const control::DatabaseConfig& db, const control::UserConfig& user, int shard) {
  const auto& hosts = db.shards[size_t(shard)];
  if (!hosts.auto_roles) return 0;
  std::vector<const routing::BackendHealth*> health(hosts.backends());
  for (size_t i = 0; i < health.size(); ++i)
    health[i] = w.pool_for(db, user, shard, int(i)).settings().health.get();
  return routing::find_primary(health);
}

// A server of the shard's primary for `user`, taken from the worker's pool (false: none could be had).
awaitable<bool> take(Worker& w, const control::DatabaseConfig& db, const control::UserConfig& user, int shard,
                     ShardLeg& leg) {
  leg.shard = shard;
  int primary = primary_of(w, db, user, shard);
  if (primary < 0) {
    log::warn("two-phase recovery: the shard has no primary now; retried in the next round",
              {{"database", db.name}, {"shard", uint64_t(shard)}});
    co_return false;
  }
  leg.pool = &w.pool_for(db, user, shard, primary);
  pool::ServerError err;
  leg.server = co_await leg.pool->acquire(err);
  if (!leg.server)
    log::warn(
        "two-phase recovery: no server",
        {{"database", db.name}, {"shard", uint64_t(shard)}, {"user", user.name}, {"error", err.message}});
  co_return bool(leg.server);
}

void give_back(ShardLeg& leg) {
  if (leg.server) leg.pool->release(std::move(leg.server), leg.clean());
}

// Runs one query on a server taken for it; the answer (with an 08006 error when no server was had).
awaitable<QueryAnswer> query_on(Worker& w, const control::DatabaseConfig& db, const control::UserConfig& user,
                                int shard, std::string sql) {
  QueryAnswer a;
  ShardLeg leg;
  bool taken = co_await take(w, db, user, shard, leg);
  if (!taken) {
    a.error = error_body(protocol::sqlstate::connection_failure, "no server");
    co_return a;
  }
  co_await run_on_leg(leg, std::move(sql), a);
  if (leg.server && leg.server->tx_status != 'I') {
    QueryAnswer ignored;
    co_await run_on_leg(leg, "ROLLBACK", ignored);
  }
  give_back(leg);
  co_return a;
}

const control::UserConfig* user_of(const control::Config& c, std::string_view server_role) {
  for (const auto& u : c.users)
    if (u.backend_user == server_role) return &u;
  return nullptr;
}

// The gid's decision: an abort recorded unless a commit is there already.
awaitable<std::optional<tp::Outcome>> decision_of(Worker& w, const control::DatabaseConfig& db,
                                                  const control::UserConfig& user, const std::string& gid) {
  int home = int(db.sharding.default_shard);
  std::string decide = tp::decide_sql(gid, tp::Outcome::abort);
  auto a = co_await query_on(w, db, user, home, decide);
  if (!a.ok() && protocol::error_sqlstate(a.error) == kUndefinedTable) {
    std::string create = tp::create_table_sql();
    auto created = co_await query_on(w, db, user, home, create);
    (void)created;  // (the insert below says whether it worked)
    a = co_await query_on(w, db, user, home, decide);
  }
  if (!a.ok()) co_return std::nullopt;
  std::string read = tp::outcome_sql(gid);
  a = co_await query_on(w, db, user, home, read);
  if (!a.ok() || a.rows.empty() || a.rows[0].empty() || !a.rows[0][0]) co_return std::nullopt;
  co_return tp::parse_outcome(*a.rows[0][0]);
}

awaitable<void> settle(Worker& w, const control::Config& c, const control::DatabaseConfig& db,
                       const PreparedPart& part) {
  const auto* user = user_of(c, part.owner);
  if (!user) {
    log::warn(
        "two-phase recovery: a prepared part's owner is no configured user; finish it by hand",
        {{"database", db.name}, {"shard", uint64_t(part.shard)}, {"gid", part.gid}, {"owner", part.owner}});
    co_return;
  }
  auto outcome = co_await decision_of(w, db, *user, part.gid);
  if (!outcome) co_return;  // tried again at the next round
  std::string finish = tp::finish_sql(part.gid, *outcome);
  auto a = co_await query_on(w, db, *user, part.shard, finish);
  if (!a.ok()) co_return;  // (42704: another instance finished it meanwhile)
  bool committed = *outcome == tp::Outcome::commit;
  auto& stat =
      committed ? w.stats().two_phase_recovered_committed_total : w.stats().two_phase_recovered_aborted_total;
  stat.fetch_add(1, std::memory_order_relaxed);
  log::info("two-phase recovery finished a prepared part", {{"database", db.name},
                                                            {"shard", uint64_t(part.shard)},
                                                            {"gid", part.gid},
                                                            {"outcome", committed ? "commit" : "abort"}});
}

awaitable<void> recover_database(Worker& w, const control::Config& c, const control::DatabaseConfig& db) {
  if (c.users.empty()) co_return;
  const auto& scanner = c.users.front();  // pg_prepared_xacts shows every role's parts to any role
  std::vector<PreparedPart> parts;
  bool every_shard = true;
  for (int s = 0; s < int(db.shards.size()); ++s) {
    std::string scan = tp::in_doubt_sql();
    auto a = co_await query_on(w, db, scanner, s, scan);
    every_shard &= a.ok();
    for (auto& row : a.rows)
      if (row.size() == 3 && row[0] && row[1] && row[2] && tp::is_ours(*row[0]))
        parts.push_back({*row[0], *row[1], *row[2] == "t", s});
  }
  std::vector<std::string> still;  // decisions a shard may still need
  for (const auto& part : parts) {
    still.push_back(part.gid);
    if (!part.past_grace) continue;
    co_await settle(w, c, db, part);
  }
  // Old decisions go once no shard can still need them (every shard was read).
  if (!every_shard) co_return;
  std::string cleanup = tp::cleanup_sql(still);
  auto cleaned = co_await query_on(w, db, scanner, int(db.sharding.default_shard), cleanup);
  (void)cleaned;  // (tried again next round)
}
}  // namespace

awaitable<void> recover_in_doubt(Worker& w) {
  auto config = w.config();  // kept alive for the whole round
  if (!config) co_return;
  for (const auto& db : config->databases)
    if (db.shards.size() > 1 && db.sharding.cross_shard_writes == control::CrossShardWrites::two_phase)
      co_await recover_database(w, *config, db);
}

}  // namespace pgrouter::session
