// Session pooling on a sharded database: the session runs on transaction pooling's machinery, so every
// statement is routed to (or refused for) the shard its key names, but each server it takes for a shard is
// held by the session until it disconnects. Where a transaction-pooled session would give a server back, a
// holding one parks it in held_[shard]; where it would take one for that shard, it takes the parked one
// first. So temp tables, LISTEN, advisory locks and prepared statements made on a shard stay usable there.
#include <sys/socket.h>

#include <cerrno>

#include "pgrouter/control/log.hpp"
#include "pgrouter/net/batch_clock.hpp"
#include "pgrouter/session/client_session.hpp"
#include "shard_leg.hpp"

namespace pgrouter::session {

void ClientSession::give_back_held(Held& slot) {
  if (!slot.server) return;
  w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);
  // Reset as session pooling resets (pool.reset_query) on its way back.
  slot.pool->release(std::move(slot.server), true);
}

ClientSession::Held& ClientSession::held_slot(int shard) {
  if (held_.size() <= size_t(shard)) held_.resize(size_t(shard) + 1);
  return held_[size_t(shard)];
}

bool ClientSession::park_server() {
  // Only a server in step, idle and with nothing unread: anything else goes back to its pool (which rolls
  // back or closes it) as in transaction pooling.
  if (!hold_servers_ || attached_.state != ServerState::in_step || attached_.server->tx_status != 'I' ||
      !attached_.server->buffer.empty())
    return false;
  Held& slot = held_slot(shard_);
  give_back_held(slot);  // (one server per shard: a second is never taken while one is parked)
  slot.server = std::move(attached_.server);
  slot.pool = attached_.pool;
  if (tracker_) {
    tracker_->server_released();
    // Every server the session holds is its own: currval() there is the client's.
    tracker_->client_pinned();
  }
  return true;
}

std::unique_ptr<pool::ServerConnection> ClientSession::take_held(int shard, pool::Pool& pool) {
  if (held_.size() <= size_t(shard) || !held_[size_t(shard)].server) return nullptr;
  Held& slot = held_[size_t(shard)];
  auto server = std::move(slot.server);
  w_.stats().servers_active.fetch_sub(1, std::memory_order_relaxed);  // the taker counts it again
  if (slot.pool != &pool) {  // a reload moved the shard elsewhere, or its primary changed (role: auto)
    slot.pool->release(std::move(server), true);
    return nullptr;
  }
  // Bytes waiting (a notification, a ParameterStatus) are relayed with the next answer. A server that ended
  // while parked (closed, or its FATAL waiting) is dropped when it held nothing of the session's but settings
  // and prepared statements, which the next server gets too. One that held session state (temp tables,
  // locks: `dirty`) is attached all the same, so the relay tells the client its session there ended, as
  // session pooling does, rather than going on without that state.
  char b = 0;
  ssize_t n = ::recv(server->socket.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  bool ended = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || (n > 0 && b == 'E');
  if (ended && !server->dirty) {
    log::info("a server the session held ended while parked; the shard's next transaction gets another",
              {{"session", id_}, {"shard", uint64_t(shard)}, {"server", pool.target_name()}});
    pool.release(std::move(server), false);
    return nullptr;
  }
  server->checked_out = net::BatchClock::now();  // where this transaction starts (its duration metric)
  return server;
}

bool ClientSession::park_leg(ShardLeg& leg, bool client_gone) {
  if (!hold_servers_ || client_gone || !leg.clean()) return false;
  Held& slot = held_slot(leg.shard);
  if (slot.server && !leg.held) return false;  // the session holds another: this one goes back
  give_back_held(slot);
  slot.server = std::move(leg.server);
  slot.pool = leg.pool;
  return true;
}

void ClientSession::release_held() {
  for (auto& slot : held_) give_back_held(slot);
  held_.clear();
}

}  // namespace pgrouter::session
