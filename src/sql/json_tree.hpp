// A read-only JSON tree for libpg_query's parse-tree output, built for speed rather than generality.
// libpg_query writes JSON several times faster than protobuf, and a DOM like nlohmann's spends most of its
// time allocating maps, so this reader keeps every value in one reusable vector and points strings into the
// input (only strings with escapes are copied).
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::sql {

struct JsonValue {
  enum class Kind : uint8_t { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  uint32_t first_child = 0;   // index of the first element or member; 0 = none (0 is the root, never a child)
  uint32_t next_sibling = 0;  // index of the next element or member of the parent; 0 = last
  std::string_view key;       // member name when the parent is an object
  std::string_view text;      // string value (unescaped) or number as written
};

class JsonTree {
 public:
  // Deeper input is refused rather than risking the worker's stack: libpg_query nests 2-3 levels per
  // expression level, so this still admits a thousand nested operators.
  static constexpr int max_depth = 4096;

  // Parses `text`, which must outlive the tree. False on malformed or too deeply nested input.
  bool parse(std::string_view text);

  const JsonValue& root() const { return values_[0]; }
  const JsonValue* first(const JsonValue& v) const {
    return v.first_child ? &values_[v.first_child] : nullptr;
  }
  const JsonValue* next(const JsonValue& v) const {
    return v.next_sibling ? &values_[v.next_sibling] : nullptr;
  }
  // The member called `key` of an object, or null.
  const JsonValue* member(const JsonValue& object, std::string_view key) const;
  // That member's text (a string or number as written), or "" when it is absent.
  std::string_view text(const JsonValue& object, std::string_view key) const {
    const JsonValue* m = member(object, key);
    return m ? m->text : std::string_view();
  }
  // Whether that member is the boolean true.
  bool flag(const JsonValue& object, std::string_view key) const {
    const JsonValue* m = member(object, key);
    return m && m->kind == JsonValue::Kind::boolean && m->boolean;
  }

  // Gives memory back after an unusually large tree (a huge IN list), so a worker keeps only what typical
  // statements need.
  void trim() {
    if (values_.capacity() > 16384) std::vector<JsonValue>().swap(values_);
    unescaped_.clear();
  }

 private:
  bool parse_value(uint32_t index, int depth);
  bool parse_string(std::string_view& out);
  void skip_space() {
    while (pos_ < in_.size() &&
           (in_[pos_] == ' ' || in_[pos_] == '\n' || in_[pos_] == '\r' || in_[pos_] == '\t'))
      ++pos_;
  }

  std::string_view in_;
  size_t pos_ = 0;
  std::vector<JsonValue> values_;
  std::deque<std::string> unescaped_;  // deque: growing it never moves the strings values_ point into
};

}  // namespace pgrouter::sql
