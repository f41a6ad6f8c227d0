// The process's stages, run on the control thread: serving, then draining on SIGTERM (the workers refuse new
// connections and end each client once it is idle), then stopped when no client is left, when
// listen.shutdown_timeout passes or on SIGINT; the control loop then returns and main() joins the workers.
// systemd hears of each stage (READY=1, STOPPING=1) and gets its watchdog pings from here.
#pragma once
#include <chrono>

#include "pgrouter/asio.hpp"
#include "pgrouter/worker.hpp"

namespace pgrouter {

class Lifecycle {
 public:
  Lifecycle(asio::io_context& control_io, Runtime& rt);
  void serving();  // listening and started: READY=1, and the watchdog pings if systemd asks for them
  void drain(std::chrono::milliseconds timeout);
  void stop();  // closes everything now
  bool draining() const { return phase_ == Phase::draining; }

 private:
  enum class Phase : uint8_t { starting, serving, draining, stopped };
  void set_phase(Phase next);
  void poll_drain();
  void ping_watchdog();

  asio::io_context& io_;
  Runtime& rt_;
  Phase phase_ = Phase::starting;  // changed only by set_phase()
  asio::steady_timer drain_timer_;
  asio::steady_timer watchdog_timer_;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::microseconds watchdog_period_{};
};

}  // namespace pgrouter
