// ShardMap: what a statement needs of the shards, from its analysis (sql::ShardTarget, built by hand here so
// the decision is tested apart from the key extraction), its bound parameters and the client's explicit key.
// Which shard a key belongs to comes from the strategy itself, so nothing here assumes a placement.
#include <doctest/doctest.h>

#include <string>

#include "pgrouter/protocol/messages.hpp"
#include "pgrouter/sharding/shard_map.hpp"

using namespace pgrouter;
using sharding::BoundParams;
using sharding::Need;
using sharding::ShardMap;
using sql::KeyRef;
using sql::ShardScope;
using sql::ShardTarget;

namespace {

control::DatabaseConfig two_shards(control::Unsharded unsharded = control::Unsharded::default_shard) {
  control::DatabaseConfig db;
  db.name = "app";
  db.shards.resize(2);
  db.sharding.tables = {{"users", "tenant_id"}};
  db.sharding.reference_tables = {"countries"};
  db.sharding.unsharded = unsharded;
  db.sharding.default_shard = 1;
  return db;
}

int shard_of(const ShardMap& m, const std::string& key) {
  return int(m.strategy().shard_of(*sharding::parse_text(key, sharding::KeyType::int8)));
}

// Two keys with different shards, found through the strategy.
std::pair<std::string, std::string> keys_on_both(const ShardMap& m) {
  std::string a = "1";
  for (int k = 2; k < 1000; ++k)
    if (shard_of(m, std::to_string(k)) != shard_of(m, a)) return {a, std::to_string(k)};
  FAIL("no two keys on different shards");
  return {};
}

ShardTarget keyed(std::vector<KeyRef> keys) {
  ShardTarget t;
  t.scope = ShardScope::keyed;
  t.keys = std::move(keys);
  return t;
}

KeyRef lit(std::string s) { return KeyRef{std::move(s), 0, false}; }
KeyRef param(int n) { return KeyRef{{}, n, false}; }

// A Bind body: portal, statement, formats, values (nullopt = NULL), no result formats.
std::string bind_body(const std::vector<int16_t>& formats,
                      const std::vector<std::optional<std::string>>& values) {
  std::string b;
  b.append("\0\0", 2);
  auto be16 = [&](int v) {
    b.push_back(char((v >> 8) & 0xff));
    b.push_back(char(v & 0xff));
  };
  auto be32 = [&](int32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(char((uint32_t(v) >> s) & 0xff));
  };
  be16(int(formats.size()));
  for (auto f : formats) be16(f);
  be16(int(values.size()));
  for (const auto& v : values) {
    be32(v ? int32_t(v->size()) : -1);
    if (v) b.append(*v);
  }
  be16(0);
  return b;
}

std::string be64(int64_t v) {
  std::string s;
  for (int sh = 56; sh >= 0; sh -= 8) s.push_back(char((uint64_t(v) >> sh) & 0xff));
  return s;
}

}  // namespace

TEST_CASE("BoundParams reads a Bind's values and formats") {
  // (BoundParams points into the message: each body outlives it.)
  std::string body = bind_body({}, {"42", std::nullopt});
  auto b = BoundParams::from_bind(body);
  REQUIRE(b);
  bool binary = true;
  CHECK(b->value(1, binary) == std::optional<std::string_view>("42"));
  CHECK_FALSE(binary);
  CHECK_FALSE(b->value(2, binary));  // NULL
  CHECK_FALSE(b->value(3, binary));  // no such parameter
  std::string one_body = bind_body({1}, {be64(7), be64(8)});
  auto one = BoundParams::from_bind(one_body);
  REQUIRE(one);
  CHECK(one->value(2, binary));
  CHECK(binary);  // one format code applies to all
  std::string each_body = bind_body({0, 1}, {"7", be64(8)});
  auto each = BoundParams::from_bind(each_body);
  REQUIRE(each);
  each->value(1, binary);
  CHECK_FALSE(binary);
  each->value(2, binary);
  CHECK(binary);
  std::string cut = bind_body({}, {"42"});
  CHECK_FALSE(BoundParams::from_bind(cut.substr(0, cut.size() - 3)));  // a value cut short
  // Values are found in place past NULLs and values of other lengths; a parameter past the codes is text.
  std::string nine = be64(9);
  std::string mixed_body = bind_body({1, 0}, {nine, std::nullopt, "", "12345"});
  auto mixed = BoundParams::from_bind(mixed_body);
  REQUIRE(mixed);
  CHECK(mixed->size() == 4);
  CHECK(mixed->value(1, binary) == std::optional<std::string_view>(nine));
  CHECK(binary);
  CHECK_FALSE(mixed->value(2, binary));
  CHECK_FALSE(binary);
  CHECK(mixed->value(3, binary) == std::optional<std::string_view>(""));
  CHECK(mixed->value(4, binary) == std::optional<std::string_view>("12345"));
  CHECK_FALSE(binary);
  CHECK_FALSE(mixed->value(0, binary));
  CHECK_FALSE(mixed->value(5, binary));
  std::string no_count = bind_body({}, {});
  CHECK_FALSE(BoundParams::from_bind(no_count.substr(0, 5)));  // cut inside the number of values
}

