// Shard key extraction from libpg_query's parse tree (see the header and docs/ARCHITECTURE.md).
//
// Each query level (a SELECT, UPDATE or DELETE, a subquery, a CTE body) is analysed on its own: its FROM
// items are collected, its top-level AND conjuncts of WHERE and JOIN ON give facts ("occurrence o's key is
// one of these values") and equalities between key columns, the equalities carry limits from one occurrence
// to another, and then its subqueries are analysed with it as their outer level, so a correlated `o.k = u.k`
// limits o when u is limited. A sharded table's occurrence no fact limits makes the statement need every
// shard. Everything is conservative: what is not recognised limits nothing.
#include "pgrouter/sql/shard_key.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <optional>
#include <tuple>
#include <utility>

#include "pgrouter/sql/session_features.hpp"
#include "pgrouter/util/strings.hpp"
#include "sql/json_tree.hpp"
#include "sql/parse_tree.hpp"

namespace pgrouter::sql {

namespace {

using Kind = JsonValue::Kind;

// One RangeVar of a sharded table in the query level being analysed.
struct Occurrence {
  std::string_view table, key;  // the config's names
  bool limited = false;
  bool renamed = false;  // an alias with column names: its key column cannot be found by name
};

// A name the level's column references may be qualified with.
struct FromItem {
  std::string_view refname, schema;  // schema: an unaliased RangeVar's, for `schema.table.column`
  int occurrence = -1;               // a sharded table's, or -1
  bool aliased = false;
  bool qualifiable = true;  // false inside a JOIN with an alias, which hides the names within
};

// A JOIN with ON or USING: occurrences [lo, mid) are its left side's, [mid, hi) its right side's.
struct Join {
  const JsonValue* fields;
  int lo, mid, hi;
};

struct Level {
  const Level* parent = nullptr;
  size_t items_begin = 0, items_end = 0;
  int occ_begin = 0, occ_end = 0;
  bool merges = false;  // a USING or NATURAL join: one unqualified key name may stand for several tables
};

// The key columns an expression names: occurrences of one level (all of `occ`, several only for a column
// merged by USING).
struct KeyColumns {
  std::array<int, 4> occ{};
  int n = 0;
  bool outer = false;  // of an enclosing level, whose limits are final
};

struct Fact {
  int occurrence;
  size_t keys_begin, keys_end;  // in Analyzer::fact_keys_
};

// An INSERT ... SELECT/VALUES: the key column's position in the rows, and whether every row's key is known.
struct Probe {
  int position;
  bool keyed = true;
};

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  (out.append(parts), ...);
  return out;
}

enum class RelKind : uint8_t { sharded, reference, catalog, other };

// What one statement needs; several statements' are merged into the ShardTarget.
struct StatementTarget {
  bool sharded = false, reference = false, all = false;
  bool writes = false, writes_reference = false, dml_writes_reference = false;
  std::string_view reference_written;
  std::string_view inserted;  // a sharded table an INSERT writes
  std::string refusal;
};

ShardScope scope_of(const StatementTarget& s) {
  if (!s.refusal.empty()) return ShardScope::refused;
  if (s.all) return ShardScope::all;
  if (s.sharded) return ShardScope::keyed;
  return s.reference ? ShardScope::reference : ShardScope::none;
}

int width(ShardScope s) { return static_cast<int>(s); }  // none < reference < keyed < all < refused

class Analyzer {
 public:
  Analyzer(const JsonTree& tree, std::string_view sql, const ShardingSchema& schema, ShardTarget& out)
      : tree_(tree), sql_(sql), schema_(schema), out_(out) {}

  // One statement's target; its keys and unsharded tables go to `out` directly.
  StatementTarget statement(const JsonValue& node);
  // One argument of an EXECUTE (a wrapped expression node).
  ExecuteArgument execute_argument(const JsonValue& expr) const;

 private:
  // tree access
  const JsonValue* member(const JsonValue& v, std::string_view key) const { return tree_.member(v, key); }
  std::string_view text(const JsonValue& v, std::string_view key) const { return tree_.text(v, key); }
  bool flag(const JsonValue& v, std::string_view key) const { return tree_.flag(v, key); }
  // A {"TypeName": {fields}} wrapper's type and fields, or ("", null).
  std::pair<std::string_view, const JsonValue*> node(const JsonValue* wrapped) const;
  template <class Fn>
  void each(const JsonValue* array, Fn&& fn) const {
    for (const JsonValue* e = array ? tree_.first(*array) : nullptr; e; e = tree_.next(*e)) fn(*e);
  }
  std::string_view string_node(const JsonValue& wrapped) const;  // {"String": {"sval": ...}}
  bool copy_rows_concatenate(const JsonValue& copy_stmt) const;

  // relations
  std::pair<RelKind, int> relation_kind(std::string_view schema, std::string_view relname) const;
  bool is_cte(const JsonValue& range_var) const;
  std::string written_name(const JsonValue& range_var) const;
  void ddl_relation(std::string_view schema, std::string_view relname, std::string written);
  void reference_write(const JsonValue& range_var);

  // statements
  void top(std::string_view type, const JsonValue& fields);
  void copy(const JsonValue& fields);
  void copy_key(const JsonValue* attlist, int sharded_index);
  void copy_options(const JsonValue& f, const JsonValue& rel);
  void truncate(const JsonValue& fields);
  void drop(const JsonValue& fields);
  void ddl(const JsonValue& v);

  // query levels
  void query(std::string_view type, const JsonValue& fields, const Level* parent, Probe* probe);
  void set_operation(const JsonValue& fields, const Level* parent, Probe* probe);
  void enter_with(const JsonValue& with, const Level* parent);
  void level(std::string_view type, const JsonValue& fields, const Level* parent, Probe* probe);
  void dml_target(std::string_view type, const JsonValue& fields, const JsonValue& relation);
  void check_set_list(const JsonValue* targets, std::string_view table, std::string_view key);
  void from_item(const JsonValue& wrapped, Level& level, bool hidden);
  void range_var(const JsonValue& fields, bool hidden, bool may_be_cte);
  void join(const JsonValue& fields, Level& level, bool hidden);
  void sub_levels(const JsonValue& fields, const Level& level, size_t joins_mark, size_t deferred_mark);
  void walk(const JsonValue& v, const Level* parent);
  void insert(const JsonValue& fields, const Level* parent);
  bool insert_rows(const JsonValue& fields, std::string_view table, std::string_view key);
  void probe_rows(const JsonValue& fields, const Level& level, Probe& probe);
  const JsonValue* nth(const JsonValue* array, int n) const;
  bool is_star(const JsonValue* expr) const;
  void merge(const JsonValue& fields, const Level* parent);

  // facts
  void join_facts(const Join& j, const Level& level);
  void using_facts(const Join& j);
  void apply(size_t facts_mark, size_t pairs_mark, int lo, int hi);
  void propagate(size_t directed_mark);
  void collect(const JsonValue* expr, const Level& level);
  void collect_or(const JsonValue& bool_expr, const Level& level);
  bool is_equals(const JsonValue& a_expr) const;
  void equality(const JsonValue* l, const JsonValue* r, const Level& level);
  void link(const KeyColumns& a, const KeyColumns& b);
  void in_list(const JsonValue* column, const JsonValue* items, const Level& level);
  void any_array(const JsonValue* column, const JsonValue* array, const Level& level);
  void add_facts(const KeyColumns& cols, size_t keys_begin);
  KeyColumns key_columns(const JsonValue* expr, const Level& level) const;
  KeyColumns unqualified(std::string_view column, const Level& level) const;
  KeyColumns qualified(std::string_view schema, std::string_view rel, std::string_view column,
                       const Level& level) const;

