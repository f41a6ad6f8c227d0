// Admin HTTP server (Boost.Beast, one coroutine per connection) and the /metrics renderer that sums the
// per-worker stats at scrape time into prometheus-cpp metric families.
#include "pgrouter/control/admin_http.hpp"

#include <unistd.h>

#include <atomic>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <string_view>
#include <utility>
#include <vector>

#include "pgrouter/control/takeover.hpp"

namespace pgrouter::control {

namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// /metrics

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Every WorkerStats that feeds a sum: the workers plus the control plane's own.
std::vector<const WorkerStats*> all_worker_stats(const Stats& stats) {
  std::vector<const WorkerStats*> all;
  all.reserve(stats.workers.size() + 1);
  for (const auto& worker : stats.workers) all.push_back(worker.get());
  all.push_back(&stats.control);
  return all;
}

template <typename Field>
double sum_over(const std::vector<const WorkerStats*>& all, Field field) {
  // Signed sum: a gauge decremented on one worker and incremented on another must still add up.
  int64_t total = 0;
  for (const WorkerStats* ws : all)
    total += static_cast<int64_t>((ws->*field).load(std::memory_order_relaxed));
  return static_cast<double>(total);
}

MetricFamily single_value_family(std::string name, std::string help, MetricType type, double value) {
  MetricFamily family{std::move(name), std::move(help), type, {}};
  ClientMetric metric;
  if (type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

// One gauge per worker thread (label worker="0".."N-1"): shows a pool budget or a queue that sits on one
// worker.
template <typename Field>
MetricFamily per_worker_family(std::string name, std::string help, const Stats& stats, Field field) {
  MetricFamily family{std::move(name), std::move(help), MetricType::Gauge, {}};
  for (size_t i = 0; i < stats.workers.size(); ++i) {
    ClientMetric metric;
    metric.label = {{"worker", std::to_string(i)}};
    metric.gauge.value =
        static_cast<double>((stats.workers[i].get()->*field).load(std::memory_order_relaxed));
    family.metric.push_back(std::move(metric));
  }
  return family;
}

// Fills metric's histogram from the bucket counts of several LatencyHistograms (one per worker).
void fill_histogram(ClientMetric& metric, const std::vector<const LatencyHistogram*>& parts) {
  constexpr size_t bucket_count = LatencyHistogram::bounds.size() + 1;
  std::array<uint64_t, bucket_count> per_bucket{};
  uint64_t sum_ns = 0;
  for (const LatencyHistogram* h : parts) {
    for (size_t i = 0; i < bucket_count; ++i) per_bucket[i] += h->buckets[i].load(std::memory_order_relaxed);
    sum_ns += h->sum_ns.load(std::memory_order_relaxed);
  }
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bucket_count; ++i) {
    cumulative += per_bucket[i];
    double upper = i < LatencyHistogram::bounds.size() ? LatencyHistogram::bounds[i]
                                                       : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back({cumulative, upper});
  }
  // The count comes from the buckets, not from LatencyHistogram::count: the relaxed loads are not one
  // snapshot, and Prometheus requires the +Inf bucket to equal _count.
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = static_cast<double>(sum_ns) / 1e9;
}

MetricFamily histogram_family(std::string name, std::string help, const std::vector<const WorkerStats*>& all,
                              LatencyHistogram WorkerStats::*field) {
  std::vector<const LatencyHistogram*> parts;
  for (const WorkerStats* ws : all) parts.push_back(&(ws->*field));
  ClientMetric metric;
  fill_histogram(metric, parts);
  MetricFamily family{std::move(name), std::move(help), MetricType::Histogram, {}};
  family.metric.push_back(std::move(metric));
  return family;
}

// The per-pool families: every worker's blocks of the same labels summed (a pool exists once per worker).
void append_pool_families(std::vector<MetricFamily>& families, const std::vector<const WorkerStats*>& all) {
  std::map<PoolLabels, std::vector<const PoolStats*>> by_labels;
  for (const WorkerStats* ws : all)
    for (const auto& [labels, block] : ws->pool_stats_snapshot()) by_labels[labels].push_back(block);
  auto labelled = [](const PoolLabels& l) {
    return std::vector<prometheus::ClientMetric::Label>{{"database", l.database},
                                                        {"user", l.user},
                                                        {"backend", l.backend},
                                                        {"shard", l.shard},
                                                        {"role", l.role}};
  };
  auto sum = [](const std::vector<const PoolStats*>& blocks, auto field) {
    int64_t total = 0;  // signed: gauges move by deltas
    for (const PoolStats* b : blocks)
      total += static_cast<int64_t>((b->*field).load(std::memory_order_relaxed));
    return static_cast<double>(total);
  };
  MetricFamily servers{"pgrouter_pool_servers",
                       "Server connections of a pool by state: active (lent to a client, being opened or "
                       "reset) or idle.",
                       MetricType::Gauge,
                       {}};
  auto simple = [&](std::string name, std::string help, MetricType type, auto field) {
    MetricFamily family{std::move(name), std::move(help), type, {}};
    for (const auto& [labels, blocks] : by_labels) {
      ClientMetric metric;
      metric.label = labelled(labels);
      (type == MetricType::Counter ? metric.counter.value : metric.gauge.value) = sum(blocks, field);
      family.metric.push_back(std::move(metric));
    }
    families.push_back(std::move(family));
  };
  auto histogram = [&](std::string name, std::string help, LatencyHistogram PoolStats::*field) {
    MetricFamily family{std::move(name), std::move(help), MetricType::Histogram, {}};
    for (const auto& [labels, blocks] : by_labels) {
      ClientMetric metric;
      metric.label = labelled(labels);
      std::vector<const LatencyHistogram*> parts;
      for (const PoolStats* b : blocks) parts.push_back(&(b->*field));
      fill_histogram(metric, parts);
      family.metric.push_back(std::move(metric));
    }
    families.push_back(std::move(family));
  };
  for (const auto& [labels, blocks] : by_labels) {
    double open = sum(blocks, &PoolStats::servers_open), idle = sum(blocks, &PoolStats::servers_idle);
    for (auto [state, value] : {std::pair{"active", open - idle}, std::pair{"idle", idle}}) {
      ClientMetric metric;
      metric.label = labelled(labels);
      metric.label.push_back({"state", state});
      metric.gauge.value = value;
      servers.metric.push_back(std::move(metric));
    }
  }
  families.push_back(std::move(servers));
  simple("pgrouter_pool_clients_waiting", "Clients waiting for a server of a pool.", MetricType::Gauge,
         &PoolStats::clients_waiting);
  simple("pgrouter_pool_server_connections_total", "Server connections a pool opened.", MetricType::Counter,
         &PoolStats::server_connections_total);
  simple("pgrouter_pool_checkouts_total", "Servers a pool lent to clients (or to a cross-shard request).",
         MetricType::Counter, &PoolStats::checkouts_total);
  simple("pgrouter_pool_transactions_total",
         "Transactions on a pool's servers whose duration pgrouter_pool_transaction_duration_seconds counts.",
         MetricType::Counter, &PoolStats::transactions_total);
  simple("pgrouter_pool_queries_total", "Query, Sync or FunctionCall messages sent to a pool's servers.",
         MetricType::Counter, &PoolStats::queries_total);
  histogram("pgrouter_pool_checkout_wait_seconds", "Time a client waited for a server of a pool.",
            &PoolStats::wait);
  histogram("pgrouter_pool_transaction_duration_seconds",
            "Client transactions, to the ReadyForQuery 'I' that ends them: from their server's checkout "
            "(transaction pooling) or from their first request (session pooling, pinned clients).",
            &PoolStats::transaction);
}

MetricFamily errors_family(const std::vector<const WorkerStats*>& all) {
  std::map<std::pair<std::string, bool>, uint64_t> merged;
  for (const WorkerStats* ws : all) {
    for (const auto& [key, count] : ws->errors_snapshot()) merged[key] += count;
  }
  MetricFamily family{
      "pgrouter_errors_total",
      "Errors sent to clients by SQLSTATE; source=pgrouter when pgrouter raised it, server when a "
      "PostgreSQL server did.",
      MetricType::Counter,
      {}};
  for (const auto& [key, count] : merged) {
    ClientMetric metric;
    metric.label = {{"source", key.second ? "pgrouter" : "server"}, {"sqlstate", key.first}};
    metric.counter.value = static_cast<double>(count);
    family.metric.push_back(std::move(metric));
  }
  return family;
}

// Resident set size in bytes from /proc/self/statm (second field, in pages); 0 where unreadable.
double process_resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0;
  uint64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return static_cast<double>(resident_pages) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

// ---------------------------------------------------------------------------------------------
// HTTP

constexpr auto kReadTimeout = 5s;  // also the keep-alive idle limit
constexpr auto kWriteTimeout = 5s;
constexpr size_t kMaxHeaderBytes = 8 * 1024;
constexpr size_t kMaxBodyBytes = 4 * 1024;
constexpr int kMaxRequestsPerConnection = 100;
constexpr int kMaxConnections = 64;  // scrapers and probes only: refuse a flood rather than queue it

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

Response json_response(http::status status, const nlohmann::json& body, unsigned version, bool keep_alive) {
  Response res{status, version};
  res.set(http::field::server, "pgrouter");
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  // Replace, not throw, on invalid UTF-8: a name a client sent must not fail the answer.
  res.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  res.prepare_payload();
  return res;
}

Response error_response(http::status status, std::string_view code, std::string message, unsigned version,
                        bool keep_alive) {
  return json_response(status, {{"error", {{"code", code}, {"message", std::move(message)}}}}, version,
                       keep_alive);
}

}  // namespace

std::string render_metrics(const Stats& stats) {
  const auto all = all_worker_stats(stats);
  std::vector<MetricFamily> families;
  auto gauge = [&](const char* name, const char* help, double value) {
    families.push_back(single_value_family(name, help, MetricType::Gauge, value));
  };
  auto counter = [&](const char* name, const char* help, double value) {
    families.push_back(single_value_family(name, help, MetricType::Counter, value));
  };

  gauge("pgrouter_clients_connected", "Client sessions past startup.",
        sum_over(all, &WorkerStats::clients_connected));
  gauge("pgrouter_clients_waiting", "Clients waiting for a server connection.",
        sum_over(all, &WorkerStats::clients_waiting));
  counter("pgrouter_client_connections_total", "Client connections accepted.",
          sum_over(all, &WorkerStats::client_connections_total));
  counter("pgrouter_client_login_failures_total", "Client logins refused (authentication or routing).",
          sum_over(all, &WorkerStats::client_login_failures_total));
  gauge("pgrouter_servers_active", "Server connections attached to a client.",
        sum_over(all, &WorkerStats::servers_active));
  gauge("pgrouter_servers_idle", "Server connections idle in a pool.",
        sum_over(all, &WorkerStats::servers_idle));
  counter("pgrouter_server_connections_total", "Server connections opened.",
          sum_over(all, &WorkerStats::server_connections_total));
  counter("pgrouter_server_connect_failures_total", "Server connection attempts that failed.",
          sum_over(all, &WorkerStats::server_connect_failures_total));
  counter(
      "pgrouter_pool_slots_moved_total",
      "Servers closed on one worker so that their pool slot serves a client that has waited much longer on "
      "another worker (pool.size is one budget for all workers).",
      sum_over(all, &WorkerStats::pool_slots_moved_total));
  counter("pgrouter_queries_total", "Query, Sync or FunctionCall messages forwarded to a server.",
          sum_over(all, &WorkerStats::queries_total));
  counter("pgrouter_bytes_received_total", "Bytes received from clients and forwarded to servers.",
          sum_over(all, &WorkerStats::bytes_client_to_server));
  counter("pgrouter_bytes_sent_total", "Bytes received from servers and sent to clients.",
          sum_over(all, &WorkerStats::bytes_server_to_client));
  counter("pgrouter_cancel_requests_total",
          "CancelRequests forwarded to a server (those for a client with no query running, or with an "
          "unknown key, are ignored and logged).",
          sum_over(all, &WorkerStats::cancel_requests_total));
  counter("pgrouter_prepared_statements_prepared_total",
          "Transaction pooling: Parse sent to a server that lacked a client's named statement.",
          sum_over(all, &WorkerStats::prepared_statements_prepared_total));
  counter("pgrouter_prepared_statements_reused_total",
          "Transaction pooling: a client's Parse served by a statement its server already had.",
          sum_over(all, &WorkerStats::prepared_statements_reused_total));
  counter("pgrouter_prepared_statements_evicted_total",
          "Transaction pooling: statements closed to keep a server within pool.prepared_statements_cache.",
          sum_over(all, &WorkerStats::prepared_statements_evicted_total));
  counter("pgrouter_settings_replayed_total",
          "Transaction pooling: SET/RESET sent to give a server the settings of the client it serves next.",
          sum_over(all, &WorkerStats::settings_replayed_total));
  counter(
      "pgrouter_clients_pinned_total",
      "Transaction pooling: clients kept on one server for their session by a feature that cannot be shared.",
      sum_over(all, &WorkerStats::clients_pinned_total));
  counter("pgrouter_routed_writes_total", "Read/write splitting: transactions sent to the primary as writes.",
          sum_over(all, &WorkerStats::routed_writes_total));
  counter("pgrouter_routed_reads_replica_total", "Read/write splitting: read transactions sent to a replica.",
          sum_over(all, &WorkerStats::routed_reads_replica_total));
  counter("pgrouter_routed_reads_primary_total",
          "Read/write splitting: read transactions sent to the primary (no eligible replica, or "
          "read-your-writes).",
          sum_over(all, &WorkerStats::routed_reads_primary_total));
  counter("pgrouter_shard_routed_total",
          "Sharding: transactions routed to the shard their first statement's shard key names.",
          sum_over(all, &WorkerStats::shard_routed_total));
  counter("pgrouter_shard_default_total",
          "Sharding: transactions whose first statements name no shard key, run on the session's "
          "pgrouter.shard_key shard or sharding.default_shard.",
          sum_over(all, &WorkerStats::shard_default_total));
  counter("pgrouter_shard_refused_total",
          "Sharding: statements refused with 0A000 (several shards, no shard key, another shard than their "
          "transaction's, a key column UPDATE, ...).",
          sum_over(all, &WorkerStats::shard_refused_total));
  counter("pgrouter_shard_scatters_total",
          "Sharding: cross-shard reads run on several shards and answered from the merge of their rows.",
          sum_over(all, &WorkerStats::shard_scatters_total));
  counter("pgrouter_shard_scatter_legs_total",
          "Sharding: the shards cross-shard reads ran on, summed (divided by pgrouter_shard_scatters_total: "
          "the mean fan-out).",
          sum_over(all, &WorkerStats::shard_scatter_legs_total));
  counter("pgrouter_two_phase_committed_total",
          "Sharding: cross-shard writes committed on every shard by two-phase commit.",
          sum_over(all, &WorkerStats::two_phase_committed_total));
  counter("pgrouter_two_phase_aborted_total",
          "Sharding: cross-shard writes rolled back on every shard after PREPARE, because a recovery had "
          "decided them first.",
          sum_over(all, &WorkerStats::two_phase_aborted_total));
  counter("pgrouter_two_phase_in_doubt_total",
          "Sharding: cross-shard writes whose decision could not be confirmed, left prepared for recovery "
          "(the client got 40003).",
          sum_over(all, &WorkerStats::two_phase_in_doubt_total));
  counter("pgrouter_one_phase_commits_total",
          "Sharding: cross-shard writes and transactions across shards committed with plain COMMITs, without "
          "two-phase commit, because at most one shard's part wrote anything.",
          sum_over(all, &WorkerStats::one_phase_commits_total));
  counter(
      "pgrouter_two_phase_recovered_committed_total",
      "Sharding: prepared parts of cross-shard writes that recovery committed (their decision was commit).",
      sum_over(all, &WorkerStats::two_phase_recovered_committed_total));
  counter(
      "pgrouter_two_phase_recovered_aborted_total",
      "Sharding: prepared parts of cross-shard writes that recovery rolled back (no commit was recorded).",
      sum_over(all, &WorkerStats::two_phase_recovered_aborted_total));
  counter("pgrouter_shard_begins_deferred_total",
          "Sharding: lone BEGINs answered by pgrouter and sent on once the next statement chose a shard.",
          sum_over(all, &WorkerStats::shard_begins_deferred_total));
  counter("pgrouter_shard_transactions_across_total",
          "Sharding: transactions that went on to a second shard and were coordinated by pgrouter, committed "
          "by two-phase commit (or plainly when at most one shard's part wrote).",
          sum_over(all, &WorkerStats::shard_transactions_across_total));
  counter("pgrouter_shard_begins_moved_total",
          "Sharding: transactions opened by a named statement's BEGIN on the default shard and moved, before "
          "anything else ran, to the shard their next statement names.",
          sum_over(all, &WorkerStats::shard_begins_moved_total));
  counter("pgrouter_routed_writes_held_total",
          "Read/write splitting: batches that may write, sent while the client's read on a replica was "
          "unanswered, "
          "held until it was answered and then routed on their own (instead of failing on the replica).",
          sum_over(all, &WorkerStats::routed_writes_held_total));
  counter(
      "pgrouter_routed_reads_refused_total",
      "Read/write splitting: reads refused because no replica was eligible and primary_fallback is false.",
      sum_over(all, &WorkerStats::routed_reads_refused_total));
  counter(
      "pgrouter_routed_reads_retried_total",
      "Read/write splitting: reads sent again to another backend after their replica broke before answering.",
      sum_over(all, &WorkerStats::routed_reads_retried_total));
  counter("pgrouter_routed_reads_ended_early_total",
          "Read/write splitting: answers a replica sent in full before going away without its ReadyForQuery "
          "(an immediate shutdown); pgrouter ended them so the client got its result.",
          sum_over(all, &WorkerStats::routed_reads_ended_early_total));
  counter(
      "pgrouter_routed_reads_ryw_waited_total",
      "Read/write splitting: reads held back by read-your-writes that waited (routing.read_your_writes_wait) "
      "and then went to a replica that had replayed the client's write.",
      sum_over(all, &WorkerStats::routed_reads_ryw_waited_total));
  counter("pgrouter_routed_reads_ryw_wait_timeouts_total",
          "Read/write splitting: reads held back by read-your-writes that waited all of "
          "routing.read_your_writes_wait and then went to the primary (or were refused).",
          sum_over(all, &WorkerStats::routed_reads_ryw_wait_timeouts_total));
  counter("pgrouter_session_features_refused_total",
          "Transaction pooling: statements refused because of pool.session_features: refuse.",
          sum_over(all, &WorkerStats::session_features_refused_total));
  families.push_back(histogram_family("pgrouter_query_duration_seconds",
                                      "Time from forwarding a Query or Sync to the server's ReadyForQuery.",
                                      all, &WorkerStats::query_latency));
  families.push_back(histogram_family("pgrouter_pool_wait_seconds",
                                      "Time a client waited for a server connection.", all,
                                      &WorkerStats::pool_wait));
  append_pool_families(families, all);
  families.push_back(errors_family(all));
  counter("pgrouter_config_reloads_total",
          "Configuration reloads attempted (SIGHUP), rejected ones included: applied = this minus "
          "pgrouter_config_reload_failures_total.",
          static_cast<double>(stats.config_reloads_total.load(std::memory_order_relaxed)));
  counter("pgrouter_config_reload_failures_total", "Configuration reloads rejected (the old config stays).",
          static_cast<double>(stats.config_reload_failures_total.load(std::memory_order_relaxed)));
  gauge("pgrouter_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load or reload.",
        static_cast<double>(stats.config_last_reload_success_unixtime.load(std::memory_order_relaxed)));
  gauge("pgrouter_workers", "Worker threads.", static_cast<double>(stats.workers.size()));
  gauge("pgrouter_draining",
        "1 while shutting down (SIGTERM): no new connections, clients end as their transactions do.",
        static_cast<double>(stats.draining.load(std::memory_order_relaxed)));
  families.push_back(per_worker_family("pgrouter_worker_clients_connected",
                                       "Client sessions past startup, per worker.", stats,
                                       &WorkerStats::clients_connected));
  families.push_back(per_worker_family("pgrouter_worker_clients_waiting",
                                       "Clients waiting for a server connection, per worker.", stats,
                                       &WorkerStats::clients_waiting));
  families.push_back(per_worker_family("pgrouter_worker_servers_active",
                                       "Server connections attached to a client, per worker.", stats,
                                       &WorkerStats::servers_active));
  families.push_back(per_worker_family("pgrouter_worker_servers_idle",
                                       "Server connections idle in a pool, per worker.", stats,
                                       &WorkerStats::servers_idle));
  gauge("pgrouter_process_resident_memory_bytes", "Resident memory of the pgrouter process.",
        process_resident_bytes());

  MetricFamily build_info{"pgrouter_build_info", "Always 1; the version is a label.", MetricType::Gauge, {}};
  ClientMetric build_metric;
  build_metric.label = {{"version", PGROUTER_VERSION}};
  build_metric.gauge.value = 1;
  build_info.metric.push_back(std::move(build_metric));
  families.push_back(std::move(build_info));

  return prometheus::TextSerializer().Serialize(families);
}

// State shared by the server and its connection coroutines, so a connection still being served
// keeps what it reads alive after the AdminServer is gone.
struct AdminState {
  AdminState(asio::io_context& io, std::shared_ptr<Stats> s, std::function<std::string()> r, ApiHandler a)
      : acceptor(io), stats(std::move(s)), ready(std::move(r)), api(std::move(a)) {}
  tcp::acceptor acceptor;
  std::shared_ptr<Stats> stats;
  std::function<std::string()> ready;
  ApiHandler api;
  int open_connections = 0;  // touched only on the io_context's thread
};

struct AdminServer::Impl {
  asio::io_context& io;
  std::string host;
  uint16_t port;
  std::shared_ptr<AdminState> state;
};

namespace {

Response route(AdminState& state, const Request& req) {
  const unsigned version = req.version();
  const bool keep_alive = req.keep_alive();
  const auto raw_target = req.target();
  std::string_view target(raw_target.data(), raw_target.size());
  target = target.substr(0, target.find('?'));

  if (target != "/metrics" && target != "/livez" && target != "/readyz") {
    return error_response(http::status::not_found, "not_found", "no such endpoint: " + std::string(target),
                          version, keep_alive);
  }
  if (req.method() != http::verb::get) {
    Response res = error_response(http::status::method_not_allowed, "method_not_allowed",
                                  "only GET is allowed on " + std::string(target), version, keep_alive);
    res.set(http::field::allow, "GET");
    return res;
  }
  if (target == "/livez") return json_response(http::status::ok, {{"status", "ok"}}, version, keep_alive);
  if (target == "/readyz") {
    std::string reason = state.ready ? state.ready() : std::string();
    if (reason.empty()) return json_response(http::status::ok, {{"status", "ready"}}, version, keep_alive);
    return json_response(http::status::service_unavailable, {{"status", "not_ready"}, {"reason", reason}},
                         version, keep_alive);
  }
  Response res{http::status::ok, version};
  res.set(http::field::server, "pgrouter");
  res.set(http::field::content_type, "text/plain; version=0.0.4");
  res.keep_alive(keep_alive);
  res.body() = render_metrics(*state.stats);
  if (state.stats->extra_metrics) res.body() += state.stats->extra_metrics();
  res.prepare_payload();
  return res;
}

bool is_api_path(std::string_view target) {
  target = target.substr(0, target.find('?'));
  return target == "/v1" || target.starts_with("/v1/");
}

// The API handler's answer; an exception in it is a 500 of the usual envelope.
awaitable<ApiResponse> call_api(ApiHandler handler, ApiRequest req) {
  ApiResponse out;
  std::string failure;
  try {
    out = co_await handler(std::move(req));
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    out = ApiResponse{};
    out.status = 500;
    out.body = {{"error", {{"code", "internal"}, {"message", failure}}}};
  }
  co_return out;
}

struct Answer {
  Response res;
  std::function<void()> after_write;
};

awaitable<Answer> answer(std::shared_ptr<AdminState> state, Request req, asio::ip::address peer) {
  const auto raw_target = req.target();
  std::string target(raw_target.data(), raw_target.size());
  if (!state->api || !is_api_path(target)) co_return Answer{route(*state, req), {}};
  const auto method = req.method_string();
  const auto authorization = req[http::field::authorization];
  ApiRequest api{std::string(method.data(), method.size()), target, req.body(),
                 std::string(authorization.data(), authorization.size()), peer};
  auto out = co_await call_api(state->api, std::move(api));
  Response res = json_response(http::status(out.status), out.body, req.version(), req.keep_alive());
  for (const auto& [name, value] : out.headers) res.set(name, value);
  co_return Answer{std::move(res), std::move(out.after_write)};
}

awaitable<void> serve_connection(std::shared_ptr<AdminState> state, tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(kMaxHeaderBytes + kMaxBodyBytes);
  boost::system::error_code ec;
  const auto peer = stream.socket().remote_endpoint(ec).address();
  for (int served = 0; served < kMaxRequestsPerConnection; ++served) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(kMaxBodyBytes);
    stream.expires_after(kReadTimeout);
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec == http::error::body_limit || ec == http::error::header_limit ||
        ec == http::error::buffer_overflow) {
      Response res = error_response(http::status::payload_too_large, "payload_too_large", "request too large",
                                    11, false);
      stream.expires_after(kWriteTimeout);
      co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
      break;
    }
    if (ec) break;  // EOF, timeout, malformed request: nothing useful to answer
    Request req = parser.release();
    Answer out = co_await answer(state, std::move(req), peer);
    Response& res = out.res;
    // Keep-alive ends with the last request we are willing to serve on this connection.
    if (served + 1 == kMaxRequestsPerConnection) res.keep_alive(false);
    stream.expires_after(kWriteTimeout);
    co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
    if (out.after_write) out.after_write();
    if (ec || !res.keep_alive()) break;
  }
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.socket().close(ec);
  --state->open_connections;
}

