// Encoding a SHOW command's rows (see the header).
#include "pgrouter/admin/result_set.hpp"

#include <algorithm>

#include "pgrouter/protocol/backend.hpp"
#include "pgrouter/protocol/messages.hpp"

namespace pgrouter::admin {
namespace p = pgrouter::protocol;
namespace be = pgrouter::protocol::backend;

namespace {
void put16(std::string& out, uint16_t v) {
  out += char(v >> 8);
  out += char(v & 0xff);
}
void put32(std::string& out, uint32_t v) {
  for (int shift : {24, 16, 8, 0}) out += char((v >> shift) & 0xff);
}
}  // namespace

ResultSet::ResultSet(std::vector<std::string_view> names, std::vector<std::string_view> numeric) {
  for (auto name : names) {
    bool number = std::find(numeric.begin(), numeric.end(), name) != numeric.end();
    columns_.push_back({std::string(name), number ? kInt8Oid : kTextOid});
  }
}

ResultSet& ResultSet::row() {
  rows_.emplace_back();
  rows_.back().reserve(columns_.size());
  return *this;
}

ResultSet& ResultSet::add(std::string_view text) {
  rows_.back().emplace_back(std::string(text));
  return *this;
}

ResultSet& ResultSet::add(int64_t number) { return add(std::to_string(number)); }

ResultSet& ResultSet::add_null() {
  rows_.back().emplace_back(std::nullopt);
  return *this;
}

void ResultSet::encode(std::string& out, std::string_view tag) const {
  std::string body;
  put16(body, uint16_t(columns_.size()));
  for (const auto& c : columns_) {
    body += c.name;
    body += '\0';
    put32(body, 0);  // no table
    put16(body, 0);  // no column number
    put32(body, c.oid);
    put16(body, c.oid == kInt8Oid ? 8 : 0xffff);  // type size: int8 8 bytes, text variable (-1)
    put32(body, 0xffffffffu);                     // no type modifier
    put16(body, 0);                               // text format
  }
  p::append_header(out, be::kRowDescription, body.size());
  out += body;
  for (const auto& r : rows_) {
    body.clear();
    put16(body, uint16_t(columns_.size()));
    for (size_t i = 0; i < columns_.size(); ++i) {
      const Cell* cell = i < r.size() ? &r[i] : nullptr;
      if (!cell || !*cell) {
        put32(body, 0xffffffffu);
        continue;
      }
      put32(body, uint32_t((*cell)->size()));
      body += **cell;
    }
    p::append_header(out, be::kDataRow, body.size());
    out += body;
  }
  p::append_command_complete(out, tag);
}

}  // namespace pgrouter::admin
