// The steady clock as of the readiness batch being dispatched on this thread.
#pragma once
#include <chrono>

namespace pgrouter::net {

// While Readiness::dispatch() runs the coroutines a batch of epoll events woke (most of a transaction's
// work), now() is the time that batch was taken, read once; elsewhere it is the clock itself. A transaction
// needs the time in many places (pool wait, idle and lifetime checks, activity, the latency histogram), and
// one read per batch serves them all, as PgBouncer's cached time per loop does. For a timestamp the batch
// time is when epoll reported the bytes, which is closer to their arrival than the moment their turn in the
// batch came.
class BatchClock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  static time_point now() { return depth_ > 0 ? now_ : std::chrono::steady_clock::now(); }
  // Marks a batch for its lifetime (nested: the outermost one reads the clock).
  class Scope {
   public:
    Scope() {
      if (depth_++ == 0) now_ = std::chrono::steady_clock::now();
    }
    ~Scope() { --depth_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
  };

 private:
  static inline thread_local time_point now_{};
  static inline thread_local int depth_ = 0;
};

}  // namespace pgrouter::net
