// Statement classification from libpg_query's parse tree (see the header and docs/ARCHITECTURE.md).
//
// libpg_query's JSON output is read with sql::JsonTree rather than its protobuf output, which costs several
// times more to produce and unpack (bench/RESULTS.md, statement classification cost). In that JSON a node is
// {"TypeName": {fields}} while a field whose type is fixed is the bare {fields} object, so the walk below
// recognises nodes by their (upper-case) wrapper key and RangeVars also by their "relname" member.
#include "pgrouter/sql/classifier.hpp"

#include <algorithm>

#include "pgrouter/sql/builtin_functions.hpp"
#include "pgrouter/sql/session_features.hpp"
#include "pgrouter/util/strings.hpp"
#include "sql/json_tree.hpp"
#include "sql/parse_tree.hpp"

namespace pgrouter::sql {

std::string_view to_string(StatementClass cls) {
  switch (cls) {
    case StatementClass::read:
      return "read";
    case StatementClass::write:
      return "write";
    case StatementClass::locking_read:
      return "locking_read";
    case StatementClass::transaction_begin:
      return "transaction_begin";
    case StatementClass::transaction_end:
      return "transaction_end";
    case StatementClass::transaction_savepoint:
      return "transaction_savepoint";
    case StatementClass::set_session:
      return "set_session";
    case StatementClass::utility:
      return "utility";
    case StatementClass::unknown:
      return "unknown";
  }
  return "?";
}

std::string_view to_string(RouteHint hint) {
  switch (hint) {
    case RouteHint::none:
      return "none";
    case RouteHint::primary:
      return "primary";
    case RouteHint::replica:
      return "replica";
  }
  return "?";
}

namespace {

using Kind = JsonValue::Kind;

char lower_ascii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool is_identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}

bool starts_with_ci(std::string_view s, size_t at, std::string_view word) {
  if (s.size() - at < word.size()) return false;
  for (size_t i = 0; i < word.size(); ++i)
    if (lower_ascii(s[at + i]) != word[i]) return false;
  return true;
}

// "pgrouter: primary" or "pgrouter=replica" (optionally quoted) anywhere in one comment's text.
RouteHint hint_in_comment(std::string_view body) {
  for (size_t at = 0; at + 8 <= body.size(); ++at) {
    if (!starts_with_ci(body, at, "pgrouter") || (at > 0 && is_identifier_char(body[at - 1]))) continue;
    size_t i = at + 8;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t')) ++i;
    if (i >= body.size() || (body[i] != ':' && body[i] != '=')) continue;
    ++i;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t')) ++i;
    if (i < body.size() && (body[i] == '\'' || body[i] == '"')) ++i;
    for (auto [word, hint] : {std::pair{std::string_view("primary"), RouteHint::primary},
                              std::pair{std::string_view("replica"), RouteHint::replica}}) {
      size_t end = i + word.size();
      if (starts_with_ci(body, i, word) && (end == body.size() || !is_identifier_char(body[end])))
        return hint;
    }
  }
  return RouteHint::none;
}

// The first routing hint in the comments before the first statement. Block comments nest, as in PostgreSQL.
RouteHint leading_hint(std::string_view sql) {
  size_t i = 0;
  for (;;) {
    while (i < sql.size() && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r' ||
                              sql[i] == '\f' || sql[i] == '\v'))
      ++i;
    std::string_view body;
    if (sql.compare(i, 2, "--") == 0) {
      size_t end = std::min(sql.find('\n', i), sql.size());
      body = sql.substr(i + 2, end - i - 2);
      i = end;
    } else if (sql.compare(i, 2, "/*") == 0) {
      size_t j = i + 2;
      int depth = 1;
      while (j < sql.size() && depth > 0) {
        if (sql.compare(j, 2, "/*") == 0) {
          ++depth;
          j += 2;
        } else if (sql.compare(j, 2, "*/") == 0) {
          --depth;
          j += 2;
        } else {
          ++j;
        }
      }
      body = sql.substr(i + 2, j - i - 2);
      i = j;
    } else {
      return RouteHint::none;
    }
    if (auto hint = hint_in_comment(body); hint != RouteHint::none) return hint;
  }
}

