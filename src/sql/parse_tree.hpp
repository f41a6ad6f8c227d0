// libpg_query's parse of one text, read into a JsonTree: what the classifier and the shard key analysis walk.
// The tree is per thread to keep its capacity; a parse made while another is being walked on the same thread
// (a classify() inside the read-only-function callback) gets its own.
#pragma once
#include <pg_query.h>

#include <optional>
#include <string>
#include <string_view>

#include "sql/json_tree.hpp"

namespace pgrouter::sql {

class ParsedText {
 public:
  explicit ParsedText(std::string_view sql) {
    // libpg_query wants a C string; like PostgreSQL, it reads up to the first NUL.
    thread_local std::string text;
    text.assign(sql);
    parsed_ = pg_query_parse(text.c_str());
    if (text.capacity() > 65536) std::string().swap(text);
    if (parsed_.error) return;
    owns_tls_ = !tls_busy_;
    tree_ = owns_tls_ ? &tls_tree_ : &nested_.emplace();
    tls_busy_ = true;
    if (tree_->parse(parsed_.parse_tree)) stmts_ = tree_->member(tree_->root(), "stmts");
  }
  ~ParsedText() {
    if (tree_) tree_->trim();
    if (owns_tls_) tls_busy_ = false;
    pg_query_free_parse_result(parsed_);
  }
  ParsedText(const ParsedText&) = delete;
  ParsedText& operator=(const ParsedText&) = delete;

  // The "stmts" array, or null when libpg_query or the reader rejected the text.
  const JsonValue* statements() const { return stmts_; }
  const JsonTree& tree() const { return *tree_; }

 private:
  static inline thread_local JsonTree tls_tree_;
  static inline thread_local bool tls_busy_ = false;
  PgQueryParseResult parsed_{};
  std::optional<JsonTree> nested_;
  JsonTree* tree_ = nullptr;
  bool owns_tls_ = false;
  const JsonValue* stmts_ = nullptr;
};

}  // namespace pgrouter::sql
