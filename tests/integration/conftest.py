"""pytest fixtures for pgrouter's integration tests: one test cluster per session, pgrouter processes per test.

    def test_x(cluster, pgrouter):
        router = pgrouter({"pool": {"mode": "transaction"}})   # default config + overrides (see pgr.py)
        with router.connect(user="pgr_md5") as conn: ...

Set PGR_CLUSTER_DIR to the directory of a cluster already started with tests/cluster.sh to reuse it (it is then
left running); otherwise one is started in a temporary directory and stopped at the end.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgnodes  # noqa: E402
import pgr  # noqa: E402

_session_cluster = None
_cluster_log_tails = None  # captured before the cluster directory is removed, printed if anything failed


@pytest.fixture(scope="session")
def cluster():
    global _session_cluster, _cluster_log_tails
    reused = os.environ.get("PGR_CLUSTER_DIR")
    if reused:
        _session_cluster = pgr.Cluster(reused)
        yield _session_cluster
        return
    # Directly under /tmp: the servers run as 'postgres', which cannot traverse pytest's 0700 tmp_path parents.
    directory = tempfile.mkdtemp(prefix="pgr-cluster-", dir="/tmp")
    started = subprocess.run(["bash", str(pgr.CLUSTER_SCRIPT), "start", directory], capture_output=True, text=True)
    if started.returncode != 0:
        logs = "\n".join(f"==> {p} <==\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(Path(directory).glob("*.log")))
        subprocess.run(["bash", str(pgr.CLUSTER_SCRIPT), "stop", directory], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"tests/cluster.sh start failed ({started.returncode}):\n{started.stdout}\n{started.stderr}\n{logs}",
                    pytrace=False)
    _session_cluster = pgr.Cluster(directory)
    try:
        yield _session_cluster
    finally:
        _cluster_log_tails = _session_cluster.log_tails()
        subprocess.run(["bash", str(pgr.CLUSTER_SCRIPT), "stop", directory], capture_output=True)
        if os.environ.get("PGR_KEEP_CLUSTER") is None:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbench_tables(cluster):
    """pgbench's tables (scale 1) in the primary's `app` database, owned by pgr_scram; made once per run."""
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", pgr.HOST, "-p", str(cluster.primary_port), "-U",
                    "pgr_scram", "app"], check=True, capture_output=True, env=env, timeout=120)


@pytest.fixture
def pg_nodes(cluster, request):
    """Private PostgreSQL servers (pgnodes.PgNodes) for tests that kill, delay or promote servers; stopped and
    removed at the end of the test. Their log tails are added to a failing test's report."""
    nodes = pgnodes.PgNodes()
    request.node.pg_nodes = nodes
    yield nodes
    nodes.cleanup()


@pytest.fixture
def pgrouter(cluster, request, tmp_path):
    """Factory: pgrouter(overrides=None, env=None) starts one pgrouter and returns its pgr.Pgrouter. Every instance
    still running at the end of the test is stopped, and must exit with code 0."""
    started = []
    request.node.pgrouter_instances = started

    def start(overrides=None, env=None, start_timeout=15.0):
        instance = pgr.Pgrouter(cluster, tmp_path / f"pgrouter{len(started)}", overrides, env, start_timeout)
        started.append(instance)
        return instance

    start.cluster = cluster  # for helpers that build configs from the factory alone
    yield start
    failures = []
    for instance in started:
        try:
            instance.stop()
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for index, instance in enumerate(getattr(item, "pgrouter_instances", [])):
            report.sections.append((f"pgrouter{index} log (tail)", instance.log()[-int(os.environ.get("PGR_LOG_TAIL", "6000")):]))
        for node in getattr(getattr(item, "pg_nodes", None), "nodes", []):
            report.sections.append((f"private server {node.port} log (tail)", node.log_tail()))


def pytest_terminal_summary(terminalreporter):
    failed = terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
    if failed and _session_cluster is not None:
        terminalreporter.section("test cluster server logs (tail)")
        terminalreporter.write_line(_cluster_log_tails or _session_cluster.log_tails())
