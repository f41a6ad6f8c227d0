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

#include <exception>
#include <memory>
#include <optional>
#include <vector>

#include "pgrouter/asio.hpp"
// Asio's reactor internals (Boost 1.74, epoll): Readiness registers its set and runs its own operation there.
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/version.hpp>
#if BOOST_VERSION / 100 != 1074
#error \
    "net/readiness relies on Boost 1.74's Asio internals (epoll_reactor, awaitable_thread): check them for this Boost"
#endif

struct ssl_st;

namespace pgrouter::net {

using error_code = boost::system::error_code;

class Readiness;

// A suspended coroutine, held in place: the stack of frames Asio runs it on (Boost 1.74's awaitable_thread,
// moved out of whatever ran it), the io_context it runs on and where its wait's result goes. Parking and
// resuming allocate nothing: Asio's own async_initiate path allocates a coroutine frame for the initiation
// and the completion handler is kept type-erased on the heap, two allocations and a few type-erased
// executor copies per wait, and a pooled transaction waits several times.
class Parked {
 public:
  Parked() = default;
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;
  ~Parked();  // a held coroutine is resumed through the queue with operation_aborted
  explicit operator bool() const { return thread_.has_value(); }
  // Takes the coroutine whose frame is `top` (called while it suspends). *ec receives the result.
  // io: where complete() queues it (null: the coroutine's own executor).
  void hold(asio::detail::awaitable_frame_base<asio::any_io_executor>* top, asio::io_context* io,
            error_code* ec);
  void resume(error_code ec);    // runs it now, on this stack, up to its next suspension
  void complete(error_code ec);  // runs it from the io_context's queue (blocking.never): after what runs now

 private:
  // awaitable_thread with access to what its own completion handlers use (attach, pump).
  struct Thread : asio::detail::awaitable_thread<asio::any_io_executor> {
    using Base = asio::detail::awaitable_thread<asio::any_io_executor>;
    explicit Thread(Base&& b) noexcept : Base(std::move(b)) {}
    Thread(Thread&& t) noexcept : Base(std::move(t)) {}
    void run() {
      this->top_of_stack_->attach_thread(this);
      this->pump();
    }
  };
  std::optional<Thread> thread_;
  asio::io_context* io_ = nullptr;
  error_code* ec_ = nullptr;
};

// What `co_await` takes to park the calling coroutine in `slot`. Boost 1.74's awaitable_frame accepts a
// function of the frame, run once the coroutine is suspended (Asio's async_initiate awaits the same
// thing); `after` runs once it is held and may complete it (through the queue) at once.
template <typename After>
struct ParkOp {
  Parked* slot;
  asio::io_context* io;
  error_code* ec;
  After after;
  asio::detail::awaitable_thread<asio::any_io_executor>* operator()(
      asio::detail::awaitable_frame_base<asio::any_io_executor>* frame) {
    slot->hold(frame, io, ec);
    after();
    return nullptr;
  }
};
struct NothingAfter {
  void operator()() const {}
};

// Parks one coroutine until another piece of code on the same thread wakes it, without a pass through
// the scheduler's queue where possible. Used to hand a new server to the session's server -> client loop
// between transactions.
class Wakeup {
 public:
  Wakeup() = default;
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;
  ~Wakeup();  // a parked coroutine is resumed through the queue with operation_aborted
  ParkOp<NothingAfter> wait(asio::io_context& io, error_code& ec) { return {&waiter_, &io, &ec, {}}; }
  // Runs the parked coroutine now, on this stack, up to its next suspension. Nothing if none is parked.
  void wake_now();
  // Runs it once the coroutine running now has suspended: right after it, when that coroutine was resumed
  // by r's dispatch (the relay's usual case), else through the io_context's queue.
  void wake_soon(Readiness& r);
  // Runs it once r's current batch of events has been dispatched (else like wake_soon): used to hand a
  // returning server to a waiting client. Like PgBouncer's per-loop activation, the batch's replies go to
  // their clients first and the queued requests go to the servers after them, instead of alternating a
  // reply to a client with a request to a server (each wakes a process that may preempt the worker
  // mid-batch, and the clients' replies then trickle out one wake-up each).
  void wake_after_batch(Readiness& r);
  void wake_later();  // through the io_context's queue
  bool parked() const { return bool(waiter_); }

