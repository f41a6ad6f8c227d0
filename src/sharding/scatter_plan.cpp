// plan_scatter(): see the header. The tree is libpg_query's JSON, read with sql::JsonTree as the classifier
// does. The shard text is the client's text with spans replaced (avg calls, GROUP BY positions) and its
// ORDER BY/LIMIT tail cut, located with libpg_query's locations and a small lexer; the result is parsed again
// and checked, so a splice that went wrong is a refusal, never a different query.
#include "pgrouter/sharding/scatter_plan.hpp"

#include <pg_query.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>

#include "pgrouter/sql/builtin_functions.hpp"
#include "sql/json_tree.hpp"

namespace pgrouter::sharding {
namespace {

using sql::JsonTree;
using sql::JsonValue;

struct Refusal {
  std::string what;
};
[[noreturn]] void refuse(std::string what) { throw Refusal{std::move(what)}; }

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

// The node written without its locations: two expressions are "the same" when these strings are.
void canon(const JsonTree& tree, const JsonValue& v, std::string& out) {
  switch (v.kind) {
    case JsonValue::Kind::object:
    case JsonValue::Kind::array:
      out += v.kind == JsonValue::Kind::object ? '{' : '[';
      for (const JsonValue* c = tree.first(v); c; c = tree.next(*c)) {
        if (c->key == "location") continue;
        out.append(c->key).push_back(':');
        canon(tree, *c, out);
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
std::string canon(const JsonTree& tree, const JsonValue& v) {
  std::string out;
  canon(tree, v, out);
  return out;
}

int location_of(const JsonTree& tree, const JsonValue& node) {
  const JsonValue* loc = field(tree, body_of(tree, node), "location");
  return loc ? std::atoi(std::string(loc->text).c_str()) : -1;
}

// The integer of an A_Const node, or nullopt for another node or another constant.
std::optional<int64_t> int_const(const JsonTree& tree, const JsonValue& node) {
  if (type_of(tree, node) != "A_Const") return std::nullopt;
  const JsonValue* body = body_of(tree, node);
  std::string_view text;
  if (const JsonValue* iv = field(tree, body, "ival")) {
    const JsonValue* n = tree.member(*iv, "ival");
    text = n ? n->text : "0";  // libpg_query leaves out a zero
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
  int location = -1;       // of the aggregate call
};

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
    plan_.shard_sql = rewrite();
    return std::move(plan_);
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
      t.canon = canon(tree_, *t.val);
      std::string_view type = type_of(tree_, *t.val);
      const JsonValue* vb = body_of(tree_, *t.val);
      if (type == "ColumnRef") {
        const JsonValue* fields = field(tree_, vb, "fields");
        for (const JsonValue* f = fields ? tree_.first(*fields) : nullptr; f; f = tree_.next(*f))
          if (type_of(tree_, *f) == "A_Star") plan_.star = true;
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

  // A GROUP BY/ORDER BY item naming a select item: by position, by alias or by the same expression.
  std::optional<size_t> find_target(const JsonValue& node, bool by_alias) {
    if (auto pos = int_const(tree_, node)) {
      if (*pos < 1 || size_t(*pos) > targets_.size()) refuse("a position that is not in the select list");
      return size_t(*pos - 1);
    }
    if (by_alias && type_of(tree_, node) == "ColumnRef") {
      auto [schema, name] = last_name(tree_, field(tree_, body_of(tree_, node), "fields"));
      if (schema.empty())
        for (size_t i = 0; i < targets_.size(); ++i)
          if (targets_[i].alias == name) return i;
    }
    std::string c = canon(tree_, node);
    for (size_t i = 0; i < targets_.size(); ++i)
      if (targets_[i].canon == c) return i;
    return std::nullopt;
  }

  void read_group_by() {
    const JsonValue* list = field(tree_, sel_, "groupClause");
    if (!list) return;
    if (plan_.star) refuse("* with GROUP BY");
    plan_.aggregate = true;
    for (const JsonValue* g = tree_.first(*list); g; g = tree_.next(*g)) {
      if (type_of(tree_, *g) == "GroupingSet") refuse("GROUP BY ROLLUP/CUBE/GROUPING SETS");
      auto i = find_target(*g, false);
      if (!i) refuse("GROUP BY an expression not in the select list");
      if (targets_[*i].aggregate) refuse("GROUP BY an aggregate");
      targets_[*i].group_key = true;
      if (int_const(tree_, *g)) group_positions_.push_back({location_of(tree_, *g), *i});
    }
  }

  // The value of a LIMIT or OFFSET: nullopt for none (LIMIT ALL, LIMIT NULL).
  std::optional<int64_t> limit_value(const JsonValue* node) {
    if (!node) return std::nullopt;
    std::string_view type = type_of(tree_, *node);
    if (type == "ParamRef") refuse("LIMIT/OFFSET parameters");
    if (type == "A_Const" && field(tree_, body_of(tree_, *node), "isnull")) return std::nullopt;
    auto v = int_const(tree_, *node);
    if (!v) refuse("LIMIT/OFFSET that is not a constant or parameter");
    if (*v < 0) refuse("a negative LIMIT/OFFSET");
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
    for (size_t i = 0; i < targets_.size(); ++i) {
      const Target& t = targets_[i];
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
    auto i = find_target(*lexpr, false);
    if (!i || type_of(tree_, *rexpr) != "A_Const") refuse(why);
    HavingTerm term{*i, std::string(op), {}, false};
    const JsonValue* cbody = body_of(tree_, *rexpr);
    if (auto n = int_const(tree_, *rexpr)) {
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
    for (const JsonValue* s = list ? tree_.first(*list) : nullptr; s; s = tree_.next(*s)) {
      const JsonValue* sb = body_of(tree_, *s);
      if (field(tree_, sb, "useOp")) refuse("ORDER BY ... USING");
      const JsonValue* node = field(tree_, sb, "node");
      SortKey key;
      if (is_c_collation(tree_, *node)) {
        key.collate_c = true;
        node = field(tree_, body_of(tree_, *node), "arg");
      }
      if (plan_.star) {  // the columns are only known from the shards' RowDescription
        auto pos = int_const(tree_, *node);
        if (!pos || *pos < 1) refuse("ORDER BY anything but a position with * in the select list");
        key.column = size_t(*pos - 1);
      } else {
        auto i = find_target(*node, true);
        if (!i) refuse("ORDER BY an expression not in the select list");
        key.column = *i;
        key.collate_c = key.collate_c || targets_[*i].collate_c;
      }
      const JsonValue* dir = field(tree_, sb, "sortby_dir");
      const JsonValue* nulls = field(tree_, sb, "sortby_nulls");
      key.descending = dir && dir->text == "SORTBY_DESC";
      key.nulls_first = nulls && nulls->text != "SORTBY_NULLS_DEFAULT" ? nulls->text == "SORTBY_NULLS_FIRST"
                                                                       : key.descending;
      plan_.order_by.push_back(key);
    }
  }

  std::string rewrite();
  size_t token_at(int location) const;
  size_t tail_start() const;

  const JsonTree& tree_;
  const JsonValue* sel_;
  std::string_view text_;
  std::vector<Token> tokens_;
  std::vector<Target> targets_;
  std::vector<std::pair<int, size_t>> group_positions_;  // GROUP BY <position>: its location, target
  std::vector<int> limit_locations_;
  ScatterPlan plan_;
};

size_t Planner::token_at(int location) const {
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (int(tokens_[i].start) == location) return i;
  refuse("a statement pgrouter could not rewrite");
}

// Where the tail the shards must not get begins: with aggregates HAVING or ORDER BY, else LIMIT/OFFSET/FETCH
// (only these follow WHERE/GROUP BY in a statement without FOR UPDATE or WINDOW); text_.size() if none.
size_t Planner::tail_start() const {
  bool order = plan_.aggregate;  // HAVING and ORDER BY
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const Token& t = tokens_[i];
    // Not a clause: `AS limit` and `t.limit` (column labels may be reserved words).
    if (t.depth != 0 ||
        (i > 0 && (is_word(text_, tokens_[i - 1], "as") || text_[tokens_[i - 1].start] == '.')))
      continue;
    bool starts = is_word(text_, t, "limit") || is_word(text_, t, "offset") || is_word(text_, t, "fetch") ||
                  (order && is_word(text_, t, "having")) ||
                  (order && is_word(text_, t, "order") && i + 1 < tokens_.size() &&
                   is_word(text_, tokens_[i + 1], "by"));
    if (starts) return t.start;
  }
  return text_.size();
}

std::string Planner::rewrite() {
  std::vector<Splice> splices;
  for (const Target& t : targets_) {
    if (t.aggregate != ColumnRole::avg_sum) continue;
    size_t i = token_at(t.location);
    while (i < tokens_.size() && text_[tokens_[i].start] != '(') ++i;
    size_t open = i;
    while (i < tokens_.size() && !(text_[tokens_[i].start] == ')' && tokens_[i].depth == tokens_[open].depth))
      ++i;
    if (i >= tokens_.size()) refuse("a statement pgrouter could not rewrite");
    std::string args(text_.substr(tokens_[open].end, tokens_[i].start - tokens_[open].end));
    splices.push_back({size_t(t.location), tokens_[i].end, "sum(" + args + "), count(" + args + ")"});
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
                             : plan_.limit || plan_.offset;
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

std::string clause(const JsonTree& tree, const JsonValue* sel, std::string_view key) {
  const JsonValue* v = field(tree, sel, key);
  return v ? canon(tree, *v) : std::string();
}

// The shard text says what the plan means: the same FROM, WHERE and DISTINCT (and ORDER BY when the shards
// sort), and the select list, GROUP BY and LIMIT the plan expects.
bool verify(const ScatterPlan& plan, const JsonTree& original, const JsonValue* original_sel) {
  Parsed p(plan.shard_sql);
  const JsonValue* sel = p.ok ? only_select(p.tree) : nullptr;
  if (!sel || field(p.tree, sel, "limitOffset") || field(p.tree, sel, "havingClause")) return false;
  for (std::string_view key : {"fromClause", "whereClause", "distinctClause", "sortClause"}) {
    if (key == "sortClause" && plan.aggregate) continue;
    if (clause(p.tree, sel, key) != clause(original, original_sel, key)) return false;
  }
  size_t sort_keys = list_size(original, original_sel, "sortClause");
  size_t group_keys = list_size(original, original_sel, "groupClause");
  if (!plan.star && list_size(p.tree, sel, "targetList") != plan.columns.size()) return false;
  if (list_size(p.tree, sel, "groupClause") != group_keys) return false;
  if (list_size(p.tree, sel, "sortClause") != (plan.aggregate ? 0 : sort_keys)) return false;
  const JsonValue* count = field(p.tree, sel, "limitCount");
  std::optional<int64_t> limit = count ? int_const(p.tree, *count) : std::nullopt;
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
    plan = Planner(p.tree, sel, select_sql).run();
    if (!verify(plan, p.tree, sel)) refuse("a statement pgrouter could not rewrite");
  } catch (const Refusal& r) {
    plan = ScatterPlan{};
    plan.refused = true;
    plan.refusal = r.what;
  }
  return plan;
}

}  // namespace pgrouter::sharding
