// Tests for per-worker stats, the /metrics renderer (sums over workers, cumulative histogram buckets, error
// labels) and the admin HTTP server's routes over a loopback socket.
#include <doctest/doctest.h>

#include <atomic>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "pgrouter/asio.hpp"
#include "pgrouter/control/admin_http.hpp"
#include "pgrouter/control/stats.hpp"

using namespace pgrouter;
using namespace pgrouter::control;

namespace {

// The value on the exposition line that starts with exactly `series ` (name plus labels), if any.
std::optional<double> sample_value(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

bool has_line(const std::string& text, const std::string& wanted) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line == wanted) return true;
  }
  return false;
}

constexpr uint64_t kMicro = 1000;
constexpr uint64_t kSecond = 1000 * 1000 * 1000;

}  // namespace

TEST_CASE("WorkerStats counts errors by SQLSTATE and source") {
  WorkerStats ws;
  ws.count_error("53300", true);
  ws.count_error("53300", true);
  ws.count_error("53300", false);
  ws.count_error("42P01", false);
  const auto errors = ws.errors_snapshot();
  CHECK(errors.size() == 3);
  CHECK(errors.at({"53300", true}) == 2);
  CHECK(errors.at({"53300", false}) == 1);
  CHECK(errors.at({"42P01", false}) == 1);
}

TEST_CASE("Stats owns one WorkerStats per worker") {
  Stats stats(3);
  REQUIRE(stats.workers.size() == 3);
  CHECK(stats.workers[0].get() != stats.workers[2].get());
}

TEST_CASE("render_metrics sums the workers") {
  Stats stats(2);
  WorkerStats& w0 = *stats.workers[0];
  WorkerStats& w1 = *stats.workers[1];
  w0.clients_connected = 5;
  w1.clients_connected = -1;  // a gauge may go negative on one worker; only the sum is meaningful
  w0.clients_waiting = 1;
  w1.clients_waiting = 2;
  w0.client_connections_total = 10;
  w1.client_connections_total = 32;
  w1.client_login_failures_total = 4;
  w0.servers_active = 3;
  w1.servers_idle = 7;
  w0.server_connections_total = 6;
  w1.server_connect_failures_total = 2;
  w0.queries_total = 1000;
  w1.queries_total = 234;
  w0.bytes_client_to_server = 100;
  w1.bytes_client_to_server = 11;
  w0.bytes_server_to_client = 5000;
  w1.bytes_server_to_client = 1;
  stats.control.cancel_requests_total = 9;
  stats.config_reloads_total = 3;
  stats.config_reload_failures_total = 1;
  stats.config_last_reload_success_unixtime = 1700000000;

  const std::string text = render_metrics(stats);
  CHECK(sample_value(text, "pgrouter_clients_connected") == 4);
  CHECK(sample_value(text, "pgrouter_clients_waiting") == 3);
  CHECK(sample_value(text, "pgrouter_client_connections_total") == 42);
  CHECK(sample_value(text, "pgrouter_client_login_failures_total") == 4);
  CHECK(sample_value(text, "pgrouter_servers_active") == 3);
  CHECK(sample_value(text, "pgrouter_servers_idle") == 7);
  CHECK(sample_value(text, "pgrouter_server_connections_total") == 6);
  CHECK(sample_value(text, "pgrouter_server_connect_failures_total") == 2);
  CHECK(sample_value(text, "pgrouter_queries_total") == 1234);
  CHECK(sample_value(text, "pgrouter_bytes_received_total") == 111);
  CHECK(sample_value(text, "pgrouter_bytes_sent_total") == 5001);
  CHECK(sample_value(text, "pgrouter_cancel_requests_total") == 9);
  CHECK(sample_value(text, "pgrouter_config_reloads_total") == 3);
  CHECK(sample_value(text, "pgrouter_config_reload_failures_total") == 1);
  CHECK(sample_value(text, "pgrouter_config_last_reload_success_timestamp_seconds") == 1700000000);
  CHECK(sample_value(text, "pgrouter_draining") == 0);
  CHECK(sample_value(text, "pgrouter_workers") == 2);
  CHECK(has_line(text, "# TYPE pgrouter_queries_total counter"));
  CHECK(has_line(text, "# TYPE pgrouter_clients_connected gauge"));
  const auto rss = sample_value(text, "pgrouter_process_resident_memory_bytes");
  REQUIRE(rss.has_value());
  CHECK(*rss > 1024 * 1024);  // a running test binary is well above 1 MiB resident
}

