// The connection pool on its own, through its public API, against a fake PostgreSQL on a loopback port
// (trust login, then an answer to every Query): reuse before opening, the size bound, the FIFO queue and
// its timeout, check-in with reset or close, dead idle servers, upkeep, and slots moving between workers.
// The whole proxy runs against real PostgreSQL in tests/integration/test_pool.py; ServerStatements' LRU is
// tested on its own at the end.
#include <doctest/doctest.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pgrouter/pool/pool.hpp"
#include "pgrouter/pool/server_statements.hpp"
#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/messages.hpp"

using namespace pgrouter;
using pool::Clock;
using pool::Pool;
using pool::ServerConnection;
using pool::ServerError;
using namespace std::chrono_literals;

namespace {

std::string message(char type, const std::string& body) {
  std::string out(1, type);
  protocol::put_be32(out, uint32_t(body.size() + 4));
  return out + body;
}

// A PostgreSQL that lets anyone in (trust), answers every Query with CommandComplete and ReadyForQuery 'I',
// and records what each connection was sent. Runs as coroutines on the test's io_context, so the test sees
// its state between steps without locks.
class FakeServer {
 public:
  enum class Login { ok, refuse, silent };  // refuse: a FATAL ErrorResponse; silent: never answers
  enum class Answer { ok, error, silent };  // to a Query: success, an ErrorResponse, nothing at all
  struct Backend {
    uint32_t pid = 0;
    std::string database;
    std::vector<std::string> queries;
    bool terminated = false;  // the pool said goodbye (Terminate)
    bool gone = false;        // the connection has ended, either way
    std::shared_ptr<tcp::socket> socket;
  };

  explicit FakeServer(asio::io_context& io)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port = acceptor_.local_endpoint().port();
    asio::co_spawn(io, accept_loop(), asio::detached);
  }

  uint16_t port = 0;
  Login login = Login::ok;
  Answer answer = Answer::ok;
  std::vector<std::shared_ptr<Backend>> backends;  // in the order they connected; pid = 1000 + index

  Backend& backend(uint32_t pid) { return *backends.at(pid - 1000); }
  size_t open() const {
    return size_t(std::count_if(backends.begin(), backends.end(), [](auto& b) { return !b->gone; }));
  }
  // The server ends a connection on its own (a restart, pg_terminate_backend, idle_session_timeout).
  void kill(uint32_t pid) {
    boost::system::error_code ec;
    backend(pid).socket->close(ec);
  }
  // Unsolicited bytes on an idle connection, as the FATAL PostgreSQL sends before closing on shutdown.
  void say_fatal(uint32_t pid) {
    std::string out;
    protocol::append_error(out, "FATAL", "57P01", "terminating connection due to administrator command");
    boost::system::error_code ec;
    asio::write(*backend(pid).socket, asio::buffer(out), ec);
    REQUIRE(!ec);
  }
  void stop() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    for (auto& b : backends) b->socket->close(ec);
  }

 private:
  awaitable<void> accept_loop() {
    for (;;) {
      auto s = std::make_shared<tcp::socket>(acceptor_.get_executor());
      boost::system::error_code ec;
      co_await acceptor_.async_accept(*s, asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;
      auto b = std::make_shared<Backend>();
      b->pid = uint32_t(1000 + backends.size());
      b->socket = s;
      backends.push_back(b);
      asio::co_spawn(acceptor_.get_executor(), serve(b), asio::detached);
    }
  }

  static awaitable<bool> read(tcp::socket& s, std::string& into, size_t n) {
    into.resize(n);
    boost::system::error_code ec;
    if (n > 0) co_await asio::async_read(s, asio::buffer(into), asio::redirect_error(use_awaitable, ec));
    co_return !ec;
  }
  // A header of header_size bytes ending in the length, then the body; false at EOF or on a length under 4.
  // One function, not `while (co_await a && co_await b)`: in a while condition g++ 12 also runs b when a
  // was false (here: a body of 4 GB after EOF).
  static awaitable<bool> read_message(tcp::socket& s, std::string& header, size_t header_size,
                                      std::string& body) {
    if (!co_await read(s, header, header_size)) co_return false;
    uint32_t len = protocol::read_be32(header.data() + header_size - 4);
    if (len < 4) co_return false;
    co_return co_await read(s, body, len - 4);
  }
  static awaitable<bool> write(tcp::socket& s, const std::string& data) {
    boost::system::error_code ec;
    co_await asio::async_write(s, asio::buffer(data), asio::redirect_error(use_awaitable, ec));
    co_return !ec;
  }

  // The startup packet (an SSLRequest first is answered 'N'), then the login as `login` says.
  awaitable<bool> handshake(Backend& b) {
    auto& s = *b.socket;
    std::string len, body;
    for (;;) {
      if (!co_await read_message(s, len, 4, body)) co_return false;
      if (body.size() >= 4 && protocol::read_be32(body.data()) == protocol::kSslRequestCode) {
        if (!co_await write(s, "N")) co_return false;
        continue;
      }
      break;
    }
    for (size_t pos = 4; pos < body.size() && body[pos] != '\0';) {
      auto key = protocol::read_cstring(body, pos);
      auto value = protocol::read_cstring(body, pos);
      if (!key || !value) co_return false;
      if (*key == "database") b.database = std::string(*value);
    }
    std::string out;
    switch (login) {
      case Login::ok:
        protocol::append_auth(out, 0);
        protocol::append_parameter_status(out, "server_version", "15.0");
        protocol::append_parameter_status(out, "client_encoding", "UTF8");
        protocol::append_backend_key_data(out, b.pid, 42);
        protocol::append_ready_for_query(out, 'I');
        co_return co_await write(s, out);
      case Login::refuse:
        protocol::append_error(out, "FATAL", "57P03", "the database system is starting up");
        co_await write(s, out);
        co_return false;
      case Login::silent:
        break;
    }
    std::string byte;
    while (co_await read(s, byte, 1)) {
    }
    co_return false;
  }

  awaitable<void> serve(std::shared_ptr<Backend> b) {
    auto& s = *b->socket;
    if (co_await handshake(*b)) {
      std::string hdr, body;
      while (co_await read_message(s, hdr, 5, body)) {
        if (hdr[0] == 'X') {
          b->terminated = true;
          break;
        }
        if (hdr[0] != 'Q') continue;
        std::string sql(body.c_str());
        b->queries.push_back(sql);
        std::string out;
        if (answer == Answer::silent) continue;
        if (answer == Answer::error)
          protocol::append_error(out, "ERROR", "XX000", "no reset today");
        else
          out = message('C', sql.substr(0, sql.find(' ')) + '\0');
        protocol::append_ready_for_query(out, 'I');
        if (!co_await write(s, out)) break;
      }
    }
    b->gone = true;
    boost::system::error_code ec;
    s.close(ec);
  }

  tcp::acceptor acceptor_;
};

