// plan_scatter(): see the header. The tree is libpg_query's JSON, read with sql::JsonTree as the classifier
// does. The shard text is the client's text with spans replaced (avg calls, GROUP BY positions), hidden
// columns appended to its select list (ORDER BY/GROUP BY expressions it lacks, copied from their clauses) and
// its ORDER BY/LIMIT tail cut, located with libpg_query's locations and a small lexer; the result is parsed
// again and checked, so a splice that went wrong is a refusal, never a different query.
#include "pgrouter/sharding/scatter_plan.hpp"

#include "pgrouter/sharding/column_probe.hpp"

#include <pg_query.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>

#include "pgrouter/sql/builtin_functions.hpp"
#include "pgrouter/util/strings.hpp"
#include "sql/json_tree.hpp"

namespace pgrouter::sharding {
namespace {

using sql::JsonTree;
using sql::JsonValue;

struct Refusal {
  std::string what;
};
[[noreturn]] void refuse(std::string what) { throw Refusal{std::move(what)}; }

// Thrown for a statement PostgreSQL rejects whatever the rows (an ORDER BY or GROUP BY position out of the
// select list, a negative LIMIT or OFFSET): the shards get it unchanged, so the client gets PostgreSQL's own
// error.
struct Rejected {};

// A token of the statement text: enough of PostgreSQL's lexer to skip strings, quoted identifiers and
// comments, and to know the parenthesis depth.
struct Token {
  size_t start = 0, end = 0;
  int depth = 0;  // parentheses/brackets open before the token
  bool word = false;
};

size_t skip_quoted(std::string_view s, size_t i, char q, bool backslash) {
  for (++i; i < s.size(); ++i) {
    if (backslash && s[i] == '\\') {
      ++i;
    } else if (s[i] == q) {
      if (i + 1 < s.size() && s[i + 1] == q)
        ++i;  // doubled quote
      else
        return i + 1;
    }
  }
  return s.size();
}

size_t skip_comment(std::string_view s, size_t i) {
  if (s[i] == '-') {
    size_t nl = s.find('\n', i);
    return nl == std::string_view::npos ? s.size() : nl + 1;
  }
  int nest = 0;  // PostgreSQL's block comments nest
  for (; i + 1 < s.size(); ++i) {
    if (s[i] == '/' && s[i + 1] == '*')
      ++nest, ++i;
    else if (s[i] == '*' && s[i + 1] == '/' && --nest == 0)
      return i + 2;
  }
  return s.size();
}

bool word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || c < 0;
}

// A $tag$...$tag$ string starting at i, or npos when i does not open one.
size_t skip_dollar(std::string_view s, size_t i) {
  size_t j = i + 1;
  while (j < s.size() && s[j] != '$' && word_char(s[j])) ++j;
  if (j >= s.size() || s[j] != '$' || (j > i + 1 && std::isdigit(static_cast<unsigned char>(s[i + 1]))))
    return std::string_view::npos;
  std::string_view tag = s.substr(i, j - i + 1);
  size_t close = s.find(tag, j + 1);
  return close == std::string_view::npos ? s.size() : close + tag.size();
}

std::vector<Token> lex(std::string_view s) {
  std::vector<Token> out;
  int depth = 0;
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if ((c == '-' && i + 1 < s.size() && s[i + 1] == '-') ||
        (c == '/' && i + 1 < s.size() && s[i + 1] == '*')) {
      i = skip_comment(s, i);
      continue;
    }
    Token t{i, i + 1, depth, false};
    if (c == '\'') {
      bool escapes = i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E') && !out.empty() && out.back().end == i;
      t.end = skip_quoted(s, i, '\'', escapes);
    } else if (c == '"') {
      t.end = skip_quoted(s, i, '"', false);
      t.word = true;
    } else if (c == '$' && skip_dollar(s, i) != std::string_view::npos) {
      t.end = skip_dollar(s, i);
    } else if (word_char(c)) {
      while (t.end < s.size() && word_char(s[t.end])) ++t.end;
      t.word = true;
    } else if (c == '(' || c == '[') {
      ++depth;
    } else if (c == ')' || c == ']') {
      t.depth = --depth;
    }
    out.push_back(t);
    i = t.end;
  }
  return out;
}

bool is_word(std::string_view s, const Token& t, std::string_view w) {
  if (!t.word || t.end - t.start != w.size()) return false;
  for (size_t i = 0; i < w.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[t.start + i])) != w[i]) return false;
  return true;
}

// ---- the tree ----

// A node is {"Type": {...}}: its type name and body.
std::string_view type_of(const JsonTree& tree, const JsonValue& node) {
  const JsonValue* m = node.kind == JsonValue::Kind::object ? tree.first(node) : nullptr;
  return m ? m->key : std::string_view{};
}
const JsonValue* body_of(const JsonTree& tree, const JsonValue& node) {
  return node.kind == JsonValue::Kind::object ? tree.first(node) : nullptr;
}
const JsonValue* field(const JsonTree& tree, const JsonValue* body, std::string_view key) {
  return body ? tree.member(*body, key) : nullptr;
}

// libpg_query's JSON leaves an Integer's value out when it is not positive ({"ival": {}} for 0 and for -5),
// so such a constant (an A_Const's body) is read from the statement text at its location: digits, or a minus
// sign (spaces and comments may follow it) and digits. A text that is neither is refused rather than guessed.
int64_t unstated_integer(const JsonTree& tree, const JsonValue& body, std::string_view sql) {
  const JsonValue* loc = tree.member(body, "location");
  size_t at = 0;
  if (!loc || std::from_chars(loc->text.data(), loc->text.data() + loc->text.size(), at).ec != std::errc{} ||
      at >= sql.size())
    refuse("a statement pgrouter could not rewrite");
  bool negative = sql[at] == '-';
  if (negative) {
    ++at;
    for (size_t next = at;; at = next) {
      while (at < sql.size() && std::isspace(static_cast<unsigned char>(sql[at]))) ++at;
      next = util::sql_comment_end(sql, at);
      if (next == at) break;
    }
  }
  size_t digits = at;
  while (at < sql.size() && std::isdigit(static_cast<unsigned char>(sql[at]))) ++at;
  int64_t v = 0;
  if (at == digits || (at < sql.size() && (util::sql_ident_char(sql[at]) || sql[at] == '.')) ||
      std::from_chars(sql.data() + digits, sql.data() + at, v).ec != std::errc{})
    refuse("a statement pgrouter could not rewrite");
  return negative ? -v : v;
}

