// Replica eligibility and the four selection strategies, without sockets.
#include <doctest/doctest.h>

#include <map>

#include "pgrouter/control/config.hpp"
#include "pgrouter/routing/readiness.hpp"
#include "pgrouter/routing/router.hpp"

using namespace pgrouter;

namespace {
void healthy_replica(routing::BackendHealth& h, uint64_t lsn) {
  h.probed = true;
  h.up = true;
  h.in_recovery = true;
  h.lsn = lsn;
}
}  // namespace

TEST_CASE("a replica takes reads only when up, replaying, close enough and past the client's writes") {
  routing::BackendHealth primary, r;
  primary.probed = true;
  primary.lsn = 10'000'000;
  control::RoutingConfig cfg;
  cfg.max_lag_bytes = 1000;
  healthy_replica(r, 9'999'500);
  CHECK(routing::replica_eligible(r, &primary, cfg, 0));
  CHECK(routing::replica_eligible(r, &primary, cfg, 9'999'500));
  CHECK_FALSE(routing::replica_eligible(r, &primary, cfg, 9'999'501));  // read-your-writes
  r.lsn = 9'998'000;
  CHECK_FALSE(routing::replica_eligible(r, &primary, cfg, 0));  // lagging
  cfg.max_lag_bytes = 0;
  CHECK(routing::replica_eligible(r, &primary, cfg, 0));  // no bound
  r.replay_paused = true;
  CHECK_FALSE(routing::replica_eligible(r, &primary, cfg, 0));
  r.replay_paused = false;
  r.mark_down();
  CHECK_FALSE(routing::replica_eligible(r, &primary, cfg, 0));
  CHECK(r.ejections == 1);
  r.up = true;
  r.in_recovery = false;  // promoted: not a replica any more
  CHECK_FALSE(routing::replica_eligible(r, &primary, cfg, 0));
  routing::BackendHealth unprobed;
  CHECK_FALSE(routing::replica_eligible(unprobed, &primary, cfg, 0));
  // Time-based lag (routing.max_lag_time, 0 = off).
  routing::BackendHealth slow;
  healthy_replica(slow, 10'000'000);
  slow.replay_lag_ms = 2500;
  CHECK(routing::replica_eligible(slow, &primary, cfg, 0));
  cfg.max_lag_time = std::chrono::milliseconds(2000);
  CHECK_FALSE(routing::replica_eligible(slow, &primary, cfg, 0));
  slow.replay_lag_ms = 2000;  // at the bound: still in
  CHECK(routing::replica_eligible(slow, &primary, cfg, 0));
  cfg.max_lag_time = std::chrono::milliseconds(0);
  // No primary known (role: auto during a failover): lag cannot be measured and is not held against it.
  routing::BackendHealth far;
  healthy_replica(far, 1);
  cfg.max_lag_bytes = 1000;
  CHECK_FALSE(routing::replica_eligible(far, &primary, cfg, 0));
  CHECK(routing::replica_eligible(far, nullptr, cfg, 0));
}

TEST_CASE("read-your-writes holds a read (so waiting may help) only when it alone keeps replicas out") {
  routing::BackendHealth primary, a, b;
  primary.probed = true;
  primary.lsn = 5000;
  control::RoutingConfig cfg;
  healthy_replica(a, 4000);
  healthy_replica(b, 4500);
  CHECK_FALSE(routing::held_by_read_your_writes({&a, &b}, &primary, cfg, 0));     // no write to wait for
  CHECK(routing::held_by_read_your_writes({&a, &b}, &primary, cfg, 4800));        // neither replayed it yet
  CHECK_FALSE(routing::held_by_read_your_writes({&a, &b}, &primary, cfg, 4500));  // b has: it takes the read
  b.lsn = 4800;
  CHECK_FALSE(routing::held_by_read_your_writes({&a, &b}, &primary, cfg, 4800));
  b.lsn = 4500;
  // Replicas out for other reasons (down, paused, lagging): waiting for replay would not bring them back.
  a.mark_down();
  b.replay_paused = true;
  CHECK_FALSE(routing::held_by_read_your_writes({&a, &b}, &primary, cfg, 4800));
  b.replay_paused = false;
  CHECK(routing::held_by_read_your_writes({&a, &b}, &primary, cfg, 4800));  // b only needs to replay
  CHECK(routing::held_by_read_your_writes({nullptr, &b}, &primary, cfg, 4800));
  CHECK_FALSE(routing::held_by_read_your_writes({}, &primary, cfg, 4800));
}

