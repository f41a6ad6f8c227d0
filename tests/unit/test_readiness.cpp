// net::Readiness and net::Wakeup on real socketpairs and a real io_context: the order in which woken
// coroutines run, and what happens to a socket destroyed in the middle of a batch of events.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "pgrouter/net/readiness.hpp"

using namespace pgrouter;

namespace {

struct Pair {
  int fd[2] = {-1, -1};
  Pair() {
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0);
    ::fcntl(fd[0], F_SETFL, ::fcntl(fd[0], F_GETFL) | O_NONBLOCK);
  }
  ~Pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  void close_ours() {
    ::close(fd[0]);
    fd[0] = -1;
  }
  void send(const char* s) { REQUIRE(::write(fd[1], s, std::strlen(s)) == ssize_t(std::strlen(s))); }
};

// Runs io until no work is left or the limit passes (a hang fails the test instead of blocking it).
void run_for(asio::io_context& io, std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
  io.restart();
  io.run_for(limit);
}

}  // namespace

TEST_CASE(
    "a socket destroyed by a coroutine woken earlier in the same batch gets none of the batch's later "
    "events") {
  asio::io_context io(1);
  net::Readiness readiness(io);
  readiness.start();
  Pair a, b;
  // Both sockets' state lives in storage the test owns, so that after one is destroyed the test can see
  // whether the dispatch still wrote to it (it must not: the memory would be freed in the relay).
  alignas(net::SocketReadiness) unsigned char store_a[sizeof(net::SocketReadiness)];
  alignas(net::SocketReadiness) unsigned char store_b[sizeof(net::SocketReadiness)];
  auto* ra = new (store_a) net::SocketReadiness;
  auto* rb = new (store_b) net::SocketReadiness;
  REQUIRE(ra->attach(readiness, a.fd[0]));
  REQUIRE(rb->attach(readiness, b.fd[0]));
  net::SocketReadiness* alive[2] = {ra, rb};
  Pair* pairs[2] = {&a, &b};
  unsigned char* stores[2] = {store_a, store_b};
  std::vector<std::string> got(2);
  std::vector<net::error_code> errors(2);
  int destroyed = -1;
  auto reader = [&](int me) -> awaitable<void> {
    char buf[16];
    net::error_code ec;
    // The first read finds nothing and waits (a fresh socket counts as readable until a read says not).
    size_t n = co_await alive[me]->read_some(buf, sizeof buf, ec);
    errors[size_t(me)] = ec;
    if (ec) co_return;
    got[size_t(me)].assign(buf, n);
    int other = 1 - me;
    if (destroyed < 0) {
      // Closed, then destroyed, as the relay does with a server connection; its memory is then wiped.
      pairs[other]->close_ours();
      alive[other]->~SocketReadiness();
      std::memset(stores[other], 0, sizeof(net::SocketReadiness));
      destroyed = other;
    }
  };
  asio::co_spawn(io, reader(0), asio::detached);
  asio::co_spawn(io, reader(1), asio::detached);
  io.poll();  // both coroutines reach their waits
  a.send("to a");
  b.send("to b");  // both events are now in the set: one drain reads them together
  run_for(io, std::chrono::milliseconds(300));
  REQUIRE(destroyed >= 0);
  int survivor = 1 - destroyed;
  CHECK(got[size_t(survivor)] == (survivor == 0 ? "to a" : "to b"));
  CHECK(!errors[size_t(survivor)]);
  // The destroyed socket's waiter was aborted by its destructor, not resumed as readable...
  CHECK(errors[size_t(destroyed)] == asio::error::operation_aborted);
  CHECK(got[size_t(destroyed)].empty());
  // ...and its later event in the batch was dropped: nothing wrote to its (wiped) memory.
  bool untouched = true;
  for (size_t i = 0; i < sizeof(net::SocketReadiness); ++i)
    untouched = untouched && stores[destroyed][i] == 0;
  CHECK(untouched);
  alive[survivor]->~SocketReadiness();
  readiness.stop();
  run_for(io, std::chrono::milliseconds(50));
}

