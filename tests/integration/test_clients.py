"""Real clients (psycopg 3, node-postgres, JDBC) run their acceptance script (tests/clients/) against PostgreSQL
directly, which proves the script itself, and then through pgrouter, which must make no difference."""
import shutil
import subprocess
import tempfile

import pytest

import pgr

CLIENTS = pgr.REPO / "tests" / "clients"
NODE_DIR = CLIENTS / "node"
JDBC_JAR = "/usr/share/java/postgresql.jar"
CLIENT_TIMEOUT = 120


def run_client(argv, cwd=None):
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), f"{argv[0]} said:\n{output}"


@pytest.fixture(scope="session")
def node_client():
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True,
                       timeout=300)
    return ["node", str(NODE_DIR / "client.js")]


@pytest.fixture(scope="session")
def jdbc_client():
    classes = tempfile.mkdtemp(prefix="pgr-jdbc-")
    subprocess.run(["javac", "-cp", JDBC_JAR, "-d", classes, str(CLIENTS / "jdbc" / "ClientTest.java")],
                   check=True, capture_output=True, timeout=300)
    yield ["java", "-cp", f"{JDBC_JAR}:{classes}", "ClientTest"]
    shutil.rmtree(classes, ignore_errors=True)


def psycopg_argv(dsn, prepare_threshold):
    return ["/usr/bin/python3", str(CLIENTS / "psycopg_client.py"), dsn, "--prepare-threshold", str(prepare_threshold)]


def positional(port, user):
    return [pgr.HOST, str(port), user, pgr.USERS[user], "app"]


# --- directly against the primary: the client scripts themselves work -------------------------------------------

@pytest.mark.parametrize("prepare_threshold", [5, 0])
def test_psycopg_direct(cluster, prepare_threshold):
    run_client(psycopg_argv(cluster.dsn("primary", user="pgr_scram"), prepare_threshold))


def test_node_direct(cluster, node_client):
    run_client(node_client + positional(cluster.primary_port, "pgr_scram"))


@pytest.mark.parametrize("prepare_threshold", ["5", "1"])
def test_jdbc_direct(cluster, jdbc_client, prepare_threshold):
    run_client(jdbc_client + positional(cluster.primary_port, "pgr_scram") + [prepare_threshold])


# --- through pgrouter ---------------------------------------------------------------------------------------------

# Every client runs in both pool modes: under transaction pooling its named prepared statements and settings
# must follow it to whichever server it gets (a pool of 2 shared by the client's own connections). The third,
# "prepare_unnamed", is transaction pooling with pool.unnamed_statements: prepare (unnamed statements prepared
# under shared names on the servers).
# "sharded" is transaction pooling on a database of two shards (the primary and the shard1 server, which starts
# as a copy of it): the catalog tables are sharded by tenant_id, so each keyed statement runs on its tenant's
# shard, and the scratch table the clients write is on the default shard.
MODES = ["session", "transaction", "prepare_unnamed", "sharded"]


def router_for(pgrouter, mode):
    if mode == "prepare_unnamed":
        return pgrouter({"pool": {"mode": "transaction", "size": 2, "unnamed_statements": "prepare"}})
    if mode == "sharded":
        cluster = pgrouter.cluster
        tables = {t: "tenant_id" for t in ("products", "brands", "categories", "users")}
        return pgrouter({"pool": {"mode": "transaction", "size": 2},
                         "databases": [{"name": "app",
                                        "shards": [{"primary": cluster.endpoint("primary")},
                                                   {"primary": cluster.endpoint("shard1")}],
                                        "sharding": {"tables": tables}}]})
    return pgrouter({"pool": {"mode": mode, "size": 2}})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", ["pgr_scram", "pgr_md5", "pgr_clear", "pgr_trust"])
def test_psycopg_through_pgrouter(pgrouter, user, mode):
    router = router_for(pgrouter, mode)
    run_client(psycopg_argv(router.dsn(user=user), 5))


@pytest.mark.parametrize("mode", MODES)
def test_psycopg_prepared_through_pgrouter(pgrouter, mode):
    router = router_for(pgrouter, mode)
    run_client(psycopg_argv(router.dsn(user="pgr_scram"), 0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", ["pgr_scram", "pgr_md5"])
def test_node_through_pgrouter(pgrouter, node_client, user, mode):
    router = router_for(pgrouter, mode)
    run_client(node_client + positional(router.port, user))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prepare_threshold", ["5", "1"])
def test_jdbc_through_pgrouter(pgrouter, jdbc_client, prepare_threshold, mode):
    router = router_for(pgrouter, mode)
    run_client(jdbc_client + positional(router.port, "pgr_scram") + [prepare_threshold])
