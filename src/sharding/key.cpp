// Shard key values: PostgreSQL 15's input functions for the key types, and its hash for PARTITION BY HASH
// (src/common/hashfn.c, src/backend/access/hash/hashfunc.c, partbounds.c) re-done here, so a key's shard is
// the remainder PostgreSQL itself would give the row.
#include "pgrouter/sharding/key.hpp"

#include <climits>
#include <cstring>

#include "pgrouter/util/strings.hpp"

namespace pgrouter::sharding {

std::string_view to_string(KeyType t) {
  switch (t) {
    case KeyType::int2:
      return "smallint";
    case KeyType::int4:
      return "integer";
    case KeyType::int8:
      return "bigint";
    case KeyType::text:
      return "text";
    case KeyType::uuid:
      return "uuid";
  }
  return "?";
}

std::optional<KeyType> parse_key_type(std::string_view name) {
  std::string lower = util::ascii_lower(name);
  if (lower == "smallint" || lower == "int2") return KeyType::int2;
  if (lower == "integer" || lower == "int" || lower == "int4") return KeyType::int4;
  if (lower == "bigint" || lower == "int8") return KeyType::int8;
  // varchar's hash operator class is text's: both hash their bytes the same way.
  if (lower == "text" || lower == "varchar" || lower == "character varying") return KeyType::text;
  if (lower == "uuid") return KeyType::uuid;
  return std::nullopt;
}

namespace {

// isspace() in the C locale, which the server's integer input functions use.
bool c_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }
bool c_digit(char c) { return c >= '0' && c <= '9'; }

// pg_strtoint16/32/64 (numutils.c, PostgreSQL 15): optional spaces, one optional sign, at least one decimal
// digit, optional spaces, nothing else; a value outside [min, max] is out of range.
std::optional<int64_t> parse_integer(std::string_view s, int64_t min, int64_t max) {
  size_t i = 0;
  while (i < s.size() && c_space(s[i])) ++i;
  bool negative = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
  if (i >= s.size() || !c_digit(s[i])) return std::nullopt;
  // The magnitude, unsigned so that the minimum's (one more than the maximum's) fits.
  uint64_t limit = negative ? uint64_t(-(min + 1)) + 1 : uint64_t(max);
  uint64_t magnitude = 0;
  for (; i < s.size() && c_digit(s[i]); ++i) {
    auto digit = uint64_t(s[i] - '0');
    if (magnitude > (limit - digit) / 10) return std::nullopt;
    magnitude = magnitude * 10 + digit;
  }
  while (i < s.size() && c_space(s[i])) ++i;
  if (i != s.size()) return std::nullopt;
  if (!negative) return int64_t(magnitude);
  return magnitude == 0 ? 0 : -int64_t(magnitude - 1) - 1;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// uuid_in's string_to_uuid: 32 hex digits, a '-' allowed after each group of 4 (not after the last), the
// whole optionally in braces; no spaces.
std::optional<std::array<uint8_t, 16>> parse_uuid(std::string_view s) {
  size_t i = 0;
  bool braces = i < s.size() && s[i] == '{';
  if (braces) ++i;
  std::array<uint8_t, 16> out{};
  for (size_t byte = 0; byte < out.size(); ++byte) {
    if (i + 1 >= s.size()) return std::nullopt;
    int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[byte] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
    if (i < s.size() && s[i] == '-' && byte % 2 == 1 && byte < out.size() - 1) ++i;
  }
  if (braces) {
    if (i >= s.size() || s[i] != '}') return std::nullopt;
    ++i;
  }
  if (i != s.size()) return std::nullopt;
  return out;
}

struct Range {
  int64_t min, max;
};

Range range_of(KeyType type) {
  switch (type) {
    case KeyType::int2:
      return {INT16_MIN, INT16_MAX};
    case KeyType::int4:
      return {INT32_MIN, INT32_MAX};
    default:
      return {INT64_MIN, INT64_MAX};
  }
}

bool is_integer(KeyType type) {
  return type == KeyType::int2 || type == KeyType::int4 || type == KeyType::int8;
}

// ---------------------------------------------------------------- Bob Jenkins' lookup3, as hashfn.c has it

uint32_t rot(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

void mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  a -= c, a ^= rot(c, 4), c += b;
  b -= a, b ^= rot(a, 6), a += c;
  c -= b, c ^= rot(b, 8), b += a;
  a -= c, a ^= rot(c, 16), c += b;
  b -= a, b ^= rot(a, 19), a += c;
  c -= b, c ^= rot(b, 4), b += a;
}

void final_mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  c ^= b, c -= rot(b, 14);
  a ^= c, a -= rot(c, 11);
  b ^= a, b -= rot(a, 25);
  c ^= b, c -= rot(b, 16);
  a ^= c, a -= rot(c, 4);
  b ^= a, b -= rot(a, 14);
  c ^= b, c -= rot(b, 24);
}

// The initial state with a non-zero seed mixed in, as hash_bytes_extended and hash_bytes_uint32_extended
// start (the seed taken as a 12-byte chunk padded with zeroes).
void seed_state(uint32_t& a, uint32_t& b, uint32_t& c, uint32_t len, uint64_t seed) {
  a = b = c = 0x9e3779b9u + len + 3923095u;
  if (seed != 0) {
    a += static_cast<uint32_t>(seed >> 32);
    b += static_cast<uint32_t>(seed);
    mix(a, b, c);
  }
}

uint32_t load_le(const uint8_t* k, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint32_t(k[i]) << (8 * i);
  return v;
}

// hash_bytes_extended. PostgreSQL servers on little-endian machines read the bytes as little-endian words
// (both its aligned and unaligned paths come to the same), and the last partial word of c starts at its
// second byte: the lowest byte of c is reserved for the length. Big-endian servers hash differently; pgrouter
// matches the little-endian ones (x86_64, aarch64).
uint64_t hash_bytes_extended(const uint8_t* k, size_t size, uint64_t seed) {
  uint32_t a, b, c;
  auto len = static_cast<uint32_t>(size);
  seed_state(a, b, c, len, seed);
  while (len >= 12) {
    a += load_le(k, 4);
    b += load_le(k + 4, 4);
    c += load_le(k + 8, 4);
    mix(a, b, c);
    k += 12;
    len -= 12;
  }
  if (len > 8) {
    c += load_le(k + 8, len - 8) << 8;
    len = 8;
  }
  if (len > 4) {
    b += load_le(k + 4, len - 4);
    len = 4;
  }
  a += load_le(k, len);
  final_mix(a, b, c);
  return (uint64_t(b) << 32) | c;
}

uint64_t hash_uint32_extended(uint32_t k, uint64_t seed) {
  uint32_t a, b, c;
  seed_state(a, b, c, sizeof(uint32_t), seed);
  a += k;
  final_mix(a, b, c);
  return (uint64_t(b) << 32) | c;
}

// partition.h's HASH_PARTITION_SEED: every hash partition key is hashed with it.
constexpr uint64_t kHashPartitionSeed = 0x7A5B22367996DCFDull;

uint64_t hash_combine64(uint64_t a, uint64_t b) {
  a ^= b + 0x49a0f4dd15e5a8e3ull + (a << 54) + (a >> 7);
  return a;
}

uint64_t type_hash(const KeyValue& v, uint64_t seed) {
  switch (v.type) {
    case KeyType::int2:  // hashint2extended widens to int32 first
    case KeyType::int4:
      return hash_uint32_extended(static_cast<uint32_t>(static_cast<int32_t>(v.integer)), seed);
    case KeyType::int8: {
      // hashint8extended: values that fit int4 hash as int4 does (cross-type hash joins need it).
      auto lo = static_cast<uint32_t>(v.integer);
      auto hi = static_cast<uint32_t>(static_cast<uint64_t>(v.integer) >> 32);
      lo ^= v.integer >= 0 ? hi : ~hi;
      return hash_uint32_extended(lo, seed);
    }
    case KeyType::text:
      return hash_bytes_extended(reinterpret_cast<const uint8_t*>(v.text.data()), v.text.size(), seed);
    case KeyType::uuid:
      return hash_bytes_extended(v.uuid.data(), v.uuid.size(), seed);
  }
  return 0;
}

}  // namespace