  // values
  bool key_value(const JsonValue* expr, std::vector<KeyRef>& out) const;
  std::pair<std::string_view, const JsonValue*> uncast(const JsonValue* expr, bool to_array = false) const;
  std::string_view key_cast(const JsonValue& type_cast, bool to_array) const;
  bool constant(const JsonValue& a_const, std::vector<KeyRef>& out) const;
  bool negated(const JsonValue& a_expr, std::vector<KeyRef>& out) const;
  std::optional<std::string> integer_at(const JsonValue& a_const) const;

  bool refuse(std::string message) {  // the first refusal of a statement names it
    if (stmt_.refusal.empty()) stmt_.refusal = std::move(message);
    return false;
  }

  const JsonTree& tree_;
  std::string_view sql_;
  const ShardingSchema& schema_;
  ShardTarget& out_;
  StatementTarget stmt_;
  int unlimited_ = 0;  // occurrences no fact limited, this statement

  // Stacks: a level pushes onto them and pops back to where it started.
  std::vector<std::string_view> ctes_;
  std::vector<FromItem> items_;
  std::vector<Occurrence> occs_;
  std::vector<Join> joins_;
  std::vector<const JsonValue*> deferred_;  // FROM items analysed after their level: subqueries, functions
  // Scratch of one level's facts.
  std::vector<Fact> facts_;
  std::vector<KeyRef> fact_keys_;
  std::vector<std::pair<int, int>> pairs_;     // key column equalities
  std::vector<std::pair<int, int>> directed_;  // (a, b): a limited implies b limited
};

std::pair<std::string_view, const JsonValue*> Analyzer::node(const JsonValue* wrapped) const {
  if (!wrapped || wrapped->kind != Kind::object) return {};
  const JsonValue* only = tree_.first(*wrapped);
  if (!only || only->next_sibling || only->key.empty() || only->key[0] < 'A' || only->key[0] > 'Z') return {};
  return {only->key, only};
}

std::string_view Analyzer::string_node(const JsonValue& wrapped) const {
  auto [type, fields] = node(&wrapped);
  return type == "String" ? text(*fields, "sval") : std::string_view();
}

// ---- relations ----

std::pair<RelKind, int> Analyzer::relation_kind(std::string_view schema, std::string_view relname) const {
  auto matches = [&](std::string_view name) {
    size_t dot = name.find('.');
    if (dot == std::string_view::npos) return name == relname;
    return name.substr(0, dot) == schema && name.substr(dot + 1) == relname;
  };
  for (size_t i = 0; i < schema_.sharded.size(); ++i)
    if (matches(schema_.sharded[i].first)) return {RelKind::sharded, static_cast<int>(i)};
  for (const std::string& name : schema_.reference)
    if (matches(name)) return {RelKind::reference, -1};
  // System relations are on every server and hold nothing of the tenants'.
  if (schema == "pg_catalog" || schema == "information_schema" ||
      (schema.empty() && relname.starts_with("pg_")))
    return {RelKind::catalog, -1};
  return {RelKind::other, -1};
}

bool Analyzer::is_cte(const JsonValue& range_var) const {
  if (!text(range_var, "schemaname").empty()) return false;
  return std::find(ctes_.begin(), ctes_.end(), text(range_var, "relname")) != ctes_.end();
}

std::string Analyzer::written_name(const JsonValue& range_var) const {
  std::string name;
  for (std::string_view part : {text(range_var, "catalogname"), text(range_var, "schemaname")})
    if (!part.empty()) name.append(part).append(".");
  name.append(text(range_var, "relname"));
  return name;
}

// DDL and TRUNCATE-like utility statements: the caller runs them on every shard (or refuses them).
void Analyzer::ddl_relation(std::string_view schema, std::string_view relname, std::string written) {
  switch (relation_kind(schema, relname).first) {
    case RelKind::sharded:
      stmt_.sharded = stmt_.all = stmt_.writes = true;
      break;
    case RelKind::reference:
      stmt_.reference = stmt_.all = stmt_.writes = stmt_.writes_reference = true;
      break;
    case RelKind::catalog:
      break;
    case RelKind::other:
      out_.unsharded_tables.push_back(std::move(written));
      break;
  }
}

// ---- query levels ----

bool is_query(std::string_view type) {
  return type == "SelectStmt" || type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt" ||
         type == "MergeStmt";
}

void Analyzer::query(std::string_view type, const JsonValue& f, const Level* parent, Probe* probe) {
  if (type == "SelectStmt" && member(f, "larg")) return set_operation(f, parent, probe);
  size_t cte_mark = ctes_.size();
  if (const JsonValue* with = member(f, "withClause")) enter_with(*with, parent);
  if (type == "InsertStmt")
    insert(f, parent);
  else if (type == "MergeStmt")
    merge(f, parent);
  else
    level(type, f, parent, probe);
  ctes_.resize(cte_mark);
}

// UNION/INTERSECT/EXCEPT: each side (bare SelectStmt fields) is a level of its own; an INSERT's key must be
// known in every side.
void Analyzer::set_operation(const JsonValue& f, const Level* parent, Probe* probe) {
  size_t cte_mark = ctes_.size();
  if (const JsonValue* with = member(f, "withClause")) enter_with(*with, parent);
  for (std::string_view side : {"larg", "rarg"})
    if (const JsonValue* s = member(f, side)) query("SelectStmt", *s, parent, probe);
  for (std::string_view extra : {"sortClause", "limitOffset", "limitCount"})
    if (const JsonValue* e = member(f, extra)) walk(*e, parent);
  ctes_.resize(cte_mark);
}

// A WITH list's names are visible to the statement, to later CTEs and, with RECURSIVE, to every CTE's body;
// each body is a level of its own (it sees the statement's outer levels, not the statement).
void Analyzer::enter_with(const JsonValue& with, const Level* parent) {
  const JsonValue* ctes = member(with, "ctes");
  bool recursive = flag(with, "recursive");
  auto each_cte = [&](auto&& fn) {
    each(ctes, [&](const JsonValue& e) {
      if (auto [type, cte] = node(&e); type == "CommonTableExpr") fn(*cte);
    });
  };
  if (recursive) each_cte([&](const JsonValue& cte) { ctes_.push_back(text(cte, "ctename")); });
  each_cte([&](const JsonValue& cte) {
    if (auto [type, body] = node(member(cte, "ctequery")); body && is_query(type))
      query(type, *body, parent, nullptr);
    if (!recursive) ctes_.push_back(text(cte, "ctename"));
  });
}

// A SELECT, UPDATE, DELETE or MERGE: its FROM items (and DML target), the facts of its JOINs and WHERE,
// then its subqueries with it as their outer level.
void Analyzer::level(std::string_view type, const JsonValue& f, const Level* parent, Probe* probe) {
  Level lv{parent, items_.size(), 0, static_cast<int>(occs_.size()), 0, false};
  size_t joins_mark = joins_.size(), deferred_mark = deferred_.size(), keys_mark = fact_keys_.size();
  size_t facts_mark = facts_.size(), pairs_mark = pairs_.size(), directed_mark = directed_.size();
  if (const JsonValue* relation = member(f, "relation"); relation && type != "SelectStmt")
    dml_target(type, f, *relation);
  for (std::string_view list : {"fromClause", "usingClause"})
    each(member(f, list), [&](const JsonValue& e) { from_item(e, lv, false); });
  if (const JsonValue* source = member(f, "sourceRelation")) from_item(*source, lv, false);
  lv.items_end = items_.size();
  lv.occ_end = static_cast<int>(occs_.size());
  for (size_t i = joins_mark; i < joins_.size(); ++i) join_facts(joins_[i], lv);
  collect(member(f, "whereClause"), lv);
  apply(facts_mark, pairs_mark, lv.occ_begin, lv.occ_end);
  propagate(directed_mark);
  fact_keys_.resize(keys_mark);
  if (probe) probe_rows(f, lv, *probe);
  if (const JsonValue* into = member(f, "intoClause"); into && member(*into, "rel")) {
    const JsonValue& rel = *member(*into, "rel");  // SELECT INTO: a new table
    ddl_relation(text(rel, "schemaname"), text(rel, "relname"), written_name(rel));
  }
  sub_levels(f, lv, joins_mark, deferred_mark);
  for (int i = lv.occ_begin; i < lv.occ_end; ++i) unlimited_ += !occs_[i].limited;
  items_.resize(lv.items_begin);
  occs_.resize(lv.occ_begin);
  joins_.resize(joins_mark);
  deferred_.resize(deferred_mark);
}

// UPDATE/DELETE/MERGE's target: a FROM item of the level (never a CTE, whatever WITH says).
void Analyzer::dml_target(std::string_view type, const JsonValue& f, const JsonValue& rel) {
  auto [kind, index] = relation_kind(text(rel, "schemaname"), text(rel, "relname"));
  range_var(rel, false, false);
  if (kind == RelKind::sharded) {
    stmt_.writes = true;
    const auto& [table, key] = schema_.sharded[index];
    if (type == "UpdateStmt") check_set_list(member(f, "targetList"), table, key);
  } else if (kind == RelKind::reference) {
    reference_write(rel);
  }
}

void Analyzer::reference_write(const JsonValue& rel) {
  stmt_.reference = stmt_.writes = stmt_.writes_reference = stmt_.dml_writes_reference = true;
  if (stmt_.reference_written.empty()) stmt_.reference_written = text(rel, "relname");
}

void Analyzer::check_set_list(const JsonValue* targets, std::string_view table, std::string_view key) {
  each(targets, [&](const JsonValue& t) {
    if (auto [type, target] = node(&t); target && text(*target, "name") == key)
      refuse(cat("UPDATE of the shard key column ", key, " of ", table,
                 ": moving a row between shards is not an UPDATE; DELETE and INSERT it instead"));
  });
}

void Analyzer::from_item(const JsonValue& wrapped, Level& lv, bool hidden) {
  auto [type, f] = node(&wrapped);
  if (!f) return;
  if (type == "RangeVar") return range_var(*f, hidden, true);
  if (type == "JoinExpr") return join(*f, lv, hidden);
  if (type == "RangeTableSample") {
    if (const JsonValue* relation = member(*f, "relation")) from_item(*relation, lv, hidden);
  } else {
    // A subquery, function or XMLTABLE: its alias names it; what is inside is analysed after the level.
    const JsonValue* alias = member(*f, "alias");
    items_.push_back({alias ? text(*alias, "aliasname") : std::string_view(), {}, -1, true, !hidden});
  }
  deferred_.push_back(&wrapped);
}

void Analyzer::range_var(const JsonValue& rv, bool hidden, bool may_be_cte) {
  const JsonValue* alias = member(rv, "alias");
  FromItem item{alias ? text(*alias, "aliasname") : text(rv, "relname"), text(rv, "schemaname"), -1,
                alias != nullptr, !hidden};
  if (!may_be_cte || !is_cte(rv)) {
    auto [kind, index] = relation_kind(item.schema, text(rv, "relname"));
    if (kind == RelKind::sharded) {
      const auto& [table, key] = schema_.sharded[index];
      item.occurrence = static_cast<int>(occs_.size());
      occs_.push_back({table, key, false, alias && member(*alias, "colnames")});
      stmt_.sharded = true;
    } else if (kind == RelKind::reference) {
      stmt_.reference = true;
    } else if (kind == RelKind::other) {
      out_.unsharded_tables.push_back(written_name(rv));
    }
  }
  items_.push_back(item);
}

void Analyzer::join(const JsonValue& f, Level& lv, bool hidden) {
  const JsonValue* alias = member(f, "alias");
  int lo = static_cast<int>(occs_.size());
  if (const JsonValue* l = member(f, "larg")) from_item(*l, lv, hidden || alias);
  int mid = static_cast<int>(occs_.size());
  if (const JsonValue* r = member(f, "rarg")) from_item(*r, lv, hidden || alias);
  int hi = static_cast<int>(occs_.size());
  if (alias) {
    items_.push_back({text(*alias, "aliasname"), {}, -1, true, !hidden});
    if (member(*alias, "colnames"))  // renames the join's columns, the key among them perhaps
      for (int i = lo; i < hi; ++i) occs_[i].renamed = true;
  }
  if (flag(f, "isNatural") || member(f, "usingClause")) lv.merges = true;
  joins_.push_back({&f, lo, mid, hi});
}

// Subqueries anywhere in the level (FROM subqueries and functions, JOIN ON, expressions) see it as their
// outer level.
void Analyzer::sub_levels(const JsonValue& f, const Level& lv, size_t joins_mark, size_t deferred_mark) {
  for (size_t i = deferred_mark; i < deferred_.size(); ++i) walk(*deferred_[i], &lv);
  for (size_t i = joins_mark; i < joins_.size(); ++i)
    if (const JsonValue* quals = member(*joins_[i].fields, "quals")) walk(*quals, &lv);
  for (const JsonValue* m = tree_.first(f); m; m = tree_.next(*m)) {
    std::string_view k = m->key;
    if (k == "relation" || k == "fromClause" || k == "usingClause" || k == "sourceRelation" ||
        k == "withClause" || k == "lockingClause" || k == "intoClause")
      continue;
    walk(*m, &lv);
  }
}

// Outside FROM, only subqueries matter.
void Analyzer::walk(const JsonValue& v, const Level* parent) {
  if (v.kind == Kind::array) {
    each(&v, [&](const JsonValue& e) { walk(e, parent); });
    return;
  }
  if (v.kind != Kind::object) return;
  auto [type, f] = node(&v);
  if (!f) {
    for (const JsonValue* m = tree_.first(v); m; m = tree_.next(*m)) walk(*m, parent);
  } else if (is_query(type)) {
    query(type, *f, parent, nullptr);
  } else if (type != "ColumnRef" && type != "A_Const" && type != "String" && type != "TypeName" &&
             type != "ParamRef" && type != "RangeVar") {
    walk(*f, parent);
  }
}

// ---- INSERT and MERGE ----

// INSERT into a sharded table: every row's key must be known, and what the rows are made from must be on the
// keys' shards (an INSERT is never spread over every shard: each shard would insert the rows).
void Analyzer::insert(const JsonValue& f, const Level* parent) {
  const JsonValue* rel = member(f, "relation");
  if (!rel) return;
  auto [kind, index] = relation_kind(text(*rel, "schemaname"), text(*rel, "relname"));
  if (kind == RelKind::reference) reference_write(*rel);
  if (kind == RelKind::other) out_.unsharded_tables.push_back(written_name(*rel));
  if (kind == RelKind::sharded) {
    stmt_.sharded = stmt_.writes = true;
    const auto& [table, key] = schema_.sharded[index];
    stmt_.inserted = table;
    if (const JsonValue* conflict = member(f, "onConflictClause"))
      check_set_list(member(*conflict, "targetList"), table, key);
    if (!insert_rows(f, table, key)) return;
  } else if (auto [type, source] = node(member(f, "selectStmt")); source) {
    query(type, *source, parent, nullptr);
  }
  for (std::string_view extra : {"onConflictClause", "returningList"})
    if (const JsonValue* e = member(f, extra)) walk(*e, nullptr);
}

bool Analyzer::insert_rows(const JsonValue& f, std::string_view table, std::string_view key) {
  std::string no_value = cat("INSERT into sharded table ", table,
                             " without a constant or parameter value for its shard key ", key);
  auto [type, source] = node(member(f, "selectStmt"));
  if (!source) return refuse(std::move(no_value));  // DEFAULT VALUES
  const JsonValue* cols = member(f, "cols");
  if (!cols)
    return refuse(cat("INSERT into sharded table ", table, " without a column list: name the columns so",
                      " that its shard key ", key, " can be found"));
  int position = -1, i = 0;
  each(cols, [&](const JsonValue& c) {
    auto [t, target] = node(&c);
    if (target && text(*target, "name") == key && !member(*target, "indirection")) position = i;
    ++i;
  });
  if (position < 0) return refuse(std::move(no_value));
  bool values = type == "SelectStmt" && member(*source, "valuesLists");
  Probe probe{position};
  int unlimited_before = unlimited_;
  query(type, *source, nullptr, &probe);
  if (!probe.keyed && values) return refuse(std::move(no_value));
  if (!probe.keyed || unlimited_ > unlimited_before)
    return refuse(
        values ? cat("INSERT into sharded table ", table, " with a subquery not limited to one shard key")
               : cat("INSERT ... SELECT into sharded table ", table, " not limited to one shard key"));
  return true;
}

// The key of every row an INSERT's SELECT or VALUES makes: a constant or parameter, or the key column of a
// limited occurrence (whose keys are counted already).
void Analyzer::probe_rows(const JsonValue& f, const Level& lv, Probe& probe) {
  if (const JsonValue* rows = member(f, "valuesLists")) {
    each(rows, [&](const JsonValue& row) {
      auto [t, list] = node(&row);
      const JsonValue* item = list ? nth(member(*list, "items"), probe.position) : nullptr;
      size_t before = out_.keys.size();
      if (!item || !key_value(item, out_.keys)) probe.keyed = false;
      if (out_.keys.size() == before + 1) out_.row_keys.push_back(out_.keys.back());
    });
    return;
  }
  const JsonValue* val = nullptr;
  int i = 0;
  each(member(f, "targetList"), [&](const JsonValue& t) {
    auto [type, target] = node(&t);
    const JsonValue* v = target ? member(*target, "val") : nullptr;
    if (i <= probe.position && is_star(v)) probe.keyed = false;  // the positions are unknown
    if (i++ == probe.position) val = v;
  });
  if (!val) probe.keyed = false;
  if (!probe.keyed || key_value(val, out_.keys)) return;
  KeyColumns cols = key_columns(val, lv);
  probe.keyed = cols.n > 0;
  for (int k = 0; k < cols.n; ++k) probe.keyed &= occs_[cols.occ[k]].limited;
}

const JsonValue* Analyzer::nth(const JsonValue* array, int n) const {
  const JsonValue* e = array ? tree_.first(*array) : nullptr;
  for (; e && n > 0; --n) e = tree_.next(*e);
  return e;
}

bool Analyzer::is_star(const JsonValue* expr) const {
  auto [type, f] = node(expr);
  if (type != "ColumnRef") return false;
  bool star = false;
  each(member(*f, "fields"), [&](const JsonValue& e) { star |= node(&e).first == "A_Star"; });
  return star;
}

// MERGE into a sharded table is refused: its WHEN clauses insert and update rows its join did not limit.
// Into another table, its source is read like a FROM item its join condition does not limit.
void Analyzer::merge(const JsonValue& f, const Level* parent) {
  const JsonValue* rel = member(f, "relation");
  if (!rel) return;
  auto [kind, index] = relation_kind(text(*rel, "schemaname"), text(*rel, "relname"));
  if (kind == RelKind::sharded) {
    stmt_.sharded = stmt_.writes = true;
    refuse(cat("MERGE into sharded table ", schema_.sharded[index].first));
    return;
  }
  level("MergeStmt", f, parent, nullptr);
}

// ---- facts ----

// An inner join's ON holds for every row it makes; an outer join's ON only filters its nullable side, which
// it then limits (from the other side too); a FULL join's limits neither side.
void Analyzer::join_facts(const Join& j, const Level& lv) {
  std::string_view type = text(*j.fields, "jointype");
  int lo = j.lo, hi = j.hi;
  if (type == "JOIN_LEFT")
    lo = j.mid;
  else if (type == "JOIN_RIGHT")
    hi = j.mid;
  else if (type != "JOIN_INNER")
    return;
  size_t facts_mark = facts_.size(), pairs_mark = pairs_.size();
  collect(member(*j.fields, "quals"), lv);
  using_facts(j);
  apply(facts_mark, pairs_mark, lo, hi);
}

// USING (k) and NATURAL: equalities between the two sides' key columns of that name.
void Analyzer::using_facts(const Join& j) {
  const JsonValue* names = member(*j.fields, "usingClause");
  bool natural = flag(*j.fields, "isNatural");
  if (!names && !natural) return;
  for (int a = j.lo; a < j.mid; ++a) {
    for (int b = j.mid; b < j.hi; ++b) {
      const Occurrence &x = occs_[a], &y = occs_[b];
      if (x.renamed || y.renamed || x.key != y.key) continue;
      bool named = natural;
      each(names, [&](const JsonValue& n) { named |= string_node(n) == x.key; });
      if (named) pairs_.emplace_back(a, b);
    }
  }
}

// Facts limit the occurrences in [lo, hi); an equality carries a limit into [lo, hi) from either side.
void Analyzer::apply(size_t facts_mark, size_t pairs_mark, int lo, int hi) {
  auto inside = [&](int occ) { return occ >= lo && occ < hi; };
  for (size_t i = facts_mark; i < facts_.size(); ++i) {
    const Fact& fact = facts_[i];
    if (!inside(fact.occurrence)) continue;
    occs_[fact.occurrence].limited = true;
    out_.keys.insert(out_.keys.end(), fact_keys_.begin() + static_cast<ptrdiff_t>(fact.keys_begin),
                     fact_keys_.begin() + static_cast<ptrdiff_t>(fact.keys_end));
  }
  for (size_t i = pairs_mark; i < pairs_.size(); ++i) {
    auto [a, b] = pairs_[i];
    if (inside(b)) directed_.emplace_back(a, b);
    if (inside(a)) directed_.emplace_back(b, a);
  }
  facts_.resize(facts_mark);
  pairs_.resize(pairs_mark);
}

void Analyzer::propagate(size_t directed_mark) {
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = directed_mark; i < directed_.size(); ++i) {
      auto [a, b] = directed_[i];
      if (occs_[a].limited && !occs_[b].limited) changed = occs_[b].limited = true;
    }
  }
  directed_.resize(directed_mark);
}

