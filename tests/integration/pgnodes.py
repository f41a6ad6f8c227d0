"""Private PostgreSQL servers for tests that kill, delay or promote servers: copies of the shared cluster's primary
made with pg_basebackup, so they have its roles, the `app` database and its tables. The shared cluster's servers
are never stopped or promoted (other tests use them).

    node = nodes.replica_of(cluster.primary_port)   # streaming replica of the shared primary
    primary = nodes.copy_of(cluster.primary_port)   # an independent primary (same roles and data)
    standby = nodes.replica_of(primary.port)        # ... and a replica of it

The data directories live directly under /tmp, not in pytest's tmp_path: the servers run as 'postgres', which
cannot traverse tmp_path's 0700 parents. Every node is stopped (immediate) and removed at the end of the test.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pgr

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def as_postgres(args, **kw):
    if os.getuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + [str(a) for a in args]
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)


class PgNode:
    def __init__(self, directory, port):
        self.dir = Path(directory)
        self.data = self.dir / "data"
        self.port = port
        self.log = self.dir / "server.log"

    def endpoint(self):
        return {"host": pgr.HOST, "port": self.port}

    def connect(self, dbname="app", **kw):
        import psycopg
        kw.setdefault("autocommit", True)
        return psycopg.connect(f"host={pgr.HOST} port={self.port} user=postgres dbname={dbname}", **kw)

    def _ctl(self, *args, check=True):
        r = as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, *args], timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"pg_ctl {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}\n"
                                 f"{self.log_tail()}")
        return r

    def start(self):
        self._ctl("-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        """mode: smart | fast | immediate (immediate: like a crash; backends get SIGQUIT)."""
        if (self.data / "postmaster.pid").exists():
            self._ctl("-w", "-t", "60", "-m", mode, "stop", check=False)

    def kill_immediate(self, backend_pids=()):
        """What `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster, which passes it to every backend), but
        returns as soon as the given backends have exited instead of waiting for the postmaster: quick even on a
        loaded machine. stop() (or the cleanup) reaps the rest."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        for pid in backend_pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.002)
            else:
                raise AssertionError(f"backend {pid} of the server on {self.port} did not exit after SIGQUIT")

    def promote(self):
        self._ctl("-w", "-t", "60", "promote")

    @property
    def running(self):
        return (self.data / "postmaster.pid").exists()

    def in_recovery(self):
        with self.connect() as c:
            return c.execute("select pg_is_in_recovery()").fetchone()[0]

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PgNodes:
    """Factory and owner of the private servers of one test."""

    def __init__(self):
        self.nodes = []

    def _new(self, source_port, standby):
        directory = Path(tempfile.mkdtemp(prefix="pgr-node-", dir="/tmp"))
        if os.getuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        node = PgNode(directory, pgr.free_port())
        self.nodes.append(node)
        args = [PG_BIN / "pg_basebackup", "-h", pgr.HOST, "-p", source_port, "-U", "postgres", "-D", node.data,
                "-X", "stream", "-c", "fast", "--no-sync"]
        r = as_postgres(args + (["-R"] if standby else []), timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"pg_basebackup from port {source_port} failed: {r.stdout}{r.stderr}")
        with open(node.data / "postgresql.conf", "a") as f:  # the last setting of a name wins
            f.write(f"\n# tests/integration/pgnodes.py\nport = {node.port}\nunix_socket_directories = '{directory}'\n")
        node.start()
        return node

    def replica_of(self, source_port, wait_streaming=True):
        """A streaming replica of the server on source_port, started; waits until it streams."""
        node = self._new(source_port, standby=True)
        if wait_streaming:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with node.connect() as c:
                    if c.execute("select count(*) from pg_stat_wal_receiver where status = 'streaming'").fetchone()[0]:
                        return node
                time.sleep(0.1)
            raise AssertionError(f"replica on {node.port} does not stream from {source_port}:\n{node.log_tail()}")
        return node

    def copy_of(self, source_port):
        """An independent primary with the data of the server on source_port, started."""
        return self._new(source_port, standby=False)

    def cleanup(self):
        for node in reversed(self.nodes):
            node.stop("immediate")
            shutil.rmtree(node.dir, ignore_errors=True)