TEST_CASE("a keyed statement needs its key's shard; a read of several is a scatter, a write across them") {
  ShardMap m(two_shards());
  auto [a, b] = keys_on_both(m);
  Need n = m.need(keyed({lit(a)}), nullptr, std::nullopt);
  CHECK(n.kind == Need::Kind::one);
  CHECK(n.shard == shard_of(m, a));
  CHECK(m.need(keyed({lit(a), lit(a)}), nullptr, std::nullopt).kind == Need::Kind::one);
  Need both = m.need(keyed({lit(a), lit(b)}), nullptr, std::nullopt);
  CHECK(both.kind == Need::Kind::scatter);
  CHECK(both.shards == std::vector<int>{0, 1});
  CHECK(both.message.find("shards 0, 1") != std::string::npos);
  ShardTarget write = keyed({lit(a), lit(b)});
  write.writes = true;
  Need w = m.need(write, nullptr, std::nullopt);
  CHECK(w.kind == Need::Kind::write_across);
  CHECK(w.shards == std::vector<int>{0, 1});
  CHECK(w.message.find("writes rows on shards 0, 1") != std::string::npos);
  // An INSERT's rows of several shards: each row's shard, so that each shard inserts its own rows only.
  write.inserts = true;
  write.row_keys = {lit(b), lit(a), lit(b)};
  Need ins = m.need(write, nullptr, std::nullopt);
  CHECK(ins.kind == Need::Kind::write_across);
  CHECK(ins.shards == std::vector<int>{0, 1});
  CHECK(ins.row_shards == std::vector<int>{shard_of(m, b), shard_of(m, a), shard_of(m, b)});
  // A key the rows do not account for (in a subquery of a row), or no rows (INSERT ... SELECT): refused.
  write.row_keys = {lit(a)};
  Need sub = m.need(write, nullptr, std::nullopt);
  CHECK(sub.kind == Need::Kind::refuse);
  CHECK(sub.message.find("only the rows of an INSERT ... VALUES can be split") != std::string::npos);
  write.row_keys.clear();
  CHECK(m.need(write, nullptr, std::nullopt).kind == Need::Kind::refuse);
  // A NULL key's row goes to the default shard, where PostgreSQL judges it.
  write.keys = {lit(a), lit(b), KeyRef{{}, 0, true}};
  write.row_keys = {KeyRef{{}, 0, true}, lit(a), lit(b)};
  CHECK(m.need(write, nullptr, std::nullopt).row_shards.front() == m.default_shard());
  // A write to a reference table goes to every shard; with a table of the default shard only, nowhere.
  ShardTarget ref;
  ref.scope = ShardScope::reference;
  ref.writes = ref.writes_reference = true;
  CHECK(m.need(ref, nullptr, std::nullopt).kind == Need::Kind::write_across);
  CHECK(m.need(ref, nullptr, std::nullopt).shards == std::vector<int>{0, 1});
  ref.unsharded_tables = {"audit"};
  CHECK(m.need(ref, nullptr, std::nullopt).kind == Need::Kind::refuse);
  // A table on the default shard only cannot be read with rows of both.
  ShardTarget mixed = keyed({lit(a), lit(b)});
  mixed.unsharded_tables = {"audit"};
  CHECK(m.need(mixed, nullptr, std::nullopt).kind == Need::Kind::refuse);
  // NULL matches no row, and a value the type rejects gets PostgreSQL's own error: anywhere will do.
  CHECK(m.need(keyed({KeyRef{{}, 0, true}}), nullptr, std::nullopt).kind == Need::Kind::any);
  CHECK(m.need(keyed({lit("not a number")}), nullptr, std::nullopt).kind == Need::Kind::any);
}