TEST_CASE("Wakeup: wake_now runs the parked coroutine in place, wake_soon after the waker suspends") {
  asio::io_context io(1);
  net::Readiness readiness(io);
  readiness.start();
  std::vector<std::string> order;
  net::Wakeup wakeup;
  auto parked = [&]() -> awaitable<void> {
    net::error_code ec;
    co_await wakeup.wait(io, ec);
    order.push_back(ec ? "parked aborted" : "parked woke");
  };
  // A Wakeup the test destroys, and a coroutine parked on it.
  auto owned = std::make_unique<net::Wakeup>();
  auto parked_on_owned = [&]() -> awaitable<void> {
    net::error_code ec;
    co_await owned->wait(io, ec);
    order.push_back(ec == asio::error::operation_aborted ? "aborted" : "woke");
  };

  SUBCASE("wake_now") {
    asio::co_spawn(io, parked(), asio::detached);
    io.poll();
    REQUIRE(wakeup.parked());
    order.push_back("before");
    wakeup.wake_now();
    order.push_back("after");
    CHECK(order == std::vector<std::string>{"before", "parked woke", "after"});
  }

  SUBCASE(
      "wake_soon from a coroutine woken by the readiness set: right after it suspends, ahead of the queue") {
    asio::co_spawn(io, parked(), asio::detached);
    Pair p;
    net::SocketReadiness rs;
    REQUIRE(rs.attach(readiness, p.fd[0]));
    auto waker = [&]() -> awaitable<void> {
      char buf[8];
      net::error_code ec;
      co_await rs.read_some(buf, sizeof buf, ec);  // waits, then is resumed by the set's dispatch
      asio::post(io, [&] { order.push_back("queued"); });
      wakeup.wake_soon(readiness);
      order.push_back("waker goes on");
      co_await rs.read_some(buf, sizeof buf, ec);  // suspends: the parked coroutine runs now
      order.push_back(ec ? "waker aborted" : "waker read again");
    };
    asio::co_spawn(io, waker(), asio::detached);
    io.poll();
    REQUIRE(wakeup.parked());
    p.send("x");
    run_for(io, std::chrono::milliseconds(200));
    CHECK(order == std::vector<std::string>{"waker goes on", "parked woke", "queued"});
    rs.cancel();
    run_for(io, std::chrono::milliseconds(50));
    CHECK(order.back() == "waker aborted");
  }

  SUBCASE("wake_soon outside a dispatch goes through the queue") {
    asio::co_spawn(io, parked(), asio::detached);
    io.poll();
    REQUIRE(wakeup.parked());
    wakeup.wake_soon(readiness);
    order.push_back("after wake_soon");
    CHECK(!wakeup.parked());
    run_for(io, std::chrono::milliseconds(50));
    CHECK(order == std::vector<std::string>{"after wake_soon", "parked woke"});
  }

  SUBCASE("wake_after_batch from a coroutine woken by the set: after every other event of the batch") {
    asio::co_spawn(io, parked(), asio::detached);
    Pair p1, p2;
    net::SocketReadiness r1, r2;
    REQUIRE(r1.attach(readiness, p1.fd[0]));
    REQUIRE(r2.attach(readiness, p2.fd[0]));
    auto reader = [&](net::SocketReadiness& rs, std::string name) -> awaitable<void> {
      char buf[8];
      net::error_code ec;
      co_await rs.read_some(buf, sizeof buf, ec);  // waits, then is resumed by the set's dispatch
      if (ec) co_return;
      wakeup.wake_after_batch(readiness);  // the first reader asks; the second's ask is a no-op
      order.push_back(name);
      co_await rs.read_some(buf, sizeof buf, ec);
    };
    asio::co_spawn(io, reader(r1, "reader 1"), asio::detached);
    asio::co_spawn(io, reader(r2, "reader 2"), asio::detached);
    io.poll();
    REQUIRE(wakeup.parked());
    p1.send("x");
    p2.send("y");  // both events in one batch: the parked coroutine runs after both readers
    run_for(io, std::chrono::milliseconds(200));
    std::vector<std::string> readers(order.begin(), order.begin() + std::min<size_t>(2, order.size()));
    std::sort(readers.begin(), readers.end());
    CHECK(readers == std::vector<std::string>{"reader 1", "reader 2"});
    CHECK(order.size() == 3);
    CHECK(order.back() == "parked woke");
    r1.cancel();
    r2.cancel();
    run_for(io, std::chrono::milliseconds(50));
  }

  SUBCASE("wake_after_batch outside a dispatch goes through the queue") {
    asio::co_spawn(io, parked(), asio::detached);
    io.poll();
    REQUIRE(wakeup.parked());
    wakeup.wake_after_batch(readiness);
    order.push_back("after wake_after_batch");
    run_for(io, std::chrono::milliseconds(50));
    CHECK(order == std::vector<std::string>{"after wake_after_batch", "parked woke"});
  }

  SUBCASE("a Wakeup destroyed while waiting for the end of the batch is skipped, not resumed") {
    asio::co_spawn(io, parked_on_owned(), asio::detached);
    Pair p;
    net::SocketReadiness rs;
    REQUIRE(rs.attach(readiness, p.fd[0]));
    auto waker = [&]() -> awaitable<void> {
      char buf[8];
      net::error_code ec;
      co_await rs.read_some(buf, sizeof buf, ec);
      if (ec) co_return;
      owned->wake_after_batch(readiness);
      owned.reset();  // its coroutine is aborted through the queue; the batch's end must not touch it
      order.push_back("waker");
      co_await rs.read_some(buf, sizeof buf, ec);
    };
    asio::co_spawn(io, waker(), asio::detached);
    io.poll();
    p.send("x");
    run_for(io, std::chrono::milliseconds(200));
    CHECK(order == std::vector<std::string>{"waker", "aborted"});
    rs.cancel();
    run_for(io, std::chrono::milliseconds(50));
  }

  SUBCASE("a Wakeup destroyed with a parked coroutine aborts it") {
    asio::co_spawn(io, parked_on_owned(), asio::detached);
    io.poll();
    owned.reset();
    run_for(io, std::chrono::milliseconds(50));
    CHECK(order == std::vector<std::string>{"aborted"});
  }
  readiness.stop();
  run_for(io, std::chrono::milliseconds(50));
}