// PostgreSQL's parse_bool: a unique prefix of true/false/yes/no, on/off, 1/0. Anything else is `otherwise`.
bool parse_bool(std::string_view s, bool otherwise) {
  std::string v;
  for (char c : s) v += lower_ascii(c);
  if (v == "1" || v == "on") return true;
  if (v == "0" || v == "of" || v == "off") return false;
  for (std::string_view yes : {"true", "yes"})
    if (!v.empty() && yes.starts_with(v)) return true;
  for (std::string_view no : {"false", "no"})
    if (!v.empty() && no.starts_with(v)) return false;
  return otherwise;
}

int data_rank(StatementClass c) {
  switch (c) {
    case StatementClass::read:
      return 0;
    case StatementClass::locking_read:
      return 1;
    case StatementClass::utility:
      return 2;
    case StatementClass::write:
      return 3;
    default:
      return -1;
  }
}

StatementClass stronger(StatementClass a, StatementClass b) { return data_rank(a) >= data_rank(b) ? a : b; }

class Walker {
 public:
  Walker(const JsonTree& tree, const std::function<bool(std::string_view)>& is_read_only_function,
         Classification& out)
      : tree_(tree), is_read_only_function_(is_read_only_function), out_(out) {}

  // Classifies one statement, `node` being its {"TypeName": {...}} wrapper's member.
  StatementClass statement(const JsonValue& node);

 private:
  const JsonValue* member(const JsonValue& v, std::string_view key) const { return tree_.member(v, key); }
  std::string_view text(const JsonValue& v, std::string_view key) const { return tree_.text(v, key); }
  bool flag(const JsonValue& v, std::string_view key) const { return tree_.flag(v, key); }
  // The value of an A_Const, String, Integer or Float node as text (Integer 0 is written as {}).
  std::string constant(const JsonValue* node) const;

  StatementClass query(const JsonValue* wrapped);  // a nested statement: EXPLAIN's, COPY's, DECLARE's
  StatementClass variable_set(const JsonValue& fields);
  void transaction_modes(const JsonValue* options);
  bool explain_analyze(const JsonValue& fields) const;
  void drop_targets(const JsonValue& fields);

  void walk(const JsonValue& v);
  void walk_node(std::string_view type, const JsonValue& fields);
  void walk_fields(const JsonValue& fields);
  void enter_with(const JsonValue& with);
  void add_relation(const JsonValue& range_var, bool may_be_cte);
  void check_function(const JsonValue& func_call);

  const JsonTree& tree_;
  const std::function<bool(std::string_view)>& is_read_only_function_;
  Classification& out_;
  std::vector<std::string_view> cte_names_;  // CTEs in scope, innermost last
  // What the query being walked does beyond its kind.
  bool modifies_ =
      false;            // nested INSERT/UPDATE/DELETE/MERGE, SELECT INTO, or a function that is not read-only
  bool locks_ = false;  // a locking clause
};

std::string Walker::constant(const JsonValue* node) const {
  if (!node || !tree_.first(*node)) return {};
  const JsonValue& wrapper = *tree_.first(*node);
  const JsonValue* value = &wrapper;
  if (wrapper.key == "A_Const") {
    value = tree_.first(wrapper);
    while (value && value->key == "location") value = tree_.next(*value);
    if (!value || value->key == "isnull") return {};
  }
  // {"ival": {"ival": 5}}, {"sval": {"sval": "x"}}, {"boolval": {"boolval": true}}; an absent inner member is
  // the protobuf default (0, "", false).
  const JsonValue* inner = tree_.first(*value);
  if (!inner) {
    if (value->key == "ival" || value->key == "Integer") return "0";
    return value->key == "boolval" || value->key == "Boolean" ? "false" : "";
  }
  if (inner->kind == Kind::boolean) return inner->boolean ? "true" : "false";
  return std::string(inner->text);
}

void Walker::walk(const JsonValue& v) {
  if (v.kind == Kind::array) {
    for (const JsonValue* e = tree_.first(v); e; e = tree_.next(*e)) walk(*e);
  } else if (v.kind == Kind::object) {
    const JsonValue* only = tree_.first(v);
    if (only && !only->next_sibling && !only->key.empty() && only->key[0] >= 'A' && only->key[0] <= 'Z')
      walk_node(only->key, *only);
    else
      walk_fields(v);
  }
}

void Walker::walk_node(std::string_view type, const JsonValue& fields) {
  if (type == "RangeVar") {
    add_relation(fields, true);
  } else if (type == "FuncCall") {
    check_function(fields);
    walk_fields(fields);
  } else if (type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt" || type == "MergeStmt") {
    modifies_ = true;
    walk_fields(fields);
  } else if (type == "String" || type == "A_Const" || type == "ColumnRef" || type == "ParamRef" ||
             type == "TypeName" || type == "SQLValueFunction" || type == "A_Star" || type == "Integer") {
    // leaves: nothing below them names a relation or calls a function
  } else {
    walk_fields(fields);
  }
}