TEST_CASE("parameters decide at Bind, in text or binary") {
  ShardMap m(two_shards());
  auto [a, b] = keys_on_both(m);
  ShardTarget t = keyed({param(1)});
  CHECK(m.need(t, nullptr, std::nullopt).kind == Need::Kind::any);  // not bound yet
  std::string text_body = bind_body({}, {b}), bin_body = bind_body({1}, {be64(std::stoll(b))}),
              null_body = bind_body({}, {std::nullopt});
  auto text = BoundParams::from_bind(text_body);
  Need n = m.need(t, &*text, std::nullopt);
  CHECK(n.kind == Need::Kind::one);
  CHECK(n.shard == shard_of(m, b));
  auto bin = BoundParams::from_bind(bin_body);
  CHECK(m.need(t, &*bin, std::nullopt).shard == shard_of(m, b));
  auto null = BoundParams::from_bind(null_body);
  CHECK(m.need(t, &*null, std::nullopt).kind == Need::Kind::any);
}

TEST_CASE("a read on every shard is a scatter, a write across them, unless an explicit key names one") {
  ShardMap m(two_shards());
  auto [a, b] = keys_on_both(m);
  ShardTarget all;
  all.scope = ShardScope::all;
  Need n = m.need(all, nullptr, std::nullopt);
  CHECK(n.kind == Need::Kind::scatter);
  CHECK(n.shards == std::vector<int>{0, 1});
  CHECK(n.message.find("not limited to one shard key") != std::string::npos);
  CHECK(n.hint.find("pgrouter.shard_key") != std::string::npos);
  ShardTarget all_write = all;
  all_write.writes = true;
  CHECK(m.need(all_write, nullptr, std::nullopt).kind == Need::Kind::write_across);
  CHECK(m.need(all_write, nullptr, std::nullopt).shards == std::vector<int>{0, 1});
  CHECK(m.need(all_write, nullptr, 1).shard == 1);
  CHECK(m.need(all, nullptr, 1).shard == 1);
  // A key that contradicts the session's explicit key is an error, not a silent choice.
  int other = 1 - shard_of(m, a);
  CHECK(m.need(keyed({lit(a)}), nullptr, other).kind == Need::Kind::refuse);
  CHECK(m.need(keyed({lit(a)}), nullptr, shard_of(m, a)).kind == Need::Kind::one);
  // The comment's key: routes, and conflicts with a different session key.
  ShardTarget hinted = all;
  hinted.hint_key = b;
  CHECK(m.need(hinted, nullptr, std::nullopt).shard == shard_of(m, b));
  CHECK(m.need(hinted, nullptr, 1 - shard_of(m, b)).kind == Need::Kind::refuse);
  hinted.hint_key = "x";
  CHECK(m.need(hinted, nullptr, std::nullopt).kind == Need::Kind::refuse);
}

TEST_CASE("refusals and tables in neither list") {
  ShardMap m(two_shards());
  ShardTarget r;
  r.scope = ShardScope::refused;
  r.refusal = "UPDATE of the shard key column tenant_id of users";
  Need n = m.need(r, nullptr, std::nullopt);
  CHECK(n.kind == Need::Kind::refuse);
  CHECK(n.message.find("UPDATE of the shard key column") != std::string::npos);
  ShardTarget plain;
  plain.unsharded_tables = {"audit"};
  CHECK(m.need(plain, nullptr, std::nullopt).shard == 1);  // default_shard
  ShardMap strict(two_shards(control::Unsharded::reject));
  Need s = strict.need(plain, nullptr, std::nullopt);
  CHECK(s.kind == Need::Kind::refuse);
  CHECK(s.message.find("audit") != std::string::npos);
  // Joined with a tenant of the other shard than the default one: no shard has both.
  auto [a, b] = keys_on_both(m);
  std::string on0 = shard_of(m, a) == 0 ? a : b;
  ShardTarget join = keyed({lit(on0)});
  join.unsharded_tables = {"audit"};
  CHECK(m.need(join, nullptr, std::nullopt).kind == Need::Kind::refuse);
  ShardTarget ref;
  ref.scope = ShardScope::reference;
  CHECK(m.need(ref, nullptr, std::nullopt).kind == Need::Kind::any);
  ref.writes_reference = true;
  CHECK(m.need(ref, nullptr, std::nullopt).kind == Need::Kind::write_across);  // every shard, atomically
  ShardTarget bad;
  bad.parse_error = true;
  bad.scope = ShardScope::refused;
  CHECK(m.need(bad, nullptr, std::nullopt).kind == Need::Kind::any);  // PostgreSQL's syntax error
}

