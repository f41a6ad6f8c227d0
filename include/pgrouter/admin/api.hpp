// The HTTP API (/v1 on the admin server) for automation: the admin console's views and commands as JSON. The
// pure parts (paths, parameters, JSON rendering, who may call what) are here for unit tests; make_api_handler
// binds them to the running process.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "pgrouter/admin/command.hpp"
#include "pgrouter/admin/result_set.hpp"
#include "pgrouter/asio.hpp"
#include "pgrouter/control/admin_http.hpp"
#include "pgrouter/control/config.hpp"

namespace pgrouter {
struct Runtime;
}

namespace pgrouter::admin {

// A SHOW result set as {"columns": [...], "rows": [[...], ...]}: int8 columns as JSON numbers, NULL as null.
nlohmann::json result_json(const ResultSet& rs);

// The admin server's error envelope: {"error": {"code": ..., "message": ...}}.
nlohmann::json error_json(std::string_view code, std::string_view message);

// The command behind a /v1 path ("/v1/pools" -> SHOW POOLS, "/v1/drain" -> SHUTDOWN), or none.
std::optional<Verb> api_verb(std::string_view path);
// The /v1 name of a verb ("pools", "drain", ...).
std::string_view api_name(Verb verb);

// The value of name in a query string or form body ("a=1&database=x"), percent-decoded; nullopt if absent.
std::optional<std::string> form_value(std::string_view form, std::string_view name);
// The database a call names: the query's, else the body's (a form, or a JSON object's "database" string).
// Empty when none; nullopt for a body that is neither.
std::optional<std::string> database_param(std::string_view query, std::string_view body);

// The token of "Bearer <token>" (scheme in any case), or nullopt.
std::optional<std::string_view> bearer_token(std::string_view authorization);
// Constant-time comparison (of SHA-256 digests, so the length does not show either).
bool same_token(std::string_view a, std::string_view b);
// 127.0.0.1 or ::1 (also as ::ffff:127.0.0.1).
bool is_loopback(const asio::ip::address& addr);

// not_configured: a call that changes something, and no token; forbidden: a read that needs the token, and
// none is configured.
enum class Access { allowed, unauthorized, not_configured, forbidden };

// Who may call what: a call that changes something needs the token; a read needs it too unless read_open is
// localhost and the caller is on loopback.
Access decide_access(bool mutating, bool from_loopback, control::ApiReadOpen read_open,
                     std::string_view configured_token, std::string_view authorization);

// The /v1 handler for the admin server. It runs on control_io's thread, as the server does; config() gives
// the running configuration there.
control::ApiHandler make_api_handler(asio::io_context& control_io, Runtime& rt,
                                     std::function<std::shared_ptr<const control::Config>()> config);

}  // namespace pgrouter::admin