// The node written without its locations: two expressions are "the same" when these strings are. `sql` is the
// text the tree was parsed from (for the integers the tree leaves out).
void canon(const JsonTree& tree, const JsonValue& v, std::string_view sql, std::string& out) {
  switch (v.kind) {
    case JsonValue::Kind::object:
    case JsonValue::Kind::array:
      out += v.kind == JsonValue::Kind::object ? '{' : '[';
      for (const JsonValue* c = tree.first(v); c; c = tree.next(*c)) {
        if (c->key == "location") continue;
        out.append(c->key).push_back(':');
        if (c->key == "ival" && c->kind == JsonValue::Kind::object && !tree.first(*c))
          out += std::to_string(unstated_integer(tree, v, sql));
        else
          canon(tree, *c, sql, out);
        out += ',';
      }
      out += '}';
      break;
    case JsonValue::Kind::string:
      out.append("\"").append(v.text).append("\"");
      break;
    default:
      out.append(v.kind == JsonValue::Kind::boolean ? (v.boolean ? "t" : "f") : v.text);
  }
}
std::string canon(const JsonTree& tree, const JsonValue& v, std::string_view sql) {
  std::string out;
  canon(tree, v, sql, out);
  return out;
}

int location_of(const JsonTree& tree, const JsonValue& node) {
  const JsonValue* loc = field(tree, body_of(tree, node), "location");
  return loc ? std::atoi(std::string(loc->text).c_str()) : -1;
}

// An A_Const holding an Integer (not a Float, not a string): what GROUP BY and ORDER BY read as a position.
bool integer_const(const JsonTree& tree, const JsonValue& node) {
  return type_of(tree, node) == "A_Const" && field(tree, body_of(tree, node), "ival");
}

// The integer of an A_Const node, or nullopt for another node or another constant.
std::optional<int64_t> int_const(const JsonTree& tree, const JsonValue& node, std::string_view sql) {
  if (type_of(tree, node) != "A_Const") return std::nullopt;
  const JsonValue* body = body_of(tree, node);
  std::string_view text;
  if (const JsonValue* iv = field(tree, body, "ival")) {
    const JsonValue* n = tree.member(*iv, "ival");
    if (!n) return unstated_integer(tree, *body, sql);
    text = n->text;
  } else if (const JsonValue* fv = field(tree, body, "fval")) {
    const JsonValue* n = tree.member(*fv, "fval");
    text = n ? n->text : "";
  } else {
    return std::nullopt;
  }
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size()) return std::nullopt;
  return v;
}

// The last name of a qualified name list (funcname, collname, ColumnRef fields), and its schema if any.
std::pair<std::string_view, std::string_view> last_name(const JsonTree& tree, const JsonValue* list) {
  std::string_view schema, name;
  for (const JsonValue* c = list ? tree.first(*list) : nullptr; c; c = tree.next(*c)) {
    schema = name;
    const JsonValue* sv = field(tree, body_of(tree, *c), "sval");
    name = sv ? sv->text : std::string_view{};
  }
  return {schema, name};
}

// ---- aggregates ----

// Built-in aggregates the merge cannot combine exactly, so that none is mistaken for a plain function.
constexpr std::string_view unmergeable_aggregates[] = {
    "any_value",
    "bit_and",
    "bit_or",
    "bit_xor",
    "corr",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "mode",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
};

std::optional<ColumnRole> mergeable_aggregate(std::string_view name) {
  if (name == "count") return ColumnRole::count;
  if (name == "sum") return ColumnRole::sum;
  if (name == "min") return ColumnRole::min;
  if (name == "max") return ColumnRole::max;
  if (name == "bool_and") return ColumnRole::bool_and;
  if (name == "bool_or") return ColumnRole::bool_or;
  if (name == "every") return ColumnRole::every;
  if (name == "avg") return ColumnRole::avg_sum;
  return std::nullopt;
}

bool aggregate_name(std::string_view schema, std::string_view name) {
  if (!schema.empty() && schema != "pg_catalog") return false;
  return mergeable_aggregate(name) || name == "string_agg" || name == "array_agg" ||
         std::find(std::begin(unmergeable_aggregates), std::end(unmergeable_aggregates), name) !=
             std::end(unmergeable_aggregates);
}

// The checks every function call gets, wherever it is.
void check_call(const JsonTree& tree, const JsonValue* fc) {
  if (field(tree, fc, "over")) refuse("window functions over sharded rows");
  if (field(tree, fc, "agg_within_group")) refuse("ordered-set aggregates");
}

// Refuses an expression (not itself a top-level aggregate) holding an aggregate, a subquery, GROUPING() or a
// function pgrouter does not know, which could be a user-defined aggregate.
void check_expression(const JsonTree& tree, const JsonValue& v) {
  if (v.kind != JsonValue::Kind::object && v.kind != JsonValue::Kind::array) return;
  for (const JsonValue* c = tree.first(v); c; c = tree.next(*c)) {
    if (c->key == "SubLink") refuse("a subquery in the select list");
    if (c->key == "GroupingFunc") refuse("GROUPING()");
    if (c->key == "FuncCall") {
      check_call(tree, c);
      auto [schema, name] = last_name(tree, field(tree, c, "funcname"));
      if (aggregate_name(schema, name) || field(tree, c, "agg_star"))
        refuse("aggregate inside an expression (e.g. sum(x)+1)");
      if (sql::builtin_function(schema, name) == sql::BuiltinFunction::unknown)
        refuse("function " + std::string(name) + " in the select list (it could be an aggregate)");
    }
    check_expression(tree, *c);
  }
}

// True if `v` calls a function pgrouter does not know (outside nested subqueries, which get their own check).
bool calls_unknown_function(const JsonTree& tree, const JsonValue& v) {
  if (v.kind != JsonValue::Kind::object && v.kind != JsonValue::Kind::array) return false;
  for (const JsonValue* c = tree.first(v); c; c = tree.next(*c)) {
    if (c->key == "SelectStmt") continue;
    if (c->key == "FuncCall") {
      auto [schema, name] = last_name(tree, field(tree, c, "funcname"));
      if (sql::builtin_function(schema, name) == sql::BuiltinFunction::unknown) return true;
    }
    if (calls_unknown_function(tree, *c)) return true;
  }
  return false;
}