TEST_CASE("= ANY(array): its elements' shards, from a literal or a Bind's text or binary array") {
  ShardMap m(two_shards());
  auto [a, b] = keys_on_both(m);
  auto array_lit = [](std::string s) { return KeyRef{std::move(s), 0, false, true}; };
  auto array_param = [](int n) { return KeyRef{{}, n, false, true}; };
  Need one = m.need(keyed({array_lit("{" + b + ", NULL}")}), nullptr, std::nullopt);
  CHECK(one.kind == Need::Kind::one);
  CHECK(one.shard == shard_of(m, b));
  Need both = m.need(keyed({array_lit("{\"" + a + "\"," + b + "}")}), nullptr, std::nullopt);
  CHECK(both.kind == Need::Kind::scatter);
  CHECK(both.shards == std::vector<int>{0, 1});
  // No element names a shard (empty, NULL, or values the type rejects): like a key list that names none.
  CHECK(m.need(keyed({array_lit("{}")}), nullptr, std::nullopt).kind == Need::Kind::any);
  CHECK(m.need(keyed({array_lit("{NULL}")}), nullptr, std::nullopt).kind == Need::Kind::any);
  CHECK(m.need(keyed({array_lit("{abc}")}), nullptr, std::nullopt).kind == Need::Kind::any);
  // Text pgrouter cannot read: every shard.
  Need every = m.need(keyed({array_lit("[1:1]={" + b + "}")}), nullptr, std::nullopt);
  CHECK(every.kind == Need::Kind::scatter);
  CHECK(every.shards == std::vector<int>{0, 1});

  ShardTarget t = keyed({array_param(1)});
  CHECK(m.need(t, nullptr, std::nullopt).kind == Need::Kind::any);  // decided at Bind
  std::string text_body = bind_body({}, {"{" + b + "," + b + "}"});
  auto text = BoundParams::from_bind(text_body);
  CHECK(m.need(t, &*text, std::nullopt).kind == Need::Kind::one);
  CHECK(m.need(t, &*text, std::nullopt).shard == shard_of(m, b));
  // int8[] in binary: ndim 1, no NULLs, oid 20, one dimension of 2 from 1, two 8-byte elements.
  std::string bin;
  for (int32_t v : {1, 0, 20, 2, 1}) bin += be64(v).substr(4);
  for (const auto& k : {a, b}) bin += be64(8).substr(4) + be64(std::stoll(k));
  std::string bin_body = bind_body({1}, {bin});
  auto binary = BoundParams::from_bind(bin_body);
  CHECK(m.need(t, &*binary, std::nullopt).kind == Need::Kind::scatter);
  CHECK(m.need(t, &*binary, std::nullopt).shards == std::vector<int>{0, 1});
  std::string null_body = bind_body({}, {std::nullopt});
  auto null = BoundParams::from_bind(null_body);
  CHECK(m.need(t, &*null, std::nullopt).kind == Need::Kind::any);
  std::string bad_body = bind_body({1}, {std::string("junk")});
  auto bad = BoundParams::from_bind(bad_body);
  CHECK(m.need(t, &*bad, std::nullopt).shards == std::vector<int>{0, 1});
  // A write through an array of both shards' keys is a write across them.
  ShardTarget w = keyed({array_param(1)});
  w.writes = true;
  std::string both_body = bind_body({}, {"{" + a + "," + b + "}"});
  auto both_text = BoundParams::from_bind(both_body);
  CHECK(m.need(w, &*both_text, std::nullopt).kind == Need::Kind::write_across);
}

namespace {

sql::ExecuteArgument constant(std::string text, sql::ExecuteArgument::Form form) {
  return {sql::ExecuteArgument::Kind::text, form, 0, std::move(text)};
}
sql::ExecuteArgument of_kind(sql::ExecuteArgument::Kind kind, int param = 0) { return {kind, {}, param, {}}; }

// The need of the statement `t` executed with `args` (an outer Bind for parameters of the EXECUTE's text).
Need executed(const ShardMap& m, const ShardTarget& t, const std::vector<sql::ExecuteArgument>& args,
              const BoundParams* outer = nullptr) {
  sharding::ExecuteBind b = m.execute_bind(t, args, outer);
  REQUIRE(b.unread == 0);
  REQUIRE_FALSE(b.missing);
  auto params = BoundParams::from_bind(b.body);
  REQUIRE(params);
  return m.need(t, &*params, std::nullopt);
}

}  // namespace

