#include "shard_leg.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

std::string leg_request(const ScatterRequest& req, std::string_view sql, bool describe_statement,
                        bool client_result_formats) {
  std::string out;
  if (!req.extended) {
    p::append_query(out, sql);
    return out;
  }
  p::append_parse(out, "", sql, req.parameter_types);
  if (describe_statement && req.describe_statement) p::append_describe(out, 'S', "");
  std::string rest(req.parameters);
  if (client_result_formats) {
    rest += char(req.result_format_count() >> 8);
    rest += char(req.result_format_count() & 0xff);
    rest += req.result_formats;  // (as the client sent them)
  } else {
    rest.append("\0\0", 2);
  }
  p::append_bind(out, "", "", rest);
  p::append_describe(out, 'P', "");
  p::append_execute(out, "");
  p::append_sync(out);
  return out;
}

awaitable<bool> send_query(ShardLeg& leg, std::string sql, QueryAnswer& answer) {
  std::string q;
  p::append_query(q, sql);
  bool sent = co_await leg.send(std::move(q));
  if (!sent) answer.error = leg.error;
  co_return sent;
}

awaitable<bool> read_answer(ShardLeg& leg, QueryAnswer& answer) {
  char type = 0;
  std::string body;
  while (!leg.ready) {
    bool read = co_await leg.read(type, body);
    if (!read) break;
    if (type == be::kCommandComplete)
      answer.tags.emplace_back(body.c_str());
    else if (type == be::kErrorResponse && answer.error.empty())
      answer.error = body;
    else if (type == be::kDataRow)
      answer.rows.push_back(p::data_row_texts(body));
  }
  if (leg.broken && answer.error.empty()) answer.error = leg.error;
  co_return !leg.broken;
}

awaitable<bool> run_on_leg(ShardLeg& leg, std::string sql, QueryAnswer& answer) {
  bool sent = co_await send_query(leg, std::move(sql), answer);
  if (!sent) co_return false;
  bool alive = co_await read_answer(leg, answer);
  co_return alive;
}

awaitable<void> rollback_legs(std::vector<ShardLeg>& legs) {
  std::vector<ShardLeg*> alive;
  for (auto& leg : legs)
    if (!leg.broken) alive.push_back(&leg);
  std::vector<QueryAnswer> ignored;
  std::string rollback = "ROLLBACK";
  co_await run_on_legs(alive, rollback, ignored);
}

awaitable<void> run_on_legs(std::vector<ShardLeg*> legs, std::string sql, std::vector<QueryAnswer>& answers) {
  answers.assign(legs.size(), {});
  std::vector<bool> sent(legs.size(), false);
  for (size_t i = 0; i < legs.size(); ++i) {
    std::string text = sql;
    bool ok = co_await send_query(*legs[i], std::move(text), answers[i]);
    sent[i] = ok;
  }
  for (size_t i = 0; i < legs.size(); ++i) {
    if (!sent[i]) continue;
    co_await read_answer(*legs[i], answers[i]);
  }
}

}  // namespace pgrouter::session