// One worker's (or several workers') pools of one (database, user) towards the fake server, all on one
// io_context: the test drives it step by step with run_until, so what runs, and in which order, is the
// test's doing.
struct Rig {
  asio::io_context io{1};
  net::Readiness readiness{io};
  control::WorkerStats stats;
  FakeServer server{io};
  pool::PoolSettings settings;
  std::shared_ptr<pool::PoolGroup> group;
  std::vector<std::unique_ptr<Pool>> pools;

  Rig() {
    readiness.start();
    settings.target.host = "127.0.0.1";
    settings.target.port = server.port;
    settings.target.dbname = "db";
    settings.target.user = "alice";
    settings.target.tls.sslmode = net::SslMode::disable;
    settings.config.size = 2;
    settings.config.connect_timeout = 2000ms;
    settings.config.queue_timeout = 10000ms;
  }
  ~Rig() {
    pools.clear();
    server.stop();
    readiness.stop();
    io.restart();
    io.run_for(500ms);  // lets the coroutines still running see their sockets closed and end
  }
  // Creates the pools from `settings`; config.size is the whole group's budget (Worker::settings_for).
  void open(int workers = 1) {
    settings.max_servers = settings.config.size;
    group = std::make_shared<pool::PoolGroup>(size_t(workers));
    for (int i = 0; i < workers; ++i)
      pools.push_back(std::make_unique<Pool>(readiness, settings, stats, group, i));
  }
  Pool& pool(size_t i = 0) { return *pools.at(i); }

