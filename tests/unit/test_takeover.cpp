// The takeover exchange: descriptors passed over a unix socket, and the old process's side (Giver) driven by
// a successor's ask()/confirm_ready() as a new pgrouter process would.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <thread>

#include "pgrouter/asio.hpp"
#include "pgrouter/control/takeover.hpp"

using namespace pgrouter;
namespace takeover = pgrouter::control::takeover;

namespace {

// A loopback TCP listener on a kernel-chosen port.
int tcp_listener(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return 0;
  return ntohs(a.sin_port);
}

std::string temp_socket_path(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / ("pgr-takeover-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// The old process: a Giver on its own io_context thread.
struct OldProcess {
  asio::io_context io;
  std::unique_ptr<takeover::Giver> giver;
  std::promise<int> handed_over;
  std::promise<std::pair<uint32_t, uint32_t>> cancelled;  // the first key passed on
  std::thread thread;
  OldProcess(const std::string& path, std::function<takeover::Sockets()> give) {
    takeover::Giver::Handlers h;
    h.give = std::move(give);
    h.handed_over = [this](int pid) { handed_over.set_value(pid); };
    h.cancel = [this, first = true](uint32_t pid, uint32_t secret) mutable {
      if (first) cancelled.set_value({pid, secret});
      first = false;
    };
    giver = std::make_unique<takeover::Giver>(io, path, std::move(h));
    giver->start();
    thread = std::thread([this] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
  }
  ~OldProcess() {
    io.stop();
    thread.join();
  }
};

}  // namespace

TEST_CASE("descriptors pass over a unix socket with their message") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
  uint16_t port = 0;
  int listener = tcp_listener(port);
  REQUIRE(takeover::send_with_fds(pair[0], "SOCKETS listeners=1\n", {listener}));
  std::string text;
  std::vector<int> fds;
  REQUIRE(takeover::recv_with_fds(pair[1], text, fds));
  CHECK(text == "SOCKETS listeners=1\n");
  REQUIRE(fds.size() == 1);
  CHECK(fds[0] != listener);
  CHECK(port_of(fds[0]) == port);  // the same socket, another descriptor
  ::close(pair[0]);
  std::string more;
  std::vector<int> none;
  CHECK_FALSE(takeover::recv_with_fds(pair[1], more, none));  // EOF
  for (int fd : {listener, fds[0], pair[1]}) ::close(fd);
}

TEST_CASE("nothing answers: a fresh start") {
  takeover::Sockets got;
  std::string why;
  CHECK(takeover::ask(temp_socket_path("absent.sock"), got, why) == takeover::Asked::nothing_there);
  CHECK(got.channel == -1);
}

TEST_CASE("a successor receives the listeners, and the old side hands over only after READY") {
  std::string path = temp_socket_path("giver.sock");
  uint16_t p1 = 0, p2 = 0;
  int l1 = tcp_listener(p1), l2 = tcp_listener(p2);
  OldProcess old(path, [&] {
    takeover::Sockets s;
    s.listeners = {l1};
    s.admin = l2;
    return s;
  });
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  takeover::Sockets got;
  std::string why;
  REQUIRE(takeover::ask(path, got, why) == takeover::Asked::taken);
  REQUIRE(got.listeners.size() == 1);
  CHECK(port_of(got.listeners[0]) == p1);
  CHECK(port_of(got.admin) == p2);
  CHECK(got.old_pid == ::getpid());
  auto handed = old.handed_over.get_future();
  CHECK(handed.wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout);  // not before READY
  CHECK(takeover::confirm_ready(got.channel));
  REQUIRE(handed.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(handed.get() == ::getpid());
  for (int fd : {l1, l2, got.listeners[0], got.admin, got.channel}) ::close(fd);
}

TEST_CASE("after the hand-over, cancel keys the successor does not know reach the old side") {
  std::string path = temp_socket_path("cancel.sock");
  uint16_t p1 = 0;
  int l1 = tcp_listener(p1);
  takeover::Predecessor predecessor;
  predecessor.forward_cancel(7, 7);  // nothing taken over yet: nothing to do
  auto old = std::make_unique<OldProcess>(path, [&] {
    takeover::Sockets s;
    s.listeners = {l1};
    return s;
  });
  takeover::Sockets got;
  std::string why;
  REQUIRE(takeover::ask(path, got, why) == takeover::Asked::taken);
  REQUIRE(takeover::confirm_ready(got.channel));
  predecessor.attach(got.channel);
  REQUIRE(old->handed_over.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  predecessor.forward_cancel(42, 4242);
  auto cancelled = old->cancelled.get_future();
  REQUIRE(cancelled.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(cancelled.get() == std::pair<uint32_t, uint32_t>{42, 4242});
  old.reset();  // the old process exits: its end of the channel closes
  predecessor.forward_cancel(1, 1);
  predecessor.forward_cancel(1, 1);  // (the broken channel is dropped, not written again)
  for (int fd : {l1, got.listeners[0]}) ::close(fd);
}

TEST_CASE("a successor that breaks off leaves the old process serving, and it can be asked again") {
  std::string path = temp_socket_path("abandon.sock");
  uint16_t p = 0;
  int l = tcp_listener(p);
  OldProcess old(path, [&] {
    takeover::Sockets s;
    s.listeners = {l};
    return s;
  });
  takeover::Sockets first;
  std::string why;
  REQUIRE(takeover::ask(path, first, why) == takeover::Asked::taken);
  takeover::close_all(first);  // the new process died before serving
  auto handed = old.handed_over.get_future();
  takeover::Sockets second;
  // The old side notices the closed channel; until then a second successor is refused.
  for (int i = 0; i < 50; ++i) {
    second = {};
    if (takeover::ask(path, second, why) == takeover::Asked::taken) break;
    CHECK(why.find("taking over already") != std::string::npos);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(second.channel >= 0);
  CHECK(handed.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  CHECK(takeover::confirm_ready(second.channel));
  CHECK(handed.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  takeover::close_all(second);  // (the channel too: confirm_ready leaves it open for Predecessor)
  ::close(l);
}

TEST_CASE("a process that is shutting down refuses with its reason") {
  std::string path = temp_socket_path("refuse.sock");
  OldProcess old(path, [] { return takeover::Sockets{}; });
  takeover::Sockets got;
  std::string why;
  CHECK(takeover::ask(path, got, why) == takeover::Asked::failed);
  CHECK(why == "this pgrouter is shutting down");
  CHECK(got.channel == -1);
}
