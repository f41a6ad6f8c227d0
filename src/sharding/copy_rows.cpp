// See the header. Follows PostgreSQL's copyfromparse.c: in text format a backslash escapes the next byte
// (a newline too: it is data), in CSV a newline inside quotes is data; a line of "\." ends the data.
#include "pgrouter/sharding/copy_rows.hpp"

#include <cctype>

namespace pgrouter::sharding {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = char(std::tolower(static_cast<unsigned char>(c)));
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// A text-format field's value: its backslash escapes decoded as PostgreSQL's CopyReadAttributesText does.
std::string unescape_text(std::string_view raw) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\' || i + 1 >= raw.size()) {
      out += c;
      continue;
    }
    char n = raw[++i];
    if (n >= '0' && n <= '7') {
      int v = n - '0';
      for (int k = 0; k < 2 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7'; ++k)
        v = v * 8 + (raw[++i] - '0');
      out += char(v & 0xff);
    } else if (n == 'x' && i + 1 < raw.size() && hex_value(raw[i + 1]) >= 0) {
      int v = hex_value(raw[++i]);
      if (i + 1 < raw.size() && hex_value(raw[i + 1]) >= 0) v = v * 16 + hex_value(raw[++i]);
      out += char(v);
    } else {
      switch (n) {
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        default:
          out += n;
      }
    }
  }
  return out;
}

std::string_view without_line_end(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace

void CopyRows::fail(std::string why) {
  state_ = State::failed;
  error_ = std::move(why);
}

void CopyRows::feed(std::string_view data) {
  if (state_ != State::data) return;
  pending_.append(data);
  size_t start = 0, i = scanned_;
  for (; i < pending_.size() && state_ == State::data; ++i) {
    char c = pending_[i];
    bool last = i + 1 == pending_.size();
    if (!format_.csv) {
      if (escaped_) {
        escaped_ = false;
        continue;
      }
      if (c == '\\') {
        escaped_ = true;
        continue;
      }
    } else if (in_quote_) {
      if (c == format_.escape && format_.escape != format_.quote && last) break;  // its next byte decides
      if (c == format_.escape && !last &&
          (pending_[i + 1] == format_.quote || pending_[i + 1] == format_.escape) &&
          (format_.escape != format_.quote || pending_[i + 1] == format_.quote)) {
        ++i;  // an escaped quote or escape
        continue;
      }
      if (c == format_.quote && format_.escape == format_.quote && last) break;  // "" or the end?
      if (c == format_.quote) in_quote_ = false;
      continue;
    } else if (c == format_.quote) {
      in_quote_ = true;
      continue;
    }
    if (c == '\r') {
      if (last) break;  // \r\n or a lone \r: the next byte decides
      if (pending_[i + 1] != '\n')
        fail("pgrouter: COPY data with carriage-return line ends cannot be split between shards");
      continue;
    }
    if (c == '\n') {
      take_line(start, i + 1);
      start = i + 1;
    }
  }
  pending_.erase(0, start);
  scanned_ = i - start;
}

void CopyRows::finish() {
  if (state_ != State::data || pending_.empty()) return;
  take_line(0, pending_.size());
  pending_.clear();
  scanned_ = 0;
}

void CopyRows::take_line(size_t begin, size_t end) {
  std::string_view line(pending_.data() + begin, end - begin);
  std::string_view content = without_line_end(line);
  if (content == "\\.") {
    state_ = State::ended;
    return;
  }
  if (format_.header && !header_done_) {
    header_done_ = true;
    on_row_(line, std::nullopt, true);
    return;
  }
  on_row_(line, key_field(content), false);
}

std::optional<std::string> CopyRows::key_field(std::string_view line) const {
  if (format_.key_column < 0) return std::nullopt;
  return format_.csv ? csv_field(line) : text_field(line);
}

std::optional<std::string> CopyRows::text_field(std::string_view line) const {
  size_t begin = 0;
  int field = 0;
  for (size_t i = 0; i <= line.size(); ++i) {
    if (i < line.size() && line[i] == '\\') {
      ++i;
      continue;
    }
    if (i < line.size() && line[i] != format_.delimiter) continue;
    if (field++ == format_.key_column) {
      std::string_view raw = line.substr(begin, i - begin);
      if (raw == format_.null_text) return std::nullopt;
      return unescape_text(raw);
    }
    begin = i + 1;
  }
  return std::nullopt;
}

std::optional<std::string> CopyRows::csv_field(std::string_view line) const {
  int field = 0;
  size_t i = 0;
  for (;;) {
    std::string value;
    bool quoted = false, in_quote = false;
    size_t begin = i;
    for (; i < line.size(); ++i) {
      char c = line[i];
      if (in_quote) {
        if (c == format_.escape && i + 1 < line.size() &&
            (line[i + 1] == format_.quote || line[i + 1] == format_.escape) &&
            (format_.escape != format_.quote || line[i + 1] == format_.quote)) {
          value += line[++i];
        } else if (c == format_.quote) {
          in_quote = false;
        } else {
          value += c;
        }
      } else if (c == format_.quote) {
        in_quote = quoted = true;
      } else if (c == format_.delimiter) {
        break;
      } else {
        value += c;
      }
    }
    if (field++ == format_.key_column) {
      if (!quoted && line.substr(begin, i - begin) == format_.null_text) return std::nullopt;
      return value;
    }
    if (i >= line.size()) return std::nullopt;
    ++i;  // past the delimiter
  }
}

}  // namespace pgrouter::sharding