  // Runs the io_context until pred() holds; false if it still does not after `limit` (a hang fails the
  // test instead of blocking it). The limit is generous: nothing here waits for it but a failure.
  bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5000ms) {
    auto give_up = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= give_up) return false;
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
    return true;
  }
  // Runs what is ready now, without waiting for anything.
  void settle() {
    io.restart();
    io.poll();
  }

  struct Acquired {
    bool done = false;
    std::unique_ptr<ServerConnection> conn;
    ServerError err;
  };
  // Starts an acquire (it runs when the io_context does).
  std::shared_ptr<Acquired> start_acquire(Pool& p, Pool::Waiter* woken = nullptr) {
    auto a = std::make_shared<Acquired>();
    asio::co_spawn(
        io,
        [&p, a, woken]() -> awaitable<void> {
          a->conn = co_await p.acquire(a->err, woken);
          a->done = true;
        },
        asio::detached);
    return a;
  }
  std::shared_ptr<Acquired> finish(std::shared_ptr<Acquired> a) {
    REQUIRE(run_until([&] { return a->done; }));
    return a;
  }
  std::unique_ptr<ServerConnection> acquire(Pool& p) {
    auto a = finish(start_acquire(p));
    REQUIRE_MESSAGE(a->conn, a->err.message);
    return std::move(a->conn);
  }
  std::unique_ptr<ServerConnection> acquire() { return acquire(pool()); }
  // Gives a server back and waits until its check-in (reset, close) is over.
  void release(std::unique_ptr<ServerConnection> c, bool clean, size_t expect_idle) {
    pool().release(std::move(c), clean);
    REQUIRE(run_until([&] { return pool().idle() == expect_idle; }));
  }
};

// Until the kernel has the peer's close (or bytes) for fd: a wait on the socket's state, not on time.
bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 5000) == 1;
}

}  // namespace

TEST_CASE("pool: a server given back is lent again before a new one is opened, the last one back first") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 3;
  r.open();
  auto a = r.acquire();
  CHECK(a->backend_pid == 1000);
  CHECK(a->params["server_version"] == "15.0");
  CHECK(r.pool().welcome_params().at("client_encoding") == "UTF8");
  CHECK(r.pool().welcome_messages().size() == 2);
  auto b = r.acquire();  // a is lent: a second server
  CHECK(b->backend_pid == 1001);
  CHECK(r.pool().total() == 2);
  CHECK(r.pool().attached() == 2);
  CHECK(r.server.backends.size() == 2);
  r.release(std::move(a), true, 1);
  r.release(std::move(b), true, 2);
  CHECK(r.stats.servers_idle.load() == 2);
  // LIFO: the warmest server first, and no third connection.
  auto c = r.acquire();
  CHECK(c->backend_pid == 1001);
  auto d = r.pool().take_idle();  // the synchronous path finds the other one
  REQUIRE(d);
  CHECK(d->backend_pid == 1000);
  CHECK(!r.pool().take_idle());
  CHECK(r.server.backends.size() == 2);
  CHECK(r.stats.server_connections_total.load() == 2);
  CHECK(r.stats.servers_idle.load() == 0);
  // The pool's own series: four checkouts, each given its time, both servers lent.
  const auto& ps = r.stats.pool_stats(r.settings.labels);
  CHECK(ps.checkouts_total.load() == 4);
  CHECK(ps.wait.count.load() == 4);
  CHECK(c->checked_out != pool::Clock::time_point{});
  CHECK(ps.server_connections_total.load() == 2);
  CHECK(ps.servers_open.load() == 2);
  CHECK(ps.servers_idle.load() == 0);
  // Transaction pooling hands a clean server over as it is: no query was sent for the check-ins.
  CHECK(r.server.backend(1000).queries.empty());
  CHECK(r.server.backend(1001).queries.empty());
}

TEST_CASE("pool: pool.size bounds the servers; waiters get the servers given back in the order they came") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 1;
  r.open();
  auto held = r.acquire();
  std::vector<std::shared_ptr<Rig::Acquired>> waiters;
  for (size_t i = 0; i < 3; ++i) {
    // One at a time, so that the order they joined the queue is the order they were started in.
    waiters.push_back(r.start_acquire(r.pool()));
    REQUIRE(r.run_until([&] { return r.pool().waiting() == i + 1; }));
  }
  CHECK(r.stats.clients_waiting.load() == 3);
  CHECK(r.group->waiting.load() == 3);
  std::vector<size_t> order;
  for (size_t round = 0; round < 3; ++round) {
    r.pool().release(std::move(held), true);
    REQUIRE(r.run_until(
        [&] { return std::any_of(waiters.begin(), waiters.end(), [](auto& w) { return w->done; }); }));
    for (size_t i = 0; i < waiters.size(); ++i) {
      if (!waiters[i]->done) continue;
      REQUIRE(waiters[i]->conn);
      held = std::move(waiters[i]->conn);
      order.push_back(i);
      waiters[i]->done = false;  // counted; never done again
      waiters[i]->conn.reset();
    }
    CHECK(order.size() == round + 1);  // exactly one waiter per server given back
    CHECK(held->backend_pid == 1000);  // the one server, passed along
    CHECK(r.pool().total() == 1);
  }
  CHECK(order == std::vector<size_t>{0, 1, 2});
  CHECK(r.pool().waiting() == 0);
  CHECK(r.stats.clients_waiting.load() == 0);
  CHECK(r.server.backends.size() == 1);
}

