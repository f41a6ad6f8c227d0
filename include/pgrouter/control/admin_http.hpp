// Admin HTTP endpoint (Boost.Beast) on the control-plane io_context: /metrics (Prometheus text format
// via prometheus-cpp's serializer), /livez, /readyz, and a JSON 404 envelope for anything else.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "pgrouter/asio.hpp"
#include "pgrouter/control/stats.hpp"

namespace pgrouter::control {

class AdminServer {
 public:
  // ready() is asked on each /readyz; it returns an empty string when ready, else the reason.
  AdminServer(asio::io_context& io, std::string host, uint16_t port, std::shared_ptr<Stats> stats,
              std::function<std::string()> ready);
  ~AdminServer();
  void start();  // binds and begins accepting; throws on bind failure
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The full /metrics body (text exposition format). Exposed for unit tests.
std::string render_metrics(const Stats& stats);

}  // namespace pgrouter::control
