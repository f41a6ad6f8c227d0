// sd_notify wrappers (see the header).
#include "pgrouter/control/systemd.hpp"

#ifdef PGROUTER_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace pgrouter::control::systemd {

#ifdef PGROUTER_HAVE_SYSTEMD
void notify(const char* state) { sd_notify(0, state); }

std::chrono::microseconds watchdog_period() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return {};
  return std::chrono::microseconds(usec / 2);  // twice per interval: one late wake-up is no missed ping
}
#else
void notify(const char*) {}
std::chrono::microseconds watchdog_period() { return {}; }
#endif

}  // namespace pgrouter::control::systemd