// A subquery sees one shard's rows: anything that summarises them would be per shard. Aggregates can only be
// in its select list or ORDER BY, so an unknown function there could be a user-defined aggregate.
void check_nested_select(const JsonTree& tree, const JsonValue* sel) {
  for (std::string_view key :
       {"groupClause", "havingClause", "distinctClause", "limitCount", "limitOffset", "windowClause", "larg"})
    if (field(tree, sel, key)) refuse("a subquery that aggregates, groups, de-duplicates or limits rows");
  for (std::string_view key : {"targetList", "sortClause"}) {
    const JsonValue* list = field(tree, sel, key);
    if (list && calls_unknown_function(tree, *list))
      refuse("a function pgrouter does not know in a subquery's select list (it could be an aggregate)");
  }
}

// Whether a column reference of the statement outside its GROUP BY and ORDER BY (which may name output
// columns) ends in `name`: then `name` is, or may be, an input column.
bool names_column(const JsonTree& tree, const JsonValue& v, std::string_view name, bool top) {
  if (v.kind != JsonValue::Kind::object && v.kind != JsonValue::Kind::array) return false;
  for (const JsonValue* c = tree.first(v); c; c = tree.next(*c)) {
    if (top && (c->key == "groupClause" || c->key == "sortClause")) continue;
    if (c->key == "ColumnRef" && last_name(tree, field(tree, c, "fields")).second == name) return true;
    if (names_column(tree, *c, name, false)) return true;
  }
  return false;
}

// Walks the whole statement for what is refused wherever it appears.
void check_everywhere(const JsonTree& tree, const JsonValue& v, bool top) {
  if (v.kind != JsonValue::Kind::object && v.kind != JsonValue::Kind::array) return;
  for (const JsonValue* c = tree.first(v); c; c = tree.next(*c)) {
    if (c->key == "FuncCall") {
      check_call(tree, c);
      auto [schema, name] = last_name(tree, field(tree, c, "funcname"));
      if (!top && (aggregate_name(schema, name) || field(tree, c, "agg_star")))
        refuse("a subquery that aggregates, groups, de-duplicates or limits rows");
    }
    bool nested = c->key == "SelectStmt";
    if (nested) check_nested_select(tree, c);
    check_everywhere(tree, *c, top && !nested);
  }
}

struct Target {
  const JsonValue* val = nullptr;
  std::string_view alias;
  std::string canon;
  std::optional<ColumnRole> aggregate;
  bool group_key = false;
  bool collate_c = false;  // the expression is `x COLLATE "C"`
  bool star = false;       // `*` or `t.*`
  int location = -1;       // of the aggregate call
  std::string text;        // hidden columns: the expression as written in its clause
  std::string hidden_alias;
};

// PostgreSQL's output name for a select item without an alias (FigureColname), with its strength (2: a
// name, 1: a fallback such as a cast's type, 0: "?column?"); nullopt for node types pgrouter does not know.
std::optional<std::pair<std::string, int>> implicit_name(const JsonTree& tree, const JsonValue& node) {
  std::string_view type = type_of(tree, node);
  const JsonValue* body = body_of(tree, node);
  if (type == "ColumnRef" || type == "FuncCall")
    return std::pair{
        std::string(last_name(tree, field(tree, body, type == "FuncCall" ? "funcname" : "fields")).second),
        2};
  if (type == "CollateClause") return implicit_name(tree, *field(tree, body, "arg"));
  if (type == "TypeCast") {
    auto inner = implicit_name(tree, *field(tree, body, "arg"));
    if (!inner || inner->second == 2) return inner;
    const JsonValue* type_name = field(tree, body, "typeName");
    return std::pair{
        std::string(last_name(tree, type_name ? tree.member(*type_name, "names") : nullptr).second), 1};
  }
  if (type == "CaseExpr") return std::pair{std::string("case"), 1};
  if (type == "CoalesceExpr") return std::pair{std::string("coalesce"), 2};
  if (type == "A_Expr") {
    const JsonValue* kind = field(tree, body, "kind");
    if (kind && kind->text == "AEXPR_NULLIF") return std::pair{std::string("nullif"), 2};
    return std::pair{std::string("?column?"), 0};
  }
  if (type == "A_Const" || type == "ParamRef" || type == "BoolExpr" || type == "NullTest" ||
      type == "BooleanTest")
    return std::pair{std::string("?column?"), 0};
  return std::nullopt;
}

// A ColumnRef of one unqualified name: ORDER BY resolves it against output names first.
std::optional<std::string_view> bare_name(const JsonTree& tree, const JsonValue& node) {
  if (type_of(tree, node) != "ColumnRef") return std::nullopt;
  const JsonValue* fields = field(tree, body_of(tree, node), "fields");
  const JsonValue* first = fields ? tree.first(*fields) : nullptr;
  if (!first || tree.next(*first) || type_of(tree, *first) != "String") return std::nullopt;
  return last_name(tree, fields).second;
}

bool is_c_collation(const JsonTree& tree, const JsonValue& node) {
  if (type_of(tree, node) != "CollateClause") return false;
  auto name = last_name(tree, field(tree, body_of(tree, node), "collname")).second;
  return name == "C" || name == "POSIX";
}

// A top-level aggregate call: its role, or a refusal naming why it cannot be merged.
std::optional<ColumnRole> classify_aggregate(const JsonTree& tree, const JsonValue* fc, Target& t) {
  check_call(tree, fc);
  auto [schema, name] = last_name(tree, field(tree, fc, "funcname"));
  if (!aggregate_name(schema, name)) return std::nullopt;
  if (name == "string_agg" || name == "array_agg") refuse("string_agg/array_agg");
  if (field(tree, fc, "agg_distinct"))
    refuse(name == "count" ? "count(DISTINCT ...)" : "aggregates over DISTINCT values");
  auto role = mergeable_aggregate(name);
  if (!role) refuse("the aggregate " + std::string(name) + " across shards");
  if (field(tree, fc, "agg_order")) refuse("aggregates with ORDER BY in their arguments");
  if (*role == ColumnRole::avg_sum && field(tree, fc, "agg_filter")) refuse("avg(...) FILTER");
  const JsonValue* args = field(tree, fc, "args");
  for (const JsonValue* a = args ? tree.first(*args) : nullptr; a; a = tree.next(*a)) {
    check_expression(tree, *a);
    if ((*role == ColumnRole::min || *role == ColumnRole::max) && is_c_collation(tree, *a))
      t.collate_c = true;
  }
  return role;
}

