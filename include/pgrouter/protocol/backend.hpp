// The backend (server -> client) message types of protocol 3, named: what PostgreSQL sends, during login and
// after. pgrouter writes some of them itself (messages.hpp) and reads the few it must act on.
#pragma once

namespace pgrouter::protocol::backend {

constexpr char kAuthentication =
    'R';  // AuthenticationOk, ...Cleartext/MD5/SASL*: the code in the body says which
constexpr char kBackendKeyData = 'K';
constexpr char kParameterStatus = 'S';
constexpr char kReadyForQuery = 'Z';
constexpr char kErrorResponse = 'E';
constexpr char kNoticeResponse = 'N';
constexpr char kNotificationResponse = 'A';
constexpr char kNegotiateProtocolVersion = 'v';
constexpr char kRowDescription = 'T';
constexpr char kDataRow = 'D';
constexpr char kCommandComplete = 'C';
constexpr char kEmptyQueryResponse = 'I';
constexpr char kParseComplete = '1';
constexpr char kBindComplete = '2';
constexpr char kCloseComplete = '3';
constexpr char kNoData = 'n';
constexpr char kPortalSuspended = 's';
constexpr char kParameterDescription = 't';
constexpr char kCopyInResponse = 'G';
constexpr char kCopyOutResponse = 'H';
constexpr char kCopyBothResponse = 'W';
constexpr char kCopyData = 'd';
constexpr char kCopyDone = 'c';
constexpr char kFunctionCallResponse = 'V';

// Whether PostgreSQL sends messages of this type (protocol 3): any other is garbage, and relaying it would
// leave the client's framing in doubt.
constexpr bool known_type(char type) {
  switch (type) {
    case kAuthentication:
    case kBackendKeyData:
    case kParameterStatus:
    case kReadyForQuery:
    case kErrorResponse:
    case kNoticeResponse:
    case kNotificationResponse:
    case kRowDescription:
    case kDataRow:
    case kCommandComplete:
    case kEmptyQueryResponse:
    case kParseComplete:
    case kBindComplete:
    case kCloseComplete:
    case kNoData:
    case kPortalSuspended:
    case kParameterDescription:
    case kCopyInResponse:
    case kCopyOutResponse:
    case kCopyBothResponse:
    case kCopyData:
    case kCopyDone:
    case kFunctionCallResponse:
    case kNegotiateProtocolVersion:
      return true;
    default:
      return false;
  }
}

}  // namespace pgrouter::protocol::backend
