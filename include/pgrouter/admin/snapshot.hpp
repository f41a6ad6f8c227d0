// The admin console's view of the workers: each worker describes its pools, clients and servers on its own
// thread (snapshot()), and gather() collects one part per worker on the console's worker, so no thread reads
// another's sessions or pools.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pgrouter/asio.hpp"
#include "pgrouter/worker.hpp"

namespace pgrouter::admin {

// One connection as SHOW CLIENTS / SHOW SERVERS list it. Times are Unix seconds (0: none).
struct ConnectionRow {
  std::string user, database, state;
  std::string addr, local_addr;
  int port = 0, local_port = 0;
  int64_t connect_time = 0, request_time = 0;
  int64_t wait_us = 0;        // waiting for a server (clients)
  bool close_needed = false;  // a server a reload retired, closed when its client gives it back
  std::string ptr, link;
};

// One pool (database, user, shard, backend) of one worker.
struct PoolRow {
  std::string database, user, backend, pool_mode;
  int shard = 0;
  int backend_index = 0;  // 0 = the shard's primary
  int64_t cl_active = 0, cl_waiting = 0, sv_active = 0, sv_idle = 0, sv_login = 0;
  int64_t maxwait_us = 0;
};

// What a session tells of itself (ClientSession::admin_row).
struct SessionRow {
  ConnectionRow client;
  std::optional<ConnectionRow> server;  // the server it holds
  const void* pool = nullptr;           // the pool its server came from, else its primary pool
  // More servers it keeps between requests (session pooling on several shards: one per shard; a transaction
  // across shards: its part on each), with the pool each came from.
  std::vector<std::pair<const void*, ConnectionRow>> kept;
  bool waiting = false;  // in line for a server, or held by PAUSE
  bool paused = false;   // held by PAUSE (not in the pool's line)
  bool console = false;  // an admin console session
};

struct WorkerSnapshot {
  std::vector<PoolRow> pools;
  std::vector<ConnectionRow> clients, servers;
};

// On w's thread: its pools, clients and servers.
WorkerSnapshot snapshot(Worker& w);

// "2026-12-07 01:02:03 UTC" for a Unix time, "" for 0.
std::string format_time(int64_t unix_seconds);
// A steady-clock point as Unix seconds (0 for the epoch, an unset point).
int64_t unix_time(std::chrono::steady_clock::time_point t);

// Runs collect(w) on every worker's thread and returns the parts, in worker order, on home's thread (the
// caller's: a worker's for the console, the control thread's for the HTTP API). A worker that does not answer
// within `timeout`, one stopping, gives no part.
template <class T>
awaitable<std::vector<T>> gather(asio::io_context& home, Runtime& rt, std::function<T(Worker&)> collect,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  struct State {
    explicit State(asio::io_context& io, size_t n) : timer(io), parts(n) {}
    asio::steady_timer timer;
    std::vector<std::optional<T>> parts;
    size_t left = 0;
  };
  auto& workers = rt.workers;
  auto state = std::make_shared<State>(home, workers.size());
  state->left = workers.size();
  state->timer.expires_after(timeout);
  for (size_t i = 0; i < workers.size(); ++i) {
    Worker& w = *workers[i];
    asio::post(w.io(), [state, collect, &w, &home, i] {
      T part = collect(w);
      asio::post(home, [state, i, part = std::move(part)]() mutable {
        state->parts[i] = std::move(part);
        if (--state->left == 0) state->timer.cancel();
      });
    });
  }
  boost::system::error_code ec;
  co_await state->timer.async_wait(asio::redirect_error(use_awaitable, ec));
  std::vector<T> out;
  for (auto& part : state->parts)
    if (part) out.push_back(std::move(*part));
  co_return out;
}

}  // namespace pgrouter::admin
