// A SHOW command's answer: columns (text, or int8 for numbers, as PgBouncer types them) and rows, encoded as
// RowDescription, DataRow... and CommandComplete.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::admin {

constexpr uint32_t kInt8Oid = 20;
constexpr uint32_t kTextOid = 25;

struct Column {
  std::string name;
  uint32_t oid = kTextOid;
};

using Cell = std::optional<std::string>;  // nullopt: SQL NULL

class ResultSet {
 public:
  // Column names; those in `numeric` are int8, the rest text.
  ResultSet(std::vector<std::string_view> names, std::vector<std::string_view> numeric = {});
  const std::vector<Column>& columns() const { return columns_; }
  const std::vector<std::vector<Cell>>& rows() const { return rows_; }
  // Starts a row; cells are then added in column order.
  ResultSet& row();
  ResultSet& add(std::string_view text);
  ResultSet& add(int64_t number);
  ResultSet& add_null();
  // RowDescription, one DataRow per row and CommandComplete(tag), appended to out.
  void encode(std::string& out, std::string_view tag = "SHOW") const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<Cell>> rows_;
};

}  // namespace pgrouter::admin
