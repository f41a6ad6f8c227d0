// Private header: one shard's server taken for a request that spans shards (a cross-shard read's leg, a
// cross-shard write's participant, the two-phase recovery's connection), read in large pieces rather than
// per message, with the messages a request does not relay (ParameterStatus, notices) absorbed.
#pragma once
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "pgrouter/pool/pool.hpp"
#include "pgrouter/pool/server_connection.hpp"
#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/session/scatter_request.hpp"

namespace pgrouter::session {

// An ErrorResponse's body (the caller frames it).
inline std::string error_body(std::string_view sqlstate, std::string_view message,
                              std::string_view hint = {}) {
  std::string out;
  protocol::append_error(out, "ERROR", sqlstate, message, {}, hint);
  return out.substr(5);
}

inline void append_message(std::string& out, char type, std::string_view body) {
  protocol::append_header(out, type, body.size());
  out.append(body);
}

// A RowDescription with every format code 0: what Describe of a statement reports (formats are not known
// before Bind).
inline std::string statement_description(std::string_view body) {
  std::string out(body);
  if (out.size() < 2) return out;
  size_t n = protocol::read_be16(out.data()), pos = 2;
  for (size_t i = 0; i < n; ++i) {
    size_t at = pos;
    if (!protocol::read_cstring(out, at) || at + 18 > out.size()) return std::string(body);
    out[at + 16] = 0;
    out[at + 17] = 0;
    pos = at + 18;
  }
  return out;
}

struct ShardLeg {
  // A shard's reply message longer than this ends the request (a DataRow is at most 1 GB in PostgreSQL; the
  // rows of a request across shards are usually small, and memory per request stays bounded).
  static constexpr uint32_t kMaxMessage = 256u << 20;
  static constexpr size_t kReadChunk = 16 * 1024;  // many rows per recv

  int shard = 0;
  pool::Pool* pool = nullptr;
  std::unique_ptr<pool::ServerConnection> server;
  std::string description;  // its RowDescription body
  std::string parameters;   // its ParameterDescription body (Describe S)
  std::string error;        // the first ErrorResponse body it sent
  bool done = false;        // its CommandComplete (or error) came: no more rows
  bool ready = false;       // its ReadyForQuery came: the server is idle again
  bool broken = false;      // its connection failed: closed, not pooled
  bool parsed = false;      // its ParseComplete came: the statement's text is valid
  bool held = false;        // its server is the one the session holds for the shard (hold_servers_)
  std::vector<char> in = std::vector<char>(kReadChunk);
  size_t in_begin = 0, in_end = 0;
  bool unread() const { return in_end > in_begin; }

  // The next message the request looks at (ParameterStatus and notices are absorbed); sets done, ready,
  // parsed and error as they come. False when the connection failed: the leg is then broken, done and
  // ready, with a 08006 error if it had none.
  awaitable<bool> read(char& type, std::string& body) {
    namespace be = protocol::backend;
    for (;;) {
      std::string why;
      bool got = co_await next(type, body, why);
      if (!got) {
        broken = done = ready = true;
        if (error.empty())
          error = error_body(protocol::sqlstate::connection_failure,
                             "pgrouter: shard " + std::to_string(shard) + "'s server " + why);
        co_return false;
      }
      if (type == be::kParameterStatus) {
        if (auto kv = protocol::parse_parameter_status(body)) server->set_param(kv->first, kv->second);
        continue;
      }
      if (type == be::kNoticeResponse || type == be::kNotificationResponse) continue;
      if (type == be::kParseComplete) parsed = true;
      if (type == be::kErrorResponse) {
        if (error.empty()) error = body;
        done = true;
      } else if (type == be::kReadyForQuery) {
        server->tx_status = body.empty() ? 'I' : body[0];
        ready = done = true;
      }
      co_return true;
    }
  }

