// Admin HTTP endpoint (Boost.Beast) on the control-plane io_context: /metrics (Prometheus text format
// via prometheus-cpp's serializer), /livez, /readyz, the /v1 API (handed to an ApiHandler), and a JSON 404
// envelope for anything else.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "pgrouter/asio.hpp"
#include "pgrouter/control/stats.hpp"

namespace pgrouter::control {

// A /v1 request as the API handler sees it.
struct ApiRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query
  std::string body;
  std::string authorization;  // the Authorization header, empty when absent
  asio::ip::address peer;
};

// Its answer: a JSON body with extra headers, and what to do once it is written (a drain must not stop the
// server before its answer is out).
struct ApiResponse {
  unsigned status = 200;
  nlohmann::json body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::function<void()> after_write;
};

using ApiHandler = std::function<awaitable<ApiResponse>(ApiRequest)>;

class AdminServer {
 public:
  // ready() is asked on each /readyz; it returns an empty string when ready, else the reason. api answers
  // /v1 and everything under it (none: 404 as any unknown path).
  AdminServer(asio::io_context& io, std::string host, uint16_t port, std::shared_ptr<Stats> stats,
              std::function<std::string()> ready, ApiHandler api = {});
  ~AdminServer();
  // Binds and begins accepting; throws on bind failure. With a listening socket a predecessor handed over
  // (control/takeover.hpp), accepts on that one instead.
  void start(int inherited_fd = -1);
  uint16_t port() const;
  int listener_fd() const;  // for a successor
  void stop_accepting();    // a successor accepts now; requests in flight finish

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The full /metrics body (text exposition format). Exposed for unit tests.
std::string render_metrics(const Stats& stats);

}  // namespace pgrouter::control
