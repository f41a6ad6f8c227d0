// Shard keys and strategies: PostgreSQL's input rules and partition hash (the expected values were produced
// by a PostgreSQL 15 server: casts for the input rules, satisfies_hash_partition() for the remainders), and
// the hash, consistent and map strategies.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "pgrouter/control/config.hpp"
#include "pgrouter/sharding/key.hpp"
#include "pgrouter/sharding/strategy.hpp"
#include "sharding/strategies.hpp"

using namespace pgrouter;
using sharding::KeyType;

namespace {

sharding::KeyValue key(std::string_view text, KeyType type) {
  auto value = sharding::parse_text(text, type);
  REQUIRE_MESSAGE(value, text);
  return *value;
}

std::string be(uint64_t v, size_t width) {
  std::string out(width, '\0');
  for (size_t i = 0; i < width; ++i) out[width - 1 - i] = char((v >> (8 * i)) & 0xff);
  return out;
}

}  // namespace

TEST_CASE("key types are named as PostgreSQL names them, with the aliases it accepts") {
  CHECK(sharding::to_string(KeyType::int2) == "smallint");
  CHECK(sharding::to_string(KeyType::int4) == "integer");
  CHECK(sharding::to_string(KeyType::int8) == "bigint");
  CHECK(sharding::to_string(KeyType::text) == "text");
  CHECK(sharding::to_string(KeyType::uuid) == "uuid");
  CHECK(sharding::parse_key_type("int2") == KeyType::int2);
  CHECK(sharding::parse_key_type("INTEGER") == KeyType::int4);
  CHECK(sharding::parse_key_type("int4") == KeyType::int4);
  CHECK(sharding::parse_key_type("bigint") == KeyType::int8);
  CHECK(sharding::parse_key_type("int8") == KeyType::int8);
  CHECK(sharding::parse_key_type("varchar") == KeyType::text);
  CHECK(sharding::parse_key_type("uuid") == KeyType::uuid);
  CHECK_FALSE(sharding::parse_key_type("numeric"));
  CHECK_FALSE(sharding::parse_key_type(""));
}

