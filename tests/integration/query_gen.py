"""A seeded generator of SELECTs over test_scatter.py's tables, for test_shard_differential.py: the sharded table
sc_orders (tenant_id bigint key, id int unique, v text, n int, x float8, ok boolean, plan int) and the reference
table sc_plans (plan int primary key, name text). Each Query says how its answer may be compared with one
unsharded server's: in order (its ORDER BY is total) or as a multiset; whether its sharded rows are limited to one
shard by its keys (then pgrouter must never refuse it); and which constructs in it pgrouter may refuse (0A000)
when it has to read several shards.

Every answer must be deterministic on one server: LIMIT/OFFSET, DISTINCT ON and window frames only come with a
total order, ordered aggregates order by the unique id.

Placeholders are psycopg's (%s), and a literal % is written %% (the test always passes a parameter tuple, maybe
empty, so psycopg always reads the text as a template)."""
import random
from dataclasses import dataclass, field

TABLE = "sc_orders"
REF = "sc_plans"
TENANTS = [0, -1, 1, 2, 3, 7, 42, 99, 2 ** 40, -(2 ** 62)]  # test_scatter.rows()
ABSENT = [5, 1000, -7]  # keys without rows


@dataclass
class Query:
    sql: str
    params: tuple = ()
    ordered: bool = False       # the ORDER BY is total: rows must come in the same order
    single_shard: bool = False  # the keys limit it to one shard (or it reads no sharded table): never refused
    refusable: list = field(default_factory=list)  # constructs pgrouter may refuse across shards
    tags: list = field(default_factory=list)        # what it is made of, for the summary
    prepare: bool = False       # extended protocol: a named prepared statement rather than the unnamed one
    binary: bool = False        # extended protocol: binary results

    def describe(self):
        return f"{self.sql}  params={self.params!r}"


class Builder:
    """One statement being built: its parameters, refusable constructs and tags."""

    def __init__(self):
        self.params = []
        self.refusable = []
        self.tags = []

    def param(self, value):
        self.params.append(value)
        return "%s"

    def refuse(self, construct):
        self.refusable.append(construct)

    def tag(self, t):
        self.tags.append(t)


# Select items of the non-aggregate shapes: (expression, text-typed, sortable).
def row_items(col, join):
    items = [(col("id"), False), (col("tenant_id"), False), (col("v"), True), (col("n"), False),
             (col("x"), False), (col("ok"), False), (col("plan"), False),
             (f"{col('n')} * 2", False), (f"{col('n')} + {col('id')}", False), (f"abs({col('n')})", False),
             (f"coalesce({col('v')}, '-')", True), (f"upper({col('v')})", True), (f"length({col('v')})", False),
             (f"{col('n')}::numeric / 4", False), (f"{col('x')} * 2", False), (f"{col('n')} %% 3", False),
             (f"CASE WHEN {col('n')} > 0 THEN 'pos' ELSE 'neg' END", True), (f"{col('ok')} IS TRUE", False),
             (f"round({col('n')}::numeric / 7, 2)", False), (f"{col('tenant_id')} %% 10", False)]
    if join:
        items += [("p.name", True), ("p.plan", False), (f"p.name || '/' || {col('id')}", True)]
    return items


def outer(col, name):
    """A column of the sharded table as a subquery names it: qualified, so the subquery's table does not hide it."""
    c = col(name)
    return c if "." in c else f"{TABLE}.{c}"