// ---- the plan ----

struct Splice {
  size_t start, end;
  std::string text;
};

class Planner {
 public:
  Planner(const JsonTree& tree, const JsonValue* sel, std::string_view text)
      : tree_(tree), sel_(sel), text_(text), tokens_(lex(text)) {}

  ScatterPlan run() {
    check_clauses();
    read_targets();
    check_everywhere(tree_, *sel_, true);
    read_group_by();
    read_limit();
    build_columns();
    read_having();
    read_order_by();
    add_hidden_columns();
    plan_.shard_sql = rewrite();
    return std::move(plan_);
  }

  // What the shard text's hidden select items must be: alias and canonical expression (for an avg's sum and
  // count: the function's name and its arguments' canonical form).
  struct HiddenCheck {
    std::string alias, canon, function;
  };
  // The GROUP BY names taken for output names, on the assumption that no input column has them.
  const std::vector<std::string>& group_aliases() const { return group_aliases_; }

  std::vector<HiddenCheck> hidden_checks() const {
    std::vector<HiddenCheck> out;
    for (const Target& t : hidden_) {
      if (t.aggregate != ColumnRole::avg_sum) {
        out.push_back({t.hidden_alias, t.canon, {}});
        continue;
      }
      const JsonValue* args = field(tree_, body_of(tree_, *t.val), "args");
      std::string c = args ? canon(tree_, *args, text_) : std::string();
      out.push_back({t.hidden_alias, c, "sum"});
      out.push_back({t.hidden_alias + "_count", c, "count"});
    }
    return out;
  }

 private:
  void check_clauses() {
    const JsonValue* op = field(tree_, sel_, "op");
    if (op && op->text != "SETOP_NONE") refuse("set operations (UNION/INTERSECT/EXCEPT)");
    if (field(tree_, sel_, "lockingClause")) refuse("FOR UPDATE/SHARE");
    if (field(tree_, sel_, "withClause")) refuse("WITH queries");
    if (field(tree_, sel_, "intoClause")) refuse("SELECT INTO");
    if (field(tree_, sel_, "valuesLists")) refuse("VALUES");
    // Without FROM every shard would return the same rows: the client would get them once per shard.
    if (!field(tree_, sel_, "fromClause")) refuse("a SELECT without FROM");
    if (field(tree_, sel_, "windowClause")) refuse("window functions over sharded rows");
    const JsonValue* lo = field(tree_, sel_, "limitOption");
    if (lo && lo->text == "LIMIT_OPTION_WITH_TIES") refuse("FETCH ... WITH TIES");
    if (const JsonValue* d = field(tree_, sel_, "distinctClause")) {
      const JsonValue* first = tree_.first(*d);
      if (first && tree_.first(*first)) refuse("DISTINCT ON");
      plan_.distinct = true;
    }
  }

  void read_targets() {
    const JsonValue* list = field(tree_, sel_, "targetList");
    for (const JsonValue* r = list ? tree_.first(*list) : nullptr; r; r = tree_.next(*r)) {
      const JsonValue* body = body_of(tree_, *r);
      Target t;
      t.val = field(tree_, body, "val");
      if (const JsonValue* n = field(tree_, body, "name")) t.alias = n->text;
      if (!t.val) refuse("an empty select item");
      t.canon = canon(tree_, *t.val, text_);
      std::string_view type = type_of(tree_, *t.val);
      const JsonValue* vb = body_of(tree_, *t.val);
      if (type == "ColumnRef") {
        const JsonValue* fields = field(tree_, vb, "fields");
        for (const JsonValue* f = fields ? tree_.first(*fields) : nullptr; f; f = tree_.next(*f))
          if (type_of(tree_, *f) == "A_Star") plan_.star = t.star = true;
      } else if (type == "FuncCall" && (t.aggregate = classify_aggregate(tree_, vb, t))) {
        t.location = location_of(tree_, *t.val);
        plan_.aggregate = true;
      } else if (type == "SubLink") {
        refuse("a subquery in the select list");
      }
      if (!t.aggregate) {
        check_expression(tree_, *t.val);
        t.collate_c = is_c_collation(tree_, *t.val);
      }
      targets_.push_back(std::move(t));
    }
    if (plan_.star && plan_.aggregate) refuse("* with aggregates");
  }

  // A GROUP BY/ORDER BY item naming a select item: by position, by alias or by the same expression. An
  // integer that is no position of the select list is PostgreSQL's error on every server.
  std::optional<size_t> find_target(const JsonValue& node, bool by_alias) {
    if (auto pos = int_const(tree_, node, text_)) {
      if (*pos >= 1 && size_t(*pos) <= targets_.size()) return size_t(*pos - 1);
      if (integer_const(tree_, node)) throw Rejected{};
      refuse("a position that is not in the select list");
      return std::nullopt;  // (refuse() returns: no index past the items may come out of here)
    }
    if (by_alias && type_of(tree_, node) == "ColumnRef") {
      auto [schema, name] = last_name(tree_, field(tree_, body_of(tree_, node), "fields"));
      if (schema.empty())
        for (size_t i = 0; i < targets_.size(); ++i)
          if (targets_[i].alias == name) return i;
    }
    return find_expression(node);
  }

  // The select item that is the same expression as `node`.
  std::optional<size_t> find_expression(const JsonValue& node) const {
    std::string c = canon(tree_, node, text_);
    for (size_t i = 0; i < targets_.size(); ++i)
      if (targets_[i].canon == c) return i;
    return std::nullopt;
  }

  void read_group_by() {
    const JsonValue* list = field(tree_, sel_, "groupClause");
    if (!list) return;
    if (plan_.star) refuse("* with GROUP BY");
    plan_.aggregate = true;
    std::vector<std::string> items = clause_items("group");
    size_t n = 0;
    for (const JsonValue* g = tree_.first(*list); g; g = tree_.next(*g), ++n) {
      if (type_of(tree_, *g) == "GroupingSet") refuse("GROUP BY ROLLUP/CUBE/GROUPING SETS");
      auto i = find_target(*g, false);
      if (!i) i = group_alias(*g);
      if (!i) {  // the shards' groups can only be matched on their keys: the key becomes a hidden column
        check_expression(tree_, *g);
        if (!find_hidden(canon(tree_, *g, text_))) add_hidden(*g, items, n, "pgr_group_").group_key = true;
        continue;
      }
      if (targets_[*i].aggregate) refuse("GROUP BY an aggregate");
      targets_[*i].group_key = true;
      if (int_const(tree_, *g, text_)) group_positions_.push_back({location_of(tree_, *g), *i});
    }
  }

