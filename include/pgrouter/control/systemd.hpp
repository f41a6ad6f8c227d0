// Notifications to systemd (sd_notify) for a Type=notify service: ready, reloading, stopping, watchdog.
// Without libsystemd at build time, or when systemd did not start the process (no NOTIFY_SOCKET), they do
// nothing.
#pragma once
#include <chrono>

namespace pgrouter::control::systemd {

void notify(const char* state);  // e.g. "READY=1"
// How often to send WATCHDOG=1: half the interval systemd asked for (WatchdogSec=), or 0 when it asked none.
std::chrono::microseconds watchdog_period();

}  // namespace pgrouter::control::systemd