 private:
  friend class Readiness;
  // Queues this in r's `list`, run by the dispatch; through the io_context's queue when r is not dispatching.
  void defer(Readiness& r, std::vector<Wakeup*> Readiness::*list);
  Parked waiter_;
  Readiness* deferred_in_ = nullptr;  // queued in that Readiness's deferred_ or batch_end_ list
};

// One registered socket. Owned next to the socket it describes; the socket must be closed (which
// removes it from the epoll set) before this is destroyed, or unregister() called.
class SocketReadiness {
 public:
  SocketReadiness() = default;
  SocketReadiness(const SocketReadiness&) = delete;
  SocketReadiness& operator=(const SocketReadiness&) = delete;
  ~SocketReadiness();

  // Registers fd with the worker's set (idempotent for the same fd); false if epoll refused. first: this
  // socket's events are dispatched before the others' of the same batch (see Readiness::dispatch).
  bool attach(Readiness& r, int fd, bool first = false);
  bool attached() const { return readiness_ != nullptr; }
  // Takes the socket out of the set (its descriptor stays open, for another owner).
  void detach();
  // Every later read and write goes through ssl (owned by the caller, on the same descriptor). Reads then
  // count the socket drained only when OpenSSL wants more bytes: a record it already decrypted may wait
  // inside it (SSL_pending) with nothing left on the socket to raise an edge.
  void use_tls(ssl_st* ssl) { tls_ = ssl; }
  // The owner found the socket drained (accept() said EAGAIN): wait_readable now waits for a new edge.
  void drained() {
    if (!hung_up_) readable_ = false;
  }

  // Completes any pending wait with operation_aborted and makes every later read/write/wait fail the
  // same way until rearm() (used to stop a relay loop, even one that has not started yet).
  void cancel();
  void rearm() { cancelled_ = false; }

  // Reads what is there (up to n); waits for data when there is none. 0 with ec on EOF/error/cancel.
  awaitable<size_t> read_some(char* dst, size_t n, error_code& ec);
  // read_some without waiting and without a coroutine frame (the relay's common case: the data is there):
  // true when it is done (got > 0, or ec set); false when read_some would have to wait.
  bool read_now(char* dst, size_t n, size_t& got, error_code& ec);
  // write_all without waiting: true when all n bytes were written (or ec is set); false with `written`
  // bytes sent when the rest has to wait (then write_all the rest).
  bool write_now(const char* src, size_t n, size_t& written, error_code& ec);
  // Returns once a read may find data (or EOF/error), without reading: lets an idle connection hold
  // no buffer while it waits.
  struct AfterPark {
    SocketReadiness* s;
    bool for_write;
    void operator()() const;
  };
  ParkOp<AfterPark> wait_readable(error_code& ec) { return wait(false, ec); }
  // false: the last read drained the socket (and OpenSSL holds no decrypted bytes)
  bool maybe_readable() const { return readable_ || (tls_ && tls_pending()); }
  // Writes all n bytes, waiting for buffer space as needed.
  awaitable<void> write_all(const char* src, size_t n, error_code& ec);
  // Joins the sends of the batch being dispatched (see Readiness::flush_sends): true when taken, and the
  // caller then co_awaits sent(ec) at once, keeping src alive; after it, *written holds what was sent (short:
  // write_all the rest). False when the batch cannot take it (no batch being dispatched, no io_uring, the
  // socket not known writable): write_now instead.
  bool send_with_batch(const char* src, size_t n, size_t* written);
  ParkOp<NothingAfter> sent(error_code& ec);