TEST_CASE("pool: a full queue refuses at once with 53300") {
  Rig r;
  r.settings.config.size = 1;
  r.settings.config.queue_size = 1;
  r.open();
  auto held = r.acquire();
  auto waiter = r.start_acquire(r.pool());
  REQUIRE(r.run_until([&] { return r.pool().waiting() == 1; }));
  auto refused = r.start_acquire(r.pool());
  REQUIRE(r.run_until([&] { return refused->done; }));
  CHECK(!waiter->done);
  CHECK(!refused->conn);
  CHECK(refused->err.sqlstate == "53300");
  CHECK(refused->err.message.find("too many clients waiting") != std::string::npos);
  Pool::Waiter w;
  CHECK(!r.pool().wait_in_line(w));  // the session's path does not queue it either (acquire() says why)
  r.pool().release(std::move(held), true);
  r.finish(waiter);
  REQUIRE(waiter->conn);
  CHECK(waiter->conn->backend_pid == 1000);
  CHECK(r.pool().waiting() == 0);
  CHECK(r.stats.clients_waiting.load() == 0);
}

TEST_CASE("pool: a waiter times out with 53300 after queue_timeout") {
  Rig r;
  r.settings.config.size = 1;
  r.settings.config.queue_timeout = 100ms;
  r.open();
  auto held = r.acquire();
  auto waiter = r.finish(r.start_acquire(r.pool()));
  CHECK(!waiter->conn);
  CHECK(waiter->err.sqlstate == "53300");
  CHECK(waiter->err.message.find("timed out after 100 ms") != std::string::npos);
  CHECK(!waiter->err.from_server);
  CHECK(r.pool().waiting() == 0);
  CHECK(r.group->waiting.load() == 0);
  CHECK(r.stats.clients_waiting.load() == 0);
  CHECK(r.server.backends.size() == 1);
}

TEST_CASE("pool: release(clean=false) closes the server and its slot goes to the first waiter") {
  Rig r;
  r.settings.config.size = 1;
  r.open();
  auto held = r.acquire();
  auto waiter = r.start_acquire(r.pool());
  REQUIRE(r.run_until([&] { return r.pool().waiting() == 1; }));
  r.pool().release(std::move(held), false);
  r.finish(waiter);
  REQUIRE(waiter->conn);
  CHECK(waiter->conn->backend_pid == 1001);  // a new server, in the freed slot
  REQUIRE(r.run_until([&] { return r.server.backend(1000).gone; }));
  CHECK(r.server.backend(1000).terminated);       // said goodbye, not just dropped
  CHECK(r.server.backend(1000).queries.empty());  // and never reset: it is not trusted
  CHECK(r.pool().total() == 1);
  CHECK(r.group->servers.load() == 1);
  r.pool().release(std::move(waiter->conn), false);
  CHECK(r.pool().total() == 0);
  CHECK(r.group->servers.load() == 0);
}

TEST_CASE("pool: a server that closed or spoke while idle is not lent") {
  Rig r;  // session mode: every idle server is checked before it is lent
  r.open();
  auto c = r.acquire();
  int fd = c->socket.native_handle();
  r.release(std::move(c), true, 1);
  SUBCASE("closed") { r.server.kill(1000); }
  SUBCASE("sent a FATAL") { r.server.say_fatal(1000); }
  REQUIRE(readable(fd));
  auto next = r.acquire();
  CHECK(next->backend_pid == 1001);
  CHECK(r.pool().idle() == 0);
  CHECK(r.pool().total() == 1);  // the dead one's slot was freed
  CHECK(r.stats.servers_idle.load() == 0);
}