// The facts of one condition's top-level AND conjuncts.
void Analyzer::collect(const JsonValue* expr, const Level& lv) {
  auto [type, f] = node(expr);
  if (type == "BoolExpr") {
    std::string_view op = text(*f, "boolop");
    if (op == "AND_EXPR")
      each(member(*f, "args"), [&](const JsonValue& arg) { collect(&arg, lv); });
    else if (op == "OR_EXPR")
      collect_or(*f, lv);
    return;  // NOT limits nothing
  }
  if (type != "A_Expr" || !is_equals(*f)) return;
  std::string_view kind = text(*f, "kind");
  const JsonValue *l = member(*f, "lexpr"), *r = member(*f, "rexpr");
  if (kind == "AEXPR_OP") {
    equality(l, r, lv);
  } else if (kind == "AEXPR_IN") {
    if (auto [t, list] = node(r); t == "List") in_list(l, member(*list, "items"), lv);
  } else if (kind == "AEXPR_OP_ANY") {
    any_array(l, r, lv);
  }
}

// An OR limits an occurrence every arm limits, to the union of the arms' keys. An equality inside an arm
// holds only for that arm's rows, so it carries nothing.
void Analyzer::collect_or(const JsonValue& f, const Level& lv) {
  size_t facts_mark = facts_.size(), pairs_mark = pairs_.size();
  std::vector<int> common;
  bool first = true;
  each(member(f, "args"), [&](const JsonValue& arm) {
    size_t arm_begin = facts_.size();
    collect(&arm, lv);
    pairs_.resize(pairs_mark);
    auto in_arm = [&](int occ) {
      for (size_t i = arm_begin; i < facts_.size(); ++i)
        if (facts_[i].occurrence == occ) return true;
      return false;
    };
    if (first)
      for (size_t i = arm_begin; i < facts_.size(); ++i) common.push_back(facts_[i].occurrence);
    else
      std::erase_if(common, [&](int occ) { return !in_arm(occ); });
    first = false;
  });
  auto everywhere = [&](const Fact& fact) {
    return std::find(common.begin(), common.end(), fact.occurrence) != common.end();
  };
  facts_.erase(std::remove_if(facts_.begin() + static_cast<ptrdiff_t>(facts_mark), facts_.end(),
                              [&](const Fact& fact) { return !everywhere(fact); }),
               facts_.end());
}