  // A GROUP BY name that is no input column but a select item's output name: PostgreSQL groups by that item
  // (findTargetlistEntrySQL92), and so do the shards, which get the name as written. pgrouter does not know
  // the tables' columns: it takes the name for an input column only where the statement uses it as one.
  // A table column the statement never mentions is invisible here, so the session asks a server first
  // (group_aliases(), ScatterPlan::input_column_probes).
  std::optional<size_t> group_alias(const JsonValue& node) {
    auto name = bare_name(tree_, node);
    if (!name || names_column(tree_, *sel_, *name, true)) return std::nullopt;
    auto i = target_named(*name, "GROUP BY");
    if (i) group_aliases_.emplace_back(*name);
    return i;
  }

  // The value of a LIMIT or OFFSET: nullopt for none (LIMIT ALL, LIMIT NULL).
  std::optional<int64_t> limit_value(const JsonValue* node) {
    if (!node) return std::nullopt;
    std::string_view type = type_of(tree_, *node);
    if (type == "ParamRef") refuse("LIMIT/OFFSET parameters");
    if (type == "A_Const" && field(tree_, body_of(tree_, *node), "isnull")) return std::nullopt;
    auto v = int_const(tree_, *node, text_);
    if (!v) refuse("LIMIT/OFFSET that is not a constant or parameter");
    if (*v < 0) throw Rejected{};  // PostgreSQL's 2201W/2201X
    limit_locations_.push_back(location_of(tree_, *node));
    return v;
  }

  void read_limit() {
    plan_.limit = limit_value(field(tree_, sel_, "limitCount"));
    plan_.offset = limit_value(field(tree_, sel_, "limitOffset"));
    if (plan_.offset == 0) plan_.offset.reset();
  }

  void build_columns() {
    if (plan_.star) return;
    for (const Target& t : targets_) add_column(t);
  }

  // The shard column(s) and the client column of a select item or hidden column.
  void add_column(const Target& t) {
    size_t i = plan_.client_columns.size();
    ClientColumn cc{plan_.columns.size(), false, {}};
    ColumnRole role = t.group_key ? ColumnRole::group_key : t.aggregate.value_or(ColumnRole::plain);
    if (plan_.aggregate && role == ColumnRole::plain && type_of(tree_, *t.val) != "A_Const")
      refuse("a select item that is neither a GROUP BY key nor a supported aggregate");
    plan_.columns.push_back({role, i, t.collate_c});
    if (role == ColumnRole::avg_sum) {
      cc.avg = true;
      cc.name = t.alias.empty() ? "avg" : std::string(t.alias);
      plan_.columns.push_back({ColumnRole::avg_count, i, false});
    }
    plan_.client_columns.push_back(std::move(cc));
  }

  void add_hidden_columns() {
    if (!plan_.star)
      for (const Target& t : hidden_) add_column(t);
    plan_.hidden = hidden_.size();
  }

  std::optional<size_t> find_hidden(const std::string& c) const {
    for (size_t i = 0; i < hidden_.size(); ++i)
      if (hidden_[i].canon == c) return i;
    return std::nullopt;
  }

  // A new hidden column for the n-th item of its clause, whose text is items[n]; its alias is numbered per
  // prefix (pgr_group_1, pgr_sort_1, ...).
  Target& add_hidden(const JsonValue& node, const std::vector<std::string>& items, size_t n,
                     std::string_view prefix) {
    if (n >= items.size()) refuse("a statement pgrouter could not rewrite");
    // A name of the statement equal to a hidden column's alias could resolve to that column on the shards.
    std::string lower(text_);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (lower.find("pgr_sort_") != std::string::npos || lower.find("pgr_group_") != std::string::npos)
      refuse("names starting with pgr_sort_ or pgr_group_ (pgrouter's hidden columns)");
    size_t number = 1 + std::count_if(hidden_.begin(), hidden_.end(),
                                      [&](const Target& h) { return h.hidden_alias.starts_with(prefix); });
    Target& t = hidden_.emplace_back();
    t.val = &node;
    t.canon = canon(tree_, node, text_);
    t.text = items[n];
    t.location = location_of(tree_, node);
    t.hidden_alias = std::string(prefix) + std::to_string(number);
    return t;
  }

  // HAVING over partial aggregates would drop groups another shard completes, so the merge evaluates it:
  // only ANDed comparisons of a select item with a constant.
  void read_having() {
    const JsonValue* having = field(tree_, sel_, "havingClause");
    if (!having) return;
    plan_.aggregate = true;
    const JsonValue* body = body_of(tree_, *having);
    const JsonValue* boolop = type_of(tree_, *having) == "BoolExpr" ? field(tree_, body, "boolop") : nullptr;
    if (boolop && boolop->text != "AND_EXPR") refuse("HAVING across shards (other than ANDed comparisons)");
    if (boolop) {
      const JsonValue* args = field(tree_, body, "args");
      for (const JsonValue* a = args ? tree_.first(*args) : nullptr; a; a = tree_.next(*a)) having_term(*a);
    } else {
      having_term(*having);
    }
  }

  void having_term(const JsonValue& node) {
    const char* why = "HAVING across shards (other than a select item compared with a constant)";
    const JsonValue* body = body_of(tree_, node);
    const JsonValue* kind = field(tree_, body, "kind");
    const JsonValue* lexpr = field(tree_, body, "lexpr");
    const JsonValue* rexpr = field(tree_, body, "rexpr");
    if (type_of(tree_, node) != "A_Expr" || !kind || kind->text != "AEXPR_OP" || !lexpr || !rexpr)
      refuse(why);
    auto [schema, op] = last_name(tree_, field(tree_, body, "name"));
    if (!schema.empty() || (op != "<" && op != "<=" && op != "=" && op != "<>" && op != ">" && op != ">="))
      refuse(why);
    // (A constant on the left is a value, not a position as in GROUP BY: it is no select item.)
    auto i = find_expression(*lexpr);
    if (!i || type_of(tree_, *rexpr) != "A_Const") refuse(why);
    HavingTerm term{*i, std::string(op), {}, false};
    const JsonValue* cbody = body_of(tree_, *rexpr);
    if (auto n = int_const(tree_, *rexpr, text_)) {
      term.constant = std::to_string(*n);
    } else if (const JsonValue* fv = field(tree_, cbody, "fval")) {
      const JsonValue* text = tree_.member(*fv, "fval");
      term.constant = text ? std::string(text->text) : "";
    } else if (const JsonValue* sv = field(tree_, cbody, "sval")) {
      const JsonValue* text = tree_.member(*sv, "sval");
      term.constant = text ? std::string(text->text) : "";
      term.string_constant = true;
    } else {
      refuse(why);
    }
    plan_.having.push_back(std::move(term));
  }