TEST_CASE("role auto: the primary is the probed host out of recovery on the newest timeline") {
  routing::BackendHealth a, b, c;
  for (auto* h : {&a, &b, &c}) healthy_replica(*h, 100);
  std::vector<const routing::BackendHealth*> hosts{&a, &b, &c};
  CHECK(routing::find_primary(hosts) == -1);  // all replicas: none
  a.in_recovery = false;
  a.timeline = 1;
  CHECK(routing::find_primary(hosts) == 0);
  c.in_recovery = false;  // c promoted while a still runs: the newer timeline wins
  c.timeline = 2;
  CHECK(routing::find_primary(hosts) == 2);
  c.mark_down();  // a primary that cannot be reached is none
  CHECK(routing::find_primary(hosts) == 0);
  c.up = true;
  a.timeline = 2;  // two primaries on one timeline: unrelated clusters, writes go to neither
  CHECK(routing::find_primary(hosts) == routing::kAmbiguousPrimary);
  routing::BackendHealth unprobed;  // out of recovery as far as anyone knows, but never answered
  unprobed.in_recovery = false;
  CHECK(routing::find_primary({&unprobed, &b}) == -1);
}

TEST_CASE("strategies pick only eligible replicas, in their own way") {
  std::mt19937 rng(42);
  uint64_t rr = 0;
  std::vector<routing::Candidate> c(3);
  c[0].eligible = true;
  c[1].eligible = false;
  c[2].eligible = true;
  std::map<int, int> seen;
  for (int i = 0; i < 10; ++i)
    seen[routing::pick_replica(control::ReplicaStrategy::round_robin, c, rr, rng)]++;
  CHECK(seen == std::map<int, int>{{0, 5}, {2, 5}});

  seen.clear();
  for (int i = 0; i < 2000; ++i) seen[routing::pick_replica(control::ReplicaStrategy::random, c, rr, rng)]++;
  CHECK(seen.count(1) == 0);
  CHECK(seen[0] > 800);
  CHECK(seen[2] > 800);

  c[0].outstanding = 3;
  c[2].outstanding = 1;
  CHECK(routing::pick_replica(control::ReplicaStrategy::least_outstanding, c, rr, rng) == 2);

  c[0].weight = 3;
  c[2].weight = 1;
  seen.clear();
  for (int i = 0; i < 4000; ++i)
    seen[routing::pick_replica(control::ReplicaStrategy::weighted, c, rr, rng)]++;
  CHECK(seen[0] > 2700);  // about 3000
  CHECK(seen[2] > 800);   // about 1000
  c[0].weight = c[2].weight = 0;
  CHECK(routing::pick_replica(control::ReplicaStrategy::weighted, c, rr, rng) == -1);

  for (auto& x : c) x.eligible = false;
  for (auto s : {control::ReplicaStrategy::round_robin, control::ReplicaStrategy::random,
                 control::ReplicaStrategy::least_outstanding, control::ReplicaStrategy::weighted})
    CHECK(routing::pick_replica(s, c, rr, rng) == -1);
}

