// See the header.
#include "pgrouter/session/insert_split.hpp"

#include <algorithm>
#include <map>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/sql/insert_rows.hpp"

namespace pgrouter::session {
namespace p = pgrouter::protocol;

namespace {

void put16(std::string& out, size_t v) {
  out += char((v >> 8) & 0xff);
  out += char(v & 0xff);
}

// The Parse's parameter types: OIDs by 1-based number (0, unspecified, beyond those given).
std::vector<std::string_view> type_oids(std::string_view types) {
  std::vector<std::string_view> out;
  if (types.size() < 2) return out;
  size_t n = p::read_be16(types.data());
  for (size_t i = 0; i < n && 2 + 4 * (i + 1) <= types.size(); ++i) out.push_back(types.substr(2 + 4 * i, 4));
  return out;
}

std::string kept_types(const std::vector<std::string_view>& oids, const std::vector<int>& params) {
  std::string out;
  put16(out, params.size());
  for (int n : params)
    out.append(size_t(n) <= oids.size() ? oids[size_t(n) - 1] : std::string_view("\0\0\0\0", 4));
  return out;
}

struct BindValues {
  std::vector<std::string_view> formats;  // two bytes each
  std::vector<std::string_view> values;   // length and bytes each
};

std::optional<BindValues> bind_values(std::string_view b) {
  BindValues out;
  if (b.size() < 2) return std::nullopt;
  size_t nformats = p::read_be16(b.data()), pos = 2;
  if (pos + 2 * nformats + 2 > b.size()) return std::nullopt;
  for (size_t i = 0; i < nformats; ++i, pos += 2) out.formats.push_back(b.substr(pos, 2));
  size_t nvalues = p::read_be16(b.data() + pos);
  pos += 2;
  for (size_t i = 0; i < nvalues; ++i) {
    if (pos + 4 > b.size()) return std::nullopt;
    int32_t len = int32_t(p::read_be32(b.data() + pos));
    size_t size = 4 + (len < 0 ? 0 : size_t(len));
    if (pos + size > b.size()) return std::nullopt;
    out.values.push_back(b.substr(pos, size));
    pos += size;
  }
  return out;
}

std::string kept_parameters(const BindValues& bind, const std::vector<int>& params) {
  std::string out;
  if (bind.formats.size() <= 1) {  // none or one for all: the same for every kept parameter
    put16(out, bind.formats.size());
    for (auto f : bind.formats) out.append(f);
  } else {
    put16(out, params.size());
    for (int n : params) out.append(bind.formats[size_t(n) - 1]);
  }
  put16(out, params.size());
  for (int n : params) out.append(bind.values[size_t(n) - 1]);
  return out;
}

}  // namespace

InsertSplit split_insert(const ScatterRequest& req, const std::vector<int>& row_shards) {
  InsertSplit out;
  auto text = sql::insert_text(req.sql);
  if (!text || text->rows.size() != row_shards.size()) {
    out.error = "pgrouter: the INSERT's rows could not be told apart in its text";
    out.sqlstate = p::sqlstate::feature_not_supported;
    return out;
  }
  std::map<int, std::vector<size_t>> rows;
  for (size_t r = 0; r < row_shards.size(); ++r) rows[row_shards[r]].push_back(r);
  auto oids = type_oids(req.parameter_types);
  std::optional<BindValues> bind;
  if (req.extended) bind = bind_values(req.parameters);
  int highest = 0;
  for (const auto& prm : text->params) highest = std::max(highest, prm.number);
  size_t count = std::max(oids.size(), size_t(highest));
  if (req.extended && (!bind || bind->values.size() != count ||
                       (bind->formats.size() > 1 && bind->formats.size() != count))) {
    out.error = "pgrouter: the Bind supplies " + std::to_string(bind ? bind->values.size() : 0) +
                " parameters, but the INSERT requires " + std::to_string(count);
    out.sqlstate = p::sqlstate::protocol_violation;
    return out;
  }
  for (auto& [shard, kept] : rows) {
    auto statement = sql::with_rows(*text, kept);
    ShardInsert s{shard, std::move(kept), std::move(statement.params), std::move(statement.sql), {}, {}};
    if (req.extended) {
      s.parameter_types = kept_types(oids, s.params);
      s.parameters = kept_parameters(*bind, s.params);
    }
    out.shards.push_back(std::move(s));
  }
  return out;
}

size_t statement_parameters(const ScatterRequest& req, const std::vector<ShardInsert>& shards) {
  size_t count = type_oids(req.parameter_types).size();
  for (const auto& s : shards)
    if (!s.params.empty()) count = std::max(count, size_t(s.params.back()));
  return count;
}

std::string merged_parameter_description(const ScatterRequest& req, const std::vector<ShardInsert>& shards,
                                         const std::vector<std::string>& descriptions) {
  std::vector<std::string_view> oids = type_oids(req.parameter_types);
  oids.resize(statement_parameters(req, shards), std::string_view("\0\0\0\0", 4));
  for (size_t i = 0; i < shards.size() && i < descriptions.size(); ++i) {
    auto theirs = type_oids(descriptions[i]);
    for (size_t k = 0; k < shards[i].params.size() && k < theirs.size(); ++k)
      oids[size_t(shards[i].params[k]) - 1] = theirs[k];
  }
  std::string out;
  put16(out, oids.size());
  for (auto o : oids) out.append(o);
  return out;
}

}  // namespace pgrouter::session
