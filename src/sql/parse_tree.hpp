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

// DROP TABLE/VIEW/MATERIALIZED VIEW/FOREIGN TABLE name their relations as lists of strings, not RangeVars:
// fn(schema or "", relation, the name as written with its dots) for each.
template <class Fn>
void each_dropped_relation(const JsonTree& tree, const JsonValue& drop, Fn&& fn) {
  std::string_view type = tree.text(drop, "removeType");
  if (type != "OBJECT_TABLE" && type != "OBJECT_VIEW" && type != "OBJECT_MATVIEW" &&
      type != "OBJECT_FOREIGN_TABLE")
    return;
  const JsonValue* objects = tree.member(drop, "objects");
  for (const JsonValue* e = objects ? tree.first(*objects) : nullptr; e; e = tree.next(*e)) {
    const JsonValue* list = tree.first(*e);
    const JsonValue* items = list ? tree.member(*list, "items") : nullptr;
    std::string_view schema, relname;
    std::string name;
    for (const JsonValue* s = items ? tree.first(*items) : nullptr; s; s = tree.next(*s)) {
      schema = relname;
      const JsonValue* str = tree.first(*s);
      relname = str ? tree.text(*str, "sval") : std::string_view();
      if (!name.empty()) name += '.';
      name.append(relname);
    }
    if (!name.empty()) fn(schema, relname, std::move(name));
  }
}

}  // namespace pgrouter::sql