TEST_CASE("EXECUTE's arguments route as a Bind of their text does") {
  using F = sql::ExecuteArgument::Form;
  using K = sql::ExecuteArgument::Kind;
  ShardMap m(two_shards());
  ShardTarget t = keyed({param(2)});
  // Every key of a range, as an integer, a string and a negative number, goes where its Bind goes.
  for (int k = -50; k <= 50; ++k) {
    std::string key = std::to_string(k);
    std::string bind = bind_body({}, {std::nullopt, key});
    auto bound = BoundParams::from_bind(bind);
    int want = m.need(t, &*bound, std::nullopt).shard;
    INFO("key " << key);
    CHECK(want == shard_of(m, key));
    Need as_integer = executed(m, t, {of_kind(K::unread), constant(key, F::integer)});
    CHECK(as_integer.kind == Need::Kind::one);
    CHECK(as_integer.shard == want);
    CHECK(executed(m, t, {constant("x", F::as_written), constant(" " + key, F::as_written)}).shard == want);
  }
  // NULL matches no row: any shard, as for a Bind of NULL.
  CHECK(executed(m, t, {of_kind(K::null), of_kind(K::null)}).kind == Need::Kind::any);
  // A value the key type rejects is PostgreSQL's error on any shard.
  CHECK(executed(m, t, {of_kind(K::null), constant("abc", F::as_written)}).kind == Need::Kind::any);
}

TEST_CASE("EXECUTE's arguments: unread keys, missing arguments, parameters of the EXECUTE's own Bind") {
  using F = sql::ExecuteArgument::Form;
  using K = sql::ExecuteArgument::Kind;
  ShardMap m(two_shards());
  auto [a, b] = keys_on_both(m);
  ShardTarget t = keyed({param(1)});
  CHECK(m.execute_bind(t, {of_kind(K::unread)}, nullptr).unread == 1);
  CHECK(m.execute_bind(t, {constant(a, F::integer), of_kind(K::unread)}, nullptr).unread == 0);  // no key
  CHECK(m.execute_bind(keyed({param(3)}), {constant(a, F::integer)}, nullptr).missing);
  CHECK(m.execute_bind(t, {}, nullptr).missing);
  // The statement's keys need no argument at all: nothing is read.
  ShardTarget every;
  every.scope = ShardScope::all;
  CHECK(m.execute_bind(every, {of_kind(K::unread)}, nullptr).unread == 0);
  // EXECUTE q($2) parsed, bound in binary and in text.
  std::string outer_body = bind_body({0, 1}, {"x", be64(std::stoll(b))});
  auto outer = BoundParams::from_bind(outer_body);
  CHECK(executed(m, t, {of_kind(K::parameter, 2)}, &*outer).shard == shard_of(m, b));
  std::string text_body = bind_body({}, {a});
  auto text = BoundParams::from_bind(text_body);
  CHECK(executed(m, t, {of_kind(K::parameter, 1)}, &*text).shard == shard_of(m, a));
  // Row keys of an INSERT use their arguments too.
  ShardTarget insert = keyed({param(1), param(2)});
  insert.writes = insert.inserts = true;
  insert.row_keys = {param(1), param(2)};
  Need two = executed(m, insert, {constant(a, F::integer), constant(b, F::integer)});
  CHECK(two.kind == Need::Kind::write_across);
  CHECK(two.row_shards == std::vector<int>{shard_of(m, a), shard_of(m, b)});
  // An array of keys for = ANY($1), written as its literal.
  ShardTarget any = keyed({KeyRef{{}, 1, false, true}});
  CHECK(executed(m, any, {constant("{" + a + "," + a + "}", F::as_written)}).shard == shard_of(m, a));
  CHECK(executed(m, any, {constant("{" + a + "," + b + "}", F::as_written)}).kind == Need::Kind::scatter);
}

TEST_CASE("EXECUTE's arguments: an integer or uuid given to a text key is the text PostgreSQL makes of it") {
  using F = sql::ExecuteArgument::Form;
  control::DatabaseConfig db = two_shards();
  db.sharding.key_type = sharding::KeyType::text;
  ShardMap m(db);
  ShardTarget t = keyed({param(1)});
  auto value = [&](sql::ExecuteArgument arg) {
    std::string body = m.execute_bind(t, {std::move(arg)}, nullptr).body;
    auto params = BoundParams::from_bind(body);
    bool binary = false;
    auto v = params->value(1, binary);
    return v ? std::string(*v) : std::string("NULL");
  };
  CHECK(value(constant("007", F::integer)) == "7");  // '007'::int8 given to a text parameter
  CHECK(value(constant("-0", F::integer)) == "0");
  CHECK(value(constant("007", F::as_written)) == "007");
  CHECK(value(constant("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", F::uuid)) ==
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  CHECK(value(constant("99999999999999999999", F::integer)) == "99999999999999999999");  // beyond int8
}
