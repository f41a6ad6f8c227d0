// Users and databases that are not in the config: a user from the auth_file or from auth_query (run over a
// pooled server connection as auth_user, answers cached per worker), and the fallback ("*") database entry
// that serves any database name not listed. See docs/AUTH.md.
#include "pgrouter/control/log.hpp"
#include "pgrouter/control/userlist.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;

bool ClientSession::resolve_database() {
  if (own_db_ && own_db_->name == database_) {
    db_ = own_db_.get();
    return true;
  }
  db_ = config_->find_database(database_);
  if (db_ && db_->name == control::kFallbackDatabase) db_ = nullptr;  // "*" is not a name to connect to
  if (!db_) {
    own_db_ = w_.fallback_database(database_);
    db_ = own_db_.get();
  }
  return db_ != nullptr;
}

void ClientSession::use_found_secret(const std::string& secret) {
  auto user = std::make_shared<control::UserConfig>();
  user->name = user_;
  user->backend_user = user_;
  switch (control::secret_kind(secret)) {
    case control::SecretKind::scram:
      // The server login's keys are learnt from the client's SCRAM proof (authenticate()).
      user->scram_verifier = secret;
      break;
    case control::SecretKind::md5:
      user->md5_hash = secret;
      user->backend_md5_hash = secret;
      break;
    case control::SecretKind::plaintext:
      user->password = secret;
      user->backend_password = secret;
      break;
  }
  own_user_ = std::move(user);
  user_cfg_ = own_user_.get();
}

namespace {
int auth_query_backend(Worker& w, const control::DatabaseConfig& db) {
  const auto& shard = db.shards.front();
  if (!shard.auto_roles) return 0;
  // role: auto: the host the probes found to be the primary; any host can answer a read while none is.
  std::vector<std::shared_ptr<routing::BackendHealth>> held(shard.backends());
  std::vector<const routing::BackendHealth*> hosts(shard.backends());
  for (size_t i = 0; i < hosts.size(); ++i) {
    held[i] = w.runtime().health.get(shard.backend(i).host, shard.backend(i).port);
    hosts[i] = held[i].get();
  }
  int primary = routing::find_primary(hosts);
  return primary >= 0 ? primary : 0;
}
}  // namespace

awaitable<bool> ClientSession::look_up_user(std::string& error) {
  // The console's users are configured users; any other name is unknown there.
  if (admin::is_console_database(*config_, database_)) co_return true;
  if (const std::string* secret = w_.userlist_secret(user_)) {
    use_found_secret(*secret);
    co_return true;
  }
  if (!resolve_database()) co_return true;  // 3D000 once authenticated, as PostgreSQL answers
  control::AuthLookup lookup = config_->auth_lookup_for(*db_);
  if (lookup.auth_user.empty()) co_return true;
  auto now = AuthCache::Clock::now();
  auto cached = w_.auth_cache().get(db_->name, user_, now);
  AuthCache::Answer answer;
  if (cached) {
    answer = std::move(*cached);
  } else {
    bool ran = co_await run_auth_query(lookup, answer, error);
    if (!ran) co_return false;
    const auto& sources = config_->auth_sources;
    w_.auth_cache().put(db_->name, user_, answer, now, std::chrono::seconds(sources.cache_seconds),
                        std::chrono::seconds(sources.negative_cache_seconds));
  }
  if (answer.found) use_found_secret(answer.secret);
  co_return true;
}

awaitable<bool> ClientSession::run_auth_query(const control::AuthLookup& lookup, AuthCache::Answer& answer,
                                              std::string& error) {
  const control::DatabaseConfig* where = db_;
  std::shared_ptr<const control::DatabaseConfig> fallback_where;
  if (!lookup.auth_dbname.empty()) {
    where = config_->find_database(lookup.auth_dbname);
  } else if (own_db_ && where == own_db_.get()) {
    // A fallback database: the name is the client's, not yet authenticated. Roles are the same in every
    // database of a server, so the lookup runs in `postgres` there: no pool per name a client makes up.
    // Resolved as a client's "postgres" would be: the listed entry if there is one.
    where = config_->find_database("postgres");
    if (!where) {
      fallback_where = w_.fallback_database("postgres");
      where = fallback_where.get();
    }
  }
  const control::UserConfig* as = config_->find_user(lookup.auth_user);
  if (!where || !as) {  // --check-config refuses such a config; a reload cannot bring one either
    error = "auth_query is misconfigured (auth_user or auth_dbname is not in the config)";
    co_return false;
  }
  // The database's (first shard's) primary, through the auth user's own pool of it.
  pool::Pool& pool = w_.pool_for(*where, *as, 0, auth_query_backend(w_, *where));
  pool::ServerError err;
  std::string where_name = where->name;
  auto server = co_await pool.acquire(err);
  if (!server) {
    error = "pgrouter could not run auth_query on database \"" + where_name + "\" as \"" + lookup.auth_user +
            "\": " + err.message;
    co_return false;
  }
  pool::ServerConnection::Rows rows;
  std::string sql = lookup.auth_query;
  std::string name = user_;
  bool ok = co_await server->run_lookup(sql, name, rows, &err);
  bool reusable = ok || err.from_server;  // an error the server answered leaves the connection usable
  pool.release(std::move(server), reusable && rows.size() < 2);
  if (!ok) {
    error = "auth_query failed on database \"" + where_name + "\" as \"" + lookup.auth_user +
            "\": " + err.message;
    co_return false;
  }
  if (!rows.empty() && (rows.front().size() < 2 || rows.size() > 1)) {
    error = "auth_query must return at most one row of two columns (user name, secret); it returned " +
            std::to_string(rows.size()) + " row(s) of " + std::to_string(rows.front().size()) + " column(s)";
    co_return false;
  }
  // No row, or a NULL secret (a role without a password): no user pgrouter can authenticate.
  answer = {};
  if (!rows.empty() && rows.front()[1] && !rows.front()[1]->empty()) {
    answer.found = true;
    answer.secret = *rows.front()[1];
  }
  log::debug("auth_query answered", {{"session", id_},
                                     {"user", user_},
                                     {"database", where_name},
                                     {"found", std::string(answer.found ? "true" : "false")}});
  co_return true;
}

}  // namespace pgrouter::session
