// Per-worker readiness tracking for plain TCP sockets on the relay path. Boost 1.74's Asio reactor tries
// every read speculatively and, in request/response traffic, that recv(2) fails with EAGAIN on both
// sockets of every round trip (its "exhausted" hint only fires at EOF); waiting with async_wait instead
// re-arms epoll with epoll_ctl each time. Here each socket is registered once, edge-triggered, in a
// worker-owned epoll set; a socket's readable/writable flags are set by events and cleared by a short
// read or EAGAIN, so a relay loop reads only when data is there and waits without a syscall otherwise.
// The epoll set itself is registered with the worker's Asio reactor and drained by a reactor operation of
// our own (see Readiness::Op): each batch of events costs the reactor's epoll_wait and one epoll_wait of
// this set, with no epoll_ctl re-arm and no coroutine in between, and timers and coroutines keep running on
// the worker's io_context.
#pragma once
#include <sys/epoll.h>

#include <memory>

#include "pgrouter/asio.hpp"
// Asio's reactor internals (Boost 1.74, epoll): Readiness registers its set and runs its own operation there.
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>

namespace pgrouter::net {

using error_code = boost::system::error_code;

class Readiness;

// One registered socket. Owned next to the socket it describes; the socket must be closed (which
// removes it from the epoll set) before this is destroyed, or unregister() called.
class SocketReadiness {
 public:
  SocketReadiness() = default;
  SocketReadiness(const SocketReadiness&) = delete;
  SocketReadiness& operator=(const SocketReadiness&) = delete;
  ~SocketReadiness();

  // Registers fd with the worker's set (idempotent for the same fd); false if epoll refused.
  bool attach(Readiness& r, int fd);
  bool attached() const { return readiness_ != nullptr; }

  // Completes any pending wait with operation_aborted and makes every later read/write/wait fail the
  // same way until rearm() (used to stop a relay loop, even one that has not started yet).
  void cancel();
  void rearm() { cancelled_ = false; }

  // Reads what is there (up to n); waits for data when there is none. 0 with ec on EOF/error/cancel.
  awaitable<size_t> read_some(char* dst, size_t n, error_code& ec);
  // Returns once a read may find data (or EOF/error), without reading: lets an idle connection hold
  // no buffer while it waits.
  awaitable<void> wait_readable(error_code& ec);
  bool maybe_readable() const { return readable_; }  // false: the last read drained the socket
  // Writes all n bytes, waiting for buffer space as needed.
  awaitable<void> write_all(const char* src, size_t n, error_code& ec);

 private:
  friend class Readiness;
  struct Waiter {
    virtual ~Waiter() = default;
    virtual void complete(error_code ec) = 0;
  };
  template <typename Handler>
  struct WaiterImpl;
  awaitable<void> wait(bool for_write, error_code& ec);
  void wake(bool for_write, error_code ec);

  Readiness* readiness_ = nullptr;
  int fd_ = -1;
  bool readable_ = true;  // unknown counts as ready: the first read tries
  bool writable_ = true;
  bool cancelled_ = false;
  bool hung_up_ = false;  // EPOLLRDHUP/HUP/ERR seen: reads are never assumed drained again
  std::unique_ptr<Waiter> read_waiter_, write_waiter_;
};

class Readiness {
 public:
  explicit Readiness(asio::io_context& io);
  ~Readiness();
  void start();  // registers the set with io's reactor and starts draining it
  void stop();
  asio::io_context& io() { return io_; }

 private:
  friend class SocketReadiness;
  struct Op;
  // Reads the events waiting in the set (no blocking) and wakes their sockets' waiters. Returns how
  // many were read; 256 means there may be more.
  int drain();
  void arm();

  asio::io_context& io_;
  int epfd_ = -1;
  Op* op_ = nullptr;  // the reactor operation that drains the set; owned by itself once started
  asio::detail::epoll_reactor::per_descriptor_data reactor_data_ = nullptr;  // Asio's state for epfd_
  bool stopped_ = false;
};

}  // namespace pgrouter::net