TEST_CASE("parse_text accepts and rejects what PostgreSQL 15's input functions do") {
  // {type, input, what PostgreSQL printed back (nullptr: the cast failed)}.
  struct Case {
    KeyType type;
    std::string input;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {KeyType::int2, "0", "0"},
      {KeyType::int2, "42", "42"},
      {KeyType::int2, " 42", "42"},
      {KeyType::int2, "42 ", "42"},
      {KeyType::int2, "\t42\n", "42"},
      {KeyType::int2, "+42", "42"},
      {KeyType::int2, "-0", "0"},
      {KeyType::int2, "+0", "0"},
      {KeyType::int2, "--1", nullptr},
      {KeyType::int2, "+-1", nullptr},
      {KeyType::int2, "- 1", nullptr},
      {KeyType::int2, "4 2", nullptr},
      {KeyType::int2, "", nullptr},
      {KeyType::int2, " ", nullptr},
      {KeyType::int2, "+", nullptr},
      {KeyType::int2, "-", nullptr},
      {KeyType::int2, "32767", "32767"},
      {KeyType::int2, "32768", nullptr},
      {KeyType::int2, "-32768", "-32768"},
      {KeyType::int2, "-32769", nullptr},
      {KeyType::int2, "007", "7"},
      {KeyType::int2, "0x10", nullptr},
      {KeyType::int2, "1e3", nullptr},
      {KeyType::int2, "1.0", nullptr},
      {KeyType::int2, "42abc", nullptr},
      {KeyType::int2, "１", nullptr},
      {KeyType::int4, "2147483647", "2147483647"},
      {KeyType::int4, "2147483648", nullptr},
      {KeyType::int4, "-2147483648", "-2147483648"},
      {KeyType::int4, "-2147483649", nullptr},
      {KeyType::int4, " -2147483648 ", "-2147483648"},
      {KeyType::int4, "00000000000000000000001", "1"},
      {KeyType::int4, "\v7\f", "7"},
      {KeyType::int4, "\r-3\r", "-3"},
      {KeyType::int8, "9223372036854775807", "9223372036854775807"},
      {KeyType::int8, "9223372036854775808", nullptr},
      {KeyType::int8, "-9223372036854775808", "-9223372036854775808"},
      {KeyType::int8, "-9223372036854775809", nullptr},
      {KeyType::int8, "99999999999999999999", nullptr},
      {KeyType::int8, " +9223372036854775807 ", "9223372036854775807"},
      {KeyType::int8, "1_000", nullptr},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "6BA7B810-9DAD-11D1-80B4-00C04FD430C8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "6ba7b8109dad11d180b400c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "{6ba7b8109dad11d180b400c04fd430c8}", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "6ba7-b810-9dad-11d1-80b4-00c0-4fd4-30c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "6ba7b810-9dad11d1-80b400c0-4fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c", nullptr},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8a", nullptr},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8-", nullptr},
      {KeyType::uuid, "-6ba7b810-9dad-11d1-80b4-00c04fd430c8", nullptr},
      {KeyType::uuid, "6ba7b8-109dad-11d1-80b4-00c04fd430c8", nullptr},
      {KeyType::uuid, "6ba7b810--9dad-11d1-80b4-00c04fd430c8", nullptr},
      {KeyType::uuid, "{6ba7b810-9dad-11d1-80b4-00c04fd430c8", nullptr},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8}", nullptr},
      {KeyType::uuid, " 6ba7b810-9dad-11d1-80b4-00c04fd430c8", nullptr},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8 ", nullptr},
      {KeyType::uuid, "gba7b810-9dad-11d1-80b4-00c04fd430c8", nullptr},
      {KeyType::uuid, "", nullptr},
      {KeyType::uuid, "{}", nullptr},
  };
  for (const auto& c : cases) {
    CAPTURE(c.input);
    CAPTURE(sharding::to_string(c.type));
    auto value = sharding::parse_text(c.input, c.type);
    if (c.expected == nullptr) {
      CHECK_FALSE(value);
    } else {
      REQUIRE(value);
      CHECK(value->type == c.type);
      CHECK(sharding::to_text(*value) == c.expected);
    }
  }
}

TEST_CASE("parse_text: each integer type's bounds and one past them") {
  CHECK(key("-32768", KeyType::int2).integer == -32768);
  CHECK(key("32767", KeyType::int2).integer == 32767);
  CHECK_FALSE(sharding::parse_text("-32769", KeyType::int2));
  CHECK_FALSE(sharding::parse_text("32768", KeyType::int2));
  CHECK(key("-2147483648", KeyType::int4).integer == INT32_MIN);
  CHECK(key("2147483647", KeyType::int4).integer == INT32_MAX);
  CHECK_FALSE(sharding::parse_text("-2147483649", KeyType::int4));
  CHECK_FALSE(sharding::parse_text("2147483648", KeyType::int4));
  CHECK(key("-9223372036854775808", KeyType::int8).integer == INT64_MIN);
  CHECK(key("9223372036854775807", KeyType::int8).integer == INT64_MAX);
  CHECK_FALSE(sharding::parse_text("-9223372036854775809", KeyType::int8));
  CHECK_FALSE(sharding::parse_text("9223372036854775808", KeyType::int8));
  CHECK_FALSE(sharding::parse_text("18446744073709551616", KeyType::int8));
  CHECK(key("-0", KeyType::int8).integer == 0);
  CHECK(key("+7", KeyType::int4).integer == 7);
}

TEST_CASE("parse_text: text is kept byte for byte, and cannot hold NUL") {
  CHECK(key(" Mixed Case ", KeyType::text).text == " Mixed Case ");
  CHECK(key("", KeyType::text).text.empty());
  CHECK(key("日本", KeyType::text).text == "日本");
  CHECK_FALSE(sharding::parse_text(std::string_view("a\0b", 3), KeyType::text));
}