  // The next whole message; false with `why` when the connection failed or sent a bad length.
  awaitable<bool> next(char& type, std::string& body, std::string& why) {
    if (server->ssl) co_return co_await pool::read_server_message(*server, type, body, kMaxMessage, &why);
    for (;;) {
      size_t have = in_end - in_begin;
      if (have >= 5) {
        uint32_t len = protocol::read_be32(in.data() + in_begin + 1);
        if (len < 4 || len > kMaxMessage) {
          why = "sent an invalid message length " + std::to_string(len);
          co_return false;
        }
        if (have >= 1 + size_t(len)) {
          type = in[in_begin];
          body.assign(in.data() + in_begin + 5, len - 4);
          in_begin += 1 + len;
          co_return true;
        }
        if (1 + size_t(len) > in.size()) in.resize(1 + size_t(len));  // a message larger than the buffer
      }
      bool filled = co_await fill(why);
      if (!filled) co_return false;
    }
  }

  // Reads what the server has sent (waiting for some), after moving the unread bytes to the front.
  awaitable<bool> fill(std::string& why) {
    if (in_begin > 0) {
      std::memmove(in.data(), in.data() + in_begin, in_end - in_begin);
      in_end -= in_begin;
      in_begin = 0;
    }
    for (;;) {
      ssize_t r =
          ::recv(server->socket.native_handle(), in.data() + in_end, in.size() - in_end, MSG_DONTWAIT);
      if (r > 0) {
        in_end += size_t(r);
        co_return true;
      }
      if (r == 0) {
        why = "closed the connection";
        co_return false;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        why = "closed the connection (" + std::string(std::strerror(errno)) + ")";
        co_return false;
      }
      net::error_code ec;
      co_await server->socket.async_wait(tcp::socket::wait_read, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        why = "closed the connection (" + ec.message() + ")";
        co_return false;
      }
    }
  }

  // Sends bytes; false (broken) when the connection failed. (Coroutine parameters here are taken by value:
  // the frame owns them, whatever the caller's temporaries do.)
  awaitable<bool> send(std::string bytes) {
    net::error_code ec = co_await server->write_all(bytes);
    if (ec) {
      broken = done = ready = true;
      if (error.empty())
        error = error_body(protocol::sqlstate::connection_failure,
                           "pgrouter: shard " + std::to_string(shard) + "'s server closed the connection");
      co_return false;
    }
    ready = done = false;
    co_return true;
  }

  // Whether the server may go back to its pool for reuse.
  bool clean() const { return ready && !broken && server && server->tx_status == 'I' && !unread(); }
};

// The first error any leg sent (in the legs' order), if any.
inline const std::string* first_leg_error(const std::vector<ShardLeg>& legs) {
  for (auto& leg : legs)
    if (!leg.error.empty()) return &leg.error;
  return nullptr;
}

// A request's one statement as a shard gets it: `sql` as a simple Query, or Parse, [Describe S], Bind,
// Describe P, Execute, Sync of the unnamed statement and portal, with the client's parameters and, when
// client_result_formats, its result formats (else every result in text).
std::string leg_request(const ScatterRequest& req, std::string_view sql, bool describe_statement,
                        bool client_result_formats);

// A simple Query's answer on a leg: the CommandComplete tags, the rows' text values, the first error.
struct QueryAnswer {
  std::vector<std::string> tags;
  std::vector<std::vector<std::optional<std::string>>> rows;
  std::string error;  // ErrorResponse body, or empty
  bool ok() const { return error.empty(); }
};

// Runs `sql` as a simple Query on the leg and reads its whole answer (up to ReadyForQuery); false when the
// connection failed (the answer's error says so). send_query and read_answer are its two halves.
awaitable<bool> run_on_leg(ShardLeg& leg, std::string sql, QueryAnswer& answer);
awaitable<bool> send_query(ShardLeg& leg, std::string sql, QueryAnswer& answer);
awaitable<bool> read_answer(ShardLeg& leg, QueryAnswer& answer);
// The same query on several legs at once: sent to each, then each answer read (answers[i] is legs[i]'s).
awaitable<void> run_on_legs(std::vector<ShardLeg*> legs, std::string sql, std::vector<QueryAnswer>& answers);
// ROLLBACK on every leg whose connection still works (their transactions' parts are thrown away).
awaitable<void> rollback_legs(std::vector<ShardLeg>& legs);

}  // namespace pgrouter::session
