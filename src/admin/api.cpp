// The HTTP API's pure parts: paths, parameters, JSON rendering and the access decision (see the header).
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <charconv>

#include "pgrouter/admin/api.hpp"
#include "pgrouter/util/strings.hpp"

namespace pgrouter::admin {
namespace {

struct Route {
  std::string_view name;
  Verb verb;
};

constexpr std::array kRoutes{
    Route{"pools", Verb::show_pools},     Route{"clients", Verb::show_clients},
    Route{"servers", Verb::show_servers}, Route{"databases", Verb::show_databases},
    Route{"stats", Verb::show_stats},     Route{"config", Verb::show_config},
    Route{"version", Verb::show_version}, Route{"backends", Verb::show_backends},
    Route{"reload", Verb::reload},        Route{"pause", Verb::pause},
    Route{"resume", Verb::resume},        Route{"disable", Verb::disable},
    Route{"enable", Verb::enable},        Route{"kill", Verb::kill},
    Route{"drain", Verb::shutdown},       Route{"wait_close", Verb::wait_close},
};

nlohmann::json cell_json(const Cell& cell, bool number) {
  if (!cell) return nullptr;
  if (number) {
    int64_t value = 0;
    const char* end = cell->data() + cell->size();
    auto [ptr, ec] = std::from_chars(cell->data(), end, value);
    if (ec == std::errc() && ptr == end) return value;
  }
  return *cell;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = util::ascii_lower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
      out += char(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::array<unsigned char, SHA256_DIGEST_LENGTH> digest(std::string_view s) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> out{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

}  // namespace

nlohmann::json result_json(const ResultSet& rs) {
  nlohmann::json columns = nlohmann::json::array();
  for (const auto& c : rs.columns()) columns.push_back(c.name);
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : rs.rows()) {
    nlohmann::json row = nlohmann::json::array();
    for (size_t i = 0; i < rs.columns().size(); ++i)
      row.push_back(i < r.size() ? cell_json(r[i], rs.columns()[i].oid == kInt8Oid) : nlohmann::json());
    rows.push_back(std::move(row));
  }
  return {{"columns", std::move(columns)}, {"rows", std::move(rows)}};
}

nlohmann::json error_json(std::string_view code, std::string_view message) {
  return {{"error", {{"code", code}, {"message", message}}}};
}

std::optional<Verb> api_verb(std::string_view path) {
  constexpr std::string_view prefix = "/v1/";
  if (!path.starts_with(prefix)) return std::nullopt;
  path.remove_prefix(prefix.size());
  if (path.ends_with('/')) path.remove_suffix(1);  // "/v1/pools/" as "/v1/pools"
  for (const auto& r : kRoutes)
    if (r.name == path) return r.verb;
  return std::nullopt;
}

std::string_view api_name(Verb verb) {
  for (const auto& r : kRoutes)
    if (r.verb == verb) return r.name;
  return "";
}

std::optional<std::string> form_value(std::string_view form, std::string_view name) {
  while (!form.empty()) {
    size_t amp = form.find('&');
    std::string_view pair = form.substr(0, amp);
    form = amp == std::string_view::npos ? std::string_view() : form.substr(amp + 1);
    size_t eq = pair.find('=');
    if (percent_decode(pair.substr(0, eq)) != name) continue;
    return eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
  }
  return std::nullopt;
}

std::optional<std::string> database_param(std::string_view query, std::string_view body) {
  if (auto db = form_value(query, "database")) return db;
  size_t start = body.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos) return std::string();
  if (body[start] != '{') return form_value(body, "database").value_or("");
  auto json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  auto it = json.find("database");
  if (it == json.end() || it->is_null()) return std::string();
  if (!it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() <= scheme.size() ||
      !util::equals_ascii_ci(authorization.substr(0, scheme.size()), scheme))
    return std::nullopt;
  std::string_view token = authorization.substr(scheme.size());
  size_t start = token.find_first_not_of(' ');
  size_t end = token.find_last_not_of(" \t");
  if (start == std::string_view::npos) return std::nullopt;
  return token.substr(start, end - start + 1);
}

bool same_token(std::string_view a, std::string_view b) {
  auto da = digest(a), db = digest(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

bool is_loopback(const asio::ip::address& addr) {
  if (addr.is_v4()) return addr.to_v4() == asio::ip::address_v4::loopback();
  auto v6 = addr.to_v6();
  if (v6.is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, v6) == asio::ip::address_v4::loopback();
  return v6 == asio::ip::address_v6::loopback();
}

Access decide_access(bool mutating, bool from_loopback, control::ApiReadOpen read_open,
                     std::string_view configured_token, std::string_view authorization) {
  if (!mutating && from_loopback && read_open == control::ApiReadOpen::localhost) return Access::allowed;
  if (configured_token.empty()) return mutating ? Access::not_configured : Access::forbidden;
  auto token = bearer_token(authorization);
  return token && same_token(*token, configured_token) ? Access::allowed : Access::unauthorized;
}

}  // namespace pgrouter::admin
