#include "shard_leg.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

namespace {
std::vector<std::optional<std::string>> text_row(std::string_view body) {
  std::vector<std::optional<std::string>> row;
  if (body.size() < 2) return row;
  size_t n = p::read_be16(body.data()), pos = 2;
  for (size_t i = 0; i < n && pos + 4 <= body.size(); ++i) {
    uint32_t len = p::read_be32(body.data() + pos);
    pos += 4;
    if (len == 0xffffffffu) {
      row.emplace_back();
    } else {
      row.emplace_back(body.substr(pos, len));
      pos += len;
    }
  }
  return row;
}
}  // namespace

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
    rest += char(req.result_formats.size() >> 8);
    rest += char(req.result_formats.size() & 0xff);
    for (auto f : req.result_formats) rest += {char(uint16_t(f) >> 8), char(f & 0xff)};
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
      answer.rows.push_back(text_row(body));
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