TEST_CASE("render_metrics turns per-worker bucket counts into cumulative buckets") {
  Stats stats(2);
  stats.workers[0]->query_latency.observe_ns(50 * kMicro);     // <= 0.0001
  stats.workers[1]->query_latency.observe_ns(100 * kMicro);    // exactly on 0.0001: le is inclusive
  stats.workers[1]->query_latency.observe_ns(300 * kMicro);    // <= 0.0005
  stats.workers[0]->query_latency.observe_ns(2 * kSecond);     // <= 5
  stats.workers[1]->query_latency.observe_ns(10 * kSecond);    // exactly on 10
  stats.workers[1]->query_latency.observe_ns(61 * kSecond);    // +Inf only
  stats.workers[0]->pool_wait.observe_ns(20 * 1000 * kMicro);  // 0.02 <= 0.025

  const std::string text = render_metrics(stats);
  const std::string q = "pgrouter_query_duration_seconds";
  CHECK(has_line(text, "# TYPE " + q + " histogram"));
  CHECK(sample_value(text, q + "_bucket{le=\"0.0001\"}") == 2);
  CHECK(sample_value(text, q + "_bucket{le=\"0.00025\"}") == 2);
  CHECK(sample_value(text, q + "_bucket{le=\"0.0005\"}") == 3);
  CHECK(sample_value(text, q + "_bucket{le=\"1\"}") == 3);
  CHECK(sample_value(text, q + "_bucket{le=\"2.5\"}") == 4);
  CHECK(sample_value(text, q + "_bucket{le=\"5\"}") == 4);
  CHECK(sample_value(text, q + "_bucket{le=\"10\"}") == 5);
  CHECK(sample_value(text, q + "_bucket{le=\"60\"}") == 5);
  CHECK(sample_value(text, q + "_bucket{le=\"+Inf\"}") == 6);
  CHECK(sample_value(text, q + "_count") == 6);
  const auto sum = sample_value(text, q + "_sum");
  REQUIRE(sum.has_value());
  CHECK(*sum == doctest::Approx(73.00045));

  const std::string w = "pgrouter_pool_wait_seconds";
  CHECK(sample_value(text, w + "_bucket{le=\"0.01\"}") == 0);
  CHECK(sample_value(text, w + "_bucket{le=\"0.025\"}") == 1);
  CHECK(sample_value(text, w + "_bucket{le=\"+Inf\"}") == 1);
  CHECK(sample_value(text, w + "_count") == 1);
}

TEST_CASE("render_metrics labels errors by sqlstate and source, summed over workers and control") {
  Stats stats(2);
  stats.workers[0]->count_error("53300", true);
  stats.workers[1]->count_error("53300", true);
  stats.control.count_error("53300", true);
  stats.workers[1]->count_error("53300", false);
  stats.workers[0]->count_error("42P01", false);

  const std::string text = render_metrics(stats);
  CHECK(has_line(text, "# TYPE pgrouter_errors_total counter"));
  CHECK(sample_value(text, "pgrouter_errors_total{source=\"pgrouter\",sqlstate=\"53300\"}") == 3);
  CHECK(sample_value(text, "pgrouter_errors_total{source=\"server\",sqlstate=\"53300\"}") == 1);
  CHECK(sample_value(text, "pgrouter_errors_total{source=\"server\",sqlstate=\"42P01\"}") == 1);
  CHECK_FALSE(
      sample_value(text, "pgrouter_errors_total{source=\"pgrouter\",sqlstate=\"42P01\"}").has_value());
}