TEST_CASE(
    "read_now and write_now: the relay's paths without a coroutine, and when they leave it to the wait") {
  asio::io_context io(1);
  net::Readiness readiness(io);
  readiness.start();
  Pair p;
  net::SocketReadiness rs;
  REQUIRE(rs.attach(readiness, p.fd[0]));
  char buf[64];
  size_t got = 99;
  net::error_code ec;
  // Nothing there: a fresh socket counts as readable, the recv finds nothing and says "wait".
  CHECK_FALSE(rs.read_now(buf, sizeof buf, got, ec));
  CHECK(got == 0);
  CHECK(!ec);
  CHECK_FALSE(rs.maybe_readable());
  CHECK_FALSE(rs.read_now(buf, sizeof buf, got, ec));  // no syscall now: the flag says drained
  p.send("hello");
  run_for(io, std::chrono::milliseconds(50));  // the set's dispatch sees the edge
  REQUIRE(rs.read_now(buf, sizeof buf, got, ec));
  CHECK(std::string(buf, got) == "hello");
  CHECK(!ec);

  // Writes: all at once while there is room; partial when the socket buffer fills, the rest left to
  // write_all.
  size_t written = 0;
  REQUIRE(rs.write_now("abc", 3, written, ec));
  CHECK(written == 3);
  std::string big(8 << 20, 'x');
  CHECK_FALSE(rs.write_now(big.data(), big.size(), written, ec));
  CHECK(written > 0);
  CHECK(written < big.size());
  CHECK(!ec);

  // The peer gone (with our bytes unread: a reset): reads end with the error, not with "wait".
  ::close(p.fd[1]);
  p.fd[1] = -1;
  run_for(io, std::chrono::milliseconds(50));
  REQUIRE(rs.read_now(buf, sizeof buf, got, ec));
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));

  // Cancelled: done at once with operation_aborted.
  rs.cancel();
  ec = {};
  REQUIRE(rs.read_now(buf, sizeof buf, got, ec));
  CHECK(ec == asio::error::operation_aborted);
  REQUIRE(rs.write_now("a", 1, written, ec));
  CHECK(ec == asio::error::operation_aborted);
  readiness.stop();
  run_for(io, std::chrono::milliseconds(50));
}

// Starts the set with its sends batched; false (the test then has nothing to check) where io_uring is refused
// (seccomp, an old kernel): the relay then sends one by one, which the tests above cover.
bool start_batching(net::Readiness& readiness) {
  if (readiness.start(true)) return true;
  MESSAGE("io_uring is not available on this host: send batching not tested");
  readiness.stop();
  return false;
}

