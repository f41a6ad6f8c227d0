// The process's stages, run on the control thread: serving, then draining on SIGTERM (the workers refuse new
// connections and end each client once it is idle), then stopped when no client is left, when
// listen.shutdown_timeout passes or on SIGINT; the control loop then returns and main() joins the workers.
// After a takeover (control/takeover.hpp) a stage comes between: handed_over, where a successor accepts the
// new connections and this process keeps serving its clients until they leave or listen.takeover_client_wait
// passes, then drains.
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
  // A successor accepts now: stop accepting, serve the clients left for up to client_wait, then drain.
  void hand_over(std::chrono::milliseconds client_wait, std::chrono::milliseconds shutdown_timeout);
  void stop();  // closes everything now
  // No longer the process new clients reach (handed over or draining).
  bool draining() const { return phase_ == Phase::handed_over || phase_ == Phase::draining; }

 private:
  enum class Phase : uint8_t { starting, serving, handed_over, draining, stopped };
  void set_phase(Phase next);
  void poll_drain();
  void poll_handed_over(std::chrono::milliseconds shutdown_timeout);
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