void Walker::walk_fields(const JsonValue& fields) {
  size_t outer_scope = cte_names_.size();
  if (const JsonValue* with = member(fields, "withClause")) enter_with(*with);
  for (const JsonValue* m = tree_.first(fields); m; m = tree_.next(*m)) {
    if (m->key == "withClause" || m->key == "typevar")
      continue;  // typevar: CREATE TYPE's name, not a relation
    if (m->key == "lockingClause") {
      locks_ = true;  // its lockedRels are FROM-item names or aliases, not necessarily relations
      continue;
    }
    if (m->key == "intoClause") modifies_ = true;  // SELECT INTO creates a table
    // A bare RangeVar field is a DML target, INTO, COPY or DDL relation: always a real relation, never a CTE.
    if (m->kind == Kind::object && member(*m, "relname"))
      add_relation(*m, false);
    else
      walk(*m);
  }
  cte_names_.resize(outer_scope);
}

// A WITH list's names are visible to the statement, to later CTEs and, with RECURSIVE, to every CTE's body;
// without RECURSIVE a CTE's body that names itself reads the real table.
void Walker::enter_with(const JsonValue& with) {
  const JsonValue* ctes = member(with, "ctes");
  if (!ctes) return;
  bool recursive = flag(with, "recursive");
  auto each_cte = [&](auto&& fn) {
    for (const JsonValue* e = tree_.first(*ctes); e; e = tree_.next(*e))
      if (const JsonValue* cte = tree_.first(*e); cte && cte->key == "CommonTableExpr") fn(*cte);
  };
  if (recursive) each_cte([&](const JsonValue& cte) { cte_names_.push_back(text(cte, "ctename")); });
  each_cte([&](const JsonValue& cte) {
    if (const JsonValue* q = member(cte, "ctequery")) walk(*q);
    if (!recursive) cte_names_.push_back(text(cte, "ctename"));
  });
}

void Walker::add_relation(const JsonValue& range_var, bool may_be_cte) {
  std::string_view catalog = text(range_var, "catalogname"), schema = text(range_var, "schemaname");
  std::string_view relname = text(range_var, "relname");
  if (may_be_cte && schema.empty() &&
      std::find(cte_names_.begin(), cte_names_.end(), relname) != cte_names_.end())
    return;
  std::string name;
  name.reserve(catalog.size() + schema.size() + relname.size() + 2);
  if (!catalog.empty()) name.append(catalog).append(".");
  if (!schema.empty()) name.append(schema).append(".");
  name.append(relname);
  out_.tables.push_back(std::move(name));
}

void Walker::check_function(const JsonValue& func_call) {
  const JsonValue* names = member(func_call, "funcname");
  std::string_view parts[3];
  size_t n = 0;
  for (const JsonValue* e = names ? tree_.first(*names) : nullptr; e; e = tree_.next(*e)) {
    if (n == 3) break;
    const JsonValue* s = tree_.first(*e);
    parts[n++] = s ? text(*s, "sval") : std::string_view();
  }
  if (n == 0) return;
  std::string_view name = parts[n - 1], schema = n >= 2 ? parts[n - 2] : std::string_view();
  switch (builtin_function(schema, name)) {
    case BuiltinFunction::read_only:
      return;
    case BuiltinFunction::primary_only:
      modifies_ = true;
      return;
    case BuiltinFunction::unknown:
      break;
  }
  if (!is_read_only_function_) {
    modifies_ = true;
    return;
  }
  std::string qualified(parts[0]);
  for (size_t i = 1; i < n; ++i) qualified.append(".").append(parts[i]);
  if (!is_read_only_function_(qualified)) modifies_ = true;
}

StatementClass Walker::query(const JsonValue* wrapped) {
  const JsonValue* node = wrapped ? tree_.first(*wrapped) : nullptr;
  return node ? statement(*node) : StatementClass::read;
}