bool Analyzer::is_equals(const JsonValue& a_expr) const {
  std::string_view parts[2];
  int n = 0;
  each(member(a_expr, "name"), [&](const JsonValue& s) {
    if (n < 2) parts[n] = string_node(s);
    ++n;
  });
  return (n == 1 && parts[0] == "=") || (n == 2 && parts[0] == "pg_catalog" && parts[1] == "=");
}

void Analyzer::equality(const JsonValue* l, const JsonValue* r, const Level& lv) {
  KeyColumns a = key_columns(l, lv), b = key_columns(r, lv);
  if (a.n && b.n) return link(a, b);
  if (!a.n) {
    std::swap(a, b);
    std::swap(l, r);
  }
  if (!a.n || a.outer) return;  // a condition on an outer level's column does not limit its rows
  size_t begin = fact_keys_.size();
  if (key_value(r, fact_keys_)) add_facts(a, begin);
}

// Key column = key column: an equality within the level, or a correlated one that limits this level's side
// when the outer side is limited (its keys are counted already).
void Analyzer::link(const KeyColumns& a, const KeyColumns& b) {
  if (a.outer && b.outer) return;
  if (a.outer || b.outer) {
    const KeyColumns &outer = a.outer ? a : b, &inner = a.outer ? b : a;
    for (int k = 0; k < outer.n; ++k)
      if (!occs_[outer.occ[k]].limited) return;
    add_facts(inner, fact_keys_.size());
    return;
  }
  for (int i = 0; i < a.n; ++i)
    for (int j = 0; j < b.n; ++j) pairs_.emplace_back(a.occ[i], b.occ[j]);
}

