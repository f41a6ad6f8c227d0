// libFuzzer target: the parsers for what clients and servers send pgrouter (src/protocol/messages.cpp):
// startup packets, ErrorResponse fields, the SQLSTATE alone, ParameterStatus, and the client requests a
// cross-shard read answers (src/session/scatter_request.cpp). Besides not crashing, what each
// parser accepts must be consistent with the bytes: a parsed startup packet written back is the same packet,
// the SQLSTATE found alone is the one the full parse finds.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/session/scatter_request.hpp"

namespace p = pgrouter::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);

  std::string why;
  if (auto sp = p::parse_startup(body, why)) {
    FUZZ_CHECK(why.empty());
    FUZZ_CHECK(sp->code == p::read_be32(body.data()));
    if (sp->code == p::kCancelRequestCode) {
      FUZZ_CHECK(body.size() == 12 && sp->params.empty());
    } else if (sp->code == p::kSslRequestCode || sp->code == p::kGssEncRequestCode) {
      FUZZ_CHECK(body.size() == 4 && sp->params.empty());
    } else {
      // A startup packet is its code, name/value C strings and one NUL: rebuilding it gives the same bytes.
      std::string rebuilt(body.substr(0, 4));
      for (auto& [k, v] : sp->params) {
        FUZZ_CHECK(!k.empty());
        FUZZ_CHECK(sp->find(k) != nullptr);
        rebuilt.append(k).push_back('\0');
        rebuilt.append(v).push_back('\0');
      }
      rebuilt.push_back('\0');
      FUZZ_CHECK(rebuilt == body);
    }
  } else {
    FUZZ_CHECK(!why.empty());
  }

  // ErrorResponse: fields are a type byte and a C string each, up to a NUL type (or a field without its NUL).
  // The full parse keeps the last of each field, error_sqlstate() the first 'C'.
  std::string_view first_code, last_code, last_message;
  bool any_code = false;
  for (size_t pos = 0; pos < body.size() && body[pos] != '\0';) {
    char t = body[pos++];
    auto v = p::read_cstring(body, pos);
    if (!v) break;
    if (t == 'C') {
      if (!any_code) first_code = *v;
      any_code = true;
      last_code = *v;
    }
    if (t == 'M') last_message = *v;
  }
  auto fields = p::parse_error_fields(body);
  FUZZ_CHECK(fields.code == last_code);
  FUZZ_CHECK(fields.message == last_message);
  FUZZ_CHECK(p::error_sqlstate(body) == first_code);

  if (auto ps = p::parse_parameter_status(body)) {
    FUZZ_CHECK(ps->first.size() + ps->second.size() + 2 <= body.size());
    FUZZ_CHECK(ps->first.find('\0') == std::string_view::npos &&
               ps->second.find('\0') == std::string_view::npos);
    // Writing it back gives the message whose body starts with the same bytes.
    std::string out;
    p::append_parameter_status(out, ps->first, ps->second);
    FUZZ_CHECK(out.size() >= 5 && body.starts_with(std::string_view(out).substr(5)));
  }

  // A cross-shard read's request, read from a client's bytes: within them, and every part inside the request.
  if (auto req = pgrouter::session::scatter_request(body.data(), body.size())) {
    FUZZ_CHECK(req->length >= 5 && req->length <= body.size());
    auto inside = [&](std::string_view part) {
      return part.empty() ||
             (part.data() >= body.data() && part.data() + part.size() <= body.data() + req->length);
    };
    FUZZ_CHECK(inside(req->sql) && inside(req->statement) && inside(req->bind_body) &&
               inside(req->parameter_types) && inside(req->parameters) && inside(req->result_formats));
    FUZZ_CHECK(req->extended || (!req->parses && req->result_formats.empty()));
    FUZZ_CHECK(req->result_formats.size() % 2 == 0);
    for (size_t k = 0; k < req->result_format_count(); ++k)
      FUZZ_CHECK(req->result_formats[2 * k] == 0 &&
                 (req->result_formats[2 * k + 1] == 0 || req->result_formats[2 * k + 1] == 1));
  }
  return 0;
}
