#include "pgrouter/session/scatter_request.hpp"

#include "pgrouter/protocol/frontend.hpp"
#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace fe = pgrouter::protocol::frontend;

namespace {

struct Message {
  char type = 0;
  std::string_view body;
};

// The next whole message at d[pos..n), advancing pos; nullopt when it is cut short or its length is bogus.
std::optional<Message> next(const char* d, size_t n, size_t& pos) {
  if (n - pos < 5) return std::nullopt;
  uint32_t len = p::read_be32(d + pos + 1);
  if (len < 4 || n - pos - 1 < len) return std::nullopt;
  Message m{d[pos], std::string_view(d + pos + 5, len - 4)};
  pos += 1 + len;
  return m;
}

bool read_parse(std::string_view body, ScatterRequest& r) {
  size_t pos = 0;
  auto name = p::read_cstring(body, pos);
  auto sql = name ? p::read_cstring(body, pos) : std::nullopt;
  if (!sql) return false;
  r.parses = true;
  r.statement = *name;
  r.sql = *sql;
  r.parameter_types = body.substr(pos);
  return true;
}

bool read_bind(std::string_view body, ScatterRequest& r) {
  size_t pos = 0;
  auto portal = p::read_cstring(body, pos);
  auto stmt = portal ? p::read_cstring(body, pos) : std::nullopt;
  if (!stmt || !portal->empty() || (r.parses && *stmt != r.statement)) return false;
  r.statement = *stmt;
  size_t params_at = pos;
  // Parameter formats, then values, then result formats: walked to find where the result formats start.
  auto read16 = [&](int16_t& v) {
    if (body.size() - pos < 2) return false;
    v = int16_t(p::read_be16(body.data() + pos));
    pos += 2;
    return true;
  };
  int16_t nformats = 0, nvalues = 0, nresults = 0;
  if (!read16(nformats) || nformats < 0 || body.size() - pos < size_t(nformats) * 2) return false;
  pos += size_t(nformats) * 2;
  if (!read16(nvalues) || nvalues < 0) return false;
  for (int i = 0; i < nvalues; ++i) {
    if (body.size() - pos < 4) return false;
    int32_t len = int32_t(p::read_be32(body.data() + pos));
    pos += 4;
    if (len < -1 || (len > 0 && body.size() - pos < size_t(len))) return false;
    if (len > 0) pos += size_t(len);
  }
  r.parameters = body.substr(params_at, pos - params_at);
  if (!read16(nresults) || nresults < 0 || body.size() - pos != size_t(nresults) * 2) return false;
  r.result_formats = body.substr(pos);
  for (int i = 0; i < nresults; ++i) {
    int16_t f = 0;
    read16(f);
    if (f != 0 && f != 1) return false;  // PostgreSQL's own error: let a server give it
  }
  r.bind_body = body;
  return true;
}

// A Describe of kind 'S' or 'P' naming `name`.
bool describes(std::string_view body, char kind, std::string_view name) {
  return body.size() == name.size() + 2 && body[0] == kind && body.substr(1, name.size()) == name &&
         body.back() == '\0';
}

}  // namespace

std::optional<ScatterRequest> scatter_request(const char* d, size_t n) {
  ScatterRequest r;
  size_t pos = 0;
  auto first = next(d, n, pos);
  if (!first) return std::nullopt;
  if (first->type == fe::kQuery) {
    size_t at = 0;
    auto sql = p::read_cstring(first->body, at);
    if (!sql || at != first->body.size()) return std::nullopt;
    r.sql = *sql;
    r.length = pos;
    return r;
  }
  r.extended = true;
  auto m = first;
  if (m->type == fe::kParse) {
    if (!read_parse(m->body, r)) return std::nullopt;
    m = next(d, n, pos);
    if (m && m->type == fe::kDescribe) {
      if (!describes(m->body, 'S', r.statement)) return std::nullopt;
      r.describe_statement = true;
      m = next(d, n, pos);
    }
  }
  if (!m || m->type != fe::kBind || !read_bind(m->body, r)) return std::nullopt;
  m = next(d, n, pos);
  if (m && m->type == fe::kDescribe) {
    if (!describes(m->body, 'P', "")) return std::nullopt;
    r.describe_portal = true;
    m = next(d, n, pos);
  }
  if (!m || m->type != fe::kExecute || m->body.size() != 5 || m->body[0] != '\0') return std::nullopt;
  r.max_rows = int32_t(p::read_be32(m->body.data() + 1));
  m = next(d, n, pos);
  if (!m || m->type != fe::kSync || !m->body.empty()) return std::nullopt;
  r.length = pos;
  return r;
}

}  // namespace pgrouter::session