std::optional<KeyValue> parse_text(std::string_view text, KeyType type) {
  KeyValue v;
  v.type = type;
  if (is_integer(type)) {
    auto [min, max] = range_of(type);
    auto value = parse_integer(text, min, max);
    if (!value) return std::nullopt;
    v.integer = *value;
  } else if (type == KeyType::uuid) {
    auto uuid = parse_uuid(text);
    if (!uuid) return std::nullopt;
    v.uuid = *uuid;
  } else {
    // A C string on the server: text can carry no NUL byte.
    if (text.find('\0') != std::string_view::npos) return std::nullopt;
    v.text = std::string(text);
  }
  return v;
}

std::optional<KeyValue> parse_binary(std::string_view bytes, KeyType type) {
  KeyValue v;
  v.type = type;
  auto data = reinterpret_cast<const uint8_t*>(bytes.data());
  switch (type) {
    case KeyType::int2:
    case KeyType::int4:
    case KeyType::int8: {
      // The width is the parameter's own type (a client may bind an int2 against a bigint key: PostgreSQL
      // compares across integer types); the value must still fit the key's type.
      size_t width = bytes.size();
      if (width != 2 && width != 4 && width != 8) return std::nullopt;
      uint64_t raw = 0;
      for (size_t i = 0; i < width; ++i) raw = raw << 8 | data[i];
      int shift = int(64 - 8 * width);  // sign-extend from the width
      v.integer = static_cast<int64_t>(raw << shift) >> shift;
      int64_t lo = type == KeyType::int2 ? INT16_MIN : type == KeyType::int4 ? INT32_MIN : INT64_MIN;
      int64_t hi = type == KeyType::int2 ? INT16_MAX : type == KeyType::int4 ? INT32_MAX : INT64_MAX;
      if (v.integer < lo || v.integer > hi) return std::nullopt;
      return v;
    }
    case KeyType::uuid:
      if (bytes.size() != v.uuid.size()) return std::nullopt;
      std::memcpy(v.uuid.data(), data, v.uuid.size());
      return v;
    case KeyType::text:
      if (bytes.find('\0') != std::string_view::npos) return std::nullopt;
      v.text = std::string(bytes);
      return v;
  }
  return std::nullopt;
}

std::string to_text(const KeyValue& v) {
  switch (v.type) {
    case KeyType::int2:
    case KeyType::int4:
    case KeyType::int8:
      return std::to_string(v.integer);
    case KeyType::text:
      return v.text;
    case KeyType::uuid: {
      static constexpr char kHex[] = "0123456789abcdef";
      std::string out;
      for (size_t i = 0; i < v.uuid.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
        out += kHex[v.uuid[i] >> 4];
        out += kHex[v.uuid[i] & 15];
      }
      return out;
    }
  }
  return {};
}

uint64_t partition_hash(const KeyValue& v) { return hash_combine64(0, type_hash(v, kHashPartitionSeed)); }

}  // namespace pgrouter::sharding
