// Per-worker counters for the data plane. Each WorkerStats is written by one worker thread only
// (relaxed atomics, no contention) and summed when /metrics is scraped: no lock on the query path.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::control {

using Counter = std::atomic<uint64_t>;
using Gauge = std::atomic<int64_t>;

// Latency histogram with fixed bucket bounds in seconds (same bounds for every worker so they sum). Up to a
// minute: pool.queue_timeout defaults to 30 s, and slow queries are what a latency histogram is read for.
struct LatencyHistogram {
  static constexpr std::array<double, 18> bounds{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                 0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                 1.0,    2.5,     5.0,    10.0,  30.0,   60.0};
  std::array<Counter, bounds.size() + 1> buckets{};  // last = +Inf (non-cumulative here)
  Counter count{0};
  std::atomic<uint64_t> sum_ns{0};
  void observe_ns(uint64_t ns) {
    double s = static_cast<double>(ns) / 1e9;
    size_t i = 0;
    while (i < bounds.size() && s > bounds[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
    sum_ns.fetch_add(ns, std::memory_order_relaxed);
  }
};

// Which pool a per-pool series counts: a pool serves one (database, user) on one backend ("host:port") of one
// shard ("0".."n-1") as primary or replica.
struct PoolLabels {
  std::string database, user, backend, shard, role;
  auto operator<=>(const PoolLabels&) const = default;
};

// What the pools past metrics.max_pools are counted as: one series per role, so the number of series stays
// bounded whatever the number of databases, users and backends.
PoolLabels other_pool_labels(std::string role);

// One pool's counters on one worker (written by that worker only). Gauges move by deltas, so pools that
// share labels (those folded into "other") add up.
struct PoolStats {
  Gauge servers_open{0};  // open, being opened or reset (Pool::total); active = open - idle
  Gauge servers_idle{0};
  Gauge clients_waiting{0};
  Counter server_connections_total{0};  // opened
  Counter checkouts_total{0};           // servers lent to a client (or a cross-shard leg)
  Counter transactions_total{0};        // transactions whose duration was observed
  Counter queries_total{0};             // Query, Sync or FunctionCall sent to one of its servers
  LatencyHistogram wait;                // time a client waited for a server
  LatencyHistogram transaction;         // client transactions, to their ReadyForQuery 'I'
};

// Which labels a new pool's series gets: the first metrics.max_pools distinct ones keep theirs, later ones
// are folded into other_pool_labels. Shared by the workers; consulted only when a worker creates a pool.
class PoolLabelTable {
 public:
  PoolLabels admit(const PoolLabels& labels);
  // Applies to labels not seen yet: those already admitted keep their series.
  void set_limit(size_t limit);

 private:
  std::mutex mu_;
  std::set<PoolLabels> admitted_;
  size_t limit_ = 100;
};

struct WorkerStats {
  Gauge clients_connected{0};           // sessions past startup
  Gauge clients_waiting{0};             // waiting for a server connection
  Counter client_connections_total{0};  // accepted
  Counter client_login_failures_total{0};
  Gauge servers_active{0};              // attached to a client
  Gauge servers_idle{0};                // in a pool, idle
  Counter server_connections_total{0};  // opened
  Counter server_connect_failures_total{0};
  Counter pool_slots_moved_total{
      0};                    // servers closed so that their slot serves a longer wait on another worker
  Counter queries_total{0};  // Query or Sync sent to a server
  Counter bytes_client_to_server{0};
  Counter bytes_server_to_client{0};
  Counter cancel_requests_total{0};
  // Transaction pooling (see session/txn_tracker.hpp).
  Counter prepared_statements_prepared_total{0};  // Parse sent to a server that lacked the statement
  Counter prepared_statements_reused_total{0};    // a client's Parse served by a statement the server had
  Counter prepared_statements_evicted_total{0};   // closed to keep a server's cache within bounds
  Counter settings_replayed_total{0};         // SET/RESET pgrouter sent to give a server a client's settings
  Counter clients_pinned_total{0};            // clients kept on one server by a session feature
  Counter session_features_refused_total{0};  // statements refused (pool.session_features: refuse)
  // Read/write splitting: transactions by where they were sent.
  Counter routed_writes_total{0};         // to the primary as writes (or by hint)
  Counter routed_reads_replica_total{0};  // reads to a replica
  Counter routed_reads_primary_total{0};  // reads to the primary (no eligible replica, read-your-writes, any)
  Counter shard_routed_total{0};          // sharding: transactions routed to a shard by a shard key
  Counter shard_default_total{0};         // ... that named none (the session key's or the default shard)
  Counter shard_refused_total{0};         // statements refused by sharding (0A000)
  Counter two_phase_committed_total{0};   // cross-shard writes committed on every shard (two-phase commit)
  Counter two_phase_aborted_total{0};     // ... rolled back after PREPARE (a recovery decided first)
  Counter two_phase_in_doubt_total{0};    // ... whose decision could not be confirmed (left to recovery)
  Counter one_phase_commits_total{0};     // ... and transactions across shards: one part (or none) wrote
  Counter two_phase_recovered_committed_total{0};  // prepared parts committed by recovery
  Counter two_phase_recovered_aborted_total{0};    // prepared parts rolled back by recovery
  Counter shard_scatters_total{0};                 // cross-shard reads run on several shards and merged
  Counter shard_scatter_legs_total{0};             // ... summed over them: the shards each ran on
  Counter shard_begins_deferred_total{0};      // lone BEGINs answered by pgrouter until a shard was chosen
  Counter shard_transactions_across_total{0};  // transactions coordinated across shards (client_coordinated)
  Counter shard_begins_moved_total{0};  // transactions moved after a named BEGIN to the shard named next
  Counter routed_writes_held_total{0};  // write batches held until a pipelined read on a replica was answered
  Counter routed_reads_refused_total{0};  // reads with nowhere to go (routing.primary_fallback: false)
  Counter routed_reads_retried_total{0};  // reads sent again elsewhere after their replica broke unanswered
  Counter routed_reads_ended_early_total{0};  // answers whose replica went away before ReadyForQuery
  Counter routed_reads_ryw_waited_total{0};   // reads that waited (read_your_writes_wait) and got a replica
  Counter routed_reads_ryw_wait_timeouts_total{0};  // ... that waited it all and went to the primary
  LatencyHistogram query_latency;                   // Query/Sync forwarded -> ReadyForQuery
  LatencyHistogram pool_wait;                       // time a client waited for a server

  // Errors by SQLSTATE, both those pgrouter raises and those servers send. Errors are rare,
  // so a per-worker (uncontended) mutex is fine here.
  void count_error(std::string_view sqlstate, bool raised_by_pgrouter);
  std::map<std::pair<std::string, bool>, uint64_t> errors_snapshot() const;

  // The block of a pool's labels on this worker, made on first use (when a pool is created, never per
  // query). Blocks are never freed: a pool holds a reference for its life.
  PoolStats& pool_stats(const PoolLabels& labels);
  std::vector<std::pair<PoolLabels, const PoolStats*>> pool_stats_snapshot() const;

 private:
  mutable std::mutex pools_mu_;
  std::map<PoolLabels, std::unique_ptr<PoolStats>> pools_;
  mutable std::mutex errors_mu_;
  std::map<std::pair<std::string, bool>, uint64_t> errors_;
};

struct Stats {
  explicit Stats(size_t workers);
  std::vector<std::unique_ptr<WorkerStats>> workers;
  WorkerStats control;  // errors raised outside a worker (e.g. cancel handling)
  Counter config_reloads_total{0};
  Counter config_reload_failures_total{0};
  Gauge config_last_reload_success_unixtime{0};
  Gauge draining{0};           // 1 from SIGTERM on, while clients finish their transactions
  PoolLabelTable pool_labels;  // metrics.max_pools
  // More text-format families appended to /metrics (per-backend health), set once at start.
  std::function<std::string()> extra_metrics;
};

}  // namespace pgrouter::control