TEST_CASE("parse_binary reads big-endian integers of the type's width, 16-byte uuids and text bytes") {
  CHECK(sharding::parse_binary(be(42, 2), KeyType::int2)->integer == 42);
  CHECK(sharding::parse_binary(be(0xffff, 2), KeyType::int2)->integer == -1);
  CHECK(sharding::parse_binary(be(0x8000, 2), KeyType::int2)->integer == -32768);
  CHECK(sharding::parse_binary(be(0x80000000, 4), KeyType::int4)->integer == INT32_MIN);
  CHECK(sharding::parse_binary(be(0x7fffffff, 4), KeyType::int4)->integer == INT32_MAX);
  CHECK(sharding::parse_binary(be(uint64_t(INT64_MIN), 8), KeyType::int8)->integer == INT64_MIN);
  CHECK(sharding::parse_binary(be(uint64_t(-2), 8), KeyType::int8)->integer == -2);
  // Any integer width the client bound (its parameter's type), within the key type's range.
  CHECK(sharding::parse_binary(be(1, 4), KeyType::int8)->integer == 1);
  CHECK(sharding::parse_binary(be(0xfffe, 2), KeyType::int8)->integer == -2);
  CHECK(sharding::parse_binary(be(7, 8), KeyType::int4)->integer == 7);
  CHECK_FALSE(sharding::parse_binary(be(uint64_t(INT32_MAX) + 1, 8), KeyType::int4));
  CHECK_FALSE(sharding::parse_binary(be(1, 3), KeyType::int8));
  CHECK_FALSE(sharding::parse_binary(be(40000, 4), KeyType::int2));
  CHECK_FALSE(sharding::parse_binary("", KeyType::int4));

  for (auto [type, text] :
       std::vector<std::pair<KeyType, std::string>>{{KeyType::int2, "-32768"},
                                                    {KeyType::int4, "123456789"},
                                                    {KeyType::int8, "-9223372036854775808"}}) {
    auto v = key(text, type);
    size_t width = type == KeyType::int2 ? 2 : type == KeyType::int4 ? 4 : 8;
    CHECK(sharding::parse_binary(be(uint64_t(v.integer), width), type) == v);
  }
  auto u = key("6ba7b810-9dad-11d1-80b4-00c04fd430c8", KeyType::uuid);
  std::string bytes(reinterpret_cast<const char*>(u.uuid.data()), 16);
  CHECK(bytes.substr(0, 4) == "\x6b\xa7\xb8\x10");
  CHECK(sharding::parse_binary(bytes, KeyType::uuid) == u);
  CHECK_FALSE(sharding::parse_binary(bytes.substr(1), KeyType::uuid));
  CHECK(sharding::parse_binary("héllo", KeyType::text) == key("héllo", KeyType::text));
}