TEST_CASE("pool: a failed login frees its slot and says why") {
  Rig r;
  r.settings.config.size = 1;
  SUBCASE("the server refuses") {
    r.open();
    r.server.login = FakeServer::Login::refuse;
    auto a = r.finish(r.start_acquire(r.pool()));
    CHECK(!a->conn);
    CHECK(a->err.sqlstate == "57P03");  // the server's own error, passed on
    CHECK(a->err.from_server);
  }
  SUBCASE("the server never answers the startup") {
    r.settings.config.connect_timeout = 200ms;
    r.open();
    r.server.login = FakeServer::Login::silent;
    auto a = r.finish(r.start_acquire(r.pool()));
    CHECK(!a->conn);
    CHECK(a->err.sqlstate == "08001");
    CHECK(a->err.message.find("timed out connecting") != std::string::npos);
    REQUIRE(r.run_until([&] { return r.server.open() == 0; }));  // the half-open connection was closed
    r.settings.config.connect_timeout = 2000ms;
    r.pool().update(r.settings);  // the same target: only the timeout changes, for the login below
  }
  SUBCASE("nothing listens") {
    // A port that was just bound and released: nothing accepts there.
    tcp::acceptor probe(r.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    r.settings.target.port = probe.local_endpoint().port();
    probe.close();
    r.open();
    auto a = r.finish(r.start_acquire(r.pool()));
    CHECK(!a->conn);
    CHECK(a->err.sqlstate == "08001");
    CHECK(a->err.message.find("could not connect") != std::string::npos);
    r.settings.target.port = r.server.port;
    r.pool().update(r.settings);
  }
  CHECK(r.pool().total() == 0);
  CHECK(r.group->servers.load() == 0);
  CHECK(r.stats.server_connect_failures_total.load() == 1);
  // The slot is free again: the next login, accepted, gets it.
  r.server.login = FakeServer::Login::ok;
  auto c = r.acquire();
  CHECK(r.pool().total() == 1);
}

TEST_CASE("pool: a server given back is reset before it is lent again") {
  Rig r;
  SUBCASE("session pooling: the reset query") {
    r.open();
    auto c = r.acquire();
    c->applied["search_path"] = "x";
    c->statements.insert("s1", 10);
    r.release(std::move(c), true, 1);
    CHECK(r.server.backend(1000).queries == std::vector<std::string>{"DISCARD ALL"});
    auto again = r.acquire();
    CHECK(again->backend_pid == 1000);
    CHECK(again->applied.empty());
    CHECK(again->statements.size() == 0);
  }
  SUBCASE("an open transaction is rolled back first") {
    r.open();
    auto c = r.acquire();
    c->tx_status = 'T';
    r.release(std::move(c), true, 1);
    CHECK(r.server.backend(1000).queries == std::vector<std::string>{"ROLLBACK", "DISCARD ALL"});
    CHECK(r.acquire()->tx_status == 'I');
  }
  SUBCASE("a reset query that keeps prepared statements: DEALLOCATE ALL too") {
    r.settings.config.reset_query = "RESET ALL";
    r.open();
    auto c = r.acquire();
    c->statements.insert("s1", 10);
    r.release(std::move(c), true, 1);
    CHECK(r.server.backend(1000).queries == std::vector<std::string>{"RESET ALL", "DEALLOCATE ALL"});
  }
  SUBCASE("transaction pooling: only a server a pinned client left dirty") {
    r.settings.config.mode = control::PoolMode::transaction;
    r.open();
    auto c = r.acquire();
    c->dirty = true;
    r.release(std::move(c), true, 1);
    CHECK(r.server.backend(1000).queries == std::vector<std::string>{"DISCARD ALL"});
    auto again = r.acquire();
    CHECK(!again->dirty);
  }
  CHECK(r.server.backends.size() == 1);
}

TEST_CASE("pool: a server whose reset fails, or that cannot be reset, is closed, not lent") {
  Rig r;
  SUBCASE("the reset query fails") {
    r.open();
    r.server.answer = FakeServer::Answer::error;
  }
  SUBCASE("the server does not answer the reset") {
    r.settings.config.connect_timeout = 500ms;  // also how long a reset may take
    r.open();
    r.server.answer = FakeServer::Answer::silent;
  }
  SUBCASE("a pinned client's state and no reset query") {
    r.settings.config.mode = control::PoolMode::transaction;
    r.settings.config.reset_query.clear();
    r.open();
  }
  auto c = r.acquire();
  c->dirty = true;  // (session mode resets anyway)
  r.pool().release(std::move(c), true);
  REQUIRE(r.run_until([&] { return r.pool().total() == 0; }));
  CHECK(r.pool().idle() == 0);
  REQUIRE(r.run_until([&] { return r.server.backend(1000).gone; }));
  r.server.answer = FakeServer::Answer::ok;
  CHECK(r.acquire()->backend_pid == 1001);
}

TEST_CASE("pool: servers past max_lifetime are closed at check-in") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.max_lifetime = 0ms;  // every server is already too old
  r.open();
  auto c = r.acquire();
  r.pool().release(std::move(c), true);
  CHECK(r.pool().idle() == 0);
  CHECK(r.pool().total() == 0);
  REQUIRE(r.run_until([&] { return r.server.backend(1000).terminated; }));
  CHECK(r.acquire()->backend_pid == 1001);
}

