// Arrays of shard keys: array_in's text syntax and array_send's binary layout, as `key = ANY(...)` gets them.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pgrouter/sharding/key_array.hpp"

using namespace pgrouter::sharding;

namespace {

// The elements as "1|NULL|a b", or "unread".
std::string elements(std::string_view text) {
  auto e = array_elements(text);
  if (!e) return "unread";
  std::string out;
  for (size_t i = 0; i < e->size(); ++i) out += (i ? "|" : "") + (*e)[i].value_or("NULL");
  return out;
}

void be32(std::string& s, int64_t v) {
  for (int sh = 24; sh >= 0; sh -= 8) s.push_back(char((uint64_t(v) >> sh) & 0xff));
}

// array_send's bytes for one dimension of raw elements (nullopt: NULL) of element type `oid`.
std::string binary_array(uint32_t oid, const std::vector<std::optional<std::string>>& items, int ndim = 1) {
  std::string s;
  be32(s, ndim);
  bool nulls = false;
  for (const auto& i : items) nulls = nulls || !i;
  be32(s, nulls ? 1 : 0);
  be32(s, oid);
  if (ndim > 0) {
    be32(s, int64_t(items.size()));
    be32(s, 1);  // lower bound
  }
  for (const auto& i : items) {
    be32(s, i ? int64_t(i->size()) : -1);
    if (i) s += *i;
  }
  return s;
}

std::string be(int64_t v, int width) {
  std::string s;
  for (int sh = 8 * (width - 1); sh >= 0; sh -= 8) s.push_back(char((uint64_t(v) >> sh) & 0xff));
  return s;
}

// The values as "1|NULL|-5", or "unread".
std::string values(const std::string& bytes, KeyType type) {
  auto v = array_values_binary(bytes, type);
  if (!v) return "unread";
  std::string out;
  for (size_t i = 0; i < v->size(); ++i) out += (i ? "|" : "") + ((*v)[i] ? to_text(*(*v)[i]) : "NULL");
  return out;
}

}  // namespace

TEST_CASE("key arrays: array_in's text syntax") {
  CHECK(elements("{1,2,3}") == "1|2|3");
  CHECK(elements("  { 1 ,\t2\n}  ") == "1|2");
  CHECK(elements("{}") == "");
  CHECK(elements("{ }") == "");
  CHECK(elements("{NULL,null,\"NULL\",nULl}") == "NULL|NULL|NULL|NULL");
  CHECK(*(*array_elements("{\"NULL\"}"))[0] == "NULL");  // quoted: the string, not NULL
  CHECK((*array_elements("{NULL}"))[0] == std::nullopt);
  CHECK(elements("{\"a b\", c d ,\"x,y\"}") == "a b|c d|x,y");
  CHECK(elements("{\"q\\\"uote\",back\\\\slash,\\ lead}") == "q\"uote|back\\slash| lead");
  CHECK(elements("{a\\ }") == "a ");            // an escaped space is kept at the end
  CHECK(elements("{ab\"c,d\"e}") == "abc,de");  // quotes may open mid-element
  CHECK(elements("{\"\"}") == "");
  CHECK(elements("{{1,2},{3,4}}") == "1|2|3|4");
  CHECK(elements("{6ba7b810-9dad-11d1-80b4-00c04fd430c8}") == "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
  // What pgrouter does not read: the caller assumes any key.
  for (const char* bad : {"", "1,2", "[0:1]={1,2}", "{1,2", "{1,,2}", "{1,2}x", "{\"1}", "{1\\", "{,}",
                          "{1,{2}}x", "{{{{{{{1}}}}}}}", "{1 {2}}"})
    CHECK_MESSAGE(elements(bad) == "unread", bad);
}

TEST_CASE("key arrays: array_send's binary layout") {
  std::string ints = binary_array(20, {be(1, 8), std::nullopt, be(-(int64_t(1) << 40), 8)});
  CHECK(values(ints, KeyType::int8) == "1|NULL|-1099511627776");
  // An element no int4 key equals matches no row.
  CHECK(values(ints, KeyType::int4) == "1|NULL|NULL");
  CHECK(values(binary_array(21, {be(7, 2), be(-3, 2)}), KeyType::int8) == "7|-3");
  CHECK(values(binary_array(23, {be(70000, 4)}), KeyType::int8) == "70000");
  CHECK(values(binary_array(23, {be(70000, 4)}), KeyType::int2) == "NULL");
  CHECK(values(binary_array(25, {std::string("a b"), std::string("")}), KeyType::text) == "a b|");
  CHECK(values(binary_array(1043, {std::string("x")}), KeyType::text) == "x");
  std::string uuid(16, '\x11');
  CHECK(values(binary_array(2950, {uuid}), KeyType::uuid) == "11111111-1111-1111-1111-111111111111");
  CHECK(values(binary_array(23, {}, 0), KeyType::int8) == "");  // an empty array: no dimensions
  std::string two_dims;
  be32(two_dims, 2);
  be32(two_dims, 0);
  be32(two_dims, 23);
  for (int d = 0; d < 2; ++d) {
    be32(two_dims, 2);
    be32(two_dims, 1);
  }
  for (int v = 1; v <= 4; ++v) {
    be32(two_dims, 4);
    two_dims += be(v, 4);
  }
  CHECK(values(two_dims, KeyType::int4) == "1|2|3|4");
  // Unreadable, or of a type the key is not compared with: the caller assumes any key.
  CHECK(values(binary_array(1700, {std::string("\0\0", 2)}), KeyType::int8) == "unread");  // numeric
  CHECK(values(binary_array(25, {std::string("1")}), KeyType::int8) == "unread");
  CHECK(values(binary_array(23, {be(1, 8)}), KeyType::int8) == "unread");  // width is not the type's
  CHECK(values(binary_array(20, {be(1, 8)}), KeyType::text) == "unread");
  CHECK(values(ints.substr(0, ints.size() - 1), KeyType::int8) == "unread");
  CHECK(values(ints + "x", KeyType::int8) == "unread");
  CHECK(values(std::string(8, '\0'), KeyType::int8) == "unread");
  std::string huge;
  be32(huge, 1);
  be32(huge, 0);
  be32(huge, 23);
  be32(huge, 0x7fffffff);
  be32(huge, 1);
  CHECK(values(huge, KeyType::int4) == "unread");
}