namespace {

namespace beast = boost::beast;
namespace http = beast::http;

// An AdminServer on 127.0.0.1:<ephemeral> served by its own thread for the duration of one test.
struct RunningAdminServer {
  asio::io_context io;
  std::shared_ptr<Stats> stats = std::make_shared<Stats>(2);
  std::shared_ptr<std::atomic<bool>> ready = std::make_shared<std::atomic<bool>>(false);
  std::optional<AdminServer> server;
  std::thread runner;

  RunningAdminServer() {
    auto ready_flag = ready;
    server.emplace(io, "127.0.0.1", 0, stats, [ready_flag] {
      return ready_flag->load() ? std::string() : std::string("backends \"down\"");
    });
    server->start();
    runner = std::thread([this] { io.run(); });
  }
  ~RunningAdminServer() {
    io.stop();
    runner.join();
    server.reset();
  }
};

http::response<http::string_body> exchange(tcp::socket& socket, beast::flat_buffer& buffer, http::verb verb,
                                           const std::string& target) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(socket, req);
  http::response<http::string_body> res;
  http::read(socket, buffer, res);
  return res;
}

}  // namespace

TEST_CASE("PoolLabelTable keeps the first max_pools labels and folds the rest into other") {
  PoolLabelTable table;
  table.set_limit(2);
  PoolLabels a{"app", "alice", "127.0.0.1:5432", "0", "primary"};
  PoolLabels b{"app", "bob", "127.0.0.1:5432", "0", "primary"};
  PoolLabels c{"billing", "alice", "127.0.0.1:5433", "1", "replica"};
  CHECK(table.admit(a) == a);
  CHECK(table.admit(b) == b);
  PoolLabels folded = table.admit(c);
  CHECK(folded == PoolLabels{"other", "other", "other", "other", "replica"});
  CHECK(table.admit(a) == a);  // admitted labels stay theirs
  table.set_limit(1);          // a lower limit applies only to labels not seen yet
  CHECK(table.admit(b) == b);
  table.set_limit(3);
  CHECK(table.admit(c) == c);
}

TEST_CASE("render_metrics sums each pool's series over workers and keeps the unlabelled totals") {
  Stats stats(2);
  PoolLabels a{"app", "alice", "127.0.0.1:5432", "0", "primary"};
  PoolLabels other = other_pool_labels("replica");
  auto& a0 = stats.workers[0]->pool_stats(a);
  auto& a1 = stats.workers[1]->pool_stats(a);
  CHECK(&stats.workers[0]->pool_stats(a) == &a0);  // one block per labels and worker
  a0.servers_open += 3;
  a0.servers_idle += 1;
  a1.servers_open += 2;
  a1.servers_idle += 2;
  a0.queries_total += 5;
  a1.queries_total += 7;
  a0.checkouts_total += 4;
  a1.clients_waiting += 1;
  a0.wait.observe_ns(200 * kMicro);
  a1.wait.observe_ns(2 * kSecond);
  a0.transaction.observe_ns(3 * kSecond);
  a0.transactions_total += 1;
  auto& o = stats.workers[1]->pool_stats(other);
  o.server_connections_total += 9;
  stats.workers[0]->queries_total += 12;
  const std::string text = render_metrics(stats);
  const std::string la = R"(database="app",user="alice",backend="127.0.0.1:5432",shard="0",role="primary")";
  CHECK(sample_value(text, "pgrouter_pool_servers{" + la + R"(,state="active"})") == 2.0);
  CHECK(sample_value(text, "pgrouter_pool_servers{" + la + R"(,state="idle"})") == 3.0);
  CHECK(sample_value(text, "pgrouter_pool_queries_total{" + la + "}") == 12.0);
  CHECK(sample_value(text, "pgrouter_pool_checkouts_total{" + la + "}") == 4.0);
  CHECK(sample_value(text, "pgrouter_pool_clients_waiting{" + la + "}") == 1.0);
  CHECK(sample_value(text, "pgrouter_pool_transactions_total{" + la + "}") == 1.0);
  CHECK(sample_value(text, "pgrouter_pool_checkout_wait_seconds_count{" + la + "}") == 2.0);
  CHECK(sample_value(text, "pgrouter_pool_checkout_wait_seconds_bucket{" + la + R"(,le="0.00025"})") == 1.0);
  CHECK(sample_value(text, "pgrouter_pool_transaction_duration_seconds_sum{" + la + "}") == 3.0);
  CHECK(
      sample_value(
          text,
          R"(pgrouter_pool_server_connections_total{database="other",user="other",backend="other",shard="other",role="replica"})") ==
      9.0);
  // The unlabelled families are the per-worker sums, as before.
  CHECK(sample_value(text, "pgrouter_queries_total") == 12.0);
  CHECK(sample_value(text, "pgrouter_pool_wait_seconds_count") == 0.0);
}

