// Handing the listening sockets from a running pgrouter to its successor (see the header).
#include "pgrouter/control/takeover.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "pgrouter/control/log.hpp"

namespace pgrouter::control::takeover {

namespace {

using local = asio::local::stream_protocol;

constexpr size_t kMaxText = 512;
// How long the new process may take between receiving the sockets and serving on them.
constexpr std::chrono::seconds kReadyTimeout{60};
// How long either side waits for the other's line.
constexpr int kExchangeTimeoutSeconds = 10;

bool fill_address(const std::string& path, sockaddr_un& addr) {
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

// "key=value" in a line of space-separated words; -1 when absent or not a number.
int field(const std::string& line, std::string_view key) {
  std::string needle = " " + std::string(key) + "=";
  auto at = line.find(needle);
  if (at == std::string::npos) return -1;
  const char* first = line.data() + at + needle.size();
  int value = -1;
  auto [end, ec] = std::from_chars(first, line.data() + line.size(), value);
  return ec == std::errc() ? value : -1;
}

bool peer_may_take_over(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == 0 || cred.uid == ::geteuid();
}

void set_timeouts(int fd) {
  timeval tv{kExchangeTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

bool send_with_fds(int sock, const std::string& text, const std::vector<int>& fds) {
  if (fds.size() > kMaxFds || text.empty() || text.size() > kMaxText) {
    errno = EINVAL;
    return false;
  }
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == ssize_t(text.size());
}

bool recv_with_fds(int sock, std::string& text, std::vector<int>& fds) {
  char buf[kMaxText];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* data = reinterpret_cast<const unsigned char*>(CMSG_DATA(c));
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  if (n <= 0) {
    if (n == 0) errno = ECONNRESET;
    return false;
  }
  text.assign(buf, size_t(n));
  return true;
}

void close_all(Sockets& s) {
  for (int fd : s.listeners) ::close(fd);
  s.listeners.clear();
  if (s.admin >= 0) ::close(s.admin);
  if (s.channel >= 0) ::close(s.channel);
  s.admin = s.channel = -1;
}

void adopt_listener(asio::ip::tcp::acceptor& acceptor, int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error(std::string("a handed-over listener is not a socket: ") + std::strerror(errno));
  acceptor.assign(addr.ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), fd);
}

void close_shared_listener(asio::ip::tcp::acceptor& acceptor) {
  if (!acceptor.is_open()) return;
  boost::system::error_code ec;
  int fd = acceptor.release(ec);
  if (!ec) ::close(fd);
}

Asked ask(const std::string& path, Sockets& out, std::string& why) {
  sockaddr_un addr;
  if (!fill_address(path, addr)) {
    why = "listen.takeover_socket is too long for a unix socket path";
    return Asked::failed;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    why = std::strerror(errno);
    return Asked::failed;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    why = std::strerror(err);
    return err == ENOENT || err == ECONNREFUSED ? Asked::nothing_there : Asked::failed;
  }
  set_timeouts(fd);
  std::string reply;
  std::vector<int> fds;
  std::string request = "TAKEOVER pid=" + std::to_string(::getpid()) + "\n";
  bool ok = send_with_fds(fd, request, {}) && recv_with_fds(fd, reply, fds);
  int listeners = field(reply, "listeners"), admin = field(reply, "admin");
  if (!ok || reply.rfind("SOCKETS ", 0) != 0 || listeners < 0 || admin < 0 ||
      size_t(listeners + admin) != fds.size()) {
    why = !ok                               ? std::string(std::strerror(errno))
          : reply.rfind("REFUSED ", 0) == 0 ? reply.substr(8, reply.find('\n') - 8)
                                            : "unexpected answer: " + reply.substr(0, 80);
    for (int f : fds) ::close(f);
    ::close(fd);
    return Asked::failed;
  }
  out.listeners.assign(fds.begin(), fds.begin() + listeners);
  out.admin = admin ? fds.back() : -1;
  out.old_pid = field(reply, "pid");
  out.channel = fd;
  return Asked::taken;
}

bool confirm_ready(int channel) {
  bool ok = send_with_fds(channel, "READY\n", {});
  if (!ok) ::close(channel);
  return ok;
}

Predecessor::~Predecessor() {
  if (fd_ >= 0) ::close(fd_);
}

void Predecessor::attach(int channel) {
  std::lock_guard lock(mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = channel;
}

void Predecessor::forward_cancel(uint32_t pid, uint32_t secret) {
  std::string line = "CANCEL " + std::to_string(pid) + " " + std::to_string(secret) + "\n";
  std::lock_guard lock(mu_);
  if (fd_ < 0) return;
  // Never blocks a worker: a line the old process cannot take now is dropped, as a lost cancel would be.
  ssize_t n = ::send(fd_, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    ::close(fd_);
    fd_ = -1;  // the old process has exited
  }
}

struct Giver::State : std::enable_shared_from_this<Giver::State> {
  State(asio::io_context& io, std::string path, Handlers handlers)
      : io(io), path(std::move(path)), handlers(std::move(handlers)), acceptor(io) {}
  asio::io_context& io;
  std::string path;
  Handlers handlers;
  local::acceptor acceptor;
  ino_t inode = 0;  // the socket file this process created
  bool handing_over = false;

  awaitable<void> accept_loop();
  awaitable<void> serve(local::socket socket);
  awaitable<void> pass_on_cancels(local::socket& socket, asio::streambuf& in);
};

awaitable<void> Giver::State::accept_loop() {
  auto self = shared_from_this();
  for (;;) {
    boost::system::error_code ec;
    local::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) continue;
    asio::co_spawn(io, serve(std::move(socket)), asio::detached);
  }
}

awaitable<void> Giver::State::serve(local::socket socket) {
  auto self = shared_from_this();
  int fd = socket.native_handle();
  boost::system::error_code ec;
  asio::streambuf in(kMaxText);
  // A peer that does not answer in time: its socket is closed, which ends the read below.
  asio::steady_timer timer(io);
  auto close_after = [&timer, &socket](std::chrono::steady_clock::duration limit) {
    timer.expires_after(limit);
    timer.async_wait([&socket](boost::system::error_code e) {
      boost::system::error_code ignored;
      if (!e) socket.close(ignored);
    });
  };
  close_after(std::chrono::seconds(kExchangeTimeoutSeconds));
  co_await asio::async_read_until(socket, in, '\n', asio::redirect_error(use_awaitable, ec));
  std::string request(asio::buffers_begin(in.data()), asio::buffers_end(in.data()));
  in.consume(in.size());
  if (ec || request.rfind("TAKEOVER ", 0) != 0 || !socket.is_open()) co_return;
  int new_pid = field(request, "pid");
  auto refuse = [&](const std::string& reason) {
    log::warn("takeover refused", {{"new_pid", new_pid}, {"reason", reason}});
    send_with_fds(fd, "REFUSED " + reason + "\n", {});
  };
  if (!peer_may_take_over(fd)) {
    refuse("only the same user (or root) may take over");
    co_return;
  }
  if (handing_over) {
    refuse("another process is taking over already");
    co_return;
  }
  Sockets s = handlers.give();
  if (s.listeners.empty()) {
    refuse("this pgrouter is shutting down");
    co_return;
  }
  std::vector<int> fds = s.listeners;
  if (s.admin >= 0) fds.push_back(s.admin);
  std::string reply = "SOCKETS listeners=" + std::to_string(s.listeners.size()) +
                      " admin=" + (s.admin >= 0 ? "1" : "0") + " pid=" + std::to_string(::getpid()) + "\n";
  if (!send_with_fds(fd, reply, fds)) {
    log::warn("takeover: the sockets could not be sent", {{"error", std::string(std::strerror(errno))}});
    co_return;
  }
  handing_over = true;
  log::info("takeover: sockets sent; waiting for the new process to serve", {{"new_pid", new_pid}});
  close_after(kReadyTimeout);
  co_await asio::async_read_until(socket, in, '\n', asio::redirect_error(use_awaitable, ec));
  timer.cancel();
  std::string answer(asio::buffers_begin(in.data()), asio::buffers_end(in.data()));
  if (ec || answer != "READY\n") {
    // The new process failed to start: this one keeps serving as if nothing happened.
    handing_over = false;
    log::warn("takeover abandoned: the new process did not say it serves; still serving here",
              {{"new_pid", new_pid}});
    co_return;
  }
  boost::system::error_code ignored;
  acceptor.close(ignored);
  handlers.handed_over(new_pid);
  co_await pass_on_cancels(socket, in);
}

// After the hand-over the channel carries the CancelRequests the new process did not know, until it closes.
awaitable<void> Giver::State::pass_on_cancels(local::socket& socket, asio::streambuf& in) {
  in.consume(in.size());
  for (;;) {
    boost::system::error_code ec;
    size_t n = co_await asio::async_read_until(socket, in, '\n', asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    std::string line(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + std::ptrdiff_t(n));
    in.consume(n);
    unsigned long pid = 0, secret = 0;
    if (std::sscanf(line.c_str(), "CANCEL %lu %lu", &pid, &secret) == 2 && handlers.cancel)
      handlers.cancel(uint32_t(pid), uint32_t(secret));
  }
}

Giver::Giver(asio::io_context& io, std::string path, Handlers handlers)
    : state_(std::make_shared<State>(io, std::move(path), std::move(handlers))) {}

Giver::~Giver() {
  boost::system::error_code ec;
  state_->acceptor.close(ec);
  struct stat st {};
  if (state_->inode != 0 && ::stat(state_->path.c_str(), &st) == 0 && st.st_ino == state_->inode)
    ::unlink(state_->path.c_str());
}

void Giver::start() {
  // The file may be a predecessor's: a live one has handed over by now (or is being replaced), a dead one
  // left it behind. Either way the new socket takes the name.
  ::unlink(state_->path.c_str());
  local::endpoint ep(state_->path);
  state_->acceptor.open(ep.protocol());
  boost::system::error_code ec;
  state_->acceptor.bind(ep, ec);
  if (ec) throw std::runtime_error("cannot bind " + state_->path + ": " + ec.message());
  // Whoever connects may end this process's service: only its user (checked again per connection).
  ::chmod(state_->path.c_str(), 0600);
  state_->acceptor.listen();
  struct stat st {};
  if (::stat(state_->path.c_str(), &st) == 0) state_->inode = st.st_ino;
  asio::co_spawn(state_->io, state_->accept_loop(), asio::detached);
}

}  // namespace pgrouter::control::takeover