TEST_CASE("routing settings load per database and bad values are rejected") {
  auto ok = control::load_config_string(R"(
version: 1
databases:
  - name: app
    shards: [{primary: {host: 127.0.0.1, port: 5432}, replicas: [{host: 127.0.0.1, port: 5433, weight: 3}]}]
    routing: {read_from: any, strategy: weighted, primary_fallback: false, max_lag_bytes: 1000,
              max_lag_time: 2s, probe_interval: 250ms, read_only_functions: [app.price_of],
              read_your_writes_wait: 1500ms}
users: [{name: u, password: p}]
auth: [{method: scram-sha-256}]
)",
                                        "t.yaml");
  REQUIRE(ok.ok());
  const auto& r = ok.config->databases[0].routing;
  CHECK(r.read_from == control::ReadFrom::any);
  CHECK(r.strategy == control::ReplicaStrategy::weighted);
  CHECK_FALSE(r.primary_fallback);
  CHECK(r.max_lag_bytes == 1000);
  CHECK(r.max_lag_time.count() == 2000);
  CHECK(r.probe_interval.count() == 250);
  CHECK(r.read_only_functions == std::vector<std::string>{"app.price_of"});
  CHECK(r.read_your_writes);
  CHECK(r.read_your_writes_wait.count() == 1500);
  CHECK(control::RoutingConfig{}.read_your_writes_wait.count() == 0);  // default: the primary at once
  auto bad = control::load_config_string(R"(
version: 1
databases:
  - name: app
    shards: [{primary: {host: 127.0.0.1}}]
    routing: {strategy: fastest}
users: [{name: u, password: p}]
auth: [{method: scram-sha-256}]
)",
                                         "t.yaml");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.errors[0].message.find("round_robin | random | least_outstanding | weighted") !=
        std::string::npos);
  auto bad_wait = control::load_config_string(R"(
version: 1
databases:
  - name: app
    shards: [{primary: {host: 127.0.0.1}}]
    routing: {read_your_writes_wait: soon}
users: [{name: u, password: p}]
auth: [{method: scram-sha-256}]
)",
                                              "t.yaml");
  REQUIRE_FALSE(bad_wait.ok());
  CHECK(bad_wait.errors[0].message.find("read_your_writes_wait") != std::string::npos);
  CHECK(bad_wait.errors[0].message.find("a duration like 500ms") != std::string::npos);
}

TEST_CASE("a shard lists hosts (role: auto) or a primary with replicas, and says which when wrong") {
  auto load = [](const std::string& shard) {
    return control::load_config_string(
        "version: 1\ndatabases:\n  - name: app\n    shards: [" + shard +
            "]\nusers: [{name: u, password: p}]\nauth: [{method: scram-sha-256}]\n",
        "t.yaml");
  };
  auto ok = load("{hosts: [{host: a}, {host: b, port: 5433, weight: 2}]}");
  REQUIRE(ok.ok());
  const auto& shard = ok.config->databases[0].shards[0];
  CHECK(shard.auto_roles);
  CHECK(shard.backends() == 2);
  CHECK(shard.backend(0).host == "a");
  CHECK(shard.backend(1).port == 5433);
  CHECK(shard.backend(1).weight == 2);
  CHECK(ok.config->databases[0].routing.wait_for_primary.count() == 5000);
  CHECK_FALSE(load("{primary: {host: a}}").config->databases[0].shards[0].auto_roles);
  auto message = [&](const std::string& shard) {
    auto r = load(shard);
    return r.ok() ? std::string() : r.errors[0].message;
  };
  CHECK(message("{primary: {host: a}, hosts: [{host: b}]}").find("either 'primary'") != std::string::npos);
  CHECK(message("{replicas: [{host: b}]}").find("one of 'primary'") != std::string::npos);
  CHECK(
      message("{hosts: [{host: a}], replicas: [{host: b}]}").find("'replicas' cannot be used with 'hosts'") !=
      std::string::npos);
  CHECK(message("{hosts: [{host: a}, {host: a, port: 5432}]}").find("a:5432 is listed twice") !=
        std::string::npos);
  CHECK(message("{hosts: []}").find("'hosts' must be a list of at least 1 entry") != std::string::npos);
}

TEST_CASE("readiness names each shard whose primary is not reachable") {
  auto r = control::load_config_string(R"(version: 1
databases:
  - name: app
    shards:
      - primary: {host: db1}
        replicas: [{host: db2}]
      - hosts: [{host: db3}, {host: db4}]
users: [{name: u, password: p}]
auth: [{method: scram-sha-256, users: all, databases: all, addresses: all}]
)",
                                       "test.yaml");
  REQUIRE(r.ok());
  routing::HealthMonitor health;  // never started: the test sets what probes would find
  auto db3 = health.get("db3", 5432);
  CHECK(routing::unserved(*r.config, health) == "database app shard 1: no host is the primary");
  db3->probed = true;
  CHECK(routing::unserved(*r.config, health).empty());
  health.get("db1", 5432)->mark_down();
  CHECK(routing::unserved(*r.config, health) == "database app shard 0: primary db1:5432 is down");
  auto db4 = health.get("db4", 5432);
  db4->probed = true;  // a second primary on the same timeline: writes go nowhere
  CHECK(routing::unserved(*r.config, health) ==
        "database app shard 0: primary db1:5432 is down; database app shard 1: two hosts claim to be the "
        "primary");
}
