// Arrays of shard keys (see the header): array_in's text syntax and array_send's binary layout.
#include "pgrouter/sharding/key_array.hpp"

#include <cstdint>

namespace pgrouter::sharding {

namespace {

// array_isspace: the whitespace array_in skips around elements and braces.
bool array_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

bool is_null_word(std::string_view s) {
  if (s.size() != 4) return false;
  for (size_t i = 0; i < 4; ++i)
    if ((s[i] | 0x20) != "null"[i]) return false;
  return true;
}

// Reads array_in's text: braces nest; an element runs to the next unquoted, unescaped ',' or '}'. Quotes may
// open and close anywhere in an element; whitespace outside quotes and escapes is dropped at either end.
class ArrayText {
 public:
  explicit ArrayText(std::string_view text) : s_(text) {}

  std::optional<std::vector<std::optional<std::string>>> read() {
    skip_space();
    if (at_end() || s_[pos_] != '{') return std::nullopt;  // also a '[lo:hi]=' decoration
    if (!braces()) return std::nullopt;
    skip_space();
    if (!at_end()) return std::nullopt;
    return std::move(out_);
  }

 private:
  bool at_end() const { return pos_ >= s_.size(); }
  void skip_space() {
    while (!at_end() && array_space(s_[pos_])) ++pos_;
  }

  // At '{': its items up to the matching '}'.
  bool braces() {
    if (++depth_ > 6) return false;  // MAXDIM
    ++pos_;
    skip_space();
    if (!at_end() && s_[pos_] == '}') {  // '{}': no elements
      ++pos_;
      --depth_;
      return true;
    }
    for (;;) {
      skip_space();
      if (at_end()) return false;
      bool ok = s_[pos_] == '{' ? braces() : element();
      if (!ok) return false;
      skip_space();
      if (at_end()) return false;
      char c = s_[pos_++];
      if (c == '}') break;
      if (c != ',') return false;
    }
    --depth_;
    return true;
  }

  // One element, from its first non-space character.
  bool element() {
    std::string value;
    size_t kept = 0;  // value's length up to its last quoted, escaped or non-space character
    bool quoted = false, in_quotes = false, escaped = false;
    for (; !at_end(); ++pos_) {
      char c = s_[pos_];
      if (c == '\\') {
        if (++pos_ >= s_.size()) return false;
        value += s_[pos_];
        kept = value.size();
        escaped = true;
      } else if (c == '"') {
        in_quotes = !in_quotes;
        quoted = true;
        kept = value.size();
      } else if (in_quotes) {
        value += c;
        kept = value.size();
      } else if (c == ',' || c == '}') {
        break;
      } else if (c == '{') {
        return false;
      } else {
        value += c;
        if (!array_space(c)) kept = value.size();
      }
    }
    if (in_quotes) return false;
    value.resize(kept);
    if (!quoted && !escaped && value.empty()) return false;  // '{1,,2}'
    if (!quoted && !escaped && is_null_word(value))
      out_.emplace_back(std::nullopt);
    else
      out_.emplace_back(std::move(value));
    return true;
  }

  std::string_view s_;
  size_t pos_ = 0;
  int depth_ = 0;
  std::vector<std::optional<std::string>> out_;
};

uint32_t be32(const char* p) {
  auto u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t(u[0]) << 24 | uint32_t(u[1]) << 16 | uint32_t(u[2]) << 8 | uint32_t(u[3]);
}

// The byte width of an integer element type, 0 for another type.
size_t integer_width(uint32_t oid) {
  constexpr uint32_t kInt2 = 21, kInt4 = 23, kInt8 = 20;
  return oid == kInt2 ? 2 : oid == kInt4 ? 4 : oid == kInt8 ? 8 : 0;
}

// Whether a key of `type` is compared with elements of type `oid` (else PostgreSQL finds no operator, or the
// elements are of a type pgrouter does not read).
bool comparable(KeyType type, uint32_t oid) {
  constexpr uint32_t kText = 25, kVarchar = 1043, kUuid = 2950;
  switch (type) {
    case KeyType::int2:
    case KeyType::int4:
    case KeyType::int8:
      return integer_width(oid) != 0;
    case KeyType::text:
      return oid == kText || oid == kVarchar;
    case KeyType::uuid:
      return oid == kUuid;
  }
  return false;
}

}  // namespace

std::optional<std::vector<std::optional<std::string>>> array_elements(std::string_view text) {
  return ArrayText(text).read();
}

std::optional<std::vector<std::optional<KeyValue>>> array_values_binary(std::string_view bytes,
                                                                        KeyType type) {
  constexpr int kMaxDims = 6;
  size_t pos = 0;
  auto need = [&](size_t n) { return bytes.size() - pos >= n; };
  if (!need(12)) return std::nullopt;
  int32_t ndim = int32_t(be32(bytes.data()));
  uint32_t flags = be32(bytes.data() + 4), oid = be32(bytes.data() + 8);
  pos = 12;
  if (ndim < 0 || ndim > kMaxDims || (flags & ~1u) != 0) return std::nullopt;
  if (ndim > 0 && !comparable(type, oid)) return std::nullopt;
  uint64_t count = ndim > 0 ? 1 : 0;
  for (int d = 0; d < ndim; ++d, pos += 8) {
    if (!need(8)) return std::nullopt;
    int32_t size = int32_t(be32(bytes.data() + pos));
    if (size < 0) return std::nullopt;
    count *= uint64_t(size);
    if (count > bytes.size()) return std::nullopt;  // each element takes at least its 4-byte length
  }
  std::vector<std::optional<KeyValue>> out;
  out.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (!need(4)) return std::nullopt;
    int32_t len = int32_t(be32(bytes.data() + pos));
    pos += 4;
    if (len < 0) {
      out.emplace_back(std::nullopt);
      continue;
    }
    if (!need(size_t(len))) return std::nullopt;
    std::string_view element = bytes.substr(pos, size_t(len));
    pos += size_t(len);
    size_t width = integer_width(oid);
    if (width != 0 && element.size() != width) return std::nullopt;
    out.emplace_back(parse_binary(element, type));
  }
  if (pos != bytes.size()) return std::nullopt;
  return out;
}

}  // namespace pgrouter::sharding