  void read_order_by() {
    const JsonValue* list = field(tree_, sel_, "sortClause");
    std::vector<std::string> items = list ? clause_items("order") : std::vector<std::string>{};
    size_t n = 0;
    for (const JsonValue* s = list ? tree_.first(*list) : nullptr; s; s = tree_.next(*s), ++n) {
      const JsonValue* sb = body_of(tree_, *s);
      if (field(tree_, sb, "useOp")) refuse("ORDER BY ... USING");
      const JsonValue* full = field(tree_, sb, "node");
      const JsonValue* node = full;
      SortKey key;
      if (is_c_collation(tree_, *node)) {
        key.collate_c = true;
        node = field(tree_, body_of(tree_, *node), "arg");
      }
      if (auto i = sort_target(*node, node == full)) {
        key.column = *i;
        // (With `*` a position may be past the select items: the shards' columns, none known to be "C".)
        key.collate_c = key.collate_c || (*i < targets_.size() && targets_[*i].collate_c);
      } else {
        key.hidden = true;
        key.column = hidden_sort_key(*node, *full, items, n);
        key.collate_c = key.collate_c || hidden_[key.column].collate_c;
      }
      const JsonValue* dir = field(tree_, sb, "sortby_dir");
      const JsonValue* nulls = field(tree_, sb, "sortby_nulls");
      key.descending = dir && dir->text == "SORTBY_DESC";
      key.nulls_first = nulls && nulls->text != "SORTBY_NULLS_DEFAULT" ? nulls->text == "SORTBY_NULLS_FIRST"
                                                                       : key.descending;
      plan_.order_by.push_back(key);
    }
  }

  // The select item an ORDER BY item names, as PostgreSQL resolves it: a position; a bare name (not under
  // COLLATE) that is an output column's name, before any input column; else an equal expression. With `*`
  // only positions, as the other columns' positions are only known from the shards.
  std::optional<size_t> sort_target(const JsonValue& node, bool bare) {
    auto name = bare ? bare_name(tree_, node) : std::nullopt;
    if (plan_.star) {
      auto pos = int_const(tree_, node, text_);
      if (pos && *pos < 1) {
        if (integer_const(tree_, node)) throw Rejected{};
        refuse("a position that is not in the select list");
        return std::nullopt;
      }
      if (pos) return size_t(*pos - 1);
      if (name && target_named(*name)) refuse("ORDER BY a select item's name with * in the select list");
      return std::nullopt;
    }
    if (int_const(tree_, node, text_)) return find_target(node, false);
    if (name)
      if (auto i = target_named(*name)) return i;
    return find_target(node, false);
  }

  // The select item whose output name (its alias, else PostgreSQL's implicit name) is `name`. Refuses when
  // none is but an item's implicit name is unknown to pgrouter: it could be `name`.
  std::optional<size_t> target_named(std::string_view name, std::string_view clause = "ORDER BY") {
    std::optional<size_t> found;
    bool unknown = false;
    for (size_t i = 0; i < targets_.size(); ++i) {
      const Target& t = targets_[i];
      if (t.star) continue;  // its columns are input columns: the same values by either route
      auto implicit = t.alias.empty() ? implicit_name(tree_, *t.val) : std::pair{std::string(t.alias), 2};
      unknown = unknown || !implicit;
      if (!implicit || implicit->first != name) continue;
      if (found && targets_[*found].canon != t.canon) refuse("an ambiguous " + std::string(clause) + " name");
      if (!found) found = i;
    }
    if (!found && unknown) refuse(std::string(clause) + " a name pgrouter cannot tell from a select item's");
    return found;
  }

  // The hidden column an ORDER BY item not in the select list sorts on: a hidden GROUP BY key or an earlier
  // hidden sort key, else a new one. With aggregates only an aggregate can be added: anything else would
  // have no single value per group.
  size_t hidden_sort_key(const JsonValue& node, const JsonValue& full, const std::vector<std::string>& items,
                         size_t n) {
    if (auto h = find_hidden(canon(tree_, node, text_))) return *h;
    if (auto h = find_hidden(canon(tree_, full, text_))) return *h;
    if (plan_.distinct) refuse("ORDER BY an expression not in the select list with DISTINCT");
    std::string_view type = type_of(tree_, full);
    Target probe;
    std::optional<ColumnRole> role =
        type == "FuncCall" ? classify_aggregate(tree_, body_of(tree_, full), probe) : std::nullopt;
    if (!plan_.aggregate && role) refuse("ORDER BY an aggregate without GROUP BY");
    if (plan_.aggregate && !role)
      refuse("ORDER BY an expression that is neither in the select list, a GROUP BY key nor an aggregate");
    if (!role) check_expression(tree_, full);
    Target& t = add_hidden(full, items, n, "pgr_sort_");
    t.aggregate = role;
    t.collate_c = probe.collate_c || is_c_collation(tree_, full);
    return hidden_.size() - 1;
  }

  std::string rewrite();
  std::string hidden_select_items() const;
  std::pair<std::string, size_t> avg_arguments(int location) const;
  size_t token_at(int location) const;
  size_t tail_start() const;
  size_t select_list_end() const;
  bool after_label(size_t i) const;
  bool ends_clause(size_t i) const;
  std::vector<std::string> clause_items(std::string_view keyword) const;

  const JsonTree& tree_;
  const JsonValue* sel_;
  std::string_view text_;
  std::vector<std::string> group_aliases_;
  std::vector<Token> tokens_;
  std::vector<Target> targets_;
  std::vector<Target> hidden_;  // ORDER BY/GROUP BY expressions not in the select list, in column order
  std::vector<std::pair<int, size_t>> group_positions_;  // GROUP BY <position>: its location, target
  std::vector<int> limit_locations_;
  ScatterPlan plan_;
};

