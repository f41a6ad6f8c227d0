// Edge-triggered readiness for relay sockets: see readiness.hpp for why this exists.
#include "pgrouter/net/batch_clock.hpp"
#include "pgrouter/net/readiness.hpp"

#include <liburing.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <boost/asio/ssl/error.hpp>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <exception>
#include <utility>

namespace pgrouter::net {

// A parked coroutine resumes either in place (resume: from the set's dispatch and Wakeup::wake_now) or
// through the worker's own io_context executor (complete, blocking.never: queued behind what runs now).
// asio::post to the coroutine's any_io_executor would queue it through two type-erased executor hops and a
// work_dispatcher counting outstanding work on every resumption; the worker's accept loop and timers keep the
// io_context running.
void Parked::hold(asio::detail::awaitable_frame_base<asio::any_io_executor>* top, asio::io_context* io,
                  error_code* ec) {
  // Moving the thread out of the one running the coroutine leaves that one empty: its pump loop ends
  // when await_suspend returns, as it does for Asio's own completion handlers.
  thread_.emplace(std::move(*top->detach_thread()));
  io_ = io;
  ec_ = ec;
}

void Parked::resume(error_code ec) {
  // Moved to this stack first: the coroutine may park again in this same slot, or destroy it.
  Thread t(std::move(*thread_));
  thread_.reset();
  *ec_ = ec;
  t.run();
}

void Parked::complete(error_code ec) {
  // No io_context known (a socket never attached): the coroutine's own executor.
  std::optional<asio::any_io_executor> own;
  if (!io_) own = thread_->get_executor();
  auto run = [t = Thread(std::move(*thread_)), result = ec_, ec]() mutable {
    *result = ec;
    t.run();
  };
  thread_.reset();
  if (io_)
    asio::require(io_->get_executor(), asio::execution::blocking.never).execute(std::move(run));
  else
    asio::post(*own, std::move(run));
}

Parked::~Parked() {
  if (thread_) complete(asio::error::operation_aborted);
}

Wakeup::~Wakeup() {
  if (deferred_in_) deferred_in_->forget(this);
  if (waiter_) waiter_.complete(asio::error::operation_aborted);
}

void Wakeup::wake_now() {
  if (waiter_) waiter_.resume({});
}

void Wakeup::defer(Readiness& r, std::vector<Wakeup*> Readiness::*list) {
  if (!waiter_ || deferred_in_) return;
  if (!r.dispatching_) {
    wake_later();
    return;
  }
  deferred_in_ = &r;
  (r.*list).push_back(this);
}

void Wakeup::wake_soon(Readiness& r) { defer(r, &Readiness::deferred_); }

void Wakeup::wake_after_batch(Readiness& r) { defer(r, &Readiness::batch_end_); }

void Wakeup::wake_later() {
  if (waiter_) waiter_.complete({});
}

SocketReadiness::~SocketReadiness() {
  // Waiters hold coroutine handlers; dropping them unresumed would leak frames, so abort them.
  cancel();
  if (readiness_) readiness_->forget(this);
}

bool SocketReadiness::attach(Readiness& r, int fd, bool first) {
  first_ = first;
  if (readiness_ == &r && fd_ == fd) return true;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = this;
  if (::epoll_ctl(r.epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  readiness_ = &r;
  fd_ = fd;
  readable_ = writable_ = true;
  hung_up_ = false;
  return true;
}

void SocketReadiness::detach() {
  if (!readiness_) return;
  ::epoll_ctl(readiness_->epfd_, EPOLL_CTL_DEL, fd_, nullptr);
  readiness_->forget(this);
  readiness_ = nullptr;
  fd_ = -1;
}

void SocketReadiness::cancel() {
  // Sticky: a loop that has not reached its wait yet (a coroutine spawned but not started) must
  // stop too, not wait forever.
  cancelled_ = true;
  wake(false, asio::error::operation_aborted);
  wake(true, asio::error::operation_aborted);
}

void SocketReadiness::wake(bool for_write, error_code ec) {
  if (auto& w = waiter(for_write)) w.complete(ec);
}

ParkOp<SocketReadiness::AfterPark> SocketReadiness::wait(bool for_write, error_code& ec) {
  return {&waiter(for_write), readiness_ ? &readiness_->io() : nullptr, &ec, {this, for_write}};
}

void SocketReadiness::AfterPark::operator()() const {
  if (!s->readiness_)
    s->wake(for_write, asio::error::bad_descriptor);  // never attached: nothing would wake it
  else if (s->cancelled_)
    s->wake(for_write, asio::error::operation_aborted);
  // An event may have arrived between the failed attempt and now: complete at once then.
  else if (for_write ? s->writable_ : s->maybe_readable())
    s->wake(for_write, {});
}

namespace {
// recv/send through syscall(): glibc's recv and send are thread cancellation points and wrap each call in
// enabling and disabling asynchronous cancellation, work wasted on every relay call. pgrouter never cancels
// a thread; the system calls are the same. -1 with errno as usual.
inline ssize_t raw_recv(int fd, char* dst, size_t n) {
  return ::syscall(SYS_recvfrom, fd, dst, n, 0, nullptr, nullptr);
}
inline ssize_t raw_send(int fd, const char* src, size_t n) {
  return ::syscall(SYS_sendto, fd, src, n, MSG_NOSIGNAL, nullptr, 0);
}
}  // namespace

bool SocketReadiness::read_now(char* dst, size_t n, size_t& got, error_code& ec) {
  if (tls_) [[unlikely]]
    return tls_read_now(dst, n, got, ec);
  got = 0;
  for (;;) {
    if (cancelled_) {
      ec = asio::error::operation_aborted;
      return true;
    }
    if (!readable_) return false;
    ssize_t r = raw_recv(fd_, dst, n);
    if (r > 0) {
      // A short read drained the socket: the next arrival raises a new edge event. Not so once the
      // peer has closed or the socket failed: that edge has passed and the EOF/error is still to read.
      if (size_t(r) < n && !hung_up_) readable_ = false;
      got = size_t(r);
      return true;
    }
    if (r == 0) {
      ec = asio::error::eof;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ec = error_code(errno, boost::system::system_category());
      return true;
    }
    readable_ = false;
    return false;
  }
}

awaitable<size_t> SocketReadiness::read_some(char* dst, size_t n, error_code& ec) {
  for (;;) {
    size_t got = 0;
    if (read_now(dst, n, got, ec)) co_return got;
    co_await wait(false, ec);
    if (ec) co_return 0;
  }
}

bool SocketReadiness::write_now(const char* src, size_t n, size_t& written, error_code& ec) {
  if (tls_) [[unlikely]]
    return tls_write_now(src, n, written, ec);
  written = 0;
  while (written < n) {
    if (cancelled_) {
      ec = asio::error::operation_aborted;
      return true;
    }
    if (!writable_) return false;
    ssize_t r = raw_send(fd_, src + written, n - written);
    if (r > 0) {
      written += size_t(r);
      if (written < n) writable_ = false;  // a partial write means the send buffer is full
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      ec = error_code(errno, boost::system::system_category());
      return true;
    }
    writable_ = false;
  }
  return true;
}

namespace {
// What an SSL_read/SSL_write that returned ret <= 0 means: 0 = wait (*for_write: for buffer space), else the
// error to report.
error_code tls_failure(ssl_st* ssl, int ret, bool* for_write) {
  int code = SSL_get_error(ssl, ret);
  *for_write = code == SSL_ERROR_WANT_WRITE;
  if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return {};
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  bool unexpected_eof = false;  // OpenSSL 3's name for a peer gone without close_notify
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
  unexpected_eof =
      e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#endif
  if (code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && !e && errno == 0) || unexpected_eof)
    return asio::error::eof;
  if (code == SSL_ERROR_SYSCALL && !e) return error_code(errno, boost::system::system_category());
  return error_code(int(e ? e : 1), asio::error::get_ssl_category());
}
}  // namespace

bool SocketReadiness::tls_pending() const { return SSL_pending(tls_) > 0; }

bool SocketReadiness::tls_read_now(char* dst, size_t n, size_t& got, error_code& ec) {
  got = 0;
  if (cancelled_) {
    ec = asio::error::operation_aborted;
    return true;
  }
  // Not gated on readable_ alone: OpenSSL may hold a decrypted record with the socket drained.
  if (!maybe_readable()) return false;
  errno = 0;
  int r = SSL_read(tls_, dst, int(std::min<size_t>(n, INT_MAX)));
  if (r > 0) {
    got = size_t(r);  // readable_ stays: only OpenSSL knows whether more is there, the next read asks
    return true;
  }
  bool for_write = false;
  ec = tls_failure(tls_, r, &for_write);
  if (ec) return true;
  // Wanting to write while reading (a key update whose answer did not fit) waits for a read too: the
  // answer is retried by the next SSL call, and PostgreSQL sends the next record only after it.
  readable_ = false;
  return false;
}

bool SocketReadiness::tls_write_now(const char* src, size_t n, size_t& written, error_code& ec) {
  written = 0;
  while (written < n) {
    if (cancelled_) {
      ec = asio::error::operation_aborted;
      return true;
    }
    if (!writable_) return false;
    errno = 0;
    int r = SSL_write(tls_, src + written, int(std::min<size_t>(n - written, INT_MAX)));
    if (r > 0) {
      written += size_t(r);
      continue;
    }
    bool for_write = false;
    ec = tls_failure(tls_, r, &for_write);
    if (ec) return true;
    writable_ = false;
  }
  return true;
}

awaitable<void> SocketReadiness::write_all(const char* src, size_t n, error_code& ec) {
  for (;;) {
    size_t written = 0;
    if (write_now(src, n, written, ec)) co_return;
    src += written;
    n -= written;
    co_await wait(true, ec);
    if (ec) co_return;
  }
}

// The operation that drains the set, queued on the set's descriptor in Asio's epoll reactor. The reactor
// calls perform() when the set becomes readable (edge-triggered) and, if an event came while no operation
// was queued, at once when the operation is started (a "speculative" attempt); perform() returning
// done_and_exhausted tells it the set is empty, so the next start queues without trying. Compared with
// waiting through stream_descriptor::async_wait, no epoll_ctl re-arm is made per wake-up (Asio 1.74 re-arms
// every non-speculative wait). perform() (under the reactor's lock for the set's descriptor) only reads the
// events; the completion, run by the io_context like any handler, applies them and resumes the waiting
// coroutines one after the other on its own stack. Posting each waiter instead would cost a pass through
// the scheduler's queue per wake-up, and every such pass polls the reactor again (an epoll_wait that
// mostly finds nothing) before the worker may sleep.
struct Readiness::Op : asio::detail::reactor_op {
  explicit Op(Readiness* r) : reactor_op(boost::system::error_code(), &do_perform, &do_complete), owner(r) {}
  static status do_perform(reactor_op* base) {
    auto* op = static_cast<Op*>(base);
    if (!op->owner || op->owner->stopped_) return done;
    int n = op->owner->drain();
    if (n == 0) return not_done;
    return n < kBatch ? done_and_exhausted : done;
  }
  // owner == nullptr: the io_context is destroying queued operations.
  static void do_complete(void* io_owner, asio::detail::operation* base, const boost::system::error_code&,
                          std::size_t) {
    auto* op = static_cast<Op*>(base);
    if (!io_owner || !op->owner || op->owner->stopped_ || op->ec_) {
      if (op->owner) op->owner->op_ = nullptr;
      delete op;
      return;
    }
    Readiness* r = op->owner;
    r->dispatch();
    // A coroutine resumed above may have stopped the worker (it cannot destroy the Readiness: the
    // worker owns it and outlives its io_context's handlers).
    if (r->stopped_) {
      r->op_ = nullptr;
      delete op;
      return;
    }
    r->arm();
    // An exception out of a resumed coroutine (Asio's co_spawn catches them, so none is expected) is
    // raised only now that the set is armed again: the worker's loop logs it and the other sessions go on.
    if (r->error_) std::rethrow_exception(std::exchange(r->error_, nullptr));
  }
  Readiness* owner;
};

// The batch's sends go to the kernel in one io_uring_enter. A send that wakes a process (a client waiting
// for its reply) lets that process take the worker's CPU when the system call returns; sent one system call
// each, the batch's replies go out one preemption apart and the client program wakes for each. Submitted
// together, every reply is out before the worker can be preempted. MSG_DONTWAIT: a send that would block
// completes at once with EAGAIN (its writer then waits for EPOLLOUT as usual), so the wait below returns
// as soon as the kernel has tried them all.
struct Readiness::Ring {
  io_uring ring{};
};

Readiness::Readiness(asio::io_context& io) : io_(io) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::runtime_error("epoll_create1 failed");
}

bool SocketReadiness::send_with_batch(const char* src, size_t n, size_t* written) {
  Readiness* r = readiness_;
  // TLS records are made by SSL_write: such a socket writes with write_now.
  if (!r || !r->ring_ || !r->dispatching_ || cancelled_ || !writable_ || n == 0 || tls_) return false;
  *written = 0;
  r->sends_.push_back({this, src, n, written});
  return true;
}

ParkOp<NothingAfter> SocketReadiness::sent(error_code& ec) {
  return {&send_waiter_, readiness_ ? &readiness_->io() : nullptr, &ec, {}};
}

namespace {
constexpr int kNotSent = INT_MIN;       // not handed to the kernel: its writer sends it itself
constexpr int kNoAnswer = INT_MIN + 1;  // handed over, no completion read back (io_uring failed)
}  // namespace

bool Readiness::submit_sends() {
  auto& ring = ring_->ring;
  auto& results = send_results_;
  results.assign(sending_.size(), kNotSent);
  size_t pending = 0;
  bool failed = false;
  // Hands over what the submission queue holds and reads back every completion there is, waiting for those
  // still due (none normally: MSG_DONTWAIT sends complete inside io_uring_enter).
  auto reap = [&]() {
    int r;
    do r = io_uring_submit_and_wait(&ring, unsigned(pending));
    while (r == -EINTR);
    if (r < 0) failed = true;
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      size_t i = size_t(cqe->user_data);
      if (i < results.size() && results[i] == kNoAnswer) {
        results[i] = cqe->res;
        --pending;
      }
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  };
  for (size_t i = 0; i < sending_.size() && !failed; ++i) {
    auto& q = sending_[i];
    if (!q.s || q.s->cancelled_) continue;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (!sqe) {  // the submission queue is full: hand these over first
      reap();
      if (failed || !(sqe = io_uring_get_sqe(&ring))) break;
    }
    io_uring_prep_send(sqe, q.s->fd_, q.src, q.n, MSG_NOSIGNAL | MSG_DONTWAIT);
    sqe->user_data = i;
    results[i] = kNoAnswer;
    ++pending;
  }
  while (pending > 0 && !failed) reap();
  return !failed;
}

void Readiness::flush_sends() {
  while (!sends_.empty()) {
    sending_.swap(sends_);
    sends_.clear();
    if (!submit_sends()) {
      // io_uring itself failed (not one of the sends): what it was handed is unknown, so those writers fail
      // (their sessions end) rather than risk sending twice; the ring is closed with whatever it still held
      // and this worker sends one by one from now on.
      io_uring_queue_exit(&ring_->ring);
      ring_.reset();
    }
    auto& results = send_results_;
    for (size_t i = 0; i < sending_.size(); ++i) {
      auto& q = sending_[i];
      if (!q.s) continue;  // its socket was destroyed by a writer resumed earlier in this loop
      SocketReadiness& s = *q.s;
      int res = results[i];
      error_code ec;
      if (s.cancelled_) {
        ec = asio::error::operation_aborted;
      } else if (res == kNotSent) {
        // left for the writer to send itself (write_all)
      } else if (res == kNoAnswer) {
        ec = error_code(EIO, boost::system::system_category());
      } else if (res >= 0) {
        *q.written = size_t(res);
        if (size_t(res) < q.n) s.writable_ = false;  // the rest waits for room
      } else if (res == -EAGAIN || res == -EWOULDBLOCK) {
        s.writable_ = false;  // full: the writer waits for EPOLLOUT
      } else {
        ec = error_code(-res, boost::system::system_category());
      }
      if (s.send_waiter_) {
        resume_guarded([&s, ec] { s.send_waiter_.resume(ec); });
        run_deferred();
      }
    }
    sending_.clear();
  }
}

Readiness::~Readiness() {
  if (ring_) io_uring_queue_exit(&ring_->ring);
  if (op_) op_->owner = nullptr;  // still queued in the reactor (or the scheduler): it frees itself
  if (reactor_data_) {
    auto& reactor = asio::use_service<asio::detail::epoll_reactor>(io_);
    reactor.deregister_descriptor(epfd_, reactor_data_, false);
    reactor.cleanup_descriptor_data(reactor_data_);
  }
  if (epfd_ >= 0) ::close(epfd_);
}

bool Readiness::start(bool batch_sends) {
  if (batch_sends) {
    auto ring = std::make_unique<Ring>();
    if (io_uring_queue_init(kBatch, &ring->ring, 0) == 0) ring_ = std::move(ring);
  }
  auto& reactor = asio::use_service<asio::detail::epoll_reactor>(io_);
  // The scheduler runs the reactor only once something asked it to (Asio's socket and timer services
  // do, on construction): a worker always has its acceptor, but the set must not depend on that.
  reactor.init_task();
  if (int err = reactor.register_descriptor(epfd_, reactor_data_))
    throw std::runtime_error("cannot register the readiness set with the reactor: " + std::to_string(err));
  op_ = new Op(this);
  arm();
  return ring_ != nullptr;
}

void Readiness::arm() {
  // is_continuation: a completion of this op re-arms it; allow_speculative: see Op.
  asio::use_service<asio::detail::epoll_reactor>(io_).start_op(asio::detail::epoll_reactor::read_op, epfd_,
                                                               reactor_data_, op_, true, true);
}

void Readiness::stop() {
  stopped_ = true;
  if (reactor_data_) asio::use_service<asio::detail::epoll_reactor>(io_).cancel_ops(epfd_, reactor_data_);
}

int Readiness::drain() {
  batch_next_ = 0;
  int n = ::epoll_wait(epfd_, batch_, kBatch, 0);
  batch_n_ = n < 0 ? 0 : n;
  return batch_n_;
}

void Readiness::run_deferred() {
  while (!deferred_.empty()) {
    Wakeup* w = deferred_.back();
    deferred_.pop_back();
    w->deferred_in_ = nullptr;
    resume_guarded([w] { w->wake_now(); });
  }
}

void Readiness::run_batch_end() {
  // A resumed coroutine may ask for more (another server handed back at once): run until none is left.
  for (size_t i = 0; i < batch_end_.size(); ++i) {
    Wakeup* w = batch_end_[i];
    if (!w) continue;  // forgotten: its owner was destroyed
    batch_end_[i] = nullptr;
    w->deferred_in_ = nullptr;
    resume_guarded([w] { w->wake_now(); });
    run_deferred();
  }
  batch_end_.clear();
}

void Readiness::resume_waiter(SocketReadiness& s, bool for_write) {
  if (auto& w = s.waiter(for_write)) {
    resume_guarded([&w] { w.resume({}); });
    run_deferred();
  }
}

void Readiness::forget(Wakeup* w) {
  std::erase(deferred_, w);
  // Not erased: run_batch_end() may be walking the list.
  for (auto& p : batch_end_)
    if (p == w) p = nullptr;
}

void Readiness::put_first_sockets_first() {
  // Stable within each group (epoll's order otherwise). Nothing of the batch has been applied yet.
  int firsts = 0;
  for (int i = 0; i < batch_n_; ++i) {
    auto* s = static_cast<SocketReadiness*>(batch_[i].data.ptr);
    if (s && s->first_) ++firsts;
  }
  if (firsts == 0 || firsts == batch_n_) return;
  epoll_event sorted[kBatch];
  int a = 0, b = firsts;
  for (int i = 0; i < batch_n_; ++i) {
    auto* s = static_cast<SocketReadiness*>(batch_[i].data.ptr);
    sorted[(s && s->first_) ? a++ : b++] = batch_[i];
  }
  std::copy(sorted, sorted + batch_n_, batch_);
}

void Readiness::dispatch() {
  // Each entry is applied only when reached, and its socket looked up again after its reader ran: a
  // coroutine resumed here may close and destroy a socket of this batch (its destructor calls forget(),
  // which clears its entries from batch_next_ on, the current one included).
  //
  // Server sockets are "first": the replies that came in this batch are relayed to their clients one right
  // after the other, before the batch's new requests are read and sent on. Each client then gets its reply
  // as early as the batch allows, and a client program with many connections (pgbench's threads, an
  // application's pool) finds several replies at once when it wakes, instead of being woken once per reply
  // spaced by the requests handled in between.
  dispatching_ = true;
  BatchClock::Scope batch_time;
  if (batch_next_ == 0) put_first_sockets_first();
  for (; batch_next_ < batch_n_; ++batch_next_) {
    epoll_event& ev = batch_[batch_next_];
    auto* s = static_cast<SocketReadiness*>(ev.data.ptr);
    if (!s) continue;
    uint32_t e = ev.events;
    if (e & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) s->hung_up_ = true;
    bool out = e & (EPOLLOUT | EPOLLERR | EPOLLHUP);
    if (out) s->writable_ = true;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
      s->readable_ = true;
      resume_waiter(*s, false);
      if (!ev.data.ptr) continue;  // destroyed by the reader
    }
    if (out) resume_waiter(*s, true);
  }
  batch_n_ = batch_next_ = 0;
  if (ring_) flush_sends();
  run_batch_end();
  if (ring_) flush_sends();
  dispatching_ = false;
}

void Readiness::forget(SocketReadiness* s) {
  for (int i = batch_next_; i < batch_n_; ++i)
    if (batch_[i].data.ptr == s) batch_[i].data.ptr = nullptr;
  for (auto& q : sends_)
    if (q.s == s) q.s = nullptr;
  for (auto& q : sending_)
    if (q.s == s) q.s = nullptr;
}

}  // namespace pgrouter::net