TEST_CASE("pool: a server given back with bytes not yet relayed is closed") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.open();
  auto c = r.acquire();
  // Part of an answer the client never took: the next client would read it as its own.
  c->buffer.prepare_read();
  c->buffer.write_ptr()[0] = 'Z';
  c->buffer.commit(1);
  r.pool().release(std::move(c), true);
  CHECK(r.pool().idle() == 0);
  CHECK(r.pool().total() == 0);
  CHECK(r.acquire()->backend_pid == 1001);
}

TEST_CASE("pool: a larger pool.size on reload lets a waiting client open a server") {
  Rig r;
  r.settings.config.size = 1;
  r.open();
  auto held = r.acquire();
  auto waiter = r.start_acquire(r.pool());
  REQUIRE(r.run_until([&] { return r.pool().waiting() == 1; }));
  r.settings.config.size = 2;
  r.settings.max_servers = 2;
  r.pool().update(r.settings);
  r.finish(waiter);
  REQUIRE(waiter->conn);
  CHECK(waiter->conn->backend_pid == 1001);
  CHECK(r.pool().total() == 2);
  CHECK(!r.server.backend(1000).gone);  // the same target: the lent server stays
}

TEST_CASE("pool: close_idle closes every idle server and keeps the lent ones") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 3;
  r.open();
  auto a = r.acquire();
  auto b = r.acquire();
  auto lent = r.acquire();
  r.release(std::move(a), true, 1);
  r.release(std::move(b), true, 2);
  r.pool().close_idle();
  CHECK(r.pool().idle() == 0);
  CHECK(r.pool().total() == 1);
  CHECK(r.group->servers.load() == 1);
  CHECK(r.stats.servers_idle.load() == 0);
  REQUIRE(
      r.run_until([&] { return r.server.backend(1000).terminated && r.server.backend(1001).terminated; }));
  CHECK(!r.server.backend(1002).gone);
  CHECK(r.acquire()->backend_pid == 1003);  // a fresh one, not a closed one
}

TEST_CASE("pool: maintain closes servers idle past idle_timeout down to min_size, and opens up to it") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 3;
  r.settings.config.idle_timeout = 60000ms;
  r.settings.min_servers = 1;
  r.open();
  auto a = r.acquire();
  auto b = r.acquire();
  r.release(std::move(a), true, 1);  // 1000 is the oldest idle
  r.release(std::move(b), true, 2);
  // The clock is passed in: "an hour later" needs no waiting.
  r.pool().maintain(Clock::now());
  CHECK(r.pool().idle() == 2);
  r.pool().maintain(Clock::now() + 1h);
  CHECK(r.pool().idle() == 1);  // min_size keeps one
  CHECK(r.pool().total() == 1);
  REQUIRE(r.run_until([&] { return r.server.backend(1000).terminated; }));
  CHECK(!r.server.backend(1001).gone);
  // A larger min_size: upkeep opens the missing servers, idle, ready for clients.
  r.settings.min_servers = 3;
  r.pool().update(r.settings);  // the same target: nothing is retired
  CHECK(r.pool().idle() == 1);
  r.pool().maintain(Clock::now());
  REQUIRE(r.run_until([&] { return r.pool().idle() == 3; }));
  CHECK(r.server.backends.size() == 4);
  CHECK(r.stats.servers_idle.load() == 3);
  r.pool().maintain(Clock::now());  // at min_size: nothing more
  r.settle();
  CHECK(r.server.backends.size() == 4);
}

TEST_CASE("pool: a new target retires the idle servers at once and the lent ones when they come back") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.labels = {"db", "alice", "127.0.0.1:1", "0", "primary"};
  r.open();
  auto lent = r.acquire();
  r.release(r.acquire(), true, 1);
  control::PoolLabels old_labels = r.settings.labels;
  r.settings.target.dbname = "other";
  r.settings.labels.backend = "127.0.0.1:2";
  r.pool().update(r.settings);
  // The pool's gauges move to its new labels; what the old ones counted stays there.
  CHECK(r.stats.pool_stats(old_labels).servers_open.load() == 0);
  CHECK(r.stats.pool_stats(old_labels).checkouts_total.load() == 2);
  CHECK(r.stats.pool_stats(r.settings.labels).servers_open.load() == 1);  // the lent one
  CHECK(r.pool().idle() == 0);
  CHECK(r.pool().welcome_params().empty());  // until a server of the new target says
  r.pool().release(std::move(lent), true);
  CHECK(r.pool().total() == 0);
  REQUIRE(r.run_until([&] { return r.server.open() == 0; }));
  auto c = r.acquire();
  CHECK(r.server.backend(c->backend_pid).database == "other");
  CHECK(r.server.backend(1000).database == "db");
  CHECK(!r.pool().welcome_params().empty());
}