size_t Planner::token_at(int location) const {
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (int(tokens_[i].start) == location) return i;
  refuse("a statement pgrouter could not rewrite");
}

// Token i is a column label or a qualified name's field (`AS limit`, `t.limit`): not a keyword, as column
// labels may be reserved words.
bool Planner::after_label(size_t i) const {
  return i > 0 && (is_word(text_, tokens_[i - 1], "as") || text_[tokens_[i - 1].start] == '.');
}

// Token i (at depth 0) ends a GROUP BY or ORDER BY clause: the keyword of a clause that can follow, or `;`.
bool Planner::ends_clause(size_t i) const {
  if (text_[tokens_[i].start] == ';') return true;
  if (after_label(i)) return false;
  for (std::string_view w : {"having", "window", "order", "limit", "offset", "fetch", "for"})
    if (is_word(text_, tokens_[i], w)) return true;
  return false;
}

// The text of each item of the statement's `<keyword> BY` clause (an ORDER BY item without ASC/DESC/NULLS),
// split at its top-level commas. Empty when the clause is not found at the top level; verify() checks that
// the hidden columns made of them parse as the clause's items.
std::vector<std::string> Planner::clause_items(std::string_view keyword) const {
  std::vector<std::string> items;
  size_t i = 0;
  while (i + 1 < tokens_.size() &&
         !(tokens_[i].depth == 0 && !after_label(i) && is_word(text_, tokens_[i], keyword) &&
           is_word(text_, tokens_[i + 1], "by")))
    ++i;
  if (i + 1 >= tokens_.size()) return items;
  size_t start = i + 2;
  for (size_t j = start;; ++j) {
    bool end = j == tokens_.size() || (tokens_[j].depth == 0 && ends_clause(j));
    if (!end && !(tokens_[j].depth == 0 && text_[tokens_[j].start] == ',')) continue;
    size_t last = j;  // one past the item's last token
    if (keyword == "order" && last >= start + 3 && is_word(text_, tokens_[last - 2], "nulls") &&
        (is_word(text_, tokens_[last - 1], "first") || is_word(text_, tokens_[last - 1], "last")))
      last -= 2;
    if (keyword == "order" && last >= start + 2 &&
        (is_word(text_, tokens_[last - 1], "asc") || is_word(text_, tokens_[last - 1], "desc")))
      --last;
    if (last <= start) return {};
    items.emplace_back(text_.substr(tokens_[start].start, tokens_[last - 1].end - tokens_[start].start));
    if (end) return items;
    start = j + 1;
  }
}

// Where the select list ends: the end of the token before the top-level FROM (not `IS DISTINCT FROM`).
size_t Planner::select_list_end() const {
  for (size_t i = 1; i < tokens_.size(); ++i)
    if (tokens_[i].depth == 0 && !after_label(i) && is_word(text_, tokens_[i], "from") &&
        !is_word(text_, tokens_[i - 1], "distinct"))
      return tokens_[i - 1].end;
  refuse("a statement pgrouter could not rewrite");
}

// Where the tail the shards must not get begins: with aggregates HAVING or ORDER BY, else LIMIT/OFFSET/FETCH
// (only these follow WHERE/GROUP BY in a statement without FOR UPDATE or WINDOW); text_.size() if none.
size_t Planner::tail_start() const {
  bool order = plan_.aggregate;  // HAVING and ORDER BY
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const Token& t = tokens_[i];
    if (t.depth != 0 || after_label(i)) continue;
    bool starts = is_word(text_, t, "limit") || is_word(text_, t, "offset") || is_word(text_, t, "fetch") ||
                  (order && is_word(text_, t, "having")) ||
                  (order && is_word(text_, t, "order") && i + 1 < tokens_.size() &&
                   is_word(text_, tokens_[i + 1], "by"));
    if (starts) return t.start;
  }
  return text_.size();
}

// The arguments' text of the avg call at `location`, and where the call ends.
std::pair<std::string, size_t> Planner::avg_arguments(int location) const {
  size_t i = token_at(location);
  while (i < tokens_.size() && text_[tokens_[i].start] != '(') ++i;
  size_t open = i;
  while (i < tokens_.size() && !(text_[tokens_[i].start] == ')' && tokens_[i].depth == tokens_[open].depth))
    ++i;
  if (i >= tokens_.size()) refuse("a statement pgrouter could not rewrite");
  return {std::string(text_.substr(tokens_[open].end, tokens_[i].start - tokens_[open].end)), tokens_[i].end};
}

// The hidden columns as select items, each after a comma; an avg as its sum and count.
std::string Planner::hidden_select_items() const {
  std::string out;
  for (const Target& t : hidden_) {
    if (t.aggregate != ColumnRole::avg_sum) {
      out += ", " + t.text + " AS " + t.hidden_alias;
      continue;
    }
    std::string args = avg_arguments(t.location).first;
    out +=
        ", sum(" + args + ") AS " + t.hidden_alias + ", count(" + args + ") AS " + t.hidden_alias + "_count";
  }
  return out;
}

std::string Planner::rewrite() {
  std::vector<Splice> splices;
  for (const Target& t : targets_) {
    if (t.aggregate != ColumnRole::avg_sum) continue;
    auto [args, end] = avg_arguments(t.location);
    splices.push_back({size_t(t.location), end, "sum(" + args + "), count(" + args + ")"});
  }
  if (!hidden_.empty()) {
    size_t at = select_list_end();
    splices.push_back({at, at, hidden_select_items()});
  }
  for (auto [location, target] : group_positions_) {
    size_t shard_pos = plan_.client_columns[target].shard_column + 1;
    if (shard_pos != target + 1) {
      const Token& t = tokens_[token_at(location)];
      splices.push_back({t.start, t.end, std::to_string(shard_pos)});
    }
  }
  std::string out(text_);
  size_t tail = text_.size();
  bool cut = plan_.aggregate ? field(tree_, sel_, "sortClause") || field(tree_, sel_, "limitCount") ||
                                   field(tree_, sel_, "limitOffset") || field(tree_, sel_, "havingClause")
                             : plan_.limit || plan_.offset || field(tree_, sel_, "limitOffset");
  if (cut) {
    tail = tail_start();
    for (int loc : limit_locations_)
      if (size_t(loc) <= tail) refuse("a statement pgrouter could not rewrite");
    out.resize(tail);
    while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
    if (!plan_.aggregate && plan_.limit) {
      int64_t n = *plan_.limit;
      if (plan_.offset && __builtin_add_overflow(n, *plan_.offset, &n)) refuse("LIMIT + OFFSET out of range");
      out += " LIMIT " + std::to_string(n);
    }
  }
  std::sort(splices.begin(), splices.end(), [](auto& a, auto& b) { return a.start > b.start; });
  for (const Splice& s : splices) {
    if (s.end > tail) refuse("a statement pgrouter could not rewrite");
    out.replace(s.start, s.end - s.start, s.text);
  }
  return out;
}

