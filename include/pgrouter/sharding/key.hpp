// Shard key values as PostgreSQL holds them after its input functions, and PostgreSQL's own hash of them for
// PARTITION BY HASH, so a shard's rows can be checked with satisfies_hash_partition().
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::sharding {

// The key column's type: one per database (co-located tables share it).
enum class KeyType : uint8_t { int2, int4, int8, text, uuid };

std::string_view to_string(KeyType t);                    // "smallint", "integer", "bigint", "text", "uuid"
std::optional<KeyType> parse_key_type(std::string_view);  // those names and int2/int4/int8/varchar/...

struct KeyValue {
  KeyType type = KeyType::int8;
  int64_t integer = 0;             // int2/int4/int8
  std::string text;                // text (the bytes as the client sent them; UTF-8 assumed)
  std::array<uint8_t, 16> uuid{};  // uuid
  bool operator==(const KeyValue&) const = default;
};

// The value PostgreSQL's input function would make of `text` for `type` (int2in/int4in/int8in with their
// range checks and surrounding spaces, uuid_in's accepted forms); nullopt where PostgreSQL would fail.
std::optional<KeyValue> parse_text(std::string_view text, KeyType type);
// The same for a parameter bound in binary format: integers big-endian of 2, 4 or 8 bytes (the parameter's
// own type, which need not be the key's) within the key type's range, uuid 16 bytes, text the bytes.
std::optional<KeyValue> parse_binary(std::string_view bytes, KeyType type);
// The value written as PostgreSQL's output function writes it ("42", "6ba7b810-9dad-11d1-80b4-00c04fd430c8").
std::string to_text(const KeyValue& v);

// PostgreSQL's hash of one key column for hash partitioning: the type's extended hash function
// (hashint2extended/hashint4extended/hashint8extended, hashtextextended under a deterministic collation,
// uuid_hash_extended) with HASH_PARTITION_SEED, combined into a zero row hash with hash_combine64, as
// compute_partition_hash_value does. `value % modulus` is then the partition's remainder.
uint64_t partition_hash(const KeyValue& v);

}  // namespace pgrouter::sharding
