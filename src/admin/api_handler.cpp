// The /v1 handler: checks the path, the method and the caller's token, then runs the console's view or
// command (admin/actions) on the control thread, where the admin server runs.
#include <fmt/format.h>

#include "pgrouter/admin/actions.hpp"
#include "pgrouter/admin/api.hpp"
#include "pgrouter/control/log.hpp"
#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::admin {
namespace {
using control::ApiRequest;
using control::ApiResponse;
using ConfigPtr = std::shared_ptr<const control::Config>;
using ConfigSource = std::function<ConfigPtr()>;

ApiResponse failure(unsigned status, std::string_view code, std::string_view message) {
  return {status, error_json(code, message), {}, {}};
}

// A refused command as HTTP shows it.
ApiResponse refused(const Outcome& o) {
  namespace state = protocol::sqlstate;
  if (o.sqlstate == state::unknown_database) return failure(400, "bad_request", o.message);
  if (o.sqlstate == state::object_not_in_prerequisite_state) return failure(409, "conflict", o.message);
  if (o.sqlstate == state::invalid_parameter_value) return failure(409, "reload_failed", o.message);
  return failure(500, "internal", o.message);
}

std::optional<ApiResponse> check_method(const ApiRequest& req, Verb verb) {
  const std::string allowed = mutating(verb) ? "POST" : "GET";
  if (req.method == allowed) return std::nullopt;
  auto res = failure(405, "method_not_allowed", fmt::format("/v1/{} takes {} only", api_name(verb), allowed));
  res.headers.emplace_back("Allow", allowed);
  return res;
}

std::optional<ApiResponse> check_access(const ApiRequest& req, Verb verb, const control::Config& config) {
  const auto& a = config.admin;
  switch (
      decide_access(mutating(verb), is_loopback(req.peer), a.api_read_open, a.api_token, req.authorization)) {
    case Access::allowed:
      return std::nullopt;
    case Access::not_configured:
      return failure(403, "api_token_not_configured",
                     "calls that change something need admin.api_token_file or admin.api_token_env");
    case Access::forbidden:
      return failure(403, "forbidden",
                     "reads from other hosts need a token: set admin.api_token_file or admin.api_token_env");
    case Access::unauthorized:
      break;
  }
  log::warn("admin API call refused: no valid token",
            {{"path", std::string(api_name(verb))}, {"peer", req.peer.to_string()}});
  auto res = failure(401, "unauthorized", "a valid \"Authorization: Bearer <token>\" header is needed");
  res.headers.emplace_back("WWW-Authenticate", "Bearer");
  return res;
}

bool needs_database(Verb verb) { return verb == Verb::disable || verb == Verb::enable || verb == Verb::kill; }

awaitable<ApiResponse> act(Verb verb, std::string query, std::string body, asio::io_context& io, Runtime& rt,
                           ConfigPtr config) {
  auto db = database_param(query, body);
  if (!db) co_return failure(400, "bad_request", "the body must be a form (database=NAME) or a JSON object");
  if (needs_database(verb) && db->empty())
    co_return failure(400, "bad_request", fmt::format("/v1/{} needs ?database=NAME", api_name(verb)));
  log::info("admin API call", {{"call", std::string(api_name(verb))}, {"database", *db}});
  ApiResponse ok{200, {{"ok", true}, {"action", api_name(verb)}}, {}, {}};
  if (!db->empty()) ok.body["database"] = *db;
  if (verb == Verb::shutdown) {
    // After the answer is written: with no client left the drain stops the admin server at once.
    if (!rt.admin.shutdown) co_return failure(500, "internal", "the drain is not available in this process");
    ok.after_write = [&rt] { rt.admin.shutdown(); };
    co_return ok;
  }
  Command cmd{verb, *db};
  auto outcome = co_await run(cmd, io, rt, config);
  if (!outcome.ok()) co_return refused(outcome);
  co_return ok;
}

awaitable<ApiResponse> handle(ApiRequest req, asio::io_context& io, Runtime& rt, ConfigSource config_of) {
  std::string_view target = req.target;
  size_t q = target.find('?');
  std::string path(target.substr(0, q));
  std::string query(q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  auto verb = api_verb(path);
  if (!verb) co_return failure(404, "unknown_path", "no such API path: " + path);
  if (auto bad = check_method(req, *verb)) co_return *bad;
  auto config = config_of();
  if (auto denied = check_access(req, *verb, *config)) co_return *denied;
  if (mutating(*verb)) {
    auto answer = co_await act(*verb, query, req.body, io, rt, config);
    co_return answer;
  }
  auto rows = co_await show(*verb, io, rt, config);
  co_return ApiResponse{200, result_json(rows), {}, {}};
}

}  // namespace

control::ApiHandler make_api_handler(asio::io_context& control_io, Runtime& rt, ConfigSource config) {
  return
      [&control_io, &rt, config](ApiRequest req) { return handle(std::move(req), control_io, rt, config); };
}

}  // namespace pgrouter::admin
