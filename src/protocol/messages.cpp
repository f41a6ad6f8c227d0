// Message builders and the few parsers pgrouter needs; everything else is relayed by length.
#include "pgrouter/protocol/messages.hpp"

#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/frontend.hpp"

namespace pgrouter::protocol {
namespace be = backend;
namespace fe = frontend;

const std::string* StartupPacket::find(std::string_view key) const {
  for (auto& [k, v] : params)
    if (k == key) return &v;
  return nullptr;
}

std::optional<std::pair<std::string_view, std::string_view>> parse_parameter_status(std::string_view body) {
  size_t pos = 0;
  auto name = read_cstring(body, pos);
  if (!name) return std::nullopt;
  auto value = read_cstring(body, pos);
  if (!value) return std::nullopt;
  return std::make_pair(*name, *value);
}

std::optional<StartupPacket> parse_startup(std::string_view body, std::string& why) {
  if (body.size() < 4) {
    why = "startup packet too short";
    return std::nullopt;
  }
  StartupPacket p;
  p.code = read_be32(body.data());
  if (p.code == kCancelRequestCode) {
    if (body.size() != 12) {
      why = "invalid length of cancel request";
      return std::nullopt;
    }
    p.cancel_pid = read_be32(body.data() + 4);
    p.cancel_secret = read_be32(body.data() + 8);
    return p;
  }
  if (p.code == kSslRequestCode || p.code == kGssEncRequestCode) {
    if (body.size() != 4) {
      why = "invalid length of encryption request";
      return std::nullopt;
    }
    return p;
  }
  size_t pos = 4;
  for (;;) {
    auto key = read_cstring(body, pos);
    if (!key) {
      why = "startup packet parameters are not NUL-terminated";
      return std::nullopt;
    }
    if (key->empty()) break;
    auto value = read_cstring(body, pos);
    if (!value) {
      why = "startup packet has a parameter name without a value";
      return std::nullopt;
    }
    p.params.emplace_back(std::string(*key), std::string(*value));
  }
  if (pos != body.size()) {
    why = "startup packet has bytes after its terminator";
    return std::nullopt;
  }
  return p;
}

ErrorFields parse_error_fields(std::string_view body) {
  ErrorFields f;
  size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    char t = body[pos++];
    auto v = read_cstring(body, pos);
    if (!v) break;
    switch (t) {
      case 'V':
        f.severity = *v;
        break;
      case 'S':
        if (f.severity.empty()) f.severity = *v;
        break;
      case 'C':
        f.code = *v;
        break;
      case 'M':
        f.message = *v;
        break;
      case 'D':
        f.detail = *v;
        break;
      case 'H':
        f.hint = *v;
        break;
      default:
        break;
    }
  }
  return f;
}

std::string_view error_sqlstate(std::string_view body) {
  size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    char t = body[pos++];
    auto v = read_cstring(body, pos);
    if (!v) break;
    if (t == 'C') return *v;
  }
  return {};
}

bool error_is_fatal(std::string_view body) {
  // 'V' (never localized) when the server sends it, else the localized 'S'.
  std::string_view severity;
  size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    char t = body[pos++];
    auto v = read_cstring(body, pos);
    if (!v) break;
    if (t == 'V') {
      severity = *v;
      break;
    }
    if (t == 'S' && severity.empty()) severity = *v;
  }
  return severity == "FATAL" || severity == "PANIC";
}

namespace {
// Starts a typed message; returns the offset of its length field, patched by finish().
size_t begin(std::string& out, char type) {
  out.push_back(type);
  size_t at = out.size();
  out.append(4, '\0');
  return at;
}
void finish(std::string& out, size_t at) {
  uint32_t len = uint32_t(out.size() - at);
  out[at] = char(len >> 24);
  out[at + 1] = char(len >> 16);
  out[at + 2] = char(len >> 8);
  out[at + 3] = char(len);
}
void cstr(std::string& out, std::string_view s) {
  out.append(s);
  out.push_back('\0');
}
}  // namespace

void append_header(std::string& out, char type, size_t body_len) {
  out.push_back(type);
  put_be32(out, uint32_t(body_len + 4));
}

void append_error(std::string& out, std::string_view severity, std::string_view code,
                  std::string_view message, std::string_view detail, std::string_view hint) {
  size_t at = begin(out, be::kErrorResponse);
  out.push_back('S');
  cstr(out, severity);
  out.push_back('V');
  cstr(out, severity);
  out.push_back('C');
  cstr(out, code);
  out.push_back('M');
  cstr(out, message);
  if (!detail.empty()) {
    out.push_back('D');
    cstr(out, detail);
  }
  if (!hint.empty()) {
    out.push_back('H');
    cstr(out, hint);
  }
  out.push_back('\0');
  finish(out, at);
}

void append_auth(std::string& out, uint32_t code, std::string_view data) {
  size_t at = begin(out, be::kAuthentication);
  put_be32(out, code);
  out.append(data);
  finish(out, at);
}

