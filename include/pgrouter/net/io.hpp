// Small coroutine helpers over any Asio stream (plain TCP or TLS): exact reads and whole writes with
// error codes as values, since EOF and resets are normal events for a proxy, not exceptions.
#pragma once
#include <string>

#include "pgrouter/asio.hpp"

namespace pgrouter::net {

using error_code = boost::system::error_code;

class SocketReadiness;

// A plain-TCP client connection: its descriptor, driven through the worker's readiness set only (never
// registered with Asio's reactor, so a connection costs one epoll registration, not two).
struct PlainStream {
  int fd = -1;
  SocketReadiness* ready = nullptr;
};
awaitable<error_code> write_all(PlainStream& s, const char* src, size_t n);

// Plain TCP: the system call first (MSG_DONTWAIT) and a wait for readiness only when it would block. Asio's
// read would post its completion through the scheduler (an extra epoll_wait and handler each), which a
// login's half a dozen small reads and writes paid per connection.
awaitable<error_code> read_exact(tcp::socket& s, char* dst, size_t n);
awaitable<error_code> write_all(tcp::socket& s, const char* src, size_t n);

template <typename Stream>
awaitable<error_code> read_exact(Stream& s, char* dst, size_t n) {
  error_code ec;
  co_await asio::async_read(s, asio::buffer(dst, n), asio::redirect_error(use_awaitable, ec));
  co_return ec;
}

template <typename Stream>
awaitable<error_code> write_all(Stream& s, const char* src, size_t n) {
  error_code ec;
  co_await asio::async_write(s, asio::buffer(src, n), asio::redirect_error(use_awaitable, ec));
  co_return ec;
}

template <typename Stream>
awaitable<error_code> write_all(Stream& s, const std::string& data) {
  return write_all(s, data.data(), data.size());
}

// Sets TCP_NODELAY (the protocol is request/response: Nagle only adds latency) and keepalive.
void tune_socket(tcp::socket& s);
void tune_socket(int fd);

}  // namespace pgrouter::net
