// Edge-triggered readiness for relay sockets: see readiness.hpp for why this exists.
#include "pgrouter/net/readiness.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace pgrouter::net {

// The waiter resumes its coroutine through the worker's own io_context executor (blocking.never: queued
// behind what runs now, never inline). asio::post to the handler's associated executor would do the same
// through two type-erased any_io_executor hops and a work_dispatcher counting outstanding work, about a
// tenth of the relay's instructions (callgrind); the worker's accept loop and timers keep it running.
template <typename Handler>
struct SocketReadiness::WaiterImpl : SocketReadiness::Waiter {
  WaiterImpl(Handler&& h, asio::io_context& io) : handler(std::move(h)), io(io) {}
  void complete(error_code ec) override {
    asio::require(io.get_executor(), asio::execution::blocking.never)
        .execute([h = std::move(handler), ec]() mutable { h(ec); });
  }
  Handler handler;
  asio::io_context& io;
};

SocketReadiness::~SocketReadiness() {
  // Waiters hold coroutine handlers; dropping them unresumed would leak frames, so abort them.
  cancel();
}

bool SocketReadiness::attach(Readiness& r, int fd) {
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

void SocketReadiness::cancel() {
  // Sticky: a loop that has not reached its wait yet (a coroutine spawned but not started) must
  // stop too, not wait forever.
  cancelled_ = true;
  wake(false, asio::error::operation_aborted);
  wake(true, asio::error::operation_aborted);
}

void SocketReadiness::wake(bool for_write, error_code ec) {
  auto& slot = for_write ? write_waiter_ : read_waiter_;
  if (!slot) return;
  auto w = std::move(slot);
  w->complete(ec);
}

awaitable<void> SocketReadiness::wait(bool for_write, error_code& ec) {
  if (!readiness_) {  // never attached: nothing would ever wake it
    ec = asio::error::bad_descriptor;
    co_return;
  }
  auto token = asio::redirect_error(use_awaitable, ec);
  co_await asio::async_initiate<decltype(token), void(error_code)>(
      [this, for_write](auto handler) {
        using H = decltype(handler);
        auto& slot = for_write ? write_waiter_ : read_waiter_;
        slot = std::make_unique<WaiterImpl<H>>(std::move(handler), readiness_->io());
        if (cancelled_) wake(for_write, asio::error::operation_aborted);
        // An event may have arrived between the failed attempt and now: complete at once then.
        else if (for_write ? writable_ : readable_) wake(for_write, {});
      },
      token);
}

awaitable<void> SocketReadiness::wait_readable(error_code& ec) {
  if (cancelled_) {
    ec = asio::error::operation_aborted;
    co_return;
  }
  if (!readable_) co_await wait(false, ec);
}

awaitable<size_t> SocketReadiness::read_some(char* dst, size_t n, error_code& ec) {
  for (;;) {
    if (cancelled_) {
      ec = asio::error::operation_aborted;
      co_return 0;
    }
    if (readable_) {
      ssize_t r = ::recv(fd_, dst, n, 0);
      if (r > 0) {
        // A short read drained the socket: the next arrival raises a new edge event. Not so once the
        // peer has closed or the socket failed: that edge has passed and the EOF/error is still to read.
        if (size_t(r) < n && !hung_up_) readable_ = false;
        co_return size_t(r);
      }
      if (r == 0) {
        ec = asio::error::eof;
        co_return 0;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = error_code(errno, boost::system::system_category());
        co_return 0;
      }
      readable_ = false;
    }
    co_await wait(false, ec);
    if (ec) co_return 0;
  }
}

awaitable<void> SocketReadiness::write_all(const char* src, size_t n, error_code& ec) {
  while (n > 0) {
    if (cancelled_) {
      ec = asio::error::operation_aborted;
      co_return;
    }
    if (writable_) {
      ssize_t r = ::send(fd_, src, n, MSG_NOSIGNAL);
      if (r > 0) {
        src += r;
        n -= size_t(r);
        if (n > 0) writable_ = false;  // a partial write means the send buffer is full
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = error_code(errno, boost::system::system_category());
        co_return;
      }
      writable_ = false;
    }
    co_await wait(true, ec);
    if (ec) co_return;
  }
}

// The operation that drains the set, queued on the set's descriptor in Asio's epoll reactor. The reactor
// calls perform() when the set becomes readable (edge-triggered) and, if an event came while no operation
// was queued, at once when the operation is started (a "speculative" attempt); perform() returning
// done_and_exhausted tells it the set is empty, so the next start queues without trying. Compared with
// waiting through stream_descriptor::async_wait, no epoll_ctl re-arm is made per wake-up (Asio 1.74 re-arms
// every non-speculative wait) and no coroutine is resumed: the sockets' waiters are posted straight from
// perform(), which runs inside the worker's io_context, so they go to its thread-private queue.
struct Readiness::Op : asio::detail::reactor_op {
  explicit Op(Readiness* r) : reactor_op(boost::system::error_code(), &do_perform, &do_complete), owner(r) {}
  static status do_perform(reactor_op* base) {
    auto* op = static_cast<Op*>(base);
    if (!op->owner || op->owner->stopped_) return done;
    int n = op->owner->drain();
    if (n == 0) return not_done;
    return n < 256 ? done_and_exhausted : done;
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
    op->owner->arm();
  }
  Readiness* owner;
};

Readiness::Readiness(asio::io_context& io) : io_(io) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::runtime_error("epoll_create1 failed");
}

Readiness::~Readiness() {
  if (op_) op_->owner = nullptr;  // still queued in the reactor (or the scheduler): it frees itself
  if (reactor_data_) {
    auto& reactor = asio::use_service<asio::detail::epoll_reactor>(io_);
    reactor.deregister_descriptor(epfd_, reactor_data_, false);
    reactor.cleanup_descriptor_data(reactor_data_);
  }
  if (epfd_ >= 0) ::close(epfd_);
}

void Readiness::start() {
  auto& reactor = asio::use_service<asio::detail::epoll_reactor>(io_);
  if (int err = reactor.register_descriptor(epfd_, reactor_data_))
    throw std::runtime_error("cannot register the readiness set with the reactor: " + std::to_string(err));
  op_ = new Op(this);
  arm();
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
  epoll_event events[256];
  int n = ::epoll_wait(epfd_, events, 256, 0);
  for (int i = 0; i < n; ++i) {
    auto* s = static_cast<SocketReadiness*>(events[i].data.ptr);
    uint32_t e = events[i].events;
    if (e & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) s->hung_up_ = true;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
      s->readable_ = true;
      s->wake(false, {});
    }
    if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
      s->writable_ = true;
      s->wake(true, {});
    }
  }
  return n < 0 ? 0 : n;
}

}  // namespace pgrouter::net