void append_parameter_status(std::string& out, std::string_view name, std::string_view value) {
  size_t at = begin(out, be::kParameterStatus);
  cstr(out, name);
  cstr(out, value);
  finish(out, at);
}

void append_backend_key_data(std::string& out, uint32_t pid, uint32_t secret) {
  size_t at = begin(out, be::kBackendKeyData);
  put_be32(out, pid);
  put_be32(out, secret);
  finish(out, at);
}

void append_ready_for_query(std::string& out, char status) {
  size_t at = begin(out, be::kReadyForQuery);
  out.push_back(status);
  finish(out, at);
}

void append_command_complete(std::string& out, std::string_view tag) {
  size_t at = begin(out, be::kCommandComplete);
  out.append(tag);
  out.push_back('\0');
  finish(out, at);
}

void append_negotiate_protocol_version(std::string& out, uint32_t newest_minor,
                                       const std::vector<std::string>& unrecognized) {
  size_t at = begin(out, be::kNegotiateProtocolVersion);
  put_be32(out, kProtocol30 | newest_minor);
  put_be32(out, uint32_t(unrecognized.size()));
  for (auto& o : unrecognized) cstr(out, o);
  finish(out, at);
}

void append_startup(std::string& out, const std::vector<std::pair<std::string, std::string>>& params) {
  size_t at = out.size();
  out.append(4, '\0');
  put_be32(out, kProtocol30);
  for (auto& [k, v] : params) {
    cstr(out, k);
    cstr(out, v);
  }
  out.push_back('\0');
  finish(out, at);
}

void append_password(std::string& out, std::string_view password) {
  size_t at = begin(out, fe::kPasswordMessage);
  cstr(out, password);
  finish(out, at);
}

void append_sasl_initial(std::string& out, std::string_view mechanism, std::string_view data) {
  size_t at = begin(out, fe::kPasswordMessage);
  cstr(out, mechanism);
  put_be32(out, uint32_t(data.size()));
  out.append(data);
  finish(out, at);
}

void append_sasl_response(std::string& out, std::string_view data) {
  size_t at = begin(out, fe::kPasswordMessage);
  out.append(data);
  finish(out, at);
}

void append_query(std::string& out, std::string_view sql) {
  size_t at = begin(out, fe::kQuery);
  cstr(out, sql);
  finish(out, at);
}

void append_parse(std::string& out, std::string_view name, std::string_view query,
                  std::string_view parameter_types) {
  size_t at = begin(out, fe::kParse);
  cstr(out, name);
  cstr(out, query);
  out.append(parameter_types);
  finish(out, at);
}

void append_bind(std::string& out, std::string_view portal, std::string_view statement,
                 std::string_view bind_rest) {
  size_t at = begin(out, fe::kBind);
  cstr(out, portal);
  cstr(out, statement);
  out.append(bind_rest);
  finish(out, at);
}

void append_describe(std::string& out, char kind, std::string_view name) {
  size_t at = begin(out, fe::kDescribe);
  out.push_back(kind);
  cstr(out, name);
  finish(out, at);
}

void append_close(std::string& out, char kind, std::string_view name) {
  size_t at = begin(out, fe::kClose);
  out.push_back(kind);
  cstr(out, name);
  finish(out, at);
}

void append_execute(std::string& out, std::string_view portal) {
  size_t at = begin(out, fe::kExecute);
  cstr(out, portal);
  put_be32(out, 0);  // no row limit
  finish(out, at);
}

void append_flush(std::string& out) {
  size_t at = begin(out, fe::kFlush);
  finish(out, at);
}

void append_sync(std::string& out) {
  size_t at = begin(out, fe::kSync);
  finish(out, at);
}

void append_terminate(std::string& out) {
  size_t at = begin(out, fe::kTerminate);
  finish(out, at);
}

void append_cancel_request(std::string& out, uint32_t pid, uint32_t secret) {
  put_be32(out, 16);
  put_be32(out, kCancelRequestCode);
  put_be32(out, pid);
  put_be32(out, secret);
}

std::string quote_literal(std::string_view value) {
  std::string q;
  q.reserve(value.size() + 2);
  q.push_back('\'');
  for (char c : value) {
    if (c == '\'') q.push_back('\'');
    q.push_back(c);
  }
  q.push_back('\'');
  return q;
}

bool is_safe_identifier(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::vector<std::optional<std::string>> data_row_texts(std::string_view body) {
  std::vector<std::optional<std::string>> row;
  if (body.size() < 2) return row;
  size_t n = read_be16(body.data()), pos = 2;
  for (size_t i = 0; i < n && pos + 4 <= body.size(); ++i) {
    uint32_t len = read_be32(body.data() + pos);
    pos += 4;
    if (len == 0xffffffffu) {
      row.emplace_back();
    } else if (len <= body.size() - pos) {
      row.emplace_back(body.substr(pos, len));
      pos += len;
    } else {
      break;
    }
  }
  return row;
}

}  // namespace pgrouter::protocol
