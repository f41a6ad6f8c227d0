// The statement classifier against a table of statements whose expected class, relations and hint come from
// PostgreSQL's semantics (what the statement does and where it can run), not from the classifier's output.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "pgrouter/sql/classifier_cache.hpp"

using pgrouter::sql::ClassifierCache;
using pgrouter::sql::classify;
using pgrouter::sql::RouteHint;
using pgrouter::sql::StatementClass;
using pgrouter::sql::to_string;

namespace {

constexpr auto R = StatementClass::read, W = StatementClass::write, L = StatementClass::locking_read,
               B = StatementClass::transaction_begin, E = StatementClass::transaction_end,
               SP = StatementClass::transaction_savepoint, S = StatementClass::set_session,
               U = StatementClass::utility, N = StatementClass::unknown;
constexpr auto P = RouteHint::primary, Rep = RouteHint::replica, none = RouteHint::none;

struct Row {
  std::string_view sql;
  StatementClass cls;
  std::string_view tables;  // comma-separated, any order
  RouteHint hint = RouteHint::none;
  bool parse_error = false;
};

// The configuration's read-only user functions for every row.
bool configured_read_only(std::string_view name) {
  return name == "get_price" || name == "app.lookup" || name == "reporting.monthly_total";
}

const Row rows[] = {
    // plain reads and the relations they name
    {"SELECT 1", R, ""},
    {"select 1", R, ""},
    {"SELECT abalance FROM pgbench_accounts WHERE aid = 42;", R, "pgbench_accounts"},
    {"SELECT * FROM users", R, "users"},
    {"SELECT id, name FROM public.users WHERE id = $1", R, "public.users"},
    {"SELECT * FROM mydb.public.users", R, "mydb.public.users"},
    {"SELECT * FROM \"Users\"", R, "Users"},
    {"SELECT * FROM \"My Schema\".\"Order Items\"", R, "My Schema.Order Items"},
    {"SELECT * FROM USERS", R, "users"},
    {"SELECT * FROM ONLY parent", R, "parent"},
    {"SELECT * FROM parent*", R, "parent"},
    {"SELECT u.* FROM users u JOIN orders o ON o.user_id = u.id", R, "users,orders"},
    {"SELECT * FROM a LEFT JOIN b USING (id) RIGHT JOIN c ON true FULL JOIN d ON true CROSS JOIN e", R,
     "a,b,c,d,e"},
    {"SELECT * FROM a NATURAL JOIN b", R, "a,b"},
    {"SELECT * FROM a, b, a", R, "a,b"},
    {"SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)", R, "users,orders"},
    {"SELECT * FROM users WHERE EXISTS (SELECT 1 FROM orders WHERE orders.user_id = users.id)", R,
     "users,orders"},
    {"SELECT (SELECT max(total) FROM orders) AS m", R, "orders"},
    {"SELECT * FROM (SELECT * FROM orders) sub", R, "orders"},
    {"SELECT * FROM users u, LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id LIMIT 1) last", R,
     "users,orders"},
    {"SELECT ARRAY(SELECT id FROM tags)", R, "tags"},
    {"SELECT id FROM a UNION SELECT id FROM b", R, "a,b"},
    {"SELECT id FROM a INTERSECT SELECT id FROM b EXCEPT SELECT id FROM c", R, "a,b,c"},
    {"VALUES (1, 'a'), (2, 'b')", R, ""},
    {"TABLE users", R, "users"},
    {"SELECT * FROM t TABLESAMPLE SYSTEM (10)", R, "t"},
    {"SELECT count(*) FROM orders GROUP BY status HAVING count(*) > 1 ORDER BY 1 LIMIT 5 OFFSET 10", R,
     "orders"},
    {"SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC", R, "t"},
    {"SELECT * FROM t WHERE name LIKE 'a%' AND id BETWEEN 1 AND 10", R, "t"},
    {"SELECT * FROM t WHERE id = ANY($1::int[])", R, "t"},
    {"SELECT 'SELECT * FROM secret' AS text FROM visible", R, "visible"},
    {"SELECT 'it''s; DROP TABLE x' FROM t", R, "t"},
    {"SELECT E'a\\';b' FROM t", R, "t"},
    {"SELECT $$ ; DELETE FROM t; $$ FROM u", R, "u"},
    {"SELECT $tag$ $$ ; $tag$", R, ""},
    {"SELECT \"from\" FROM \"select\"", R, "select"},
    {"SELECT /* FROM hidden */ 1 FROM shown", R, "shown"},
    {"SELECT 1 -- FROM hidden\nFROM shown", R, "shown"},
    {"SELECT * FROM t1 AS x JOIN t2 AS y ON x.id = y.id", R, "t1,t2"},
    {"SELECT * FROM t WHERE x = 'a' COLLATE \"C\"", R, "t"},
    {"SELECT a, row_number() OVER (PARTITION BY b ORDER BY c) FROM t", R, "t"},
    {"SELECT * FROM t FETCH FIRST 10 ROWS ONLY", R, "t"},
    {"SELECT * FROM t ORDER BY a NULLS LAST LIMIT ALL", R, "t"},
    {"SELECT x::text, CAST(y AS int) FROM t", R, "t"},
    {"SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t", R, "t"},
    {"SELECT coalesce(a, b), nullif(a, 0), greatest(a, b), least(a, b) FROM t", R, "t"},
    {"SELECT a FROM t GROUP BY ROLLUP (a), CUBE (b)", R, "t"},
    {"SELECT * FROM t1 WHERE (a, b) IN (SELECT a, b FROM t2)", R, "t1,t2"},
    {"SELECT 1 FROM t WHERE a IS DISTINCT FROM b", R, "t"},
    {"SELECT * FROM pg_catalog.pg_tables", R, "pg_catalog.pg_tables"},
    {"SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace", R,
     "pg_class,pg_namespace"},
    {"SELECT * FROM information_schema.columns WHERE table_name = 't'", R, "information_schema.columns"},
    {"SELECT B'1010', X'ff', 1e10, .5", R, ""},
    {"SELECT \"nextval\" FROM t", R, "t"},
    {"SELECT 'nextval(1)' FROM t", R, "t"},
    {"SELECT t.nextval FROM t", R, "t"},
    {"SELECT * FROM nextval_log", R, "nextval_log"},
    {"SELECT * FROM \"select\" JOIN \"from\" ON true", R, "from,select"},
    {"SELECT * FROM U&\"\\0074\\0061\\0062\"", R, "tab"},
    {"SELECT * FROM t\xc3\xabst", R, "t\xc3\xabst"},
    {"SELECT * FROM \"quo\"\"te\"", R, "quo\"te"},
    {"SELECT * FROM \"back\\slash\"", R, "back\\slash"},

    // built-in functions that are safe on a replica
    {"SELECT now()", R, ""},
    {"SELECT current_timestamp, current_date, localtimestamp, current_user, session_user", R, ""},
    {"SELECT count(*), sum(amount), avg(amount), min(amount), max(amount) FROM payments", R, "payments"},
    {"SELECT lower(name), upper(name), length(name), substr(name, 1, 3), concat(a, b) FROM t", R, "t"},
    {"SELECT abs(-1), round(2.5), random(), ceil(1.2), floor(1.8), sqrt(4), power(2, 3)", R, ""},
    {"SELECT * FROM generate_series(1, 10)", R, ""},
    {"SELECT g FROM generate_series(1, 3) g JOIN t ON t.id = g", R, "t"},
    {"SELECT array_agg(id), string_agg(name, ',') FROM t", R, "t"},
    {"SELECT json_build_object('a', 1), jsonb_build_array(1, 2), to_jsonb(t) FROM t", R, "t"},
    {"SELECT data->>'name', data #> '{a,b}', jsonb_extract_path_text(data, 'x') FROM docs", R, "docs"},
    {"SELECT to_char(now(), 'YYYY'), date_trunc('day', created_at) FROM t", R, "t"},
    {"SELECT extract(year FROM created_at), date_part('month', created_at) FROM t", R, "t"},
    {"SELECT substring(name FROM 1 FOR 3), position('a' IN name), trim(both ' ' FROM name) FROM t", R, "t"},
    {"SELECT overlay(name placing 'x' from 1) FROM t", R, "t"},
    {"SELECT created_at AT TIME ZONE 'UTC' FROM t", R, "t"},
    {"SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()", R, ""},
    {"SELECT current_setting('search_path'), version()", R, ""},
    {"SELECT pg_sleep(1)", R, ""},
    {"SELECT pg_catalog.pg_get_userbyid(10)", R, ""},
    {"SELECT pg_catalog.pg_relation_size('t')", R, ""},
    {"SELECT pg_catalog.some_builtin_we_do_not_list(1)", R, ""},
    {"SELECT pg_catalog.lower('X')", R, ""},
    {"SELECT gen_random_uuid()", R, ""},
    {"SELECT md5(password), sha256(decode('00', 'hex')) FROM users", R, "users"},
    {"SELECT regexp_replace(a, 'x', 'y', 'g'), split_part(a, ',', 1) FROM t", R, "t"},
    {"SELECT to_tsvector('english', body) @@ plainto_tsquery('cat') FROM posts", R, "posts"},
    {"SELECT array_length(arr, 1), unnest(arr), cardinality(arr) FROM t", R, "t"},
    {"SELECT has_table_privilege('t', 'select'), pg_has_role('r', 'member')", R, ""},
    {"SELECT pg_size_pretty(pg_total_relation_size('t'))", R, ""},
    {"SELECT count(*) FILTER (WHERE paid) FROM orders", R, "orders"},
    {"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders", R, "orders"},
    {"SELECT lag(a) OVER w, lead(a) OVER w, rank() OVER w FROM t WINDOW w AS (ORDER BY a)", R, "t"},
    {"SELECT format('%s-%s', a, b), quote_ident(a), left(a, 2), right(a, 2) FROM t", R, "t"},
    {"SELECT age(birth), make_date(2020, 1, 1), justify_days(interval '35 days') FROM people", R, "people"},
    {"SELECT txid_current_snapshot(), pg_current_snapshot()", R, ""},
    {"SELECT txid_current_if_assigned()", R, ""},
    {"SELECT x FROM unnest(ARRAY[1, 2]) AS x", R, ""},
    {"SELECT * FROM json_each('{\"a\":1}')", R, ""},
    {"SELECT int4(1.5), text(1)", R, ""},
    {"SELECT pg_backend_pid(), inet_server_addr(), current_database()", R, ""},

    // user functions: read-only only when the configuration lists them (get_price, app.lookup,
    // reporting.monthly_total)
    {"SELECT get_price(42)", R, ""},
    {"SELECT GET_PRICE(42)", R, ""},
    {"SELECT app.lookup('x')", R, ""},
    {"SELECT reporting.monthly_total(2024, 1) FROM accounts", R, "accounts"},
    {"SELECT app.lookup(get_price(1))", R, ""},
    {"SELECT coalesce(get_price(1), 0)", R, ""},
    {"SELECT lookup('x')", W, ""},
    {"SELECT my_func(1)", W, ""},
    {"SELECT public.get_price(42)", W, ""},
    {"SELECT * FROM report_rows(2024)", W, ""},
    {"SELECT * FROM t WHERE check_access(t.id)", W, "t"},
    {"SELECT get_price(id), my_func(id) FROM t", W, "t"},
    {"SELECT \"Get_Price\"(1)", W, ""},
    {"SELECT public.lower('x')", W, ""},
    {"SELECT upper(my_func('x'))", W, ""},

    // functions that write, lock, or only work on the primary
    {"SELECT nextval('orders_id_seq')", W, ""},
    {"SELECT setval('s', 42)", W, ""},
    {"SELECT currval('s')", W, ""},
    {"SELECT lastval()", W, ""},
    {"SELECT pg_catalog.nextval('s')", W, ""},
    {"SELECT NEXTVAL('s')", W, ""},
    {"SELECT \"nextval\"('s')", W, ""},
    {"SELECT pg_advisory_lock(42)", W, ""},
    {"SELECT pg_advisory_xact_lock(42)", W, ""},
    {"SELECT pg_try_advisory_lock(1, 2)", W, ""},
    {"SELECT pg_advisory_unlock(42)", W, ""},
    {"SELECT pg_advisory_unlock_all()", W, ""},
    {"SELECT pg_try_advisory_xact_lock_shared(1)", W, ""},
    {"SELECT pg_advisory_lock_shared(7)", W, ""},
    {"SELECT set_config('search_path', 'app', false)", W, ""},
    {"SELECT pg_catalog.set_config('x.y', '1', true)", W, ""},
    {"SELECT lo_create(0)", W, ""},
    {"SELECT lo_import('/tmp/f')", W, ""},
    {"SELECT lo_unlink(16401)", W, ""},
    {"SELECT lo_open(16401, 131072)", W, ""},
    {"SELECT lowrite(0, 'x')", W, ""},
    {"SELECT lo_put(16401, 0, 'x')", W, ""},
    {"SELECT lo_get(16401)", W, ""},
    {"SELECT pg_notify('chan', 'payload')", W, ""},
    {"SELECT txid_current()", W, ""},
    {"SELECT pg_current_xact_id()", W, ""},
    {"SELECT pg_switch_wal()", W, ""},
    {"SELECT pg_create_restore_point('before')", W, ""},
    {"SELECT pg_terminate_backend(123)", W, ""},
    {"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE state = 'idle'", W, "pg_stat_activity"},
    {"SELECT pg_reload_conf()", W, ""},
    {"SELECT pg_current_wal_lsn()", W, ""},
    {"SELECT pg_stat_reset()", W, ""},
    {"SELECT pg_create_logical_replication_slot('s', 'pgoutput')", W, ""},
    {"SELECT id, nextval('s') FROM t", W, "t"},
    {"SELECT * FROM t WHERE id = nextval('s')", W, "t"},
    {"SELECT * FROM t ORDER BY setval('s', 1)", W, "t"},
    {"SELECT count(*) FILTER (WHERE pg_try_advisory_lock(id)) FROM jobs", W, "jobs"},
    {"SELECT CASE WHEN true THEN nextval('s') END", W, ""},
    {"SELECT * FROM (SELECT nextval('s')) x", W, ""},
    {"SELECT 1 WHERE EXISTS (SELECT pg_advisory_lock(1))", W, ""},
    {"SELECT max(nextval('s'))", W, ""},

    // locking reads
    {"SELECT * FROM jobs WHERE id = 1 FOR UPDATE", L, "jobs"},
    {"SELECT * FROM jobs FOR NO KEY UPDATE", L, "jobs"},
    {"SELECT * FROM jobs FOR SHARE", L, "jobs"},
    {"SELECT * FROM jobs FOR KEY SHARE", L, "jobs"},
    {"SELECT * FROM jobs FOR UPDATE SKIP LOCKED LIMIT 1", L, "jobs"},
    {"SELECT * FROM jobs FOR UPDATE NOWAIT", L, "jobs"},
    {"SELECT * FROM jobs j JOIN workers w ON w.id = j.worker FOR UPDATE OF j", L, "jobs,workers"},
    {"SELECT * FROM a, b FOR UPDATE OF a FOR SHARE OF b", L, "a,b"},
    {"SELECT * FROM (SELECT * FROM jobs FOR UPDATE) x", L, "jobs"},
    {"WITH locked AS (SELECT id FROM jobs FOR UPDATE SKIP LOCKED LIMIT 10) SELECT * FROM locked", L, "jobs"},
    {"SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)", L, "t,u"},
    {"select * from jobs for update", L, "jobs"},
    {"SELECT nextval('s') FROM jobs FOR UPDATE", W, "jobs"},

    // SELECT INTO creates a table
    {"SELECT * INTO new_table FROM old_table", W, "new_table,old_table"},
    {"SELECT id INTO TEMP tmp_ids FROM t", W, "t,tmp_ids"},
    {"SELECT 1 INTO UNLOGGED x", W, "x"},

    // data-modifying CTEs
    {"WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", W, "t"},
    {"WITH u AS (UPDATE accounts SET balance = 0 RETURNING id) SELECT count(*) FROM u", W, "accounts"},
    {"WITH i AS (INSERT INTO log (msg) VALUES ('x') RETURNING id) SELECT id FROM i", W, "log"},
    {"WITH moved AS (DELETE FROM queue RETURNING *) INSERT INTO archive SELECT * FROM moved", W,
     "archive,queue"},
    {"WITH a AS (SELECT * FROM t), b AS (UPDATE u SET x = 1 RETURNING *) SELECT * FROM a, b", W, "t,u"},
    {"WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5), "
     "ins AS (INSERT INTO nums SELECT n FROM r RETURNING n) SELECT * FROM ins",
     W, "nums"},

    // CTE names are not relations; their bodies' relations are
    {"WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') SELECT * FROM recent",
     R, "orders"},
    {"WITH a AS (SELECT * FROM t1), b AS (SELECT * FROM a JOIN t2 USING (id)) SELECT * FROM b", R, "t1,t2"},
    {"WITH t AS (SELECT * FROM t) SELECT * FROM t", R, "t"},
    {"WITH t AS (SELECT 1) SELECT * FROM public.t", R, "public.t"},
    {"WITH RECURSIVE tree AS (SELECT id, parent FROM nodes WHERE parent IS NULL UNION ALL "
     "SELECT n.id, n.parent FROM nodes n JOIN tree ON n.parent = tree.id) SELECT * FROM tree",
     R, "nodes"},
    {"WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b", R, "b"},
    {"WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", R, ""},
    {"SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x", R, "x"},
    {"WITH x AS (SELECT 1) SELECT * FROM t WHERE id IN (SELECT * FROM x)", R, "t"},
    {"WITH x AS MATERIALIZED (SELECT * FROM big) SELECT * FROM x", R, "big"},
    {"WITH x AS NOT MATERIALIZED (SELECT * FROM big) SELECT * FROM x JOIN small ON true", R, "big,small"},
    {"WITH \"X\" AS (SELECT 1) SELECT * FROM \"X\", x", R, "x"},
    {"WITH x AS (SELECT 1) SELECT * FROM \"X\"", R, "X"},
    {"(WITH a AS (SELECT 1) SELECT * FROM a) UNION ALL SELECT * FROM a", R, "a"},
    {"WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t WHERE n < 100) SELECT sum(n) FROM t", R,
     ""},
    {"WITH RECURSIVE st(id, link) AS (SELECT id, link FROM graph UNION ALL SELECT g.id, g.link FROM graph g, "
     "st "
     "WHERE g.id = st.link) CYCLE id SET is_cycle USING path SELECT * FROM st",
     R, "graph"},
    {"WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t", W, "t"},
    {"WITH src AS (SELECT * FROM staging) INSERT INTO target SELECT * FROM src", W, "staging,target"},
    {"WITH ids AS (SELECT id FROM stale) DELETE FROM items WHERE id IN (SELECT id FROM ids)", W,
     "items,stale"},
    {"WITH v AS (SELECT 2 AS x) UPDATE t SET x = v.x FROM v", W, "t"},
    {"WITH t AS (SELECT 1) UPDATE t SET x = 1", W, "t"},

    // INSERT / UPDATE / DELETE / MERGE / TRUNCATE
    {"INSERT INTO t VALUES (1)", W, "t"},
    {"INSERT INTO public.t (a, b) VALUES (1, 2), (3, 4)", W, "public.t"},
    {"INSERT INTO t DEFAULT VALUES", W, "t"},
    {"INSERT INTO t SELECT * FROM u", W, "t,u"},
    {"INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO NOTHING", W, "t"},
    {"INSERT INTO t (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = t.n + excluded.n", W, "t"},
    {"INSERT INTO t VALUES (1) RETURNING *", W, "t"},
    {"INSERT INTO t AS alias VALUES (1)", W, "t"},
    {"insert into \"Audit Log\" values (now())", W, "Audit Log"},
    {"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, CURRENT_TIMESTAMP)", W,
     "pgbench_history"},
    {"UPDATE accounts SET balance = balance - 1 WHERE id = 1", W, "accounts"},
    {"UPDATE pgbench_accounts SET abalance = abalance + 10 WHERE aid = 5", W, "pgbench_accounts"},
    {"UPDATE t SET a = u.a FROM u WHERE t.id = u.id", W, "t,u"},
    {"UPDATE ONLY t SET a = 1", W, "t"},
    {"UPDATE t SET (a, b) = (SELECT a, b FROM u WHERE u.id = t.id)", W, "t,u"},
    {"UPDATE t SET a = 1 WHERE CURRENT OF c", W, "t"},
    {"DELETE FROM t WHERE id = 1", W, "t"},
    {"DELETE FROM t USING u WHERE t.id = u.id", W, "t,u"},
    {"DELETE FROM t WHERE id IN (SELECT id FROM u) RETURNING id", W, "t,u"},
    {"MERGE INTO target t USING source s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v "
     "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)",
     W, "source,target"},
    {"MERGE INTO target USING (SELECT * FROM staging) s ON target.id = s.id WHEN MATCHED THEN DELETE", W,
     "staging,target"},
    {"TRUNCATE t", W, "t"},
    {"TRUNCATE TABLE a, b RESTART IDENTITY CASCADE", W, "a,b"},

    // COPY: FROM writes; TO STDOUT reads (unless its query writes or locks); TO a server file is the
    // primary's
    {"COPY t FROM STDIN", W, "t"},
    {"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W, "t"},
    {"COPY t FROM '/data/t.csv'", W, "t"},
    {"COPY t FROM PROGRAM 'cat x'", W, "t"},
    {"COPY t FROM STDIN WHERE a > 0", W, "t"},
    {"COPY t TO STDOUT", R, "t"},
    {"COPY t (a) TO STDOUT WITH (FORMAT binary)", R, "t"},
    {"COPY (SELECT * FROM t JOIN u USING (id)) TO STDOUT", R, "t,u"},
    {"COPY (SELECT nextval('s')) TO STDOUT", W, ""},
    {"COPY (SELECT * FROM jobs FOR UPDATE) TO STDOUT", L, "jobs"},
    {"COPY (INSERT INTO t VALUES (1) RETURNING id) TO STDOUT", W, "t"},
    {"COPY t TO '/tmp/t.csv'", U, "t"},
    {"COPY (SELECT 1) TO PROGRAM 'gzip > /tmp/x.gz'", U, ""},

    // EXPLAIN runs nothing unless ANALYZE
    {"EXPLAIN SELECT * FROM t", R, "t"},
    {"EXPLAIN (COSTS OFF) SELECT * FROM t JOIN u ON true", R, "t,u"},
    {"EXPLAIN ANALYZE SELECT * FROM t", R, "t"},
    {"explain analyse select 1", R, ""},
    {"EXPLAIN ANALYZE DELETE FROM t", W, "t"},
    {"EXPLAIN DELETE FROM t", R, "t"},
    {"EXPLAIN (ANALYZE) UPDATE t SET a = 1", W, "t"},
    {"EXPLAIN (ANALYZE true, BUFFERS) INSERT INTO t VALUES (1)", W, "t"},
    {"EXPLAIN (ANALYZE false) INSERT INTO t VALUES (1)", R, "t"},
    {"EXPLAIN (ANALYZE off) DELETE FROM t", R, "t"},
    {"EXPLAIN (ANALYZE 0) DELETE FROM t", R, "t"},
    {"EXPLAIN (ANALYZE 1) DELETE FROM t", W, "t"},
    {"EXPLAIN ANALYZE VERBOSE SELECT nextval('s')", W, ""},
    {"EXPLAIN SELECT nextval('s')", R, ""},
    {"EXPLAIN SELECT * FROM t FOR UPDATE", R, "t"},
    {"EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", L, "t"},
    {"EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", W, "x"},
    {"EXPLAIN (FORMAT JSON) WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", R, "t"},
    {"EXPLAIN EXECUTE q(1)", U, ""},
    {"EXPLAIN ANALYZE EXECUTE q", U, ""},

    // SHOW, cursors
    {"SHOW search_path", R, ""},
    {"SHOW ALL", R, ""},
    {"SHOW TRANSACTION ISOLATION LEVEL", R, ""},
    {"show server_version", R, ""},
    {"FETCH 10 FROM c", R, ""},
    {"FETCH ALL IN c", R, ""},
    {"MOVE NEXT IN c", R, ""},
    {"CLOSE c", R, ""},
    {"CLOSE ALL", R, ""},
    {"DECLARE c CURSOR FOR SELECT * FROM t", R, "t"},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", R, "t"},
    {"DECLARE c BINARY SCROLL CURSOR FOR SELECT * FROM t", R, "t"},
    {"DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", L, "t"},
    {"DECLARE c CURSOR FOR SELECT nextval('s')", W, ""},

    // transaction control
    {"BEGIN", B, ""},
    {"begin", B, ""},
    {"BEGIN WORK", B, ""},
    {"BEGIN TRANSACTION", B, ""},
    {"START TRANSACTION", B, ""},
    {"BEGIN ISOLATION LEVEL SERIALIZABLE", B, ""},
    {"BEGIN READ ONLY", B, ""},
    {"START TRANSACTION READ WRITE", B, ""},
    {"BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE", B, ""},
    {"COMMIT", E, ""},
    {"COMMIT WORK", E, ""},
    {"END", E, ""},
    {"END TRANSACTION", E, ""},
    {"ROLLBACK", E, ""},
    {"ABORT", E, ""},
    {"ROLLBACK WORK", E, ""},
    {"COMMIT AND CHAIN", E, ""},
    {"ROLLBACK AND NO CHAIN", E, ""},
    {"PREPARE TRANSACTION 'tx1'", E, ""},
    {"COMMIT PREPARED 'tx1'", W, ""},
    {"ROLLBACK PREPARED 'tx1'", W, ""},
    {"SAVEPOINT sp1", SP, ""},
    {"RELEASE SAVEPOINT sp1", SP, ""},
    {"RELEASE sp1", SP, ""},
    {"ROLLBACK TO SAVEPOINT sp1", SP, ""},
    {"ROLLBACK TO sp1", SP, ""},
    {"ROLLBACK TRANSACTION TO SAVEPOINT sp1", SP, ""},

    // SET / RESET
    {"SET search_path = app, public", S, ""},
    {"SET search_path TO DEFAULT", S, ""},
    {"SET SESSION statement_timeout = '5s'", S, ""},
    {"SET LOCAL statement_timeout = 0", S, ""},
    {"SET TIME ZONE 'UTC'", S, ""},
    {"SET NAMES 'UTF8'", S, ""},
    {"SET ROLE reporting", S, ""},
    {"SET SESSION AUTHORIZATION DEFAULT", S, ""},
    {"RESET search_path", S, ""},
    {"RESET ALL", S, ""},
    {"RESET ROLE", S, ""},
    {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", S, ""},
    {"SET TRANSACTION READ ONLY", S, ""},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", S, ""},
    {"SET CONSTRAINTS ALL DEFERRED", S, ""},
    {"SET transaction_read_only = on", S, ""},
    {"SET pgrouter.route = 'primary'", S, ""},
    {"SET pgrouter.route TO replica", S, ""},
    {"RESET pgrouter.route", S, ""},
    {"set application_name = 'x'", S, ""},
    {"SET datestyle TO postgres, dmy", S, ""},

    // utility: no table data changes, but the primary's business
    {"VACUUM", U, ""},
    {"VACUUM t", U, "t"},
    {"VACUUM (VERBOSE, ANALYZE) t (a, b)", U, "t"},
    {"VACUUM FULL a, b", U, "a,b"},
    {"ANALYZE", U, ""},
    {"ANALYZE t", U, "t"},
    {"ANALYZE VERBOSE public.t", U, "public.t"},
    {"CLUSTER t USING t_pkey", U, "t"},
    {"REINDEX TABLE t", U, "t"},
    {"CHECKPOINT", U, ""},
    {"LISTEN events", U, ""},
    {"UNLISTEN *", U, ""},
    {"NOTIFY events, 'payload'", U, ""},
    {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", U, "t"},
    {"LOCK t, u", U, "t,u"},
    {"PREPARE q AS SELECT * FROM t WHERE id = $1", U, "t"},
    {"PREPARE ins (int) AS INSERT INTO t VALUES ($1)", U, "t"},
    {"EXECUTE q(1)", U, ""},
    {"DEALLOCATE q", U, ""},
    {"DEALLOCATE ALL", U, ""},
    {"DISCARD ALL", U, ""},
    {"DISCARD PLANS", U, ""},
    {"DISCARD TEMP", U, ""},
    {"LOAD 'auto_explain'", U, ""},
    {"ALTER SYSTEM SET work_mem = '64MB'", U, ""},

    // DDL and other writes
    {"CREATE TABLE t (id int PRIMARY KEY)", W, "t"},
    {"CREATE TABLE IF NOT EXISTS app.t (id serial, ref int REFERENCES app.parent (id))", W,
     "app.parent,app.t"},
    {"CREATE TEMP TABLE tmp (x int)", W, "tmp"},
    {"CREATE UNLOGGED TABLE u (x int)", W, "u"},
    {"CREATE TABLE c (LIKE p INCLUDING ALL)", W, "c,p"},
    {"CREATE TABLE part_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')", W,
     "measurements,part_2024"},
    {"CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY)", W, "t"},
    {"CREATE TABLE t (id int DEFAULT nextval('s'))", W, "t"},
    {"CREATE TABLE t2 AS SELECT * FROM t", W, "t,t2"},
    {"CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM t", W, "mv,t"},
    {"REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W, "mv"},
    {"CREATE VIEW v AS SELECT * FROM t", W, "t,v"},
    {"CREATE OR REPLACE VIEW v AS SELECT * FROM t WHERE x", W, "t,v"},
    {"ALTER TABLE t ADD COLUMN c int", W, "t"},
    {"ALTER TABLE t RENAME TO t_old", W, "t"},
    {"ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id)", W, "t,u"},
    {"ALTER TABLE IF EXISTS ONLY t DROP COLUMN c", W, "t"},
    {"ALTER TABLE t OWNER TO app", W, "t"},
    {"ALTER TABLE measurements ATTACH PARTITION m2024 FOR VALUES FROM (1) TO (2)", W, "m2024,measurements"},
    {"ALTER INDEX i RENAME TO j", W, "i"},
    {"DROP TABLE t", W, "t"},
    {"DROP TABLE IF EXISTS a, app.b CASCADE", W, "a,app.b"},
    {"DROP VIEW v", W, "v"},
    {"DROP MATERIALIZED VIEW mv", W, "mv"},
    {"DROP INDEX t_idx", W, ""},
    {"DROP SEQUENCE s", W, ""},
    {"CREATE INDEX t_idx ON t (a)", W, "t"},
    {"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS u_idx ON app.t USING btree (lower(email))", W, "app.t"},
    {"CREATE SEQUENCE s", W, "s"},
    {"ALTER SEQUENCE s RESTART WITH 1", W, "s"},
    {"CREATE SCHEMA app", W, ""},
    {"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", W, ""},
    {"CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN x; END $$", W, ""},
    {"CREATE TRIGGER trg AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", W, "t"},
    {"CREATE EXTENSION IF NOT EXISTS pgcrypto", W, ""},
    {"GRANT SELECT ON t TO reader", W, "t"},
    {"GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader", W, ""},
    {"REVOKE ALL ON t FROM PUBLIC", W, "t"},
    {"COMMENT ON TABLE t IS 'x'", W, ""},
    {"SECURITY LABEL ON TABLE t IS 'x'", W, ""},
    {"CREATE ROLE app LOGIN PASSWORD 'x'", W, ""},
    {"ALTER ROLE app SET search_path = app", W, ""},
    {"DROP ROLE app", W, ""},
    {"CREATE DATABASE d", W, ""},
    {"DROP DATABASE d", W, ""},
    {"CREATE TYPE mood AS ENUM ('sad', 'ok')", W, ""},
    {"CREATE TYPE pair AS (a int, b int)", W, ""},
    {"ALTER TYPE mood ADD VALUE 'happy'", W, ""},
    {"CREATE DOMAIN posint AS int CHECK (VALUE > 0)", W, ""},
    {"CREATE POLICY p ON t USING (owner = current_user)", W, "t"},
    {"CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", W, "t"},
    {"CREATE STATISTICS s ON a, b FROM t", W, "t"},
    {"CREATE FOREIGN TABLE ft (a int) SERVER srv", W, "ft"},
    {"IMPORT FOREIGN SCHEMA remote FROM SERVER srv INTO local", W, ""},
    {"CREATE PUBLICATION pub FOR TABLE t", W, "t"},
    {"ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reader", W, ""},
    {"REASSIGN OWNED BY a TO b", W, ""},
    {"DROP OWNED BY a", W, ""},
    {"CREATE AGGREGATE myagg (int) (SFUNC = int4pl, STYPE = int)", W, ""},
    {"DO $$ BEGIN PERFORM 1; END $$", W, ""},
    {"DO LANGUAGE plpgsql $$ BEGIN NULL; END $$", W, ""},
    {"CALL process_queue()", W, ""},
    {"CALL app.refresh(1)", W, ""},
    {"CALL get_price(1)", W, ""},

    // several statements in one string
    {"SELECT 1; SELECT 2", R, ""},
    {"SELECT * FROM a; SELECT * FROM b", R, "a,b"},
    {"SELECT * FROM a; UPDATE b SET x = 1", W, "a,b"},
    {"UPDATE b SET x = 1; SELECT * FROM a", W, "a,b"},
    {"SELECT * FROM a; SELECT * FROM b FOR SHARE", L, "a,b"},
    {"SELECT * FROM jobs FOR UPDATE; SELECT 1", L, "jobs"},
    {"VACUUM a; SELECT * FROM b", U, "a,b"},
    {"VACUUM a; DELETE FROM b", W, "a,b"},
    {"SELECT * FROM t FOR UPDATE; LISTEN x", U, "t"},
    {"BEGIN; UPDATE t SET a = 1; COMMIT", W, "t"},
    {"BEGIN; SELECT * FROM t; COMMIT", R, "t"},
    {"BEGIN READ ONLY; SELECT * FROM t", R, "t"},
    {"BEGIN; SELECT * FROM t FOR UPDATE", L, "t"},
    {"COMMIT; BEGIN", B, ""},
    {"BEGIN; COMMIT", E, ""},
    {"BEGIN; SAVEPOINT a", B, ""},
    {"SAVEPOINT a; RELEASE a", SP, ""},
    {"SAVEPOINT a; COMMIT", E, ""},
    {"RELEASE a; SET x = 1", SP, ""},
    {"SET search_path = app; SELECT * FROM t", R, "t"},
    {"SET x = 1; BEGIN", B, ""},
    {"SET x = 1; RESET y", S, ""},
    {"SET x = 1; VACUUM", U, ""},
    {"SELECT 1;;SELECT 2;", R, ""},
    {";", N, ""},
    {";; ;", N, ""},
    {"", N, ""},
    {"   \n\t ", N, ""},
    {"-- only a comment", N, ""},
    {"SELECT 'a;b'; SELECT \"c;d\" FROM \"e;f\"", R, "e;f"},
    {"INSERT INTO t VALUES (1); INSERT INTO u VALUES (2); INSERT INTO t VALUES (3)", W, "t,u"},
    {"SHOW x; SELECT nextval('s')", W, ""},
    {"BEGIN; INSERT INTO t VALUES (1); SAVEPOINT a; DELETE FROM u; ROLLBACK TO a; COMMIT", W, "t,u"},
    {"PREPARE q AS SELECT 1; EXECUTE q", U, ""},
    {"DECLARE c CURSOR FOR SELECT * FROM t; FETCH 10 FROM c; CLOSE c", R, "t"},
    {"SELECT 1; CALL p()", W, ""},

    // routing hints: comments before the first statement only
    {"/* pgrouter: primary */ SELECT * FROM t", R, "t", P},
    {"/* pgrouter: replica */ SELECT * FROM t", R, "t", Rep},
    {"-- pgrouter: replica\nSELECT 1", R, "", Rep},
    {"--pgrouter:primary\nSELECT 1", R, "", P},
    {"/*pgrouter:replica*/SELECT 1", R, "", Rep},
    {"/* PGROUTER: PRIMARY */ SELECT 1", R, "", P},
    {"/* pgrouter = replica */ SELECT 1", R, "", Rep},
    {"/* pgrouter='primary' */ SELECT 1", R, "", P},
    {"/* pgrouter:\treplica */ SELECT 1", R, "", Rep},
    {"/* app=web, pgrouter: replica, user=1 */ SELECT 1", R, "", Rep},
    {"/* traceparent='00-abc' */ /* pgrouter: primary */ SELECT 1", R, "", P},
    {"-- a comment\n-- pgrouter: replica\nSELECT 1", R, "", Rep},
    {"-- pgrouter: primary   \r\nSELECT 1", R, "", P},
    {"/* pgrouter: primary */ /* pgrouter: replica */ SELECT 1", R, "", P},
    {"\n\t  /* pgrouter: replica */\n SELECT 1", R, "", Rep},
    {"/* outer /* pgrouter: replica */ still outer */ SELECT 1", R, "", Rep},
    {"SELECT 1 /* pgrouter: primary */", R, "", none},
    {"SELECT /* pgrouter: replica */ 1", R, "", none},
    {"SELECT 1; /* pgrouter: primary */ SELECT 2", R, "", none},
    {"SELECT '/* pgrouter: primary */'", R, "", none},
    {"/* pgrouter: primaryx */ SELECT 1", R, "", none},
    {"/* xpgrouter: primary */ SELECT 1", R, "", none},
    {"/* pgrouter primary */ SELECT 1", R, "", none},
    {"/* pgrouter: auto */ SELECT 1", R, "", none},
    {"/* route: primary */ SELECT 1", R, "", none},
    {"/* pgrouter: replica */ UPDATE t SET a = 1", W, "t", Rep},
    {"/* pgrouter: primary */ BEGIN", B, "", P},
    {"/* pgrouter: primary */", N, "", P},
    {"-- pgrouter: replica", N, "", Rep},
    {"/* pgrouter: replica */ SELEC 1", W, "", Rep, true},

    // text PostgreSQL rejects: the primary answers with the error
    {"SELEC 1", W, "", none, true},
    {"SELECT * FORM t", W, "", none, true},
    {"SELECT 'unterminated", W, "", none, true},
    {"SELECT 1 /* unterminated comment", W, "", none, true},
    {"SELECT \"unterminated FROM t", W, "", none, true},
    {"INSERT t VALUES (1)", W, "", none, true},
    {"UPDATE SET a = 1", W, "", none, true},
    {"DELETE t", W, "", none, true},
    {"SELECT 1; SELEC 2", W, "", none, true},
    {"CREATE TABLE (id int)", W, "", none, true},
    {"SELECT (1", W, "", none, true},
    {"BEGIN TRANSACTION READ SOMETIMES", W, "", none, true},
    {"SET = 1", W, "", none, true},
    {"SELECT * FROM t WHERE", W, "", none, true},
    {"$$", W, "", none, true},
    {"garbage", W, "", none, true},
    {"SELECT 1 FROM t t t", W, "", none, true},
};

std::string sorted_list(std::string_view csv) {
  std::vector<std::string> names;
  for (size_t start = 0; start < csv.size();) {
    size_t end = std::min(csv.find(',', start), csv.size());
    names.emplace_back(csv.substr(start, end - start));
    start = end + 1;
  }
  std::sort(names.begin(), names.end());
  std::string out;
  for (auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

TEST_CASE("classifier: statement table") {
  size_t count = 0;
  for (const Row& row : rows) {
    CAPTURE(row.sql);
    auto c = classify(row.sql, configured_read_only);
    CHECK(to_string(c.cls) == to_string(row.cls));
    CHECK(joined(c.tables) == sorted_list(row.tables));
    CHECK(to_string(c.hint) == to_string(row.hint));
    CHECK(c.parse_error == row.parse_error);
    ++count;
  }
  MESSAGE(count << " statements classified");
  CHECK(count >= 300);
}

TEST_CASE("classifier: statement table through one cache (statements of one shape share an entry)") {
  // Every row again, in one cache big enough for all, twice, with its integer and string literals changed the
  // second time: whatever entry a text lands on must give the row's own classification.
  ClassifierCache cache(4096, configured_read_only);
  for (int round = 0; round < 2; ++round) {
    for (const Row& row : rows) {
      std::string text(row.sql);
      if (round == 1) {
        std::string shape;
        if (ClassifierCache::shape_of(text, shape)) {
          text.clear();
          for (char ch : shape)
            text += ch == '\x01'   ? std::string("'zz'")
                    : ch == '\x02' ? std::string("424242")
                                   : std::string(1, ch);
        }
      }
      CAPTURE(text);
      const auto& c = cache.get(text);
      CHECK(to_string(c.cls) == to_string(row.cls));
      CHECK(joined(c.tables) == sorted_list(row.tables));
      CHECK(to_string(c.hint) == to_string(row.hint));
      CHECK(c.parse_error == row.parse_error);
    }
  }
  MESSAGE(cache.hits() << " hits, " << cache.misses() << " misses");
  CHECK(cache.hits() > 0);
}