bool Walker::explain_analyze(const JsonValue& fields) const {
  const JsonValue* options = member(fields, "options");
  for (const JsonValue* e = options ? tree_.first(*options) : nullptr; e; e = tree_.next(*e)) {
    const JsonValue* def = tree_.first(*e);
    if (!def || text(*def, "defname") != "analyze") continue;
    const JsonValue* arg = member(*def, "arg");
    // A value that is not clearly false counts as true: the statement then runs, so it is routed as itself.
    return !arg || parse_bool(constant(arg), true);
  }
  return false;
}

// BEGIN/START TRANSACTION options and SET TRANSACTION arguments: DefElems, READ ONLY being
// transaction_read_only = 1.
void Walker::transaction_modes(const JsonValue* options) {
  for (const JsonValue* e = options ? tree_.first(*options) : nullptr; e; e = tree_.next(*e)) {
    const JsonValue* def = tree_.first(*e);
    if (!def || text(*def, "defname") != "transaction_read_only") continue;
    (parse_bool(constant(member(*def, "arg")), false) ? out_.read_only_begin : out_.read_write_begin) = true;
  }
}

StatementClass Walker::variable_set(const JsonValue& fields) {
  std::string_view kind = text(fields, "kind"), name = text(fields, "name");
  if (kind == "VAR_RESET_ALL") {
    out_.sets_session = true;
    out_.session_route = "auto";  // RESET ALL resets custom settings such as pgrouter.route too
  } else if (kind == "VAR_SET_MULTI") {
    // SET TRANSACTION ..., SET TRANSACTION SNAPSHOT, SET SESSION CHARACTERISTICS AS TRANSACTION ...
    if (name == "SESSION CHARACTERISTICS") {
      out_.sets_session = true;
    } else {
      out_.set_local = true;
      if (name == "TRANSACTION") transaction_modes(member(fields, "args"));
    }
  } else if (name == "transaction_read_only" || name == "transaction_isolation" ||
             name == "transaction_deferrable") {
    // The GUC spelling of SET TRANSACTION: lasts until the transaction ends even without LOCAL.
    out_.set_local = true;
    if (name == "transaction_read_only" && kind == "VAR_SET_VALUE") {
      const JsonValue* args = member(fields, "args");
      std::string value = constant(args ? tree_.first(*args) : nullptr);
      (parse_bool(value, false) ? out_.read_only_begin : out_.read_write_begin) = true;
    }
  } else if (flag(fields, "is_local")) {
    out_.set_local =
        true;  // SET LOCAL pgrouter.route is ignored: a route is chosen per session, not per transaction
  } else {
    out_.sets_session = true;
    if (name == "pgrouter.route") {
      if (kind == "VAR_SET_VALUE") {
        const JsonValue* args = member(fields, "args");
        std::string value = constant(args ? tree_.first(*args) : nullptr);
        for (auto& c : value) c = lower_ascii(c);
        out_.session_route = std::move(value);
      } else if (kind == "VAR_SET_DEFAULT" || kind == "VAR_RESET") {
        out_.session_route = "auto";
      }
    }
  }
  return StatementClass::set_session;
}

// DROP TABLE and the like name their relations as lists of strings, not RangeVars.
void Walker::drop_targets(const JsonValue& fields) {
  each_dropped_relation(tree_, fields, [&](std::string_view, std::string_view, std::string&& name) {
    out_.tables.push_back(std::move(name));
  });
}