awaitable<void> accept_loop(std::shared_ptr<AdminState> state) {
  auto executor = co_await asio::this_coro::executor;
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket = co_await state->acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !state->acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors and the like: back off instead of spinning on the same error.
      asio::steady_timer backoff(executor, 100ms);
      co_await backoff.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    if (state->open_connections >= kMaxConnections) {
      socket.close(ec);
      continue;
    }
    ++state->open_connections;
    asio::co_spawn(executor, serve_connection(state, std::move(socket)), asio::detached);
  }
}

}  // namespace

AdminServer::AdminServer(asio::io_context& io, std::string host, uint16_t port, std::shared_ptr<Stats> stats,
                         std::function<std::string()> ready, ApiHandler api)
    : impl_(std::make_unique<Impl>(
          Impl{io, std::move(host), port,
               std::make_shared<AdminState>(io, std::move(stats), std::move(ready), std::move(api))})) {}

// Closing the acceptor ends the accept loop; connections in flight finish on their own. Destroy the
// server on the io_context's thread or after that io_context has stopped, like any Asio object.
AdminServer::~AdminServer() {
  boost::system::error_code ec;
  impl_->state->acceptor.close(ec);
}

void AdminServer::start(int inherited_fd) {
  tcp::acceptor& acceptor = impl_->state->acceptor;
  if (inherited_fd >= 0) {
    takeover::adopt_listener(acceptor, inherited_fd);
  } else {
    tcp::resolver resolver(impl_->io);
    const tcp::endpoint endpoint = *resolver.resolve(impl_->host, std::to_string(impl_->port)).begin();
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen();
  }
  asio::co_spawn(impl_->io, accept_loop(impl_->state), asio::detached);
}

int AdminServer::listener_fd() const {
  return impl_->state->acceptor.is_open() ? impl_->state->acceptor.native_handle() : -1;
}

void AdminServer::stop_accepting() {
  takeover::close_shared_listener(impl_->state->acceptor);  // the successor holds the same socket
}

uint16_t AdminServer::port() const {
  boost::system::error_code ec;
  const tcp::endpoint local = impl_->state->acceptor.local_endpoint(ec);
  return ec ? impl_->port : local.port();
}

}  // namespace pgrouter::control