void Analyzer::in_list(const JsonValue* column, const JsonValue* items, const Level& lv) {
  KeyColumns cols = key_columns(column, lv);
  if (!cols.n || cols.outer || !items) return;
  size_t begin = fact_keys_.size();
  bool values = true;
  each(items, [&](const JsonValue& item) { values = values && key_value(&item, fact_keys_); });
  if (values && fact_keys_.size() > begin)
    add_facts(cols, begin);
  else
    fact_keys_.resize(begin);
}

// key = ANY(array): ARRAY[...] is a list of values; an array literal ('{1,2}', its elements read by the
// caller as array_in reads them) or parameter, perhaps cast to an array of a key type, is one array KeyRef.
void Analyzer::any_array(const JsonValue* column, const JsonValue* array, const Level& lv) {
  // Casts between arrays of key types may be chained ('{1,2}'::int2[]::int8[], as psycopg writes a list):
  // each element goes through input functions of integer, text or uuid types only.
  for (int casts = 0; node(array).first == "TypeCast"; ++casts) {
    if (casts == 4 || uncast(array, true).first.empty()) return;
    array = member(*node(array).second, "arg");
  }
  auto [type, f] = node(array);
  const JsonValue* elements = type == "A_ArrayExpr" ? member(*f, "elements") : nullptr;
  if (elements && tree_.first(*elements)) return in_list(column, elements, lv);
  KeyColumns cols = key_columns(column, lv);
  if (!cols.n || cols.outer) return;
  KeyRef key{.literal = {}, .param = 0, .null = false, .array = true};
  if (type == "A_ArrayExpr") {
    key = KeyRef{.literal = {}, .param = 0, .null = true};  // ARRAY[] names no key, like '{}'
  } else if (type == "ParamRef") {
    std::string_view number = text(*f, "number");
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), key.param);
    if (ec != std::errc() || key.param <= 0) return;
  } else if (type == "A_Const" && member(*f, "isnull")) {
    key = KeyRef{.literal = {}, .param = 0, .null = true};  // ANY(NULL) matches no row
  } else if (const JsonValue* sval = type == "A_Const" ? member(*f, "sval") : nullptr) {
    const JsonValue* inner = tree_.first(*sval);
    key.literal = inner ? std::string(inner->text) : std::string();
  } else {
    return;
  }
  size_t begin = fact_keys_.size();
  fact_keys_.push_back(std::move(key));
  add_facts(cols, begin);
}

void Analyzer::add_facts(const KeyColumns& cols, size_t keys_begin) {
  for (int k = 0; k < cols.n; ++k) facts_.push_back({cols.occ[k], keys_begin, fact_keys_.size()});
}

KeyColumns Analyzer::key_columns(const JsonValue* expr, const Level& lv) const {
  auto [type, f] = node(expr);
  if (type != "ColumnRef") return {};
  std::array<std::string_view, 4> parts;
  int n = 0;
  bool names = true;
  each(member(*f, "fields"), [&](const JsonValue& e) {
    std::string_view s = string_node(e);
    names = names && !s.empty();  // not `t.*`
    if (n < 4) parts[n] = s;
    ++n;
  });
  if (!names || n == 0 || n > 4) return {};
  if (n == 1) return unqualified(parts[0], lv);
  return qualified(n >= 3 ? parts[n - 3] : std::string_view(), parts[n - 2], parts[n - 1], lv);
}

// An unqualified column is looked for in this level only. It names several occurrences only where USING or
// NATURAL merged their key columns: PostgreSQL rejects it as ambiguous otherwise.
KeyColumns Analyzer::unqualified(std::string_view column, const Level& lv) const {
  KeyColumns out;
  for (int i = lv.occ_begin; i < lv.occ_end; ++i) {
    if (occs_[i].renamed || occs_[i].key != column) continue;
    if (out.n == static_cast<int>(out.occ.size())) return {};
    out.occ[out.n++] = i;
  }
  return out.n > 1 && !lv.merges ? KeyColumns{} : out;
}

// `t.column` or `schema.t.column`: the innermost level with a FROM item of that name has it.
KeyColumns Analyzer::qualified(std::string_view schema, std::string_view rel, std::string_view column,
                               const Level& lv) const {
  bool outer = false;
  for (const Level* l = &lv; l; l = l->parent, outer = true) {
    for (size_t i = l->items_begin; i < l->items_end; ++i) {
      const FromItem& item = items_[i];
      if (!item.qualifiable || item.refname != rel || (!schema.empty() && item.aliased)) continue;
      if (!schema.empty() && item.schema != schema) {
        if (item.schema.empty()) return {};  // perhaps that very table, through the search path
        continue;
      }
      if (item.occurrence < 0) return {};
      const Occurrence& o = occs_[item.occurrence];
      if (o.renamed || o.key != column) return {};
      KeyColumns out;
      out.occ[0] = item.occurrence;
      out.n = 1;
      out.outer = outer;
      return out;
    }
  }
  return {};
}

// ---- values ----

// A constant or parameter, possibly negated, possibly cast (a cast of the value, not of the column).
bool Analyzer::key_value(const JsonValue* expr, std::vector<KeyRef>& out) const {
  auto [type, f] = uncast(expr);
  if (type == "ParamRef") {
    std::string_view number = text(*f, "number");
    int n = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), n);
    if (ec != std::errc() || n <= 0) return false;
    out.push_back(KeyRef{.literal = {}, .param = n});
    return true;
  }
  if (type == "A_Const") return constant(*f, out);
  if (type == "A_Expr") return negated(*f, out);
  return false;
}