TEST_CASE("partition_hash gives the remainders of PostgreSQL 15's PARTITION BY HASH") {
  // satisfies_hash_partition(parent, modulus, remainder, key) was true for exactly these remainders, on
  // tables PARTITION BY HASH (k) with k smallint, integer, bigint, text (C collation, UTF-8) and uuid.
  struct Vector {
    KeyType type;
    std::string key;
    uint64_t modulus, remainder;
  };
  const std::vector<Vector> vectors = {
      {KeyType::int2, "0", 1009, 906},
      {KeyType::int2, "1", 1009, 37},
      {KeyType::int2, "-1", 1009, 969},
      {KeyType::int2, "42", 1009, 396},
      {KeyType::int2, "1000", 1009, 454},
      {KeyType::int2, "-1000", 1009, 800},
      {KeyType::int2, "32767", 1009, 174},
      {KeyType::int2, "-32768", 1009, 3},
      {KeyType::int2, "0", 8192, 6576},
      {KeyType::int2, "1", 8192, 4024},
      {KeyType::int2, "-1", 8192, 4005},
      {KeyType::int2, "42", 8192, 6754},
      {KeyType::int2, "1000", 8192, 5588},
      {KeyType::int2, "-1000", 8192, 6507},
      {KeyType::int2, "32767", 8192, 7886},
      {KeyType::int2, "-32768", 8192, 1149},
      {KeyType::int4, "0", 1009, 906},
      {KeyType::int4, "1", 1009, 37},
      {KeyType::int4, "-1", 1009, 969},
      {KeyType::int4, "42", 1009, 396},
      {KeyType::int4, "123456789", 1009, 600},
      {KeyType::int4, "2147483647", 1009, 832},
      {KeyType::int4, "-2147483648", 1009, 26},
      {KeyType::int4, "0", 8192, 6576},
      {KeyType::int4, "1", 8192, 4024},
      {KeyType::int4, "-1", 8192, 4005},
      {KeyType::int4, "42", 8192, 6754},
      {KeyType::int4, "123456789", 8192, 5069},
      {KeyType::int4, "2147483647", 8192, 383},
      {KeyType::int4, "-2147483648", 8192, 6774},
      {KeyType::int8, "0", 1009, 906},
      {KeyType::int8, "1", 1009, 37},
      {KeyType::int8, "-1", 1009, 969},
      {KeyType::int8, "42", 1009, 396},
      {KeyType::int8, "2147483648", 1009, 26},
      {KeyType::int8, "4294967296", 1009, 37},
      {KeyType::int8, "-4294967297", 1009, 994},
      {KeyType::int8, "1234567890123", 1009, 908},
      {KeyType::int8, "9223372036854775807", 1009, 26},
      {KeyType::int8, "-9223372036854775808", 1009, 832},
      {KeyType::int8, "0", 8192, 6576},
      {KeyType::int8, "1", 8192, 4024},
      {KeyType::int8, "-1", 8192, 4005},
      {KeyType::int8, "42", 8192, 6754},
      {KeyType::int8, "2147483648", 8192, 6774},
      {KeyType::int8, "4294967296", 8192, 4024},
      {KeyType::int8, "-4294967297", 8192, 3626},
      {KeyType::int8, "1234567890123", 8192, 3791},
      {KeyType::int8, "9223372036854775807", 8192, 6774},
      {KeyType::int8, "-9223372036854775808", 8192, 383},
      {KeyType::text, "", 1009, 743},
      {KeyType::text, "T", 1009, 960},
      {KeyType::text, "Th", 1009, 424},
      {KeyType::text, "The", 1009, 418},
      {KeyType::text, "The ", 1009, 349},
      {KeyType::text, "The q", 1009, 7},
      {KeyType::text, "The qu", 1009, 338},
      {KeyType::text, "The qui", 1009, 324},
      {KeyType::text, "The quic", 1009, 213},
      {KeyType::text, "The quick", 1009, 265},
      {KeyType::text, "The quick ", 1009, 127},
      {KeyType::text, "The quick b", 1009, 670},
      {KeyType::text, "The quick br", 1009, 98},
      {KeyType::text, "The quick bro", 1009, 461},
      {KeyType::text, "The quick brow", 1009, 189},
      {KeyType::text, "The quick brown", 1009, 539},
      {KeyType::text, "The quick brown ", 1009, 903},
      {KeyType::text, "The quick brown f", 1009, 277},
      {KeyType::text, "The quick brown fo", 1009, 924},
      {KeyType::text, "The quick brown fox", 1009, 175},
      {KeyType::text, "The quick brown fox ", 1009, 549},
      {KeyType::text, "The quick brown fox j", 1009, 164},
      {KeyType::text, "The quick brown fox ju", 1009, 640},
      {KeyType::text, "The quick brown fox jum", 1009, 627},
      {KeyType::text, "The quick brown fox jump", 1009, 726},
      {KeyType::text, "The quick brown fox jumps", 1009, 354},
      {KeyType::text, "The quick brown fox jumps ", 1009, 85},
      {KeyType::text, "The quick brown fox jumps o", 1009, 448},
      {KeyType::text, "héllo wörld", 1009, 509},
      {KeyType::text, "日本語のテキスト", 1009, 41},
      {KeyType::text, "😀", 1009, 743},
      {KeyType::text, "Ünïcödé ✓ 42", 1009, 202},
      {KeyType::text, "", 8192, 2214},
      {KeyType::text, "T", 8192, 4255},
      {KeyType::text, "Th", 8192, 7990},
      {KeyType::text, "The", 8192, 169},
      {KeyType::text, "The ", 8192, 844},
      {KeyType::text, "The q", 8192, 8143},
      {KeyType::text, "The qu", 8192, 6895},
      {KeyType::text, "The qui", 8192, 6033},
      {KeyType::text, "The quic", 8192, 7493},
      {KeyType::text, "The quick", 8192, 2141},
      {KeyType::text, "The quick ", 8192, 6035},
      {KeyType::text, "The quick b", 8192, 4984},
      {KeyType::text, "The quick br", 8192, 261},
      {KeyType::text, "The quick bro", 8192, 6678},
      {KeyType::text, "The quick brow", 8192, 890},
      {KeyType::text, "The quick brown", 8192, 3040},
      {KeyType::text, "The quick brown ", 8192, 3375},
      {KeyType::text, "The quick brown f", 8192, 5873},
      {KeyType::text, "The quick brown fo", 8192, 1969},
      {KeyType::text, "The quick brown fox", 8192, 7044},
      {KeyType::text, "The quick brown fox ", 8192, 5321},
      {KeyType::text, "The quick brown fox j", 8192, 119},
      {KeyType::text, "The quick brown fox ju", 8192, 4668},
      {KeyType::text, "The quick brown fox jum", 8192, 1601},
      {KeyType::text, "The quick brown fox jump", 8192, 2288},
      {KeyType::text, "The quick brown fox jumps", 8192, 2904},
      {KeyType::text, "The quick brown fox jumps ", 8192, 6934},
      {KeyType::text, "The quick brown fox jumps o", 8192, 29},
      {KeyType::text, "héllo wörld", 8192, 6561},
      {KeyType::text, "日本語のテキスト", 8192, 3189},
      {KeyType::text, "😀", 8192, 2417},
      {KeyType::text, "Ünïcödé ✓ 42", 8192, 7813},
      {KeyType::uuid, "00000000-0000-0000-0000-000000000000", 1009, 150},
      {KeyType::uuid, "ffffffff-ffff-ffff-ffff-ffffffffffff", 1009, 783},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", 1009, 189},
      {KeyType::uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 1009, 548},
      {KeyType::uuid, "123e4567-e89b-12d3-a456-426614174000", 1009, 99},
      {KeyType::uuid, "00000000-0000-0000-0000-000000000000", 8192, 7077},
      {KeyType::uuid, "ffffffff-ffff-ffff-ffff-ffffffffffff", 8192, 7553},
      {KeyType::uuid, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", 8192, 7142},
      {KeyType::uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 8192, 1488},
      {KeyType::uuid, "123e4567-e89b-12d3-a456-426614174000", 8192, 4997},
  };
  for (const auto& v : vectors) {
    CAPTURE(v.key);
    CAPTURE(v.modulus);
    auto value = key(v.key, v.type);
    CHECK(sharding::partition_hash(value) % v.modulus == v.remainder);
    // strategy: hash with the modulus as the number of shards is that remainder.
    CHECK(sharding::make_hash_strategy(v.modulus)->shard_of(value) == v.remainder);
  }
}

TEST_CASE("a key's hash depends on its value, not on how it was written") {
  CHECK(sharding::partition_hash(key(" +42 ", KeyType::int8)) ==
        sharding::partition_hash(key("42", KeyType::int8)));
  CHECK(sharding::partition_hash(key("{6BA7B8109DAD11D180B400C04FD430C8}", KeyType::uuid)) ==
        sharding::partition_hash(key("6ba7b810-9dad-11d1-80b4-00c04fd430c8", KeyType::uuid)));
  CHECK(sharding::partition_hash(key("a", KeyType::text)) !=
        sharding::partition_hash(key("A", KeyType::text)));
}

namespace {

// Keys from a fixed seed, printed so that a failure can be reproduced.
std::vector<sharding::KeyValue> random_int8_keys(size_t n, uint64_t seed) {
  MESSAGE("random keys from seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<sharding::KeyValue> keys;
  for (size_t i = 0; i < n; ++i) {
    sharding::KeyValue v;
    v.type = KeyType::int8;
    v.integer = int64_t(rng());
    keys.push_back(v);
  }
  return keys;
}

}  // namespace

TEST_CASE("consistent: going from n to n + 1 shards moves about 1/(n + 1) of the keys, all to the new one") {
  auto keys = random_int8_keys(100000, 20240611);
  for (size_t n = 2; n <= 8; ++n) {
    auto before = sharding::make_consistent_strategy(n), after = sharding::make_consistent_strategy(n + 1);
    size_t moved = 0;
    bool only_to_new = true;
    for (const auto& k : keys) {
      size_t a = before->shard_of(k), b = after->shard_of(k);
      if (a != b) {
        ++moved;
        only_to_new = only_to_new && b == n;
      }
    }
    double expected = double(keys.size()) / double(n + 1);
    CAPTURE(n);
    CAPTURE(moved);
    CHECK(only_to_new);
    CHECK(std::abs(double(moved) - expected) <= 0.2 * expected);
  }
  // strategy: hash, by contrast, moves most keys (a key stays only when its remainder is the same).
  auto h2 = sharding::make_hash_strategy(2), h3 = sharding::make_hash_strategy(3);
  size_t moved = 0;
  for (const auto& k : keys) moved += h2->shard_of(k) != h3->shard_of(k);
  CHECK(moved > keys.size() / 2);
}

TEST_CASE("consistent and hash spread keys evenly (chi-square, p = 0.001)") {
  auto keys = random_int8_keys(100000, 7);
  // The chi-square distribution's 0.999 quantile for n - 1 degrees of freedom.
  const std::map<size_t, double> critical = {{2, 10.83}, {3, 13.82}, {5, 18.47}, {8, 24.32}};
  for (auto [n, limit] : critical) {
    for (auto strategy : {sharding::make_consistent_strategy(n), sharding::make_hash_strategy(n)}) {
      std::vector<size_t> counts(n);
      for (const auto& k : keys) counts.at(strategy->shard_of(k))++;
      double expected = double(keys.size()) / double(n), chi2 = 0;
      for (size_t c : counts) chi2 += (double(c) - expected) * (double(c) - expected) / expected;
      CAPTURE(strategy->describe());
      CHECK(chi2 < limit);
    }
  }
  // Sequential integer keys too (tenant ids are often 1, 2, 3, ...).
  std::vector<size_t> counts(5);
  auto consistent = sharding::make_consistent_strategy(5);
  for (int i = 1; i <= 100000; ++i) counts.at(consistent->shard_of(key(std::to_string(i), KeyType::int8)))++;
  double chi2 = 0;
  for (size_t c : counts) chi2 += (double(c) - 20000.0) * (double(c) - 20000.0) / 20000.0;
  CHECK(chi2 < 18.47);
}

TEST_CASE("jump consistent hash: one bucket holds everything; bucket counts only ever add a bucket") {
  for (uint64_t k : {0ull, 1ull, 42ull, ~0ull}) {
    CHECK(sharding::jump_consistent_hash(k, 1) == 0);
    size_t previous = 0;
    for (size_t n = 1; n < 50; ++n) {
      size_t b = sharding::jump_consistent_hash(k, n);
      CHECK(b < n);
      CHECK((b == previous || b == n - 1));
      previous = b;
    }
  }
}

namespace {

control::ShardingConfig map_config(control::ShardStrategy fallback) {
  control::ShardingConfig c;
  c.strategy = control::ShardStrategy::map;
  c.fallback = fallback;
  c.key_type = KeyType::int8;
  control::ShardPin single;
  single.keys = {"42"};
  single.shard = 2;
  control::ShardPin list;
  list.keys = {"7", "-9", "1000"};
  list.shard = 1;
  control::ShardPin range;
  range.from = 100;
  range.to = 199;
  range.shard = 3;
  control::ShardPin overlapping;  // 150 is in the range above, which comes first
  overlapping.keys = {"150", "200"};
  overlapping.shard = 0;
  c.pins = {single, list, range, overlapping};
  return c;
}

}  // namespace

TEST_CASE("map: pinned keys and inclusive ranges win, the fallback places the rest") {
  for (auto fallback : {control::ShardStrategy::hash, control::ShardStrategy::consistent}) {
    auto config = map_config(fallback);
    auto map = sharding::make_strategy(config, 4);
    auto other = fallback == control::ShardStrategy::hash ? sharding::make_hash_strategy(4)
                                                          : sharding::make_consistent_strategy(4);
    CHECK(map->shards() == 4);
    CHECK(map->shard_of(key("42", KeyType::int8)) == 2);
    CHECK(map->shard_of(key(" +42", KeyType::int8)) == 2);  // the value is pinned, however written
    CHECK(map->shard_of(key("7", KeyType::int8)) == 1);
    CHECK(map->shard_of(key("-9", KeyType::int8)) == 1);
    CHECK(map->shard_of(key("1000", KeyType::int8)) == 1);
    CHECK(map->shard_of(key("100", KeyType::int8)) == 3);
    CHECK(map->shard_of(key("199", KeyType::int8)) == 3);
    CHECK(map->shard_of(key("150", KeyType::int8)) == 3);  // the first pin naming a key places it
    CHECK(map->shard_of(key("200", KeyType::int8)) == 0);
    // Keys next to the pins are the fallback's.
    size_t differs_from_pin = 0;
    for (auto text : {"41", "43", "99", "201", "8", "0", "-1"}) {
      auto k = key(text, KeyType::int8);
      CAPTURE(text);
      CHECK(map->shard_of(k) == other->shard_of(k));
    }
    // 99 and 201 are beside ranges: they are not pinned whatever the fallback says.
    for (int i = 0; i < 1000; ++i) {
      auto k = key(std::to_string(10000 + i), KeyType::int8);
      differs_from_pin += map->shard_of(k) != 3;
      CHECK(map->shard_of(k) == other->shard_of(k));
    }
    CHECK(differs_from_pin > 0);
    CHECK(map->describe().find("fallback") != std::string::npos);
  }
}

TEST_CASE("map: text and uuid keys are pinned by value") {
  control::ShardingConfig c;
  c.strategy = control::ShardStrategy::map;
  c.key_type = KeyType::uuid;
  control::ShardPin pin;
  pin.keys = {"{6BA7B8109DAD11D180B400C04FD430C8}"};
  pin.shard = 1;
  c.pins = {pin};
  auto map = sharding::make_strategy(c, 2);
  CHECK(map->shard_of(key("6ba7b810-9dad-11d1-80b4-00c04fd430c8", KeyType::uuid)) == 1);

  c.key_type = KeyType::text;
  pin.keys = {"Acme", "globex"};
  pin.shard = 0;
  c.pins = {pin};
  // Three shards, so that the hash of some key is not 0 and the pin is seen to win over it.
  auto text_map = sharding::make_strategy(c, 3);
  auto hash = sharding::make_hash_strategy(3);
  CHECK(text_map->shard_of(key("Acme", KeyType::text)) == 0);
  CHECK(text_map->shard_of(key("globex", KeyType::text)) == 0);
  bool some_key_elsewhere = false;
  for (auto text : {"acme", "Globex", "initech", "umbrella", "hooli", "massive dynamic"}) {
    auto k = key(text, KeyType::text);
    CHECK(text_map->shard_of(k) == hash->shard_of(k));
    some_key_elsewhere = some_key_elsewhere || hash->shard_of(k) != 0;
  }
  CHECK(some_key_elsewhere);
}

TEST_CASE("make_strategy builds the configured strategy") {
  control::ShardingConfig c;
  c.strategy = control::ShardStrategy::hash;
  CHECK(sharding::make_strategy(c, 3)->describe() == "hash(modulus 3)");
  c.strategy = control::ShardStrategy::consistent;
  CHECK(sharding::make_strategy(c, 3)->describe() == "consistent(3 shards)");
  CHECK(sharding::make_strategy(c, 3)->shards() == 3);
}