 private:
  friend class Readiness;
  // Parks the caller until the socket is readable (writable), cancelled or its wait completed otherwise.
  ParkOp<AfterPark> wait(bool for_write, error_code& ec);
  void wake(bool for_write, error_code ec);
  Parked& waiter(bool for_write) { return for_write ? write_waiter_ : read_waiter_; }
  bool tls_pending() const;  // OpenSSL holds decrypted bytes not read yet
  bool tls_read_now(char* dst, size_t n, size_t& got, error_code& ec);
  bool tls_write_now(const char* src, size_t n, size_t& written, error_code& ec);

  Readiness* readiness_ = nullptr;
  int fd_ = -1;
  bool readable_ = true;  // unknown counts as ready: the first read tries
  bool writable_ = true;
  bool cancelled_ = false;
  bool hung_up_ = false;   // EPOLLRDHUP/HUP/ERR seen: reads are never assumed drained again
  bool first_ = false;     // dispatched ahead of the batch's other sockets
  ssl_st* tls_ = nullptr;  // set: reads and writes go through OpenSSL (server connections over TLS)
  Parked read_waiter_, write_waiter_;
  Parked send_waiter_;  // parked in sent() until the batch's sends are made
};

class Readiness {
 public:
  explicit Readiness(asio::io_context& io);
  ~Readiness();
  // Registers the set with io's reactor and starts draining it. batch_sends: make each batch's sends in one
  // io_uring_enter (false, or io_uring refused: one send() each). Returns whether sends are batched.
  bool start(bool batch_sends = false);
  void stop();
  asio::io_context& io() { return io_; }

 private:
  friend class SocketReadiness;
  friend class Wakeup;
  struct Op;
  static constexpr int kBatch = 256;
  // Reads the events waiting in the set (no blocking) into batch_. Returns how many were read; kBatch
  // means there may be more.
  int drain();
  // Applies batch_ to its sockets and resumes their waiters inline, one after the other ("first" sockets'
  // events ahead of the rest).
  void dispatch();
  void put_first_sockets_first();
  // A socket destroyed while a batch is being dispatched (by a coroutine resumed earlier in it): its
  // later events in the batch are dropped.
  void forget(SocketReadiness* s);
  void forget(Wakeup* w);
  // Resumes s's reader or writer, if one waits, then the Wakeups it asked for before suspending.
  void resume_waiter(SocketReadiness& s, bool for_write);
  void run_deferred();  // the Wakeups asked for (wake_soon) by the coroutine that just suspended
  // Makes the sends queued with send_with_batch, all in one io_uring_enter, and resumes their writers;
  // again until none is queued (a resumed writer may queue another).
  void flush_sends();
  bool
  submit_sends();  // sending_ to the kernel; send_results_[i] gets each one's result. false: io_uring failed
  void run_batch_end();  // the Wakeups asked for with wake_after_batch, once the batch is dispatched
  // Runs f (a resumption); an exception is kept for Op to raise after the batch, not let out mid-batch.
  template <typename F>
  void resume_guarded(F f) {
    try {
      f();
    } catch (...) {
      if (!error_) error_ = std::current_exception();
    }
  }
  void arm();

  asio::io_context& io_;
  int epfd_ = -1;
  Op* op_ = nullptr;  // the reactor operation that drains the set; owned by itself once started
  asio::detail::epoll_reactor::per_descriptor_data reactor_data_ = nullptr;  // Asio's state for epfd_
  bool stopped_ = false;
  epoll_event batch_[kBatch];
  int batch_n_ = 0;     // events in batch_
  int batch_next_ = 0;  // the next one dispatch() applies
  bool dispatching_ = false;
  std::exception_ptr error_;  // the first exception out of a resumption in this batch
  std::vector<Wakeup*> deferred_;
  std::vector<Wakeup*> batch_end_;  // in the order asked (the pool's queue order)
  struct QueuedSend {
    SocketReadiness* s;
    const char* src;
    size_t n;
    size_t* written;
  };
  std::vector<QueuedSend> sends_, sending_;
  std::vector<int> send_results_;
  struct Ring;
  std::unique_ptr<Ring> ring_;  // null: no io_uring here (every send is made at once)
};

}  // namespace pgrouter::net