class Generator:
    """generate(i) is the i-th query of the seed's sequence. shard_of maps every key of TENANTS and ABSENT to its
    shard; keys_by_shard is its inverse."""

    def __init__(self, seed, shard_of):
        self.seed = seed
        self.shard_of = dict(shard_of)
        self.keys_by_shard = {}
        for k, s in self.shard_of.items():
            self.keys_by_shard.setdefault(s, []).append(k)

    def generate(self, i):
        rng = random.Random(f"{self.seed}:{i}")
        kind = rng.choices(["rows", "aggregate", "group", "distinct", "refusable", "reference", "setop",
                            "error"],
                           weights=[30, 14, 26, 8, 12, 3, 4, 3])[0]
        q = getattr(self, "_" + kind)(rng)
        q.tags.insert(0, kind)
        q.prepare = rng.random() < 0.15
        q.binary = rng.random() < 0.08
        return q

    # ---- pieces ----

    def _from(self, rng, b, join=None):
        """FROM clause and a column naming function; joins the reference table sometimes."""
        if join is None:
            join = rng.random() < 0.3
        qualify = join or rng.random() < 0.5
        col = (lambda c: f"o.{c}") if qualify else (lambda c: c)
        text = f"{TABLE} o" if qualify else TABLE
        if join:
            b.tag("join")
            kind = rng.choice(["JOIN", "LEFT JOIN", "reversed"])
            if kind == "reversed":
                text = f"{REF} p JOIN {TABLE} o ON o.plan = p.plan"
            else:
                text += f" {kind} {REF} p ON p.plan = o.plan"
        elif qualify and rng.random() < 0.05:
            b.tag("colocated join")
            text += f" JOIN {TABLE} o2 ON o2.tenant_id = o.tenant_id AND o2.id = o.id + 1"
        return text, col, join

    def _key(self, rng, b, col):
        """A predicate on the shard key (or none) and whether it limits the rows to one shard."""
        kind = rng.choices(["eq", "in_one", "in_many", "any", "none", "range", "or"],
                           weights=[25, 8, 12, 5, 38, 6, 6])[0]
        b.tag("key:" + kind)
        k = rng.choice(TENANTS + ABSENT)
        lit = (lambda v: b.param(v)) if rng.random() < 0.5 else (lambda v: str(v))
        key = col("tenant_id")
        if kind == "eq":
            return f"{key} = {lit(k)}", True
        if kind == "in_one":
            same = self.keys_by_shard[self.shard_of[k]]
            keys = rng.sample(same, min(3, len(same)))
            return f"{key} IN ({', '.join(lit(v) for v in keys)})", True
        if kind == "in_many":
            keys = [rng.choice(self.keys_by_shard[0]), rng.choice(self.keys_by_shard[1])] + rng.sample(TENANTS, 2)
            return f"{key} IN ({', '.join(lit(v) for v in keys)})", False
        if kind == "any":
            return self._any(rng, b, key, k)
        if kind == "range":
            return f"{key} > {lit(k)}", False
        if kind == "or":
            k2 = rng.choice(TENANTS)
            return f"({key} = {lit(k)} OR {key} = {lit(k2)})", False
        return None, False

    def _any(self, rng, b, key, k):
        """key = ANY(array): a list parameter (text or binary), an array literal, typed or not, or ARRAY[...]; of
        one shard's keys (then limited to it), of both shards', or of none (empty, NULLs only)."""
        shape = rng.choices(["one", "many", "none"], weights=[50, 40, 10])[0]
        b.tag("any:" + shape)
        if shape == "one":
            pool = self.keys_by_shard[self.shard_of[k]]
            keys = rng.sample(pool, rng.randint(1, min(3, len(pool))))
        elif shape == "many":
            keys = [rng.choice(self.keys_by_shard[0]), rng.choice(self.keys_by_shard[1])] + rng.sample(TENANTS, 1)
            rng.shuffle(keys)
        else:
            keys = []
        if rng.random() < 0.2:
            keys.insert(rng.randint(0, len(keys)), None)  # matches no row, names no shard
        form = rng.choice(["param", "param_text", "param_binary", "literal", "typed", "array"])
        b.tag("any " + form)
        if form.startswith("param"):
            placeholder = {"param": "%s", "param_text": "%t", "param_binary": "%b"}[form]
            if rng.random() < 0.3:
                placeholder += "::bigint[]"  # (psycopg's ClientCursor then writes '{1}'::int2[]::bigint[])
            b.params.append(keys)
            text = placeholder
        else:
            def element(v):
                if v is None:
                    return rng.choice(["NULL", "null"])
                return rng.choice([str(v), f'"{v}"', f" {v} "])
            body = "{" + ",".join(element(v) for v in keys) + "}"
            if form == "literal":
                text = f"'{body}'"
            elif form == "typed":
                text = f"'{body}'::{rng.choice(['bigint[]', 'int8[]', 'pg_catalog.int8[]'])}"
            else:
                text = "ARRAY[" + ", ".join("NULL" if v is None else str(v) for v in keys) + "]::bigint[]"
        return f"{key} = ANY({text})", shape != "many"

    def _filter(self, rng, b, col, join):
        """Zero to two WHERE conditions on other columns."""
        out = []
        for _ in range(rng.choices([0, 1, 2], weights=[40, 40, 20])[0]):
            c = rng.randint(-50, 50)
            p = (lambda v: b.param(v)) if rng.random() < 0.4 else (lambda v: repr(v) if isinstance(v, str) else str(v))
            # Built lazily: only the chosen condition may add parameters.
            choices = [
                lambda: f"{col('n')} > {p(c)}", lambda: f"{col('n')} BETWEEN {p(c)} AND {p(c + 40)}",
                lambda: f"{col('v')} IS NULL", lambda: f"{col('v')} IS NOT NULL",
                lambda: f"{col('v')} = {p(rng.choice(['a', 'b', 'B', 'é']))}",
                lambda: f"{col('v')} COLLATE \"C\" > 'b'", lambda: f"{col('v')} IN ('a', 'B')",
                lambda: f"{col('ok')}", lambda: f"NOT {col('ok')}", lambda: f"{col('ok')} IS NULL",
                lambda: f"{col('x')} > 0", lambda: f"{col('x')} IS NULL",
                lambda: f"{col('plan')} = {p(rng.randint(1, 3))}", lambda: f"{col('plan')} IN (1, 3)",
                lambda: f"{col('id')} %% {rng.randint(2, 9)} = 1", lambda: f"({col('n')} > 10 OR {col('ok')})",
                lambda: f"{col('plan')} IN (SELECT plan FROM {REF} WHERE name <> 'free')",
                lambda: f"EXISTS (SELECT 1 FROM {REF} q WHERE q.plan = {outer(col, 'plan')} AND q.name = 'pro')",
                lambda: f"{col('n')} < {col('id')} - 150", lambda: rng.choice(["true", "true", "true", "false"]),
            ]
            if join:
                choices += [lambda: f"p.name = {p(rng.choice(['free', 'pro', 'max']))}", lambda: "p.name <> 'max'"]
            out.append(rng.choice(choices)())
        return out

    def _where(self, rng, b, col, join, extra=()):
        key, single = self._key(rng, b, col)
        conds = ([key] if key else []) + self._filter(rng, b, col, join) + list(extra)
        return (" WHERE " + " AND ".join(conds)) if conds else "", single

    def _limit(self, rng, b):
        """LIMIT/OFFSET (only ever after a total ORDER BY)."""
        r = rng.random()
        n, m = rng.randint(0, 12), rng.randint(0, 30)
        if r < 0.3:
            return f" LIMIT {n}"
        if r < 0.5:
            return f" LIMIT {n} OFFSET {m}"
        if r < 0.6:
            return f" OFFSET {m}"
        if r < 0.7:
            return f" FETCH FIRST {n} ROWS ONLY"
        if r < 0.75:
            return " LIMIT ALL"
        if r < 0.85:
            b.refuse("LIMIT/OFFSET parameters")
            b.tag("LIMIT param")
            return f" LIMIT {b.param(n)}"
        return ""

    def _text_key(self, rng, b, expr):
        """A text sort key: under COLLATE "C" (the order pgrouter compares), or not (then it may refuse)."""
        if rng.random() < 0.85:
            return f"{expr} COLLATE \"C\""
        b.refuse("ORDER BY text without COLLATE \"C\"")
        b.tag("ORDER BY text default collation")
        return expr

    @staticmethod
    def _nulls(rng):
        return rng.choice(["", "", " ASC", " DESC", " NULLS FIRST", " DESC NULLS LAST", " ASC NULLS FIRST"])

    # ---- shapes ----

    def _rows(self, rng):
        b = Builder()
        frm, col, join = self._from(rng, b)
        items = row_items(col, join)
        star = rng.random() < 0.1 and not join
        chosen = [] if star else rng.sample(items, rng.randint(1, 4))
        select = []
        for i, (expr, _) in enumerate(chosen):
            alias = f" AS c{i}" if rng.random() < 0.3 else ""
            select.append(expr + alias)
        if rng.random() < 0.04:
            b.refuse("window functions")
            b.tag("window")
            select.append(rng.choice([f"row_number() OVER (ORDER BY {col('id')})",
                                      f"sum({col('n')}) OVER (PARTITION BY {col('plan')})",
                                      f"rank() OVER (PARTITION BY {col('tenant_id')} "
                                      f"ORDER BY {col('n')}, {col('id')})"]))
        if rng.random() < 0.03:
            b.refuse("a subquery in the select list")
            b.tag("scalar subquery")
            select.append(f"(SELECT name FROM {REF} s WHERE s.plan = {outer(col, 'plan')}) AS pname")
        where, single = self._where(rng, b, col, join)
        sql = f"SELECT {'*' if star else ', '.join(select)} FROM {frm}{where}"
        ordered = False
        if rng.random() < 0.7:
            keys, total = [], False
            pool = [(col("id"), False), (col("n"), False), (col("x"), False), (col("v"), True),
                    (col("ok"), False), (col("plan"), False), (f"{col('n')} %% 5", False)]
            if join:
                pool.append(("p.name", True))
            for _ in range(rng.randint(1, 3)):
                how = rng.random()
                if star and how < 0.3:
                    pos = rng.randint(1, 7)
                    keys.append(f"{pos}{self._nulls(rng)}")
                    total = total or pos == 2
                    if pos == 3:
                        b.refuse("ORDER BY text without COLLATE \"C\"")
                    continue
                if not star and how < 0.25:  # by position or alias
                    i = rng.randrange(len(chosen))
                    expr, is_text = chosen[i]
                    ref = str(i + 1) if rng.random() < 0.5 or " AS " not in select[i] else f"c{i}"
                    if is_text:
                        b.refuse("ORDER BY text without COLLATE \"C\"")
                    keys.append(ref + self._nulls(rng))
                    total = total or expr == col("id")
                    continue
                expr, is_text = rng.choice(pool)
                keys.append((self._text_key(rng, b, expr) if is_text else expr) + self._nulls(rng))
                total = total or expr == col("id")
            if not total and rng.random() < 0.6:
                keys.append(col("id") + self._nulls(rng))
                total = True
            sql += " ORDER BY " + ", ".join(keys)
            b.tag("ORDER BY")
            if total:
                ordered = True
                sql += self._limit(rng, b)
        return Query(sql, tuple(b.params), ordered, single, b.refusable, b.tags)

    # (expression, alias-able name, refusal if any) of aggregates
    def _aggregates(self, rng, b, col, join):
        plain = ["count(*)", f"count({col('v')})", f"count({col('x')})", f"sum({col('n')})",
                 f"sum({col('id')}::bigint)", f"sum({col('tenant_id')})", f"sum({col('n')}::numeric / 4)",
                 f"min({col('n')})", f"max({col('n')})", f"min({col('x')})", f"max({col('x')})",
                 f"min({col('tenant_id')})", f"max({col('id')})", f"avg({col('n')})", f"avg({col('tenant_id')})",
                 f"avg({col('n')}::numeric / 3)", f"min({col('v')} COLLATE \"C\")",
                 f"max({col('v')} COLLATE \"C\")", f"bool_and({col('ok')})", f"bool_or({col('ok')})",
                 f"every({col('ok')})", f"count(*) FILTER (WHERE {col('n')} > 0)",
                 f"sum({col('n')}) FILTER (WHERE {col('ok')})", f"max({col('n')}) FILTER (WHERE {col('v')} IS NULL)"]
        if join:
            plain += ["min(p.name COLLATE \"C\")", "count(p.name)", "sum(p.plan)"]
        refusable = [(f"sum({col('x')})", "sum/avg of floating point"),
                     (f"avg({col('x')})", "sum/avg of floating point"),
                     (f"min({col('v')})", "min/max of text without COLLATE \"C\""),
                     (f"count(DISTINCT {col('v')})", "count(DISTINCT)"),
                     (f"sum(DISTINCT {col('n')})", "aggregates over DISTINCT"),
                     (f"string_agg({col('v')}, ',' ORDER BY {col('id')})", "string_agg"),
                     (f"array_agg({col('n')} ORDER BY {col('id')})", "array_agg"),
                     (f"stddev({col('n')})", "stddev"), (f"bit_or({col('n')})", "bit_or"),
                     (f"avg({col('n')}) FILTER (WHERE {col('ok')})", "avg FILTER"),
                     (f"sum({col('n')}) + 1", "aggregate inside an expression"),
                     (f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {col('n')})", "ordered-set aggregate")]
        if rng.random() < 0.12:
            expr, why = rng.choice(refusable)
            b.refuse(why)
            b.tag(why)
            return expr
        return rng.choice(plain)

    def _aggregate(self, rng):
        """Aggregates without GROUP BY: one row."""
        b = Builder()
        frm, col, join = self._from(rng, b)
        aggs = [self._aggregates(rng, b, col, join) for _ in range(rng.randint(1, 4))]
        select = [a + (f" AS a{i}" if rng.random() < 0.3 else "") for i, a in enumerate(aggs)]
        if rng.random() < 0.1:
            select.insert(0, "1 AS one")
            b.tag("constant")
        where, single = self._where(rng, b, col, join)
        sql = f"SELECT {', '.join(select)} FROM {frm}{where}"
        if rng.random() < 0.15:
            sql += " HAVING " + self._having_term(rng, b, aggs, select, col)
            b.tag("HAVING")
        return Query(sql, tuple(b.params), True, single, b.refusable, b.tags)

    def _having_term(self, rng, b, aggs, select, col):
        i = rng.randrange(len(aggs))
        a = aggs[i]
        if rng.random() < 0.15:
            b.refuse("HAVING other than a select item compared with a constant")
            b.tag("HAVING refusable")
            return rng.choice([f"count(*) > 1 OR sum({col('n')}) < 0", f"sum({col('n')}) > count(*)",
                               f"max({col('id')}) > 10", "1 > 50", "2 = 2"])
        if a.startswith(("min(o.v", "max(o.v", "min(v", "max(v", "min(p.name")):
            return f"{a} {rng.choice(['=', '<>'])} '{rng.choice(['a', 'b', 'c', 'pro', 'B'])}'"
        if a.startswith(("bool_", "every")):
            b.refuse("HAVING on a boolean")
            return f"{a} = true"
        if "string_agg" in a or "array_agg" in a:
            return f"{a} IS NOT NULL"
        return f"{a} {rng.choice(['>', '>=', '<', '<=', '=', '<>'])} {rng.choice([0, 1, 5, 20, -10, 2.5, 100])}"

    def _group(self, rng):
        b = Builder()
        frm, col, join = self._from(rng, b)
        pool = [(col("plan"), False), (col("ok"), False), (col("v"), True), (f"{col('n')} %% 3", False),
                (col("tenant_id"), False), (col("x"), False), (f"{col('n')} > 0", False)]
        if join:
            pool += [("p.name", True)]
        keys = rng.sample(pool, rng.randint(1, 2))
        shown = [k for k in keys if rng.random() < 0.75]  # the others are hidden group keys
        aggs = [self._aggregates(rng, b, col, join) for _ in range(rng.randint(0 if shown else 1, 3))]
        items = [(k, t, True) for k, t in shown] + [(a, False, False) for a in aggs]
        rng.shuffle(items)
        select = [expr + (f" AS g{i}" if rng.random() < 0.3 else "") for i, (expr, _, _) in enumerate(items)]
        if rng.random() < 0.05:
            select.append("'k' AS konst")
            b.tag("constant")
        where, single = self._where(rng, b, col, join)
        group_refs = []
        for k, _ in keys:
            pos = next((i for i, it in enumerate(items) if it[0] == k), None)
            how = rng.random()
            if pos is not None and how < 0.3:
                group_refs.append(str(pos + 1))
            elif pos is not None and how < 0.4 and " AS " in select[pos]:
                # An output column's name, which no input column has: that select item.
                b.tag("GROUP BY alias")
                group_refs.append(f"g{pos}")
            elif pos is not None and how < 0.45 and k == f"{col('n')} %% 3":
                # The name of an input column too: PostgreSQL groups by the input column n, of which the item
                # `n % 3` is a function; pgrouter, which groups by select items, may refuse it.
                select[pos] = f"{k} AS n"
                b.refuse("GROUP BY a name that is also an input column")
                b.tag("GROUP BY input name")
                group_refs.append("n")
            else:
                group_refs.append(k)
        sql = f"SELECT {', '.join(select)} FROM {frm}{where} GROUP BY {', '.join(group_refs)}"
        if aggs and rng.random() < 0.3:
            terms = [self._having_term(rng, b, aggs, select, col) for _ in range(rng.randint(1, 2))]
            sql += " HAVING " + " AND ".join(terms)
            b.tag("HAVING")
        ordered = False
        if rng.random() < 0.75:
            order, covered = [], set()
            if aggs and rng.random() < 0.3:  # an aggregate first, selected or not
                a = rng.choice(aggs + ["count(*)", f"avg({col('n')})", f"sum({col('n')})"])
                if "(DISTINCT" in a or "string_agg" in a or "array_agg" in a:
                    a = "count(*)"
                order.append(a + rng.choice(["", " DESC"]))
            for k, is_text in rng.sample(keys, len(keys)):
                if rng.random() < 0.15:
                    continue  # a partial order
                pos = next((i for i, it in enumerate(items) if it[0] == k), None)
                if pos is not None and rng.random() < 0.3:
                    ref = str(pos + 1)
                    if is_text:
                        b.refuse("ORDER BY text without COLLATE \"C\"")
                else:
                    ref = self._text_key(rng, b, k) if is_text else k
                order.append(ref + self._nulls(rng))
                covered.add(k)
            if order:
                sql += " ORDER BY " + ", ".join(order)
                b.tag("ORDER BY")
                if covered == {k for k, _ in keys}:
                    ordered = True
                    sql += self._limit(rng, b)
        if "ORDER BY" not in sql and rng.random() < 0.15:  # (with DISTINCT, ORDER BY must be in the select list)
            sql = "SELECT DISTINCT " + sql[len("SELECT "):]
            b.tag("DISTINCT")
        return Query(sql, tuple(b.params), ordered, single, b.refusable, b.tags)

    def _distinct(self, rng):
        b = Builder()
        frm, col, join = self._from(rng, b)
        pool = [(col("plan"), False), (col("ok"), False), (col("v"), True), (f"{col('n')} %% 4", False),
                (col("tenant_id"), False), (col("x"), False)]
        if join:
            pool.append(("p.name", True))
        cols = rng.sample(pool, rng.randint(1, 3))
        where, single = self._where(rng, b, col, join)
        sql = f"SELECT DISTINCT {', '.join(c for c, _ in cols)} FROM {frm}{where}"
        ordered = False
        if rng.random() < 0.6:
            order = []
            for i, (c, is_text) in enumerate(cols):
                if is_text:  # ORDER BY of a DISTINCT must be in its select list: by position
                    b.refuse("ORDER BY text without COLLATE \"C\"")
                    order.append(str(i + 1) + self._nulls(rng))
                else:
                    order.append(rng.choice([c, str(i + 1)]) + self._nulls(rng))
            drop = rng.random() < 0.2 and len(order) > 1
            sql += " ORDER BY " + ", ".join(order[:-1] if drop else order)
            ordered = not drop
            if ordered:
                sql += self._limit(rng, b)
        return Query(sql, tuple(b.params), ordered, single, b.refusable, b.tags)

    def _refusable(self, rng):
        """Shapes pgrouter refuses across shards, which one shard (a key) must still answer."""
        b = Builder()
        frm, col, join = self._from(rng, b, join=rng.random() < 0.2)
        where, single = self._where(rng, b, col, join)
        shape = rng.choice(["DISTINCT ON", "window", "string_agg", "count DISTINCT", "WITH", "subquery",
                            "FOR SHARE", "nested aggregate", "GROUPING SETS"])
        b.refuse(shape)
        b.tag(shape)
        ordered = True
        if shape == "DISTINCT ON":
            sql = (f"SELECT DISTINCT ON ({col('plan')}) {col('plan')}, {col('id')}, {col('n')} FROM {frm}{where} "
                   f"ORDER BY {col('plan')}, {col('n')} DESC, {col('id')}")
        elif shape == "window":
            fn = rng.choice([f"row_number() OVER (ORDER BY {col('id')})",
                             f"sum({col('n')}) OVER (PARTITION BY {col('plan')})",
                             f"lag({col('n')}) OVER (ORDER BY {col('id')})",
                             "count(*) OVER ()"])
            sql = f"SELECT {col('id')}, {fn} AS w FROM {frm}{where} ORDER BY {col('id')}"
        elif shape == "string_agg":
            sql = (f"SELECT {col('plan')}, string_agg({col('v')}, ',' ORDER BY {col('id')}) FROM {frm}{where} "
                   f"GROUP BY {col('plan')} ORDER BY {col('plan')}")
        elif shape == "count DISTINCT":
            sql = f"SELECT count(DISTINCT {col('v')}), count(DISTINCT {col('plan')}) FROM {frm}{where}"
        elif shape == "WITH":
            sql = (f"WITH t AS (SELECT {col('id')} AS id, {col('n')} AS n FROM {frm}{where}) "
                   f"SELECT count(*), sum(n) FROM t")
        elif shape == "subquery":
            sql = (f"SELECT s.plan, s.c FROM (SELECT {col('plan')} AS plan, count(*) AS c FROM {frm}{where} "
                   f"GROUP BY {col('plan')}) s ORDER BY s.plan")
        elif shape == "FOR SHARE":
            sql = f"SELECT {col('id')} FROM {frm}{where} ORDER BY {col('id')} FOR SHARE OF o" if "o" in frm.split() \
                else f"SELECT id FROM {frm}{where} ORDER BY id FOR SHARE"
        elif shape == "nested aggregate":
            sql = f"SELECT max({col('n')}) - min({col('n')}) AS spread FROM {frm}{where}"
        else:
            sql = (f"SELECT {col('plan')}, {col('ok')}, count(*) FROM {frm}{where} "
                   f"GROUP BY ROLLUP ({col('plan')}, {col('ok')})")
            ordered = False
        return Query(sql, tuple(b.params), ordered, single, b.refusable, b.tags)

    def _reference(self, rng):
        """The reference table alone: one shard answers anything."""
        b = Builder()
        sql = rng.choice([lambda: f"SELECT * FROM {REF} ORDER BY plan",
                          lambda: f"SELECT name, row_number() OVER (ORDER BY plan) FROM {REF} ORDER BY plan",
                          lambda: f"SELECT string_agg(name, ',' ORDER BY plan) FROM {REF}",
                          lambda: f"SELECT count(DISTINCT name) FROM {REF} WHERE plan > {b.param(rng.randint(0, 3))}",
                          lambda: f"SELECT DISTINCT ON (plan > 1) plan, name FROM {REF} ORDER BY plan > 1, plan"])()
        return Query(sql, tuple(b.params), True, True, [], ["reference"])

    def _setop(self, rng):
        b = Builder()
        key, single = self._key(rng, b, lambda c: c)
        where = f" WHERE {key}" if key else ""
        op = rng.choice(["UNION", "UNION ALL", "INTERSECT", "EXCEPT"])
        b.refuse("set operations")
        b.tag(op)
        second = rng.choice([f"SELECT plan FROM {REF}", f"SELECT plan FROM {TABLE}{where} AND n > 0"
                             if where else f"SELECT plan FROM {TABLE} WHERE n > 0"])
        if "%s" in second:  # the second arm repeats the key's parameters
            b.params += list(b.params)
        sql = f"SELECT plan FROM {TABLE}{where} {op} {second}"
        return Query(sql, tuple(b.params), False, single, b.refusable, b.tags)

    def _error(self, rng):
        """Statements every server fails: pgrouter must fail them with the same SQLSTATE."""
        b = Builder()
        frm, col, join = self._from(rng, b, join=False)
        where, single = self._where(rng, b, col, False)
        sql = rng.choice([f"SELECT {col('id')}, 1 / ({col('n')} - {col('n')}) FROM {frm}{where}",
                          f"SELECT no_such_column FROM {frm}{where}",
                          f"SELECT min({col('ok')}) FROM {frm}{where}",
                          f"SELECT sum({col('n')}) FROM {frm}{where} GROUP BY no_such",
                          f"SELECT {col('id')} FROM {frm}{where} ORDER BY 9",
                          f"SELECT {col('plan')}, count(*) FROM {frm}{where} GROUP BY 3",
                          f"SELECT {col('id')} FROM {frm}{where} ORDER BY {col('id')} LIMIT -1",
                          f"SELECT count(*) FROM {frm}{where} OFFSET -2"])
        return Query(sql, tuple(b.params), False, single, b.refusable, b.tags)