// The node under at most one cast to a type a key may have. A type modifier (varchar(2)) may cut the value
// and a cast of a fraction to an integer rounds it, so neither limits anything.
// With to_array, the cast must be to an array of such a type (int8[]), and need not be there.
std::pair<std::string_view, const JsonValue*> Analyzer::uncast(const JsonValue* expr, bool to_array) const {
  auto [type, f] = node(expr);
  if (type != "TypeCast") return {type, f};
  if (key_cast(*f, to_array).empty()) return {};
  return node(member(*f, "arg"));
}

// The type a TypeCast's fields name when it is a key type (int2, int4, int8, text, varchar, uuid, perhaps
// qualified by pg_catalog; arrays of them with to_array), else "".
std::string_view Analyzer::key_cast(const JsonValue& f, bool to_array) const {
  const JsonValue* name = member(f, "typeName");
  if (!name || member(*name, "typmods") || !member(*name, "arrayBounds") != !to_array || flag(*name, "setof"))
    return {};
  std::string_view first, last;
  int n = 0;
  each(member(*name, "names"), [&](const JsonValue& s) {
    last = string_node(s);
    if (n++ == 0) first = last;
  });
  if (n > 2 || (n == 2 && first != "pg_catalog")) return {};
  if (last != "int2" && last != "int4" && last != "int8" && last != "text" && last != "varchar" &&
      last != "uuid")
    return {};
  return last;
}

// An EXECUTE's argument is read as a key value is in a statement's text (key_value). An array's text cast to
// an array of a key type ('{1,2}'::int8[], for `key = ANY($1)`) is read as written, as array_in reads it.
ExecuteArgument Analyzer::execute_argument(const JsonValue& expr) const {
  using Form = ExecuteArgument::Form;
  ExecuteArgument arg;
  auto [type, f] = node(&expr);
  if (type == "TypeCast" && !key_cast(*f, true).empty()) {
    auto [inner, c] = node(member(*f, "arg"));
    const JsonValue* sval = inner == "A_Const" ? member(*c, "sval") : nullptr;
    const JsonValue* str = sval ? tree_.first(*sval) : nullptr;
    if (inner == "A_Const" && member(*c, "isnull")) arg.kind = ExecuteArgument::Kind::null;
    if (sval) arg.kind = ExecuteArgument::Kind::text;
    if (str) arg.text = std::string(str->text);
    return arg;
  }
  std::vector<KeyRef> value;
  if (!key_value(&expr, value) || value.size() != 1) return arg;
  KeyRef& k = value.front();
  arg.kind = k.null    ? ExecuteArgument::Kind::null
             : k.param ? ExecuteArgument::Kind::parameter
                       : ExecuteArgument::Kind::text;
  arg.param = k.param;
  arg.text = std::move(k.literal);
  std::string_view cast = type == "TypeCast" ? key_cast(*f, false) : std::string_view();
  if (cast == "int2" || cast == "int4" || cast == "int8")
    arg.form = Form::integer;
  else if (cast == "uuid")
    arg.form = Form::uuid;
  else if (cast.empty() && (type == "A_Expr" || (type == "A_Const" && !member(*f, "sval"))))
    arg.form = Form::integer;  // a number, perhaps negated (a boolean's text is no key's)
  return arg;
}

bool Analyzer::constant(const JsonValue& c, std::vector<KeyRef>& out) const {
  for (const JsonValue* m = tree_.first(c); m; m = tree_.next(*m)) {
    const JsonValue* inner = tree_.first(*m);
    if (m->key == "isnull") {
      out.push_back(KeyRef{.literal = {}, .param = 0, .null = true});
      return true;
    }
    if (m->key == "ival") {
      std::optional<std::string> digits = inner ? std::string(inner->text) : integer_at(c);
      if (!digits) return false;
      out.push_back(KeyRef{.literal = std::move(*digits)});
      return true;
    }
    if (m->key == "fval" || m->key == "sval") {
      std::string_view value = inner ? inner->text : std::string_view();
      // A fraction or exponent compares numerically: its text is not what the key's input function gets.
      if (m->key == "fval" && value.find_first_of(".eE") != std::string_view::npos) return false;
      out.push_back(KeyRef{.literal = std::string(value)});
      return true;
    }
    if (m->key == "boolval") {
      out.push_back(KeyRef{.literal = inner && inner->boolean ? "true" : "false"});
      return true;
    }
  }
  return false;
}

// libpg_query's JSON leaves an Integer's value out when it is not positive ({"ival": {}} for 0 and for -5),
// so those are read from the text at the constant's location: digits, or a minus sign and digits.
std::optional<std::string> Analyzer::integer_at(const JsonValue& c) const {
  std::string_view location = text(c, "location");
  size_t at = 0;
  auto [end, ec] = std::from_chars(location.data(), location.data() + location.size(), at);
  if (ec != std::errc() || at >= sql_.size()) return std::nullopt;
  std::string out;
  if (sql_[at] == '-') {
    out = "-";
    for (size_t next = at + 1; next != at;) {
      at = next;
      while (at < sql_.size() &&
             (sql_[at] == ' ' || sql_[at] == '\t' || sql_[at] == '\n' || sql_[at] == '\r'))
        ++at;
      next = util::sql_comment_end(sql_, at);
    }
  }
  size_t digits = at;
  while (at < sql_.size() && sql_[at] >= '0' && sql_[at] <= '9') ++at;
  if (at == digits || (at < sql_.size() && (util::sql_ident_char(sql_[at]) || sql_[at] == '.')))
    return std::nullopt;
  out.append(sql_.substr(digits, at - digits));
  return out;
}

// Unary minus on a numeric constant: -5::bigint is -(5::bigint); libpg_query folds a plain -5 itself.
bool Analyzer::negated(const JsonValue& e, std::vector<KeyRef>& out) const {
  const JsonValue* name = member(e, "name");
  const JsonValue* op = name ? tree_.first(*name) : nullptr;
  if (member(e, "lexpr") || text(e, "kind") != "AEXPR_OP" || !op || op->next_sibling ||
      string_node(*op) != "-")
    return false;
  auto [type, f] = uncast(member(e, "rexpr"));
  if (type != "A_Const" || (!member(*f, "ival") && !member(*f, "fval")) || !constant(*f, out)) return false;
  std::string& literal = out.back().literal;
  if (literal.starts_with('-'))
    literal.erase(0, 1);
  else
    literal.insert(0, 1, '-');
  return true;
}

// ---- statements ----

StatementTarget Analyzer::statement(const JsonValue& node) {
  stmt_ = {};
  unlimited_ = 0;
  ctes_.clear();
  top(node.key, node);
  if (unlimited_ > 0) stmt_.all = true;
  // Run on every shard, an INSERT would insert its rows on each (a data-modifying CTE, say).
  if (stmt_.all && !stmt_.inserted.empty())
    refuse(cat("INSERT into sharded table ", stmt_.inserted, " in a statement that needs every shard"));
  if (stmt_.dml_writes_reference && stmt_.sharded)
    refuse(cat("a write to reference table ", stmt_.reference_written,
               " in a statement that also reads or writes sharded tables"));
  return std::move(stmt_);
}

void Analyzer::top(std::string_view type, const JsonValue& f) {
  if (is_query(type)) return query(type, f, nullptr, nullptr);
  if (type == "ExplainStmt" || type == "DeclareCursorStmt" || type == "PrepareStmt") {
    if (auto [t, q] = node(member(f, "query")); q) top(t, *q);
    return;
  }
  if (type == "CopyStmt") return copy(f);
  if (type == "TruncateStmt") return truncate(f);
  if (type == "DropStmt") return drop(f);
  if (type == "CallStmt") return walk(f, nullptr);
  if (type == "CreateTableAsStmt") {
    const JsonValue* into = member(f, "into");
    if (const JsonValue* rel = into ? member(*into, "rel") : nullptr)
      ddl_relation(text(*rel, "schemaname"), text(*rel, "relname"), written_name(*rel));
    if (auto [t, q] = node(member(f, "query")); q) top(t, *q);
    return;
  }
  ddl(f);  // DDL, GRANT, VACUUM, LOCK...; SET, SHOW, BEGIN and the like name no relation
}