TEST_CASE("AdminServer answers /metrics, /livez, /readyz, 404 and 405 on one keep-alive connection") {
  RunningAdminServer admin;
  REQUIRE(admin.server->port() != 0);
  admin.stats->workers[1]->queries_total = 77;

  asio::io_context client_io;
  tcp::socket socket(client_io);
  socket.connect({asio::ip::make_address("127.0.0.1"), admin.server->port()});
  beast::flat_buffer buffer;

  auto metrics = exchange(socket, buffer, http::verb::get, "/metrics");
  CHECK(metrics.result() == http::status::ok);
  CHECK(std::string(metrics[http::field::content_type]) == "text/plain; version=0.0.4");
  CHECK(sample_value(metrics.body(), "pgrouter_queries_total") == 77);
  CHECK(metrics.keep_alive());

  auto livez = exchange(socket, buffer, http::verb::get, "/livez");
  CHECK(livez.result() == http::status::ok);
  CHECK(livez.body() == "{\"status\":\"ok\"}\n");

  auto not_ready = exchange(socket, buffer, http::verb::get, "/readyz");
  CHECK(not_ready.result() == http::status::service_unavailable);
  CHECK(not_ready.body() == "{\"reason\":\"backends \\\"down\\\"\",\"status\":\"not_ready\"}\n");

  admin.ready->store(true);
  auto ready = exchange(socket, buffer, http::verb::get, "/readyz?verbose=1");
  CHECK(ready.result() == http::status::ok);
  CHECK(ready.body() == "{\"status\":\"ready\"}\n");

  auto missing = exchange(socket, buffer, http::verb::get, "/nope");
  CHECK(missing.result() == http::status::not_found);
  CHECK(std::string(missing[http::field::content_type]) == "application/json");
  CHECK(missing.body() == "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint: /nope\"}}\n");

  auto post = exchange(socket, buffer, http::verb::post, "/metrics");
  CHECK(post.result() == http::status::method_not_allowed);
  CHECK(std::string(post[http::field::allow]) == "GET");
}

TEST_CASE("AdminServer refuses an oversized request with 413 and closes") {
  RunningAdminServer admin;
  asio::io_context client_io;
  tcp::socket socket(client_io);
  socket.connect({asio::ip::make_address("127.0.0.1"), admin.server->port()});
  http::request<http::string_body> req{http::verb::get, "/metrics", 11};
  req.set(http::field::host, "127.0.0.1");
  req.set("X-Padding", std::string(20000, 'a'));
  boost::system::error_code ec;
  http::write(socket, req, ec);  // the server may close before reading all of it
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res, ec);
  REQUIRE_FALSE(ec);
  CHECK(res.result() == http::status::payload_too_large);
  CHECK_FALSE(res.keep_alive());
}