TEST_CASE("pool: a server with a cancel on its way is held back until the cancel is taken") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.open();
  auto c = r.acquire();
  auto cancels = c->cancels_in_flight;
  *cancels = 1;
  r.pool().release(std::move(c), true);
  r.settle();
  CHECK(r.pool().idle() == 0);
  CHECK(!r.pool().take_idle());
  SUBCASE("taken") {
    *cancels = 0;
    REQUIRE(r.run_until([&] { return r.pool().idle() == 1; }));
    CHECK(r.acquire()->backend_pid == 1000);
  }
  SUBCASE("never taken: closed after a while") {
    REQUIRE(r.run_until([&] { return r.pool().total() == 0; }));
    CHECK(r.pool().idle() == 0);
    CHECK(r.acquire()->backend_pid == 1001);
  }
}

TEST_CASE("pool: the session's own waiter (wait_in_line, handed) and a waiter that leaves") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 1;
  r.open();
  Pool::Waiter early;
  CHECK(!r.pool().wait_in_line(early));  // nobody waits and a slot is free: acquire() opens one
  auto held = r.acquire();
  {
    Pool::Waiter leaving;
    CHECK(r.pool().wait_in_line(leaving));
    CHECK(r.pool().waiting() == 1);
  }  // a client that disconnects while waiting leaves the queue with its Waiter
  CHECK(r.pool().waiting() == 0);
  CHECK(r.group->waiting.load() == 0);
  CHECK(r.stats.clients_waiting.load() == 0);

  Pool::Waiter w;
  REQUIRE(r.pool().wait_in_line(w));
  CHECK(!w.done());
  SUBCASE("handed the server given back") {
    uint32_t pid = held->backend_pid;
    r.pool().release(std::move(held), true);  // no reset needed: handed over on the spot
    CHECK(w.done());
    auto got = r.pool().handed(w);
    REQUIRE(got);
    CHECK(got->backend_pid == pid);
    CHECK(r.pool().waiting() == 0);
    CHECK(r.stats.clients_waiting.load() == 0);
  }
  SUBCASE("offered the slot of a closed server: acquire(err, &w) opens one") {
    r.pool().release(std::move(held), false);
    CHECK(w.done());
    CHECK(w.slot);
    CHECK(!r.pool().handed(w));
    auto a = r.finish(r.start_acquire(r.pool(), &w));
    REQUIRE(a->conn);
    CHECK(a->conn->backend_pid == 1001);
    CHECK(r.stats.clients_waiting.load() == 0);
  }
}

TEST_CASE("pool: a client waiting when its pool is destroyed is let go") {
  Rig r;
  r.settings.config.size = 1;
  r.open();
  auto held = r.acquire();
  auto waiter = r.start_acquire(r.pool());
  REQUIRE(r.run_until([&] { return r.pool().waiting() == 1; }));
  r.pools.clear();
  r.finish(waiter);
  CHECK(!waiter->conn);
  CHECK(r.stats.clients_waiting.load() == 0);
}

TEST_CASE(
    "pool: the size is one budget over all workers, and a slot moves to the worker whose clients wait") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 1;
  r.open(2);  // two workers' pools, on one io_context here
  auto held = r.acquire(r.pool(0));
  std::shared_ptr<Rig::Acquired> waiter;
  auto wait_on_worker_1 = [&] {
    waiter = r.start_acquire(r.pool(1));
    REQUIRE(r.run_until([&] { return r.pool(1).waiting() == 1; }));
    CHECK(r.group->waiting.load() == 1);
    CHECK(r.server.backends.size() == 1);  // worker 1 may not open a second server
  };
  SUBCASE("given back on worker 0 while worker 1 waits: closed there, opened on worker 1") {
    wait_on_worker_1();
    r.pool(0).release(std::move(held), true);
    CHECK(r.stats.pool_slots_moved_total.load() == 1);
  }
  SUBCASE("idle on worker 0: worker 1's waiter asks for it after a short wait") {
    r.pool(0).release(std::move(held), true);
    CHECK(r.pool(0).idle() == 1);
    wait_on_worker_1();
  }
  r.finish(waiter);
  REQUIRE(waiter->conn);
  CHECK(waiter->conn->backend_pid == 1001);
  CHECK(r.pool(0).total() == 0);
  CHECK(r.pool(0).idle() == 0);
  CHECK(r.pool(1).total() == 1);
  CHECK(r.group->servers.load() == 1);
  REQUIRE(r.run_until([&] { return r.server.backend(1000).terminated; }));
}