StatementClass Walker::statement(const JsonValue& node) {
  std::string_view type = node.key;
  if (type == "SelectStmt") {
    modifies_ = locks_ = false;
    walk_fields(node);
    return modifies_ ? StatementClass::write : locks_ ? StatementClass::locking_read : StatementClass::read;
  }
  if (type == "ExplainStmt") {
    const JsonValue* inner = member(node, "query");
    StatementClass cls = query(inner);
    if (explain_analyze(node)) return cls;  // the statement runs
    // Plain EXPLAIN runs nothing and is fine on a replica, except EXPLAIN EXECUTE: prepared statements live
    // on the primary (PREPARE is utility).
    const JsonValue* inner_node = inner ? tree_.first(*inner) : nullptr;
    return inner_node && inner_node->key == "ExecuteStmt" ? StatementClass::utility : StatementClass::read;
  }
  if (type == "CopyStmt") {
    if (flag(node, "is_from")) {
      walk_fields(node);
      return StatementClass::write;
    }
    StatementClass cls = query(member(node, "query"));
    if (const JsonValue* relation = member(node, "relation")) add_relation(*relation, false);
    // COPY TO a server file or program writes on the database host: the primary's, as the user expects.
    if (member(node, "filename") || flag(node, "is_program")) cls = stronger(cls, StatementClass::utility);
    return cls;
  }
  if (type == "DeclareCursorStmt") return query(member(node, "query"));
  if (type == "VariableShowStmt" || type == "FetchStmt" || type == "ClosePortalStmt")
    return StatementClass::read;
  if (type == "TransactionStmt") {
    std::string_view kind = text(node, "kind");
    if (kind == "TRANS_STMT_COMMIT_PREPARED" || kind == "TRANS_STMT_ROLLBACK_PREPARED")
      return StatementClass::write;  // finishes a two-phase transaction, which only the primary holds
    out_.transaction_control = true;
    if (kind == "TRANS_STMT_BEGIN" || kind == "TRANS_STMT_START") {
      transaction_modes(member(node, "options"));
      return StatementClass::transaction_begin;
    }
    if (kind == "TRANS_STMT_SAVEPOINT" || kind == "TRANS_STMT_RELEASE" || kind == "TRANS_STMT_ROLLBACK_TO")
      return StatementClass::transaction_savepoint;
    using Ending = Classification::Ending;
    out_.ending = kind == "TRANS_STMT_COMMIT"     ? Ending::commit
                  : kind == "TRANS_STMT_ROLLBACK" ? Ending::rollback
                  : kind == "TRANS_STMT_PREPARE"  ? Ending::prepare
                                                  : Ending::none;
    out_.chain = flag(node, "chain");
    return StatementClass::transaction_end;  // COMMIT, ROLLBACK (AND CHAIN), PREPARE TRANSACTION
  }
  if (type == "VariableSetStmt") return variable_set(node);
  if (type == "ConstraintsSetStmt") {
    out_.set_local = true;
    return StatementClass::set_session;
  }
  if (type == "DiscardStmt") {
    if (text(node, "target") == "DISCARD_ALL") out_.session_route = "auto";
    return StatementClass::utility;
  }
  if (type == "VacuumStmt" || type == "ClusterStmt" || type == "ReindexStmt" || type == "CheckPointStmt" ||
      type == "ListenStmt" || type == "UnlistenStmt" || type == "NotifyStmt" || type == "LockStmt" ||
      type == "PrepareStmt" || type == "ExecuteStmt" || type == "DeallocateStmt" || type == "LoadStmt" ||
      type == "AlterSystemStmt") {
    walk_fields(node);
    return StatementClass::utility;
  }
  if (type == "DropStmt") drop_targets(node);
  // INSERT/UPDATE/DELETE/MERGE, TRUNCATE, DDL, GRANT, REFRESH MATERIALIZED VIEW, DO, CALL and anything newer.
  walk_node(type, node);
  return StatementClass::write;
}

}  // namespace

Classification classify(std::string_view sql,
                        const std::function<bool(std::string_view)>& is_read_only_function) {
  Classification out;
  out.hint = leading_hint(sql);
  ParsedText parsed(sql);
  const JsonValue* stmts = parsed.statements();
  if (!stmts) {
    out.parse_error = true;
    out.cls = StatementClass::write;
    return out;
  }
  const JsonTree* tree = &parsed.tree();

  Walker walker(*tree, is_read_only_function, out);
  int strongest = -1;
  bool any_savepoint = false, any_set = false;
  std::optional<StatementClass> last_transaction;
  for (const JsonValue* raw = tree->first(*stmts); raw; raw = tree->next(*raw)) {
    const JsonValue* stmt = tree->member(*raw, "stmt");
    const JsonValue* node = stmt ? tree->first(*stmt) : nullptr;
    if (!node) continue;
    ++out.statements;
    StatementClass cls = walker.statement(*node);
    if (data_rank(cls) > strongest) {
      strongest = data_rank(cls);
      out.cls = cls;
    } else if (cls == StatementClass::transaction_begin || cls == StatementClass::transaction_end) {
      last_transaction = cls;
    }
    any_savepoint |= cls == StatementClass::transaction_savepoint;
    any_set |= cls == StatementClass::set_session;
  }
  if (strongest < 0) {
    out.cls = last_transaction ? *last_transaction
              : any_savepoint  ? StatementClass::transaction_savepoint
              : any_set        ? StatementClass::set_session
                               : StatementClass::unknown;
  }
  std::sort(out.tables.begin(), out.tables.end());
  out.tables.erase(std::unique(out.tables.begin(), out.tables.end()), out.tables.end());
  return out;
}

}  // namespace pgrouter::sql
