// Which statement each request in flight runs, for the slow-query log.
#include "pgrouter/session/slow_query_log.hpp"

#include <vector>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/frontend.hpp"

namespace pgrouter::session {
namespace fe = pgrouter::protocol::frontend;

namespace {

// The NUL-terminated string at body[at], and at moved past it; nullopt when it runs off the end.
std::optional<std::string_view> cstring(std::string_view body, size_t& at) {
  size_t end = body.find('\0', at);
  if (end == std::string_view::npos) return std::nullopt;
  auto s = body.substr(at, end - at);
  at = end + 1;
  return s;
}

bool int16_at(std::string_view body, size_t& at, int& out) {
  if (at + 2 > body.size()) return false;
  out = int16_t(uint16_t(uint8_t(body[at]) << 8 | uint8_t(body[at + 1])));
  at += 2;
  return true;
}

bool int32_at(std::string_view body, size_t& at, int32_t& out) {
  if (at + 4 > body.size()) return false;
  out = int32_t(protocol::read_be32(body.data() + at));
  at += 4;
  return true;
}

}  // namespace

void SlowQueryLog::configure(int threshold_ms, bool parameters) {
  threshold_ns_ = threshold_ms > 0 ? uint64_t(threshold_ms) * 1'000'000 : kOff;
  parameters_ = parameters;
  if (!on()) {
    in_flight_.clear();
    named_.clear();
    unnamed_.clear();
    batch_ = {};
  }
}

void SlowQueryLog::client_message(char type, std::string_view body) {
  size_t at = 0;
  if (type == fe::kQuery) {
    auto text = cstring(body, at);
    batch_ = {std::string(text.value_or(body)), {}};
  } else if (type == fe::kParse) {
    auto name = cstring(body, at);
    auto text = cstring(body, at);
    if (!name || !text) return;
    if (name->empty()) {
      unnamed_ = std::string(*text);
      return;
    }
    if (named_.size() >= kMaxNamed && !named_.count(std::string(*name))) named_.erase(named_.begin());
    named_[std::string(*name)] = std::string(*text);
  } else if (type == fe::kBind) {
    auto portal = cstring(body, at);
    auto name = cstring(body, at);
    if (!portal || !name) return;
    if (name->empty()) {
      batch_.text = unnamed_;
    } else {
      auto it = named_.find(std::string(*name));
      batch_.text = it == named_.end() ? std::string() : it->second;
    }
    batch_.parameters = parameters_ ? bind_parameters(body, at) : std::string();
  }
}

void SlowQueryLog::request_started(char type) {
  if (type == fe::kFunctionCall) {
    in_flight_.push_back({"<function call>", {}});
    return;
  }
  in_flight_.push_back(batch_);
  if (type == fe::kQuery) batch_ = {};
}

std::optional<SlowQuery> SlowQueryLog::request_finished(uint64_t duration_ns) {
  if (in_flight_.empty()) return std::nullopt;
  Request r = std::move(in_flight_.front());
  in_flight_.pop_front();
  if (duration_ns < threshold_ns_) return std::nullopt;
  return SlowQuery{duration_ns, std::move(r.text), std::move(r.parameters)};
}

// Bind past the portal and statement names: format codes, then the values, as PostgreSQL's own log shows
// them ("$1 = '42', $2 = NULL"; a binary value as its size).
std::string SlowQueryLog::bind_parameters(std::string_view body, size_t at) {
  int nformats = 0, nparams = 0;
  if (!int16_at(body, at, nformats) || nformats < 0) return {};
  std::vector<int> formats(static_cast<size_t>(nformats));
  for (auto& f : formats)
    if (!int16_at(body, at, f)) return {};
  if (!int16_at(body, at, nparams) || nparams < 0) return {};
  std::string out;
  for (int i = 0; i < nparams; ++i) {
    int32_t len = 0;
    if (!int32_at(body, at, len)) return out;
    if (!out.empty()) out += ", ";
    out += "$" + std::to_string(i + 1) + " = ";
    if (len < 0) {
      out += "NULL";
      continue;
    }
    if (at + size_t(len) > body.size()) return out;
    int format = nformats == 1 ? formats[0] : size_t(i) < formats.size() ? formats[size_t(i)] : 0;
    if (format == 0) {
      out += '\'';
      for (char c : body.substr(at, size_t(len))) {
        if (c == '\'') out += '\'';
        out += c;
      }
      out += '\'';
    } else {
      out += "<" + std::to_string(len) + " bytes, binary>";
    }
    at += size_t(len);
  }
  return out;
}

}  // namespace pgrouter::session