TEST_CASE("pool: workers with as many clients waiting per server keep their servers") {
  Rig r;
  r.settings.config.mode = control::PoolMode::transaction;
  r.settings.config.size = 2;
  r.open(2);
  auto held0 = r.acquire(r.pool(0));
  auto held1 = r.acquire(r.pool(1));
  auto waiter0 = r.start_acquire(r.pool(0));
  REQUIRE(r.run_until([&] { return r.pool(0).waiting() == 1; }));
  auto waiter1 = r.start_acquire(r.pool(1));
  REQUIRE(r.run_until([&] { return r.pool(1).waiting() == 1; }));
  // Moving a slot costs a close and a login: not done between workers within twice each other's load.
  r.pool(0).release(std::move(held0), true);
  r.finish(waiter0);
  REQUIRE(waiter0->conn);
  CHECK(waiter0->conn->backend_pid == 1000);
  r.pool(1).release(std::move(held1), true);
  r.finish(waiter1);
  REQUIRE(waiter1->conn);
  CHECK(waiter1->conn->backend_pid == 1001);
  CHECK(r.stats.pool_slots_moved_total.load() == 0);
  CHECK(r.server.backends.size() == 2);
}

TEST_CASE("ServerStatements: least recently used out first, within capacity") {
  pool::ServerStatements s;
  CHECK(s.insert("a", 2).empty());
  CHECK(s.insert("b", 2).empty());
  CHECK(s.insert("a", 2).empty());  // already there: only used
  CHECK(s.size() == 2);
  CHECK(s.use("a"));  // b is now the least recently used
  CHECK(s.insert("c", 2) == "b");
  CHECK(!s.contains("b"));
  CHECK(!s.use("b"));
  CHECK(s.contains("a"));
  CHECK(s.contains("c"));
  CHECK(s.size() == 2);
  CHECK(s.insert("d", 2) == "a");  // c was inserted after a was last used

  pool::ServerStatements unbounded;
  for (int i = 0; i < 1000; ++i) CHECK(unbounded.insert("s" + std::to_string(i), 0).empty());
  CHECK(unbounded.size() == 1000);
}

TEST_CASE("ServerStatements: erase, restore and forget_stale") {
  pool::ServerStatements s;
  s.insert("a", 3);
  s.insert("b", 3);
  s.insert("c", 3);
  s.erase("b");
  s.erase("missing");
  CHECK(s.size() == 2);
  CHECK(!s.contains("b"));
  // A victim whose Close was not sent comes back as the least recently used: the next one out.
  CHECK(s.insert("d", 2) == "a");
  s.restore("a");
  CHECK(s.contains("a"));
  s.restore("a");  // already there: nothing changes
  CHECK(s.size() == 3);
  CHECK(s.insert("e", 3) == "a");
  s.unnamed_owner = 7;
  s.forget_stale();
  CHECK(s.size() == 0);
  CHECK(s.close_first);  // the server still has them: each is closed before it is prepared again
  CHECK(!s.contains("c"));
  s.insert("x", 3);
  s.clear();
  CHECK(s.size() == 0);
  CHECK(s.unnamed_owner == 0);
}

TEST_CASE("ServerStatements: desc follows the statement") {
  pool::ServerStatements s;
  CHECK(s.desc("a") == 0);
  s.set_desc("a", 5);  // not prepared here: nothing to describe
  CHECK(s.desc("a") == 0);
  s.insert("a", 2);
  CHECK(s.desc("a") == 0);  // not known yet
  s.set_desc("a", 5);
  CHECK(s.desc("a") == 5);
  s.insert("b", 2);
  CHECK(s.use("a"));
  CHECK(s.desc("a") == 5);  // use keeps it
  CHECK(s.insert("c", 2) == "b");
  CHECK(s.desc("a") == 5);
  s.erase("a");
  CHECK(s.desc("a") == 0);
  s.insert("a", 2);
  CHECK(s.desc("a") == 0);  // prepared again: described again
  s.set_desc("a", 9);
  s.restore("a");
  CHECK(s.desc("a") == 9);
}
