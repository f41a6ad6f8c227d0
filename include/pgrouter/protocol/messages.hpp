// Builders for the messages pgrouter writes and parsers for the few it must read: startup packets,
// ErrorResponse fields, authentication requests. The SQLSTATEs pgrouter raises are listed here once.
#pragma once
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgrouter/protocol/codec.hpp"

namespace pgrouter::protocol {

// Special request codes in the startup packet's version field.
constexpr uint32_t kCancelRequestCode = 80877102;
constexpr uint32_t kSslRequestCode = 80877103;
constexpr uint32_t kGssEncRequestCode = 80877104;
constexpr uint32_t kProtocol30 = 3u << 16;
// The length field's limit: PostgreSQL checks MAX_STARTUP_PACKET_LENGTH (10000) against it minus its own 4
// bytes.
constexpr uint32_t kMaxStartupPacket = 10000 + 4;

// Every SQLSTATE pgrouter raises itself (see docs/ARCHITECTURE.md, "Errors").
namespace sqlstate {
constexpr const char* protocol_violation = "08P01";
constexpr const char* connection_failure = "08006";
constexpr const char* cannot_connect = "08001";
constexpr const char* too_many_connections = "53300";
constexpr const char* invalid_password = "28P01";
constexpr const char* invalid_authorization = "28000";
constexpr const char* unknown_database = "3D000";
constexpr const char* feature_not_supported = "0A000";
constexpr const char* invalid_parameter_value = "22023";
constexpr const char* object_not_in_prerequisite_state = "55000";
constexpr const char* admin_shutdown = "57P01";
constexpr const char* query_canceled = "57014";
constexpr const char* idle_in_transaction_timeout = "25P03";
constexpr const char* idle_session_timeout = "57P05";
constexpr const char* internal_error = "XX000";
}  // namespace sqlstate

struct StartupPacket {
  uint32_t code = 0;  // protocol version or a special request code
  std::vector<std::pair<std::string, std::string>> params;
  // CancelRequest fields
  uint32_t cancel_pid = 0;
  uint32_t cancel_secret = 0;
  const std::string* find(std::string_view key) const;
};

// Parses the body of a startup-style packet (after the 4-byte length). Returns nullopt with a
// reason when malformed (params must be NUL-terminated pairs ending with an empty name).
std::optional<StartupPacket> parse_startup(std::string_view body, std::string& why);

struct ErrorFields {
  std::string severity;
  std::string code;
  std::string message;
  std::string detail;
  std::string hint;
};
ErrorFields parse_error_fields(std::string_view body);
// Only the SQLSTATE ('C' field), without allocating for the others.
std::string_view error_sqlstate(std::string_view body);
// A DataRow's values as text (nullopt = NULL); a malformed row gives the values before the fault.
std::vector<std::optional<std::string>> data_row_texts(std::string_view body);
// Whether an ErrorResponse body is FATAL or PANIC (the server ends the session after it).
bool error_is_fatal(std::string_view body);

// The type and length field of a message whose body (body_len bytes) the caller appends next.
void append_header(std::string& out, char type, size_t body_len);

// --- builders: each appends one whole message to out -------------------------------------------
void append_error(std::string& out, std::string_view severity, std::string_view code,
                  std::string_view message, std::string_view detail = {}, std::string_view hint = {});
void append_auth(std::string& out, uint32_t code, std::string_view data = {});
void append_parameter_status(std::string& out, std::string_view name, std::string_view value);
void append_backend_key_data(std::string& out, uint32_t pid, uint32_t secret);
void append_ready_for_query(std::string& out, char status);
void append_command_complete(std::string& out, std::string_view tag);
void append_negotiate_protocol_version(std::string& out, uint32_t newest_minor,
                                       const std::vector<std::string>& unrecognized);
// Frontend messages (pgrouter as a client of PostgreSQL).
void append_startup(std::string& out, const std::vector<std::pair<std::string, std::string>>& params);
void append_password(std::string& out,
                     std::string_view password);  // PasswordMessage: the password as a C string
void append_sasl_initial(std::string& out, std::string_view mechanism, std::string_view data);
void append_sasl_response(std::string& out, std::string_view data);
void append_query(std::string& out, std::string_view sql);
// The extended protocol. A Parse ends with its parameter types (count, then OIDs) and a Bind, after the
// statement name, with its formats, parameter values and result formats: `parameter_types` and `bind_rest`,
// as a client sent them, or these for none.
constexpr std::string_view kNoParameterTypes{"\0\0", 2};
constexpr std::string_view kNoParameters{"\0\0\0\0\0\0", 6};
void append_parse(std::string& out, std::string_view name, std::string_view query,
                  std::string_view parameter_types);
void append_bind(std::string& out, std::string_view portal, std::string_view statement,
                 std::string_view bind_rest);
// kind: 'S' a prepared statement, 'P' a portal.
void append_describe(std::string& out, char kind, std::string_view name);
void append_close(std::string& out, char kind, std::string_view name);
void append_execute(std::string& out, std::string_view portal);  // every row
void append_flush(std::string& out);
void append_sync(std::string& out);
void append_terminate(std::string& out);
void append_cancel_request(std::string& out, uint32_t pid, uint32_t secret);

// The (name, value) of a ParameterStatus body; nullopt if malformed.
std::optional<std::pair<std::string_view, std::string_view>> parse_parameter_status(std::string_view body);

// Reads a C string at pos; advances pos past the NUL. nullopt if there is no NUL. (Inline: the relay reads
// several per message, most of them empty names.)
inline std::optional<std::string_view> read_cstring(std::string_view body, size_t& pos) {
  if (pos >= body.size()) return std::nullopt;
  const char* start = body.data() + pos;
  const void* nul = std::memchr(start, '\0', body.size() - pos);
  if (!nul) return std::nullopt;
  size_t len = size_t(static_cast<const char*>(nul) - start);
  pos += len + 1;
  return std::string_view(start, len);
}

// Quotes a value as a SQL string literal ('...' with quotes doubled); names are checked separately.
std::string quote_literal(std::string_view value);
bool is_safe_identifier(std::string_view name);

}  // namespace pgrouter::protocol