TEST_CASE("send_with_batch: a batch's sends are made together once the batch is applied") {
  asio::io_context io(1);
  net::Readiness readiness(io);
  if (!start_batching(readiness)) return;
  Pair a, b, c;
  net::SocketReadiness ra, rb, rc;
  REQUIRE(ra.attach(readiness, a.fd[0]));
  REQUIRE(rb.attach(readiness, b.fd[0]));
  REQUIRE(rc.attach(readiness, c.fd[0]));
  size_t dummy = 0;
  CHECK(!ra.send_with_batch("x", 1, &dummy));  // not inside a batch: the caller sends at once
  int sndbuf = 4096;
  REQUIRE(::setsockopt(c.fd[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) == 0);
  std::string big(512 << 10, 'z');  // more than c's buffers hold: sent in part, the rest waits for room
  std::vector<std::string> order;
  std::vector<size_t> written(3, 0);
  std::vector<net::error_code> errors(3);
  auto echo = [&](int me, net::SocketReadiness& r, std::string reply) -> awaitable<void> {
    char buf[16];
    net::error_code ec;
    size_t n = co_await r.read_some(buf, sizeof buf, ec);
    if (ec || n == 0) co_return;
    bool taken = r.send_with_batch(reply.data(), reply.size(), &written[size_t(me)]);
    order.push_back(std::to_string(me) + (taken ? " queued" : " direct"));
    if (!taken) co_return;
    co_await r.sent(errors[size_t(me)]);
    order.push_back(std::to_string(me) + " sent");
    if (!errors[size_t(me)] && written[size_t(me)] < reply.size())
      co_await r.write_all(reply.data() + written[size_t(me)], reply.size() - written[size_t(me)],
                           errors[size_t(me)]);
  };
  asio::co_spawn(io, echo(0, ra, "reply a"), asio::detached);
  asio::co_spawn(io, echo(1, rb, "reply b"), asio::detached);
  asio::co_spawn(io, echo(2, rc, big), asio::detached);
  io.poll();  // all three wait for their request
  a.send("ask");
  b.send("ask");
  c.send("ask");
  // c's peer drains what arrives, so the rest of the big reply can follow.
  std::string from_c;
  for (int i = 0; i < 2000 && from_c.size() < big.size(); ++i) {
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
    char chunk[65536];
    ssize_t got;
    while ((got = ::recv(c.fd[1], chunk, sizeof chunk, MSG_DONTWAIT)) > 0) from_c.append(chunk, size_t(got));
  }
  // All three were read in one batch and queued; none was sent before the batch's last reader ran.
  REQUIRE(order.size() >= 6);
  std::vector<std::string> first_three(order.begin(), order.begin() + 3);
  std::sort(first_three.begin(), first_three.end());
  CHECK(first_three == std::vector<std::string>{"0 queued", "1 queued", "2 queued"});
  char buf[32];
  CHECK(::recv(a.fd[1], buf, sizeof buf, MSG_DONTWAIT) == 7);
  CHECK(std::string(buf, 7) == "reply a");
  CHECK(written[0] == 7);
  CHECK(::recv(b.fd[1], buf, sizeof buf, MSG_DONTWAIT) == 7);
  CHECK(written[1] == 7);
  CHECK(!errors[0]);
  CHECK(!errors[1]);
  // The big one went out in part with the batch and the rest through write_all, in order.
  CHECK(written[2] > 0);
  CHECK(written[2] < big.size());
  CHECK(!errors[2]);
  CHECK(from_c.size() == big.size());
  bool same = from_c == big;
  CHECK(same);
  readiness.stop();
  run_for(io, std::chrono::milliseconds(50));
}

TEST_CASE("send_with_batch: a socket destroyed before the batch's sends are made sends nothing") {
  asio::io_context io(1);
  net::Readiness readiness(io);
  if (!start_batching(readiness)) return;
  Pair a, b;
  auto* ra = new net::SocketReadiness;
  net::SocketReadiness rb;
  REQUIRE(ra->attach(readiness, a.fd[0]));
  REQUIRE(rb.attach(readiness, b.fd[0]));
  size_t written_a = 0;
  net::error_code error_a;
  bool a_resumed = false, b_ran = false;
  auto writer_a = [&]() -> awaitable<void> {
    char buf[8];
    net::error_code ec;
    co_await ra->read_some(buf, sizeof buf, ec);
    if (ec) co_return;
    if (!ra->send_with_batch("from a", 6, &written_a)) co_return;
    co_await ra->sent(error_a);  // ra is destroyed while this waits: aborted, nothing sent
    a_resumed = true;
  };
  auto destroyer_b = [&]() -> awaitable<void> {
    char buf[8];
    net::error_code ec;
    co_await rb.read_some(buf, sizeof buf, ec);
    if (ec) co_return;
    b_ran = true;
    a.close_ours();
    delete ra;
  };
  asio::co_spawn(io, writer_a(), asio::detached);
  io.poll();
  asio::co_spawn(io, destroyer_b(), asio::detached);
  io.poll();
  a.send("go");
  b.send("go");
  run_for(io, std::chrono::milliseconds(300));
  REQUIRE(b_ran);
  CHECK(a_resumed);
  CHECK(error_a == asio::error::operation_aborted);
  CHECK(written_a == 0);
  char buf[16];
  CHECK(::recv(a.fd[1], buf, sizeof buf, MSG_DONTWAIT) <= 0);  // nothing reached a's peer
  readiness.stop();
  run_for(io, std::chrono::milliseconds(50));
}
