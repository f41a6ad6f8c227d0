// The rows of a COPY ... FROM STDIN data stream (text or CSV format), cut where PostgreSQL's COPY cuts them,
// with each row's shard key field read, so that each row can go to its shard. Pure: bytes in (in pieces of
// any size, as CopyData messages bring them), rows out.
#pragma once
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::sharding {

struct CopyFormat {
  bool csv = false;
  char delimiter = '\t';          // CSV: ','
  char quote = '"';               // CSV only
  char escape = '"';              // CSV only
  std::string null_text = "\\N";  // CSV: ""
  bool header = false;            // the first line is a header (every shard's COPY skips one)
  int key_column = -1;            // the key's field, 0-based
};

class CopyRows {
 public:
  enum class State { data, ended, failed };
  // A whole row, its line end included; `key` is its key field's value (nullopt: NULL, or the row has too
  // few fields: its shard's COPY judges it); header rows come with header true.
  using Row = std::function<void(std::string_view row, const std::optional<std::string>& key, bool header)>;

  CopyRows(CopyFormat format, Row on_row) : format_(std::move(format)), on_row_(std::move(on_row)) {}
  // Feeds the next bytes; rows complete in them are handed over.
  void feed(std::string_view data);
  // The data's end: a last row without its line end is handed over.
  void finish();
  State state() const { return state_; }
  const std::string& error() const { return error_; }  // failed: why (a 0A000 message)

 private:
  void take_line(size_t begin, size_t end);  // [begin, end) of pending_ is a row
  std::optional<std::string> key_field(std::string_view line) const;
  std::optional<std::string> text_field(std::string_view line) const;
  std::optional<std::string> csv_field(std::string_view line) const;
  void fail(std::string why);

  CopyFormat format_;
  Row on_row_;
  State state_ = State::data;
  std::string error_;
  std::string pending_;    // bytes of the row being cut
  size_t scanned_ = 0;     // how far pending_ is scanned ...
  bool in_quote_ = false;  // ... CSV: inside a quoted field there
  bool escaped_ = false;   // ... text: after a backslash there
  bool header_done_ = false;
};

}  // namespace pgrouter::sharding
