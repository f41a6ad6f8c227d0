// JSON reader for libpg_query's parse trees (see the header for why it exists).
#include "sql/json_tree.hpp"

#include <cstring>

namespace pgrouter::sql {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

bool JsonTree::parse(std::string_view text) {
  in_ = text;
  pos_ = 0;
  values_.clear();
  unescaped_.clear();
  values_.emplace_back();
  if (!parse_value(0, 0)) return false;
  skip_space();
  return pos_ == in_.size();
}

const JsonValue* JsonTree::member(const JsonValue& object, std::string_view key) const {
  if (object.kind != JsonValue::Kind::object) return nullptr;
  for (const JsonValue* m = first(object); m; m = next(*m))
    if (m->key == key) return m;
  return nullptr;
}

bool JsonTree::parse_string(std::string_view& out) {
  // pos_ is at the opening quote.
  size_t start = ++pos_;
  // Fast path, nearly every string: no escapes before the closing quote.
  const char* base = in_.data();
  auto* quote = static_cast<const char*>(std::memchr(base + start, '"', in_.size() - start));
  if (!quote) return false;
  auto* backslash = static_cast<const char*>(std::memchr(base + start, '\\', size_t(quote - (base + start))));
  if (!backslash) {
    out = in_.substr(start, size_t(quote - (base + start)));
    pos_ = size_t(quote - base) + 1;
    return true;
  }
  pos_ = size_t(backslash - base);
  std::string& s = unescaped_.emplace_back(in_.substr(start, pos_ - start));
  while (pos_ < in_.size()) {
    char c = in_[pos_++];
    if (c == '"') {
      out = s;
      return true;
    }
    if (c != '\\') {
      s += c;
      continue;
    }
    if (pos_ >= in_.size()) return false;
    char e = in_[pos_++];
    switch (e) {
      case '"':
        s += '"';
        break;
      case '\\':
        s += '\\';
        break;
      case '/':
        s += '/';
        break;
      case 'b':
        s += '\b';
        break;
      case 'f':
        s += '\f';
        break;
      case 'n':
        s += '\n';
        break;
      case 'r':
        s += '\r';
        break;
      case 't':
        s += '\t';
        break;
      case 'u': {
        auto read4 = [this](uint32_t& cp) {
          if (pos_ + 4 > in_.size()) return false;
          cp = 0;
          for (int i = 0; i < 4; ++i) {
            int d = hex_digit(in_[pos_++]);
            if (d < 0) return false;
            cp = cp << 4 | static_cast<uint32_t>(d);
          }
          return true;
        };
        uint32_t cp;
        if (!read4(cp)) return false;
        if (cp >= 0xD800 && cp < 0xDC00 && in_.substr(pos_, 2) == "\\u") {
          pos_ += 2;
          uint32_t low;
          if (!read4(low) || low < 0xDC00 || low >= 0xE000) return false;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(s, cp);
        break;
      }
      default:
        return false;
    }
  }
  return false;
}

bool JsonTree::parse_value(uint32_t index, int depth) {
  if (depth > max_depth) return false;
  skip_space();
  if (pos_ >= in_.size()) return false;
  char c = in_[pos_];
  if (c == '{' || c == '[') {
    bool object = c == '{';
    values_[index].kind = object ? JsonValue::Kind::object : JsonValue::Kind::array;
    ++pos_;
    skip_space();
    char close = object ? '}' : ']';
    if (pos_ < in_.size() && in_[pos_] == close) {
      ++pos_;
      return true;
    }
    uint32_t previous = 0;
    for (;;) {
      auto child = static_cast<uint32_t>(values_.size());
      values_.emplace_back();
      if (previous)
        values_[previous].next_sibling = child;
      else
        values_[index].first_child = child;
      previous = child;
      if (object) {
        skip_space();
        std::string_view key;
        if (pos_ >= in_.size() || in_[pos_] != '"' || !parse_string(key)) return false;
        values_[child].key = key;
        skip_space();
        if (pos_ >= in_.size() || in_[pos_] != ':') return false;
        ++pos_;
      }
      if (!parse_value(child, depth + 1)) return false;
      skip_space();
      if (pos_ >= in_.size()) return false;
      if (in_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (in_[pos_] != close) return false;
      ++pos_;
      return true;
    }
  }
  if (c == '"') {
    std::string_view s;
    if (!parse_string(s)) return false;
    values_[index].kind = JsonValue::Kind::string;
    values_[index].text = s;
    return true;
  }
  if (c == 't' || c == 'f' || c == 'n') {
    std::string_view word = c == 't' ? "true" : c == 'f' ? "false" : "null";
    if (in_.compare(pos_, word.size(), word) != 0) return false;
    if (c != 'n') {
      values_[index].kind = JsonValue::Kind::boolean;
      values_[index].boolean = c == 't';
    }
    pos_ += word.size();
    return true;
  }
  size_t start = pos_;
  while (pos_ < in_.size() && (in_[pos_] == '-' || in_[pos_] == '+' || in_[pos_] == '.' || in_[pos_] == 'e' ||
                               in_[pos_] == 'E' || (in_[pos_] >= '0' && in_[pos_] <= '9')))
    ++pos_;
  if (pos_ == start) return false;
  values_[index].kind = JsonValue::Kind::number;
  values_[index].text = in_.substr(start, pos_ - start);
  return true;
}

}  // namespace pgrouter::sql
