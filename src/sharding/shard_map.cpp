// Which shard a statement needs (see the header). Every refusal is 0A000 with a message that names what
// could not be routed and a hint that says how to route it.
#include "pgrouter/sharding/shard_map.hpp"

#include <fmt/format.h>

#include <set>

#include "pgrouter/protocol/codec.hpp"
#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/sharding/key_array.hpp"

namespace pgrouter::sharding {

namespace p = pgrouter::protocol;

namespace {

constexpr size_t kCacheLimit = 4096;

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

const char* kKeyHint =
    "Limit the statement to one tenant (WHERE <key column> = value), or name the shard key with SET "
    "pgrouter.shard_key or a /* pgrouter: shard_key=... */ comment.";

}  // namespace

std::optional<BoundParams> BoundParams::from_bind(std::string_view body) {
  size_t pos = 0;
  if (!p::read_cstring(body, pos) || !p::read_cstring(body, pos)) return std::nullopt;
  auto need = [&](size_t n) { return body.size() - pos >= n; };
  BoundParams b;
  if (!need(2)) return std::nullopt;
  size_t nformats = p::read_be16(body.data() + pos);
  pos += 2;
  if (!need(nformats * 2)) return std::nullopt;
  b.formats_ = body.substr(pos, nformats * 2);
  pos += nformats * 2;
  if (!need(2)) return std::nullopt;
  b.count_ = p::read_be16(body.data() + pos);
  pos += 2;
  size_t values_at = pos;
  for (size_t i = 0; i < b.count_; ++i) {
    if (!need(4)) return std::nullopt;
    int32_t len = int32_t(p::read_be32(body.data() + pos));
    pos += 4;
    if (len < 0) continue;  // NULL
    if (!need(size_t(len))) return std::nullopt;
    pos += size_t(len);
  }
  b.values_ = body.substr(values_at, pos - values_at);
  return b;
}

std::optional<std::string_view> BoundParams::value(int n, bool& binary) const {
  if (n < 1 || size_t(n) > count_) return std::nullopt;
  size_t i = size_t(n - 1);
  size_t nformats = formats_.size() / 2;
  size_t f_at = nformats == 1 ? 0 : i;
  binary = f_at < nformats && int16_t(p::read_be16(formats_.data() + 2 * f_at)) == 1;
  size_t pos = 0;  // (from_bind checked every length)
  for (size_t k = 0; k < i; ++k) {
    int32_t len = int32_t(p::read_be32(values_.data() + pos));
    pos += 4 + (len < 0 ? 0 : size_t(len));
  }
  int32_t len = int32_t(p::read_be32(values_.data() + pos));
  if (len < 0) return std::nullopt;
  return values_.substr(pos + 4, size_t(len));
}

ShardMap::ShardMap(const control::DatabaseConfig& db)
    : config_(db.sharding), strategy_(make_strategy(db.sharding, db.shards.size())) {
  schema_.sharded = config_.tables;
  schema_.reference = config_.reference_tables;
}

const sql::ShardTarget& ShardMap::target(std::string_view sql) {
  // The same message is looked at twice in a row (the shard choice, then its check as it is relayed).
  if (last_ && last_->first == sql) return last_->second;
  auto it = cache_.find(sql);
  if (it != cache_.end()) {
    last_ = &*it;
    return it->second;
  }
  if (cache_.size() >= kCacheLimit) {
    cache_.clear();
    last_ = nullptr;
  }
  last_ = &*cache_.emplace(std::string(sql), sql::shard_target(sql, schema_)).first;
  return last_->second;
}

std::shared_ptr<const ScatterPlan> ShardMap::scatter_plan(std::string_view sql) {
  if (auto it = plans_.find(sql); it != plans_.end()) return it->second;
  if (plans_.size() >= kCacheLimit) plans_.clear();
  auto plan = std::make_shared<const ScatterPlan>(plan_scatter(sql));
  plans_.emplace(std::string(sql), plan);
  return plan;
}

std::optional<int> ShardMap::shard_of_text(std::string_view key) const {
  auto v = parse_text(key, config_.key_type);
  if (!v) return std::nullopt;
  return int(strategy_->shard_of(*v));
}

std::optional<int> ShardMap::shard_of(const sql::KeyRef& k, const BoundParams* params, bool& unknown) const {
  if (k.null) return std::nullopt;  // matches no row: wherever it runs, it finds none
  std::optional<KeyValue> v;
  if (k.param == 0) {
    v = parse_text(k.literal, config_.key_type);
  } else {
    bool binary = false;
    auto raw = params ? params->value(k.param, binary) : std::nullopt;
    if (!params || size_t(k.param) > params->size()) {
      unknown = true;  // not bound yet (a Parse): decided at its Bind
      return std::nullopt;
    }
    if (!raw) return std::nullopt;  // bound to NULL
    v = binary ? parse_binary(*raw, config_.key_type) : parse_text(*raw, config_.key_type);
  }
  // A value the type's input function rejects: PostgreSQL answers it with its own error on any shard.
  if (!v) return std::nullopt;
  return int(strategy_->shard_of(*v));
}

void ShardMap::add_shards(const sql::KeyRef& k, const BoundParams* params, Shards& out) const {
  if (!k.array) {
    if (auto s = shard_of(k, params, out.unknown)) out.insert(*s);
    return;
  }
  if (k.null) return;
  std::optional<std::string_view> text = k.literal;
  bool binary = false;
  if (k.param != 0) {
    if (!params || size_t(k.param) > params->size()) {
      out.unknown = true;  // not bound yet (a Parse): decided at its Bind
      return;
    }
    text = params->value(k.param, binary);
    if (!text) return;  // bound to NULL: = ANY(NULL) matches no row
  }
  std::vector<std::optional<KeyValue>> values;
  if (binary) {
    auto read = array_values_binary(*text, config_.key_type);
    if (read) values = std::move(*read);
    out.every = out.every || !read;
  } else {
    auto elements = array_elements(*text);
    out.every = out.every || !elements;
    // A NULL element matches no row; one the type rejects is PostgreSQL's error on any shard.
    for (const auto& e : elements ? *elements : std::vector<std::optional<std::string>>{})
      values.push_back(e ? parse_text(*e, config_.key_type) : std::nullopt);
  }
  for (const auto& v : values)
    if (v) out.insert(int(strategy_->shard_of(*v)));
}

Need ShardMap::unsharded_need(const sql::ShardTarget& t) const {
  if (t.unsharded_tables.empty()) return Need::any_shard();
  if (config_.unsharded == control::Unsharded::reject)
    return Need::refused(
        fmt::format("pgrouter: table {} is neither sharded nor a reference table, and sharding.unsharded is "
                    "reject",
                    join(t.unsharded_tables)),
        "List it under sharding.tables (with its key column) or sharding.reference_tables.");
  return Need::on(default_shard());
}

Need ShardMap::split_insert(const sql::ShardTarget& t, const BoundParams* params, std::string why) const {
  // Every key the statement names must be a row's (a key in a subquery of a row would need its own shard).
  std::set<std::pair<int, std::string>> rows, all;
  for (const auto& k : t.row_keys) rows.emplace(k.param, k.null ? "\n" : k.literal);
  for (const auto& k : t.keys) all.emplace(k.param, k.null ? "\n" : k.literal);
  if (t.row_keys.empty() || rows != all)
    return Need::refused(why + ", and only the rows of an INSERT ... VALUES can be split between shards",
                         "Send one INSERT per shard key (or per shard).");
  std::vector<int> row_shards;
  std::set<int> shards;
  for (const auto& k : t.row_keys) {
    bool unknown = false;
    // A NULL or invalid key: its row goes to the default shard, whose server answers it as PostgreSQL
    // would (a NOT NULL violation, an invalid input syntax).
    int s = shard_of(k, params, unknown).value_or(default_shard());
    row_shards.push_back(s);
    shards.insert(s);
  }
  Need need = write_across(t, std::vector<int>(shards.begin(), shards.end()), std::move(why));
  if (need.kind == Need::Kind::write_across) need.row_shards = std::move(row_shards);
  return need;
}

std::vector<int> ShardMap::every_shard() const {
  std::vector<int> every(strategy_->shards());
  for (size_t i = 0; i < every.size(); ++i) every[i] = int(i);
  return every;
}

Need ShardMap::write_across(const sql::ShardTarget& t, std::vector<int> shards, std::string why) const {
  if (!t.unsharded_tables.empty())
    return Need::refused(fmt::format("{}, but table {} lives on the default shard {} only", why,
                                     join(t.unsharded_tables), default_shard()),
                         "List the table under sharding.reference_tables to have it on every shard.");
  return Need::write_over(std::move(shards), std::move(why),
                          "Send it outside a transaction, as a statement of its own, to have it committed on "
                          "every shard by two-phase commit; or limit it to one shard key.");
}

Need ShardMap::across(const sql::ShardTarget& t, std::vector<int> shards, std::string why,
                      std::string hint) const {
  // A table that lives on one shard cannot be read alongside rows of several.
  if (!t.unsharded_tables.empty())
    return Need::refused(fmt::format("{}, but table {} lives on the default shard {} only", why,
                                     join(t.unsharded_tables), default_shard()),
                         "List the table under sharding.reference_tables to have it on every shard.");
  return Need::scatter_over(std::move(shards), std::move(why), std::move(hint));
}

Need ShardMap::need(const sql::ShardTarget& t, const BoundParams* params,
                    std::optional<int> explicit_shard) const {
  using sql::ShardScope;
  if (t.parse_error) return Need::any_shard();  // PostgreSQL answers it with its syntax error
  if (t.scope == ShardScope::refused)
    return Need::refused("pgrouter: " + t.refusal + " cannot be routed to one shard", kKeyHint);
  if (!t.hint_key.empty()) {
    auto s = shard_of_text(t.hint_key);
    if (!s)
      return Need::refused(fmt::format("pgrouter: shard_key \"{}\" in the comment is not a valid {}",
                                       t.hint_key, to_string(config_.key_type)),
                           "Give a value of the database's sharding.key_type.");
    if (explicit_shard && *explicit_shard != *s)
      return Need::refused(
          fmt::format("pgrouter: the comment's shard_key \"{}\" (shard {}) conflicts with the session's "
                      "pgrouter.shard_key (shard {})",
                      t.hint_key, *s, *explicit_shard),
          "RESET pgrouter.shard_key, or drop the comment.");
    explicit_shard = s;
  }
  if (t.writes_reference)
    return write_across(t, every_shard(), "pgrouter: a write to a reference table must reach every shard");
  // The keys' shards (an array key's elements included): usually one, kept without a set.
  Shards found;
  for (const auto& k : t.keys) add_shards(k, params, found);
  if (found.unknown) return Need::any_shard();  // decided at Bind
  if (found.every)
    for (int s : every_shard()) found.insert(s);
  // The usual keyed statement, answered at once: what the rest would make of it (no explicit key to
  // compare, no table of the default shard only).
  if (t.scope == ShardScope::keyed && found.count() == 1 && !explicit_shard && t.unsharded_tables.empty())
    return Need::on(found.single);
  Need from_keys = Need::any_shard();
  if (t.scope == ShardScope::keyed && found.count() > 1) {
    const std::set<int>& shards = found.more;
    std::string list;
    for (int s : shards) list += (list.empty() ? "" : ", ") + std::to_string(s);
    if (t.writes && t.inserts)
      return split_insert(t, params, fmt::format("pgrouter: the INSERT's rows are on shards {}", list));
    if (t.writes)
      return write_across(t, std::vector<int>(shards.begin(), shards.end()),
                          fmt::format("pgrouter: the statement writes rows on shards {}", list));
    return across(t, std::vector<int>(shards.begin(), shards.end()),
                  fmt::format("pgrouter: the statement reads rows on shards {}", list),
                  "Run one statement per shard key.");
  }
  if (t.scope == ShardScope::keyed && found.count() == 1) from_keys = Need::on(found.single);
  if (t.scope == ShardScope::all) {
    if (!explicit_shard && t.writes)
      return write_across(
          t, every_shard(),
          "pgrouter: a write to a sharded table that is not limited to one shard key needs every shard");
    if (!explicit_shard) {
      return across(
          t, every_shard(),
          "pgrouter: a read of a sharded table that is not limited to one shard key needs every shard",
          kKeyHint);
    }
    from_keys = Need::on(*explicit_shard);
  }
  if (from_keys.kind == Need::Kind::one && explicit_shard && *explicit_shard != from_keys.shard)
    return Need::refused(
        fmt::format(
            "pgrouter: the statement's shard key is on shard {}, but pgrouter.shard_key names shard {}",
            from_keys.shard, *explicit_shard),
        "RESET pgrouter.shard_key, or use the same key in both.");
  if (from_keys.kind == Need::Kind::any && explicit_shard) from_keys = Need::on(*explicit_shard);
  Need unsharded = unsharded_need(t);
  if (unsharded.kind == Need::Kind::refuse) return unsharded;
  if (unsharded.kind == Need::Kind::one && from_keys.kind == Need::Kind::one &&
      unsharded.shard != from_keys.shard)
    return Need::refused(
        fmt::format("pgrouter: table {} lives on the default shard {}, but the statement's shard key is on "
                    "shard {}",
                    join(t.unsharded_tables), unsharded.shard, from_keys.shard),
        "List the table under sharding.reference_tables to have it on every shard.");
  if (from_keys.kind == Need::Kind::one) return from_keys;  // (each moved, not copied)
  return unsharded;
}

namespace {

void append_value(std::string& values, std::optional<std::string_view> v) {
  p::put_be32(values, v ? uint32_t(v->size()) : uint32_t(-1));
  if (v) values.append(*v);
}

}  // namespace

ExecuteBind ShardMap::execute_bind(const sql::ShardTarget& t, const std::vector<sql::ExecuteArgument>& args,
                                   const BoundParams* outer) const {
  using Arg = sql::ExecuteArgument;
  ExecuteBind out;
  std::set<int> used;  // the parameters the keys are
  for (const auto* keys : {&t.keys, &t.row_keys})
    for (const auto& k : *keys)
      if (k.param > 0) used.insert(k.param);
  out.missing = !used.empty() && size_t(*used.rbegin()) > args.size();
  if (out.missing || args.size() > UINT16_MAX) return out;
  std::string formats, values, text;
  for (size_t i = 0; i < args.size(); ++i) {
    const Arg& a = args[i];
    bool binary = false;
    std::optional<std::string_view> value;
    if (!used.contains(int(i + 1)) || a.kind == Arg::Kind::null) {
      // NULL: an argument no key uses is not read
    } else if (a.kind == Arg::Kind::unread) {
      if (out.unread == 0) out.unread = int(i + 1);
    } else if (a.kind == Arg::Kind::parameter) {
      value = outer ? outer->value(a.param, binary) : std::nullopt;
    } else {
      text = a.text;
      // An integer or uuid assigned to a text parameter becomes its output function's text.
      auto as = a.form == Arg::Form::integer ? KeyType::int8 : KeyType::uuid;
      if (config_.key_type == KeyType::text && a.form != Arg::Form::as_written)
        if (auto v = parse_text(a.text, as)) text = to_text(*v);
      value = text;
    }
    p::put_be16(formats, binary ? 1 : 0);
    append_value(values, value);
  }
  out.body.assign("\0\0", 2);  // unnamed portal and statement
  p::put_be16(out.body, uint16_t(args.size()));
  out.body.append(formats);
  p::put_be16(out.body, uint16_t(args.size()));
  out.body.append(values);
  p::put_be16(out.body, 0);  // no result formats
  return out;
}

}  // namespace pgrouter::sharding