// The single SelectStmt of a parsed text, or null.
const JsonValue* only_select(const JsonTree& tree) {
  const JsonValue* stmts = tree.member(tree.root(), "stmts");
  const JsonValue* raw = stmts ? tree.first(*stmts) : nullptr;
  if (!raw || tree.next(*raw)) return nullptr;
  const JsonValue* stmt = tree.member(*raw, "stmt");
  const JsonValue* node = stmt ? tree.first(*stmt) : nullptr;
  return node && node->key == "SelectStmt" ? node : nullptr;
}

size_t list_size(const JsonTree& tree, const JsonValue* sel, std::string_view key) {
  const JsonValue* list = field(tree, sel, key);
  size_t n = 0;
  for (const JsonValue* c = list ? tree.first(*list) : nullptr; c; c = tree.next(*c)) ++n;
  return n;
}

struct Parsed {
  PgQueryParseResult result;
  JsonTree tree;
  explicit Parsed(std::string_view sql) : result(pg_query_parse(std::string(sql).c_str())) {
    ok = !result.error && tree.parse(result.parse_tree);
  }
  ~Parsed() { pg_query_free_parse_result(result); }
  bool ok = true;
};

std::string clause(const JsonTree& tree, const JsonValue* sel, std::string_view key, std::string_view sql) {
  const JsonValue* v = field(tree, sel, key);
  return v ? canon(tree, *v, sql) : std::string();
}

// The shard text's last select items are the hidden columns the plan expects.
bool hidden_items_match(const JsonTree& tree, const JsonValue* sel, std::string_view sql,
                        const std::vector<Planner::HiddenCheck>& checks) {
  std::vector<const JsonValue*> items;
  const JsonValue* list = field(tree, sel, "targetList");
  for (const JsonValue* c = list ? tree.first(*list) : nullptr; c; c = tree.next(*c)) items.push_back(c);
  if (items.size() < checks.size()) return false;
  for (size_t k = 0; k < checks.size(); ++k) {
    const JsonValue* body = body_of(tree, *items[items.size() - checks.size() + k]);
    const JsonValue* name = field(tree, body, "name");
    const JsonValue* val = field(tree, body, "val");
    const Planner::HiddenCheck& c = checks[k];
    if (!name || name->text != c.alias || !val) return false;
    if (c.function.empty()) {
      if (canon(tree, *val, sql) != c.canon) return false;
      continue;
    }
    const JsonValue* fc = body_of(tree, *val);
    const JsonValue* args = type_of(tree, *val) == "FuncCall" ? field(tree, fc, "args") : nullptr;
    auto [schema, function] = last_name(tree, field(tree, fc, "funcname"));
    if (!args || !schema.empty() || function != c.function || canon(tree, *args, sql) != c.canon)
      return false;
  }
  return true;
}

// The shard text says what the plan means: the same FROM, WHERE and DISTINCT (and ORDER BY when the shards
// sort), and the select list, GROUP BY and LIMIT the plan expects.
bool verify(const ScatterPlan& plan, const std::vector<Planner::HiddenCheck>& hidden,
            const JsonTree& original, const JsonValue* original_sel, std::string_view original_sql) {
  Parsed p(plan.shard_sql);
  const JsonValue* sel = p.ok ? only_select(p.tree) : nullptr;
  if (!sel || field(p.tree, sel, "limitOffset") || field(p.tree, sel, "havingClause")) return false;
  if (!hidden_items_match(p.tree, sel, plan.shard_sql, hidden)) return false;
  for (std::string_view key : {"fromClause", "whereClause", "distinctClause", "sortClause"}) {
    if (key == "sortClause" && plan.aggregate) continue;
    if (clause(p.tree, sel, key, plan.shard_sql) != clause(original, original_sel, key, original_sql))
      return false;
  }
  size_t sort_keys = list_size(original, original_sel, "sortClause");
  size_t group_keys = list_size(original, original_sel, "groupClause");
  if (!plan.star && list_size(p.tree, sel, "targetList") != plan.columns.size()) return false;
  if (list_size(p.tree, sel, "groupClause") != group_keys) return false;
  if (list_size(p.tree, sel, "sortClause") != (plan.aggregate ? 0 : sort_keys)) return false;
  const JsonValue* count = field(p.tree, sel, "limitCount");
  std::optional<int64_t> limit = count ? int_const(p.tree, *count, plan.shard_sql) : std::nullopt;
  if (count && !limit && !field(p.tree, body_of(p.tree, *count), "isnull")) return false;
  if (plan.aggregate) return !count;
  if (!plan.limit) return !limit;
  return limit == *plan.limit + plan.offset.value_or(0);
}

}  // namespace

ScatterPlan plan_scatter(std::string_view select_sql) {
  ScatterPlan plan;
  try {
    Parsed p(select_sql);
    if (!p.ok) refuse("a statement that does not parse");
    const JsonValue* sel = only_select(p.tree);
    if (!sel) refuse("anything but one SELECT");
    Planner planner(p.tree, sel, select_sql);
    plan = planner.run();
    if (!verify(plan, planner.hidden_checks(), p.tree, sel, select_sql))
      refuse("a statement pgrouter could not rewrite");
    for (const auto& name : planner.group_aliases()) {
      auto probe = input_column_probe(select_sql, name);
      if (!probe) refuse("GROUP BY " + name + " (pgrouter cannot tell whether it names an input column)");
      plan.input_column_probes.push_back({name, std::move(*probe)});
    }
  } catch (const Rejected&) {
    plan = ScatterPlan{};
    plan.shard_sql = std::string(select_sql);
    plan.star = true;  // columns as the shards describe them, rows passed through: there will be none
  } catch (const Refusal& r) {
    plan = ScatterPlan{};
    plan.refused = true;
    plan.refusal = r.what;
  }
  return plan;
}

}  // namespace pgrouter::sharding
