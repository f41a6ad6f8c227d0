// Serving, draining and stopping (see the header).
#include "pgrouter/lifecycle.hpp"

#include <cassert>

#include "pgrouter/control/log.hpp"
#include "pgrouter/control/systemd.hpp"

namespace pgrouter {

namespace {
// How often the drain looks whether clients are left: an exit at most this late.
constexpr std::chrono::milliseconds kDrainPoll{100};
}  // namespace

Lifecycle::Lifecycle(asio::io_context& control_io, Runtime& rt)
    : io_(control_io), rt_(rt), drain_timer_(control_io), watchdog_timer_(control_io) {}

void Lifecycle::set_phase(Phase next) {
  // starting -> serving [-> handed_over] -> draining -> stopped; stopped from any stage (SIGINT, a failed
  // start).
  [[maybe_unused]] bool possible = next == Phase::stopped || int(next) == int(phase_) + 1 ||
                                   (phase_ == Phase::serving && next == Phase::draining);
  assert(possible && "impossible lifecycle change");
  Phase previous = phase_;
  phase_ = next;
  switch (next) {
    case Phase::serving:
      control::systemd::notify("READY=1");
      break;
    case Phase::handed_over:
      rt_.stats->draining.store(1, std::memory_order_relaxed);
      control::systemd::notify("STOPPING=1");
      for (auto& w : rt_.workers) w->stop_accepting();
      break;
    case Phase::draining:
      rt_.stats->draining.store(1, std::memory_order_relaxed);
      if (previous != Phase::handed_over) control::systemd::notify("STOPPING=1");
      break;
    case Phase::stopped:
      drain_timer_.cancel();
      watchdog_timer_.cancel();
      for (auto& w : rt_.workers) w->stop();
      io_.stop();
      break;
    case Phase::starting:
      break;
  }
}

void Lifecycle::serving() {
  set_phase(Phase::serving);
  watchdog_period_ = control::systemd::watchdog_period();
  if (watchdog_period_.count() > 0) ping_watchdog();
}

void Lifecycle::ping_watchdog() {
  // On the control thread: a control loop that hangs (and with it reloads and /metrics) stops the pings.
  control::systemd::notify("WATCHDOG=1");
  watchdog_timer_.expires_after(watchdog_period_);
  watchdog_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) ping_watchdog();
  });
}

void Lifecycle::hand_over(std::chrono::milliseconds client_wait, std::chrono::milliseconds shutdown_timeout) {
  if (phase_ != Phase::serving) return;
  log::info("handed over: a successor accepts the new connections; serving the clients left here",
            {{"clients", rt_.clients.load()}, {"takeover_client_wait_ms", int64_t(client_wait.count())}});
  set_phase(Phase::handed_over);
  deadline_ = std::chrono::steady_clock::now() + client_wait;
  poll_handed_over(shutdown_timeout);
}

void Lifecycle::poll_handed_over(std::chrono::milliseconds shutdown_timeout) {
  if (phase_ != Phase::handed_over) return;  // a SIGTERM or SIGINT came meanwhile
  if (rt_.clients.load() == 0) {
    log::info("handed over: no client is left here; exiting");
    return stop();
  }
  if (std::chrono::steady_clock::now() >= deadline_) return drain(shutdown_timeout);
  drain_timer_.expires_after(kDrainPoll);
  drain_timer_.async_wait([this, shutdown_timeout](boost::system::error_code ec) {
    if (!ec) poll_handed_over(shutdown_timeout);
  });
}

void Lifecycle::drain(std::chrono::milliseconds timeout) {
  if (phase_ != Phase::serving && phase_ != Phase::handed_over) return;
  log::info("draining: new connections are refused, clients end as their transactions finish",
            {{"clients", rt_.clients.load()}, {"shutdown_timeout_ms", int64_t(timeout.count())}});
  set_phase(Phase::draining);
  deadline_ = std::chrono::steady_clock::now() + timeout;
  for (auto& w : rt_.workers) w->drain();
  poll_drain();
}

void Lifecycle::poll_drain() {
  int left = rt_.clients.load();
  if (left == 0 || std::chrono::steady_clock::now() >= deadline_) {
    if (left > 0)
      log::warn("shutdown_timeout passed: closing the remaining connections", {{"clients", left}});
    stop();
    return;
  }
  drain_timer_.expires_after(kDrainPoll);
  drain_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) poll_drain();
  });
}

void Lifecycle::stop() {
  if (phase_ != Phase::stopped) set_phase(Phase::stopped);
}

}  // namespace pgrouter
