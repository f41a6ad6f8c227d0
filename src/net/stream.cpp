// Socket options shared by client and server connections.
#include "pgrouter/net/io.hpp"
#include "pgrouter/net/readiness.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace pgrouter::net {

awaitable<error_code> read_exact(tcp::socket& s, char* dst, size_t n) {
  error_code ec;
  while (n > 0) {
    ssize_t r = ::recv(s.native_handle(), dst, n, MSG_DONTWAIT);
    if (r > 0) {
      dst += r;
      n -= size_t(r);
    } else if (r == 0) {
      co_return asio::error::eof;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      co_await s.async_wait(tcp::socket::wait_read, asio::redirect_error(use_awaitable, ec));
      if (ec) co_return ec;
    } else if (errno != EINTR) {
      co_return error_code(errno, boost::system::system_category());
    }
  }
  co_return ec;
}

awaitable<error_code> write_all(tcp::socket& s, const char* src, size_t n) {
  error_code ec;
  while (n > 0) {
    ssize_t r = ::send(s.native_handle(), src, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) {
      src += r;
      n -= size_t(r);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      co_await s.async_wait(tcp::socket::wait_write, asio::redirect_error(use_awaitable, ec));
      if (ec) co_return ec;
    } else if (errno != EINTR) {
      co_return error_code(errno, boost::system::system_category());
    }
  }
  co_return ec;
}

awaitable<error_code> write_all(PlainStream& s, const char* src, size_t n) {
  error_code ec;
  size_t written = 0;
  if (!s.ready->write_now(src, n, written, ec)) co_await s.ready->write_all(src + written, n - written, ec);
  co_return ec;
}

void tune_socket(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

void tune_socket(tcp::socket& s) { tune_socket(s.native_handle()); }

}  // namespace pgrouter::net