// COPY (query) TO is the query; COPY table TO reads all of it; COPY table FROM writes rows whose keys only
// the data says.
void Analyzer::copy(const JsonValue& f) {
  if (auto [type, q] = node(member(f, "query")); q) return top(type, *q);
  const JsonValue* rel = member(f, "relation");
  if (!rel) return;
  bool from = flag(f, "is_from");
  out_.copy_from |= from;
  auto [kind, index] = relation_kind(text(*rel, "schemaname"), text(*rel, "relname"));
  if (from && kind != RelKind::other) copy_options(f, *rel);
  if (kind == RelKind::sharded) {
    stmt_.sharded = stmt_.all = true;
    stmt_.writes |= from;
    if (from) copy_key(member(f, "attlist"), index);
    if (from) out_.copy.key = schema_.sharded[size_t(index)].second;
    if (!from && !member(f, "filename") && !flag(f, "is_program")) out_.copy_out = copy_rows_concatenate(f);
  } else if (kind == RelKind::reference) {
    stmt_.reference = true;
    stmt_.writes |= from;
    stmt_.writes_reference |= from;
  } else if (kind == RelKind::other) {
    out_.unsharded_tables.push_back(written_name(*rel));
  }
}

// Whether each shard's COPY TO output, concatenated, is the whole table's: not with a header line per shard,
// nor in binary format (a file header and trailer per shard).
bool Analyzer::copy_rows_concatenate(const JsonValue& f) const {
  bool plain = true;
  each(member(f, "options"), [&](const JsonValue& e) {
    auto [type, def] = node(&e);
    if (!def || type != "DefElem") return;
    std::string_view name = text(*def, "defname");
    const JsonValue* arg = member(*def, "arg");
    std::string_view value = arg ? string_node(*arg) : std::string_view();
    if (name == "header" ||
        (name == "format" && !util::equals_ascii_ci(value, "text") && !util::equals_ascii_ci(value, "csv")))
      plain = false;
  });
  return plain;
}

// What cutting a COPY FROM's data into rows needs: its format, its delimiter, quote, escape and NULL texts.
void Analyzer::copy_options(const JsonValue& f, const JsonValue& rel) {
  auto& copy = out_.copy;
  copy.schema = text(rel, "schemaname");
  copy.table = text(rel, "relname");
  copy.from_stdin = !member(f, "filename") && !flag(f, "is_program");
  copy.format = "text";
  each(member(f, "options"), [&](const JsonValue& e) {
    auto [type, def] = node(&e);
    if (!def || type != "DefElem") return;
    std::string_view name = text(*def, "defname");
    const JsonValue* arg = member(*def, "arg");
    std::string value(arg ? string_node(*arg) : std::string_view());
    for (char& c : value) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (name == "format") copy.format = value;
    if (name == "delimiter") copy.delimiter = std::string(string_node(*arg));
    if (name == "quote") copy.quote = std::string(string_node(*arg));
    if (name == "escape") copy.escape = std::string(string_node(*arg));
    if (name == "null") copy.null = std::string(string_node(*arg));
    if (name == "header") {
      auto [arg_type, fields] = arg ? node(arg) : std::pair<std::string_view, const JsonValue*>{};
      copy.header = !arg || (arg_type == "Boolean" && flag(*fields, "boolval")) || value == "true" ||
                    value == "on" || value == "1" || value == "match";
    }
  });
}

void Analyzer::copy_key(const JsonValue* attlist, int index) {
  if (!attlist) return;
  std::string_view table = schema_.sharded[index].first, key = schema_.sharded[index].second;
  int position = -1, i = 0;
  each(attlist, [&](const JsonValue& a) {
    if (position < 0 && string_node(a) == key) position = i;
    ++i;
  });
  if (position < 0)
    refuse(cat("COPY into sharded table ", table, " without its shard key column ", key));
  else
    out_.copy_key_column = position;
}

void Analyzer::truncate(const JsonValue& f) {
  each(member(f, "relations"), [&](const JsonValue& e) {
    auto [type, rel] = node(&e);
    if (!rel) return;
    auto [kind, index] = relation_kind(text(*rel, "schemaname"), text(*rel, "relname"));
    if (kind == RelKind::sharded) stmt_.sharded = stmt_.all = stmt_.writes = true;
    if (kind == RelKind::reference) stmt_.reference = stmt_.writes = stmt_.writes_reference = true;
    if (kind == RelKind::other) out_.unsharded_tables.push_back(written_name(*rel));
  });
}

void Analyzer::drop(const JsonValue& f) {
  each_dropped_relation(tree_, f, [&](std::string_view schema, std::string_view relname, std::string&& name) {
    ddl_relation(schema, relname, std::move(name));
  });
}

// Every relation a utility statement names, bare or wrapped RangeVars (CTE names aside).
void Analyzer::ddl(const JsonValue& v) {
  if (v.kind == Kind::array) {
    each(&v, [&](const JsonValue& e) { ddl(e); });
    return;
  }
  if (v.kind != Kind::object) return;
  if (member(v, "relname")) {
    if (!is_cte(v)) ddl_relation(text(v, "schemaname"), text(v, "relname"), written_name(v));
    return;
  }
  if (const JsonValue* with = member(v, "withClause"))
    each(member(*with, "ctes"), [&](const JsonValue& e) {
      if (auto [type, cte] = node(&e); cte) ctes_.push_back(text(*cte, "ctename"));
    });
  for (const JsonValue* m = tree_.first(v); m; m = tree_.next(*m))
    if (m->key != "typevar") ddl(*m);  // typevar: CREATE TYPE's name, not a relation
}

// ---- hints ----

