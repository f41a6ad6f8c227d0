// The frontend (client -> server) message types of protocol 3, named, with PostgreSQL's own per-type length
// limits after login (postgres.c, SocketBackend). pgrouter checks a message's type and length against
// these before it reads or forwards any of its body, so nothing reaches a server that PostgreSQL itself
// would refuse.
#pragma once
#include <cstdint>

// Files that took backend::known_type from here before backend.hpp existed still find it.
#include "pgrouter/protocol/backend.hpp"

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
// During login only (PostgreSQL refuses it after): PasswordMessage, and SASLInitialResponse and SASLResponse,
// which share its type.
constexpr char kPasswordMessage = 'p';

// PQ_SMALL_MESSAGE_LIMIT and PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1).
constexpr uint32_t kSmallLimit = 10000;
constexpr uint32_t kLargeLimit = 0x3fffffffu - 1;

// The largest length field PostgreSQL accepts for a message of this type; 0 when the type is not a
// frontend message at all (PostgreSQL answers FATAL 08P01 "invalid frontend message type N").
constexpr uint32_t max_length(char type) {
  switch (type) {
    case kQuery:
    case kParse:
    case kBind:
    case kFunctionCall:
    case kCopyData:
      return kLargeLimit;
    case kDescribe:
    case kExecute:
    case kClose:
    case kFlush:
    case kSync:
    case kCopyDone:
    case kCopyFail:
    case kTerminate:
      return kSmallLimit;
    default:
      return 0;
  }
}

// CopyData, CopyDone and CopyFail: PostgreSQL ignores them outside a COPY.
constexpr bool is_copy_message(char type) {
  return type == kCopyData || type == kCopyDone || type == kCopyFail;
}

}  // namespace pgrouter::protocol::frontend
