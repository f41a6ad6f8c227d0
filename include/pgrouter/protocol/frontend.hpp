// The frontend (client -> server) messages of protocol 3 after login, named, with PostgreSQL's own
// per-type length limits (postgres.c, SocketBackend). pgrouter checks a message's type and length against
// these before it reads or forwards any of its body, so nothing reaches a server that PostgreSQL itself
// would refuse.
#pragma once
#include <cstdint>

namespace pgrouter::protocol::frontend {

constexpr char kQuery = 'Q';
constexpr char kParse = 'P';
constexpr char kBind = 'B';
constexpr char kDescribe = 'D';
constexpr char kExecute = 'E';
constexpr char kClose = 'C';
constexpr char kFlush = 'H';
constexpr char kSync = 'S';
constexpr char kFunctionCall = 'F';
constexpr char kCopyData = 'd';
constexpr char kCopyDone = 'c';
constexpr char kCopyFail = 'f';
constexpr char kTerminate = 'X';

// PQ_SMALL_MESSAGE_LIMIT and PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1).
constexpr uint32_t kSmallLimit = 10000;
constexpr uint32_t kLargeLimit = 0x3fffffffu - 1;

// The largest length field PostgreSQL accepts for a message of this type; 0 when the type is not a
// frontend message at all (PostgreSQL answers FATAL 08P01 "invalid frontend message type N").
constexpr uint32_t max_length(char type) {
  switch (type) {
    case kQuery: case kParse: case kBind: case kFunctionCall: case kCopyData:
      return kLargeLimit;
    case kDescribe: case kExecute: case kClose: case kFlush: case kSync: case kCopyDone: case kCopyFail:
    case kTerminate:
      return kSmallLimit;
    default:
      return 0;
  }
}

// CopyData, CopyDone and CopyFail: PostgreSQL ignores them outside a COPY.
constexpr bool is_copy_message(char type) { return type == kCopyData || type == kCopyDone || type == kCopyFail; }

}  // namespace pgrouter::protocol::frontend

namespace pgrouter::protocol::backend {

// Whether PostgreSQL sends messages of this type (protocol 3): any other is garbage, and relaying it would
// leave the client's framing in doubt.
constexpr bool known_type(char type) {
  switch (type) {
    case 'R': case 'K': case 'S': case 'Z': case 'E': case 'N': case 'A': case 'T': case 'D': case 'C': case 'I':
    case '1': case '2': case '3': case 'n': case 's': case 't': case 'G': case 'H': case 'W': case 'd': case 'c':
    case 'V': case 'v':
      return true;
    default:
      return false;
  }
}

}  // namespace pgrouter::protocol::backend