size_t skip_blanks(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

std::optional<std::string> hint_value(std::string_view body, size_t i) {
  if (i >= body.size()) return std::nullopt;
  if (char quote = body[i]; quote == '\'' || quote == '"') {
    size_t end = body.find(quote, i + 1);
    if (end == std::string_view::npos || end == i + 1) return std::nullopt;
    return std::string(body.substr(i + 1, end - i - 1));
  }
  size_t end = i;
  while (end < body.size() && skip_blanks(body, end) == end && body[end] != ',' && body[end] != ';') ++end;
  if (end == i) return std::nullopt;
  return std::string(body.substr(i, end - i));
}

// Where the list of a "pgrouter: ..." (or "pgrouter=...") starting at body[at] begins; npos when none starts
// there.
size_t pgrouter_list(std::string_view body, size_t at) {
  if (!util::equals_ascii_ci(body.substr(at, 8), "pgrouter") ||
      (at > 0 && util::sql_ident_char(body[at - 1])))
    return std::string_view::npos;
  size_t i = skip_blanks(body, at + 8);
  if (i >= body.size() || (body[i] != ':' && body[i] != '=')) return std::string_view::npos;
  return i + 1;
}

// Whether one comment's "pgrouter: ..." list holds the word `word` ("explain").
bool word_in_comment(std::string_view body, std::string_view word) {
  for (size_t at = 0; at + 8 <= body.size(); ++at) {
    size_t list = pgrouter_list(body, at);
    if (list == std::string_view::npos) continue;
    for (size_t k = list; k + word.size() <= body.size(); ++k) {
      size_t end = k + word.size();
      if (util::equals_ascii_ci(body.substr(k, word.size()), word) && !util::sql_ident_char(body[k - 1]) &&
          (end == body.size() || !util::sql_ident_char(body[end])))
        return true;
    }
  }
  return false;
}

// "shard_key=42" (or ": '42'") in one comment's "pgrouter: ..." list, which may hold a route hint too.
std::optional<std::string> shard_key_in_comment(std::string_view body) {
  for (size_t at = 0; at + 8 <= body.size(); ++at) {
    size_t list = pgrouter_list(body, at);
    if (list == std::string_view::npos) continue;
    for (size_t k = list; k + 9 <= body.size(); ++k) {
      if (!util::equals_ascii_ci(body.substr(k, 9), "shard_key") || util::sql_ident_char(body[k - 1]))
        continue;
      size_t v = skip_blanks(body, k + 9);
      if (v < body.size() && (body[v] == '=' || body[v] == ':'))
        return hint_value(body, skip_blanks(body, v + 1));
    }
  }
  return std::nullopt;
}

// The end of a quoted literal or identifier starting at s[i] (doubled quotes inside; backslash escapes in
// E'...').
size_t quoted_end(std::string_view s, size_t i) {
  char quote = s[i];
  bool escapes = quote == '\'' && i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
                 (i < 2 || !util::sql_ident_char(s[i - 2]));
  for (++i; i < s.size(); ++i) {
    if (escapes && s[i] == '\\') {
      ++i;
    } else if (s[i] == quote) {
      if (i + 1 >= s.size() || s[i + 1] != quote) return i + 1;
      ++i;
    }
  }
  return s.size();
}

// The end of a $tag$...$tag$ string starting at s[i], or i + 1 when that '$' starts none ($1, a$b).
size_t dollar_end(std::string_view s, size_t i) {
  if (i > 0 && util::sql_ident_char(s[i - 1])) return i + 1;
  size_t j = i + 1;
  if (j < s.size() && s[j] >= '0' && s[j] <= '9') return i + 1;
  while (j < s.size() && s[j] != '$' && util::sql_ident_char(s[j])) ++j;
  if (j >= s.size() || s[j] != '$') return i + 1;
  std::string_view tag = s.substr(i, j + 1 - i);
  size_t end = s.find(tag, j + 1);
  return end == std::string_view::npos ? s.size() : end + tag.size();
}

// A "pgrouter: shard_key=..." comment's value; several that differ are refused.
void add_hint(std::string_view body, ShardTarget& out) {
  if (word_in_comment(body, "explain")) out.explain = true;
  std::optional<std::string> key = shard_key_in_comment(body);
  if (!key) return;
  if (out.hint_key.empty()) {
    out.hint_key = std::move(*key);
  } else if (out.hint_key != *key) {
    out.scope = ShardScope::refused;
    out.refusal = "conflicting pgrouter shard_key hints";
  }
}

// Shard key hints in any comment of the text (outside literals), as PostgreSQL's scanner finds comments.
void find_hints(std::string_view s, ShardTarget& out) {
  if (!util::contains_ascii_ci(s, "pgrouter")) return;  // the usual case: one quick scan
  for (size_t i = 0; i < s.size();) {
    bool closed = true;
    size_t comment_end = util::sql_comment_end(s, i, &closed);
    if (comment_end != i) {
      size_t body_end = s[i] == '/' && closed ? comment_end - 2 : comment_end;
      add_hint(s.substr(i + 2, body_end - i - 2), out);
      i = comment_end;
    } else if (s[i] == '\'' || s[i] == '"') {
      i = quoted_end(s, i);
    } else if (s[i] == '$') {
      i = dollar_end(s, i);
    } else {
      ++i;
    }
  }
}

void add(ShardTarget& out, StatementTarget&& s) {
  ShardScope scope = scope_of(s);
  if (width(scope) > width(out.scope)) out.scope = scope;
  if (out.refusal.empty()) out.refusal = std::move(s.refusal);
  out.writes |= s.writes;
  out.writes_reference |= s.writes_reference;
  out.inserts |= !s.inserted.empty();
}

bool key_less(const KeyRef& a, const KeyRef& b) {
  return std::tie(a.null, a.param, a.array, a.literal) < std::tie(b.null, b.param, b.array, b.literal);
}

}  // namespace

namespace {

// The statement node of one element of the "stmts" array, its type and the text it was parsed from.
struct RawStatement {
  std::string_view type;
  const JsonValue* fields = nullptr;
  std::string_view text;
};

RawStatement raw_statement(const JsonTree& tree, const JsonValue& raw, std::string_view sql) {
  RawStatement out;
  const JsonValue* stmt = tree.member(raw, "stmt");
  const JsonValue* node = stmt ? tree.first(*stmt) : nullptr;
  if (!node) return out;
  out.type = node->key;
  out.fields = node;
  // libpg_query leaves out a location and a length of 0 (the text's start; up to its end).
  size_t at = 0, len = 0;
  std::string_view location = tree.text(raw, "stmt_location"), length = tree.text(raw, "stmt_len");
  (void)std::from_chars(location.data(), location.data() + location.size(), at);
  (void)std::from_chars(length.data(), length.data() + length.size(), len);
  at = std::min(at, sql.size());
  out.text = sql.substr(at, len == 0 ? std::string_view::npos : len);
  return out;
}

}  // namespace

std::vector<ExecuteCall> execute_calls(std::string_view sql) {
  std::vector<ExecuteCall> out;
  ParsedText parsed(sql);
  const JsonValue* stmts = parsed.statements();
  if (!stmts) return out;
  const JsonTree& tree = parsed.tree();
  ShardingSchema no_tables;
  ShardTarget unused;
  Analyzer analyzer(tree, sql, no_tables, unused);
  std::vector<std::pair<std::string_view, std::string_view>> prepares;  // name, text
  for (const JsonValue* raw = tree.first(*stmts); raw; raw = tree.next(*raw)) {
    RawStatement s = raw_statement(tree, *raw, sql);
    if (s.type == "PrepareStmt") prepares.emplace_back(tree.text(*s.fields, "name"), s.text);
    const JsonValue* exec = s.type == "ExecuteStmt" ? s.fields : nullptr;
    if (s.type == "ExplainStmt" || s.type == "CreateTableAsStmt") {
      const JsonValue* query = tree.member(*s.fields, "query");
      const JsonValue* inner = query ? tree.first(*query) : nullptr;
      if (inner && inner->key == "ExecuteStmt") exec = inner;
    }
    if (!exec) continue;
    ExecuteCall call;
    call.name = std::string(tree.text(*exec, "name"));
    const JsonValue* params = tree.member(*exec, "params");
    for (const JsonValue* e = params ? tree.first(*params) : nullptr; e; e = tree.next(*e))
      call.arguments.push_back(analyzer.execute_argument(*e));
    for (const auto& [name, text] : prepares)
      if (name == call.name) call.prepared_here = text;  // the last one before it
    out.push_back(std::move(call));
  }
  return out;
}

ShardTarget shard_target(std::string_view sql, const ShardingSchema& schema) {
  ShardTarget out;
  find_hints(sql, out);
  out.mentions_execute = mentions_execute(sql);
  ParsedText parsed(sql);
  const JsonValue* stmts = parsed.statements();
  if (!stmts) {
    out.parse_error = true;
    return out;
  }
  Analyzer analyzer(parsed.tree(), sql, schema, out);
  for (const JsonValue* raw = parsed.tree().first(*stmts); raw; raw = parsed.tree().next(*raw)) {
    const JsonValue* stmt = parsed.tree().member(*raw, "stmt");
    if (const JsonValue* node = stmt ? parsed.tree().first(*stmt) : nullptr)
      add(out, analyzer.statement(*node));
  }
  if (out.scope == ShardScope::keyed && out.keys.empty()) out.scope = ShardScope::all;  // cannot happen
  if (out.scope == ShardScope::keyed) {
    std::sort(out.keys.begin(), out.keys.end(), key_less);
    out.keys.erase(std::unique(out.keys.begin(), out.keys.end()), out.keys.end());
  } else {
    out.keys.clear();
  }
  std::sort(out.unsharded_tables.begin(), out.unsharded_tables.end());
  out.unsharded_tables.erase(std::unique(out.unsharded_tables.begin(), out.unsharded_tables.end()),
                             out.unsharded_tables.end());
  return out;
}

}  // namespace pgrouter::sql
