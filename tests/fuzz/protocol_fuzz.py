#!/usr/bin/python3
"""Differential protocol fuzzer: random (valid and mutated) sequences of frontend messages, each sent once straight
to PostgreSQL and once through pgrouter, the normalised transcripts compared, and invariants checked after every
case.

    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --seed 1 --cases 200 [--mode transaction|session] [--replica]
    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --seed 1 --minutes 30 --mode session --replica
    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --replay 1:17 [--mode ...]      # case 17 of seed 1, regenerated
    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --replay failures.json          # the cases saved by --out
    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --replay tests/fuzz/corpus.json # minimised past failures
    /usr/bin/python3 tests/fuzz/protocol_fuzz.py --seed 1 --cases 200 --minimize # also minimise each failure

Needs PGR_CLUSTER_DIR (a cluster from tests/cluster.sh) and PGROUTER_BIN (or build/pgrouter). It starts its own
pgrouter (pgr.Pgrouter) with one worker (so that every client shares one pool) and pool.size 3 (so that servers
are reused from case to case), in transaction or session pooling, with or without the cluster's streaming replica.
Exit status 1 if any case failed; failures are printed (seed, case number, mode, the bytes of every round) and
written as JSON to --out (default /tmp/pgr-protocol-fuzz/failures-<seed>-<mode>.json) for --replay.
tests/fuzz/corpus.json (written by tests/fuzz/make_corpus.py) holds the minimised failures found so far, each with
a name, a note and the modes it applies to; tests/integration/test_protocol_fuzz.py replays it besides running
random cases.

A case is a list of rounds played on a fresh connection (user pgr_scram, database app). A round is a list of
frontend messages (some well formed, some mutated) written in one write or in random fragments with small pauses;
then replies are read until every Query/Sync of the round has had its ReadyForQuery (or a CopyInResponse asks for
data), and then until nothing more arrives for a short while. A round may end the connection (close, or reset)
instead. Generated: simple Query (single and multi-statement, errors, BEGIN/COMMIT/ROLLBACK/SAVEPOINT, SET/SHOW/
RESET, SQL PREPARE/EXECUTE/DEALLOCATE), extended protocol (Parse/Bind/Describe/Execute/Close/Sync/Flush, named and
unnamed statements and portals, pipelined batches with several Syncs, errors in the middle, row limits), COPY FROM
STDIN (CopyData/CopyDone/CopyFail, bad rows) and COPY TO STDOUT. Mutations: a message truncated and the connection
closed mid-message; lengths < 4, > 1 GiB, or longer than what follows; unknown message types ('y', 0x00 as the
first byte of a StartupMessage sent after login, a backend-only type, 0xff); CopyData/CopyDone/CopyFail outside
COPY; extended-protocol messages out of order; disconnecting (FIN or RST) mid-message, mid-transaction and
mid-COPY; fragmented sends.

The tables a case uses are made by the fuzzer (fz_<uid>_t, unique per run) and reset directly on the primary before
each of the two runs of a case (and, with --replica, the replica is waited for), so both runs start from the same
data.

Invariants checked through pgrouter after every case:
  (a) the pgrouter process is alive;
  (b) a fresh client gets exactly T/D/C/Z for `select <random int>` with that int;
  (c) a bystander client, logged in at start and kept open on the same pool, gets exactly its own answer to
      `select <its random int>`, `show statement_timeout` (0) and `show search_path` (the default) after each case:
      no foreign rows, settings, notices, ParameterStatus or errors;
  (d) no server connection of pgrouter (found by matching pgrouter's sockets in /proc with pg_stat_activity's
      client_port on the primary and the replica) is left 'active' or 'idle in transaction' for more than 3 s
      after the case's client is gone.

Normalisation (what may legitimately differ between pgrouter and PostgreSQL, on top of parity.Normaliser's:
BackendKeyData, process ids in texts, error file/line/routine and localized severity, user OIDs numbered in order
of appearance):
  * ParameterStatus and BackendKeyData during login are not part of the transcript (pgrouter reports its own set
    at login; see parity.py): the transcript starts after the first ReadyForQuery.
  * The text of an ErrorResponse FATAL 08P01 (protocol violation) is dropped, the code kept: pgrouter words its
    own framing errors (e.g. naming listen.max_message_size) while PostgreSQL says "invalid frontend message type
    N" or "invalid message format".
  * After a framing error (length < 4, length > 1 GiB) PostgreSQL reports the error only in its log (COMMERROR)
    and closes the connection without a word; pgrouter sends FATAL 08P01 first (tests/integration/
    test_protocol.py requires it). So after such a message a FATAL 08P01 followed by the close counts the same as
    the close alone.
  * A round that contains a protocol violation (a framing error, an unknown message type, a StartupMessage after
    login) and after which the connection is closed is compared only as "the connection was closed" (with or
    without a FATAL 08P01, which a reset can discard, see below): PostgreSQL reads and answers messages one at a
    time, so it answers (and runs) the round's messages before the bad one; pgrouter may check everything it has
    read first and refuse the lot. Which of those messages ran is not checked (the invariants still are).
  * From the round with a length longer than its message on, replies are not compared at all: the bytes that
    follow are read as the rest of that message and then as garbage headers, and where PostgreSQL and pgrouter
    notice (PostgreSQL checks the type byte first and has a 10,000-byte limit for some types, pgrouter frames
    whole headers against listen.max_message_size; one may still wait for bytes the other has refused) differs
    without either being wrong. Such cases still check the invariants, which is where their bugs showed (a
    half-read message left on a server).
  * A round with a Terminate in it, after which the connection is closed, is compared only as closed: PostgreSQL
    answers the messages before the Terminate, pgrouter runs them but does not relay the answers to a client that
    said it is leaving (checked by hand: an INSERT before the Terminate is committed both ways).
  * A connection reset (ECONNRESET) counts as a close, and the replies of the round it ends are not compared: a
    peer that closes with bytes of ours still unread sends a reset, and Linux then discards what the client had
    received but not yet read, so what is left depends on timing (seen with PostgreSQL itself).
Nothing else is normalised: any other difference (an extra or missing message, another SQLSTATE, a timeout where
PostgreSQL answered) is a failure.
"""
import argparse
import difflib
import json
import os
import random
import re
import socket
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
import parity  # noqa: E402
import pgr  # noqa: E402

USER = "pgr_scram"
PASSWORD = pgr.USERS[USER]
DATABASE = "app"
READY_TIMEOUT = 5.0      # seconds to wait for a ReadyForQuery that PostgreSQL would send
SETTLE_MS = 25           # after the last ReadyForQuery due, read until nothing comes for this long
MUTATED_IDLE_MS = 300    # a round with a mutation: read until nothing comes for this long
VIOLATION_CLOSE_SECONDS = 2.0  # a round with a protocol violation: read until the connection closes, or this long
STUCK_SECONDS = 3.0      # invariant (d)
DEFAULT_SEARCH_PATH = '"$user", public'


# ---------------------------------------------------------------------------------------------------------------
# Cases

@dataclass
class Item:
    label: str
    data: bytes
    ready: int = 0           # ReadyForQuery this message is due (Query, Sync)
    framing: bool = False    # a framing error (length < 4 or > 1 GiB): see the docstring

    def to_json(self):
        return {"label": self.label, "hex": self.data.hex(), "ready": self.ready, "framing": self.framing}

    @staticmethod
    def from_json(d):
        return Item(d["label"], bytes.fromhex(d["hex"]), d.get("ready", 0), d.get("framing", False))


@dataclass
class Round:
    items: list
    fragments: list = None   # [(size, pause_ms), ...] cycled over the round's bytes; None: one write
    wait: str = "ready"      # ready: read until the ReadyForQuery due (or CopyInResponse); idle: until quiet
    copy_stop: bool = True   # a CopyInResponse ends the wait (the round sends no CopyDone/CopyFail itself)
    end: str = ""            # "" | close | reset | close_unread: end the connection after sending (and reading)

    @property
    def data(self):
        return b"".join(i.data for i in self.items)

    def to_json(self):
        return {"items": [i.to_json() for i in self.items], "fragments": self.fragments, "wait": self.wait,
                "copy_stop": self.copy_stop, "end": self.end}

    @staticmethod
    def from_json(d):
        return Round([Item.from_json(i) for i in d["items"]], d.get("fragments"), d.get("wait", "ready"),
                     d.get("copy_stop", True), d.get("end", ""))


@dataclass
class Case:
    rounds: list
    notes: list = field(default_factory=list)

    def to_json(self):
        return {"notes": self.notes, "rounds": [r.to_json() for r in self.rounds]}

    @staticmethod
    def from_json(d):
        return Case([Round.from_json(r) for r in d["rounds"]], d.get("notes", []))

    def with_table(self, table):
        """This case with the table name it was saved with (self.table) replaced by table, in bytes and labels.
        Names are all fz_<8 hex>_t, so no message length changes."""
        old = getattr(self, "table", None)
        if not old or old == table:
            return self
        assert len(old) == len(table), (old, table)
        copy = Case.from_json(json.loads(json.dumps(self.to_json()).replace(old, table)))
        for rnd in copy.rounds:
            for item in rnd.items:
                item.data = item.data.replace(old.encode(), table.encode())
        return copy

    def describe(self):
        out = []
        for n, r in enumerate(self.rounds):
            extra = f" wait={r.wait}" + (f" fragments={r.fragments[:4]}..." if r.fragments else "") + \
                    (f" then {r.end}" if r.end else "")
            out.append(f"  round {n}:{extra}")
            for i in r.items:
                out.append(f"    {i.label}")
            out.append(f"    bytes: {r.data.hex()}")
            out.append(f"    python: {r.data!r}")
        return "\n".join(out)


def fe(frontend):
    """parity.Frontend -> Item."""
    return Item(frontend.label, frontend.encode(), 1 if frontend.kind in ("Q", "S") else 0)


def Q(sql):
    return fe(parity.Query(sql))


class Generator:
    """Cases from (seed, case number): each case has its own random.Random, so one can be regenerated alone."""

    def __init__(self, table):
        self.t = table

    def case(self, seed, number):
        rng = random.Random(f"{seed}:{number}")
        self.rng = rng
        rounds, notes = [], []
        for _ in range(rng.randint(1, 4)):
            kind = rng.choices(["simple", "extended", "copy", "txn"], [4, 4, 2, 2])[0]
            rounds += getattr(self, "gen_" + kind)()
            notes.append(kind)
        if rng.random() < 0.6:
            mutation = rng.choice(["truncate", "short_length", "huge_length", "long_length", "unknown_type",
                                   "copy_outside", "out_of_order", "disconnect_txn", "disconnect_copy",
                                   "terminate_mid", "disconnect_pipeline"])
            rounds = getattr(self, "mut_" + mutation)(rounds)
            notes.append(mutation)
        for r in rounds:
            if rng.random() < 0.25:
                r.fragments = [(rng.choice([1, 2, 3, 5, 7, 13, 64]), rng.choice([0, 0, 1, 2]))
                               for _ in range(rng.randint(1, 4))]
                notes.append("fragments") if "fragments" not in notes else None
        return Case(rounds, notes)

    # --- valid material -------------------------------------------------------------------------------------

    def int(self):
        return self.rng.randint(-1000, 100000)

    def sql(self):
        r, t = self.rng, self.t
        k = r.randint(1, 9)
        return r.choice([
            f"select {self.int()}", f"select {self.int()} as a, 'fz' as b", "select 1/0", f"select * from {t}_nope",
            "selec 1", f"insert into {t} values ({k}, 'v{k}')", f"update {t} set b = 'u{k}' where a = {k}",
            f"delete from {t} where a = {k}", f"select a, b from {t} order by a", f"select count(*) from {t}",
            f"set statement_timeout = '{r.randint(5, 60)}s'", "set search_path = pg_catalog, public",
            "show statement_timeout", "show search_path", "reset all", "reset statement_timeout",
            "set timezone = 'Asia/Tokyo'", "select pg_sleep(0.01)", "", "select generate_series(1, 3)",
            "prepare fzp as select $1::int * 2", "execute fzp(21)", "deallocate fzp",
            "do $$ begin raise notice 'fz %', 1; end $$",
        ])

    def gen_simple(self):
        r = self.rng
        if r.random() < 0.4:
            return [Round([Q("; ".join(self.sql() for _ in range(r.randint(2, 4))))])]
        if r.random() < 0.3:  # pipelined Queries in one write
            return [Round([Q(self.sql()) for _ in range(r.randint(2, 4))])]
        return [Round([Q(self.sql())]) for _ in range(r.randint(1, 3))]

    def gen_txn(self):
        r = self.rng
        rounds = [Round([Q(r.choice(["begin", "begin isolation level repeatable read", "start transaction"]))])]
        for _ in range(r.randint(1, 3)):
            rounds += r.choice([self.gen_simple, self.gen_extended])()
        if r.random() < 0.3:
            rounds.append(Round([Q("savepoint s1")]))
            rounds += self.gen_simple()
            rounds.append(Round([Q(r.choice(["rollback to savepoint s1", "release savepoint s1"]))]))
        rounds.append(Round([Q(r.choice(["commit", "rollback", "end", "commit; select 1"]))]))
        return rounds

    def statement(self):
        r, t = self.rng, self.t
        k = r.randint(1, 9)
        return r.choice([
            ("select $1::int + 1 as v", [self.int()]), ("select $1::text as t", ["fz" * r.randint(0, 3)]),
            (f"insert into {t} values ($1, $2)", [k, f"e{k}"]), (f"select a, b from {t} where a > $1 order by a", [k]),
            ("select 1/$1::int", [r.choice([0, 1])]), ("select generate_series(1, 5) as g", []),
            (f"update {t} set b = $1 where a = $2", ["x", k]), ("select $1::int", ["notanint"]),
            ("set search_path = pg_catalog", []), ("show search_path", []), ("", []), ("begin", []), ("commit", []),
        ])

    def gen_extended(self):
        r = self.rng
        items, groups = [], r.randint(1, 4)
        for g in range(groups):
            sql, params = self.statement()
            stmt = r.choice(["", "", f"fs{r.randint(0, 2)}"])
            portal = r.choice(["", "", f"fp{r.randint(0, 2)}"])
            msgs = [parity.Parse(sql, stmt)]
            if r.random() < 0.3:
                msgs.append(parity.Describe("S", stmt))
            msgs.append(parity.Bind(stmt, params, portal, result_formats=r.choice([(), (), (1,)])))
            if r.random() < 0.4:
                msgs.append(parity.Describe("P", portal))
            msgs.append(parity.Execute(portal, r.choice([0, 0, 0, 1, 2])))
            if portal and r.random() < 0.4:
                msgs.append(parity.Execute(portal, 0))
            if r.random() < 0.3:
                msgs.append(parity.Close("P", portal))
            if stmt and r.random() < 0.5:
                msgs.append(parity.Close("S", stmt))
            if g == groups - 1 or r.random() < 0.5:
                msgs.append(parity.Sync())
            items += [fe(m) for m in msgs]
        if items[-1].ready:
            return [Round(items)]
        if r.random() < 0.5:  # Flush, answers read, then the Sync in a later round
            return [Round(items + [fe(parity.Flush())], wait="idle"), Round([fe(parity.Sync())])]
        return [Round(items + [fe(parity.Sync())])]

    def copy_rows(self):
        r = self.rng
        rows = []
        for _ in range(r.randint(1, 4)):
            rows.append(r.choice([f"{r.randint(100, 100000)}\tc\n", f"{r.randint(1, 9)}\tdup\n", "x\tbad\n",
                                  f"{r.randint(100, 100000)}\t\\N\n", "1\t2\t3\n"]))
        return [fe(parity.CopyData(row)) for row in rows]

    def gen_copy(self):
        r, t = self.rng, self.t
        if r.random() < 0.35:
            return [Round([Q(r.choice([f"copy (select a, b from {t} order by a) to stdout",
                                       "copy (select generate_series(1, 3)) to stdout",
                                       f"copy {t} to stdout with (format csv, header)"]))])]
        start = Q(f"copy {t} (a, b) from stdin")
        end = r.choice([fe(parity.CopyDone()), fe(parity.CopyDone()), fe(parity.CopyFail("fz abort"))])
        if r.random() < 0.3:  # all in one write
            return [Round([start] + self.copy_rows() + [end], copy_stop=False)]
        rounds = [Round([start])]
        for _ in range(r.randint(0, 2)):
            rounds.append(Round(self.copy_rows(), wait="idle"))
        rounds.append(Round([end]))
        return rounds

    # --- mutations ----------------------------------------------------------------------------------------------

    def _pick(self, rounds):
        """(round index, item index) of a random message."""
        n = self.rng.randrange(len(rounds))
        return n, self.rng.randrange(len(rounds[n].items))

    def mut_truncate(self, rounds):
        """A message cut short, then the connection closed (a client dying mid-message)."""
        n, i = self._pick(rounds)
        item = rounds[n].items[i]
        cut = self.rng.randrange(1, len(item.data))
        rounds = rounds[:n + 1]
        r = rounds[n]
        r.items = r.items[:i] + [Item(f"!truncated to {cut}/{len(item.data)} bytes: {item.label}", item.data[:cut])]
        r.wait, r.end = "idle", self.rng.choice(["close", "reset"])
        return rounds

    def _with_length(self, item, length):
        return item.data[:1] + struct.pack(">i", length) + item.data[5:]

    def mut_short_length(self, rounds):
        n, i = self._pick(rounds)
        item, length = rounds[n].items[i], self.rng.randint(0, 3)
        rounds = rounds[:n + 1]
        r = rounds[n]
        r.items = r.items[:i] + [Item(f"!framing length {length}: {item.label}", self._with_length(item, length),
                                      framing=True)] + r.items[i + 1:]
        r.wait, r.end = "idle", "close"
        return rounds

    def mut_huge_length(self, rounds):
        n, i = self._pick(rounds)
        item, length = rounds[n].items[i], self.rng.choice([0x40000001, 0x7fffffff, 0x40000000 + 4096])
        rounds = rounds[:n + 1]
        r = rounds[n]
        r.items = r.items[:i] + [Item(f"!framing length {length:#x}: {item.label}", self._with_length(item, length),
                                      framing=True)] + r.items[i + 1:]
        r.wait, r.end = "idle", "close"
        return rounds

    def mut_long_length(self, rounds):
        """A length longer than the message: what follows is read as its body (PostgreSQL may then answer
        'invalid message format', run the Query, or wait for more)."""
        n, i = self._pick(rounds)
        item, extra = rounds[n].items[i], self.rng.choice([1, 2, 5, 20, 200])
        r = rounds[n]
        longer = Item(f"!length +{extra}: {item.label}", self._with_length(item, len(item.data) - 1 + extra))
        r.items = r.items[:i] + [longer] + r.items[i + 1:]
        r.wait = "idle"
        for later in rounds[n + 1:]:
            later.wait = "idle"
            for it in later.items:
                it.ready = 0
        rounds[-1].end = "close"
        for it in r.items:
            it.ready = 0
        return rounds

    def mut_unknown_type(self, rounds):
        r = self.rng
        kind = r.choice(["y", "startup", "T", "z", "\xff", "\x01", "p"])
        if kind == "startup":
            item = Item("!StartupMessage after login", pgr.startup_packet(USER, DATABASE))
        else:
            item = Item(f"!unknown type {kind!r}", kind.encode("latin-1") + struct.pack(">i", 8) + b"fuzz")
        n = r.randrange(len(rounds))
        rr = rounds[n]
        i = r.randrange(len(rr.items) + 1)
        rr.items = rr.items[:i] + [item] + rr.items[i:]
        rr.wait = "idle"
        rounds = rounds[:n + 1]
        rr.end = "close"
        return rounds

    def mut_copy_outside(self, rounds):
        """CopyData/CopyDone/CopyFail outside COPY: PostgreSQL ignores them."""
        r = self.rng
        msg = r.choice([parity.CopyData("1\tstray\n"), parity.CopyDone(), parity.CopyFail("stray")])
        item = fe(msg)
        item.label = "!outside COPY: " + item.label
        position = r.randrange(len(rounds) + 1)
        rounds.insert(position, Round([item], wait="idle"))
        if r.random() < 0.5:
            rounds.insert(position + 1, Round([Q(f"select {self.int()}")]))
        return rounds

    def mut_out_of_order(self, rounds):
        r = self.rng
        msgs = [parity.Bind("fs_nope", [1]), parity.Execute("fp_nope"), parity.Describe("P", "fp_nope"),
                parity.Describe("S", "fs_nope"), parity.Close("P", "fp_nope"), parity.Execute(""), parity.Bind("", [])]
        items = [fe(m) for m in r.sample(msgs, r.randint(1, 3))]
        extended = [x for x in rounds if any(i.data[:1] in b"PBDECHS" for i in x.items)]
        if extended and r.random() < 0.5:
            target = r.choice(extended)
            r.shuffle(target.items)  # still has its Sync(s): ReadyForQuery count unchanged
            target.items = [Item("!shuffled: " + i.label, i.data, i.ready) for i in target.items]
            target.wait = "idle"
        rounds.insert(r.randrange(len(rounds) + 1), Round(items + [fe(parity.Sync())]))
        return rounds

    def mut_disconnect_txn(self, rounds):
        r = self.rng
        rounds.append(Round([Q("begin")]))
        rounds += r.choice([self.gen_simple, self.gen_extended])()
        if r.random() < 0.5:
            rounds.append(Round([Q(f"insert into {self.t} values ({r.randint(100, 100000)}, 'txn')")]))
        rounds[-1].end = r.choice(["close", "reset"])
        return rounds

    def mut_disconnect_copy(self, rounds):
        r = self.rng
        rounds.append(Round([Q(f"copy {self.t} (a, b) from stdin")]))
        if r.random() < 0.7:
            rounds.append(Round(self.copy_rows(), wait="idle"))
        rows = self.copy_rows()
        rows[-1] = Item("!truncated: " + rows[-1].label, rows[-1].data[:r.randint(1, len(rows[-1].data) - 1)]) \
            if r.random() < 0.5 else rows[-1]
        rounds.append(Round(rows, wait="idle", end=r.choice(["close", "reset"])))
        return rounds

    def mut_terminate_mid(self, rounds):
        """Terminate followed by more messages in the same write."""
        n = self.rng.randrange(len(rounds))
        rounds = rounds[:n + 1]
        r = rounds[n]
        i = self.rng.randrange(len(r.items) + 1)
        r.items = r.items[:i] + [Item("!Terminate", pgr.terminate())] + [Item(x.label, x.data) for x in r.items[i:]]
        for x in r.items:
            x.ready = 0
        r.wait, r.end = "idle", "close"
        return rounds

    def mut_disconnect_pipeline(self, rounds):
        """A pipelined batch sent and the connection closed at once, without reading the answers."""
        if self.rng.random() < 0.5:
            rounds += self.gen_extended()
        else:
            rounds.append(Round([Q(self.sql()), Q("select pg_sleep(0.2)"), Q(self.sql())]))
        rounds = rounds[:-1] if len(rounds) > 1 and rounds[-1].items[0].label == "Sync" else rounds
        rounds[-1].end = "close_unread"
        return rounds


# ---------------------------------------------------------------------------------------------------------------
# Running a case on one endpoint

class _Closed(Exception):
    pass


def login(port, timeout=10.0, **startup):
    raw = pgr.Raw(port, timeout=timeout)
    try:
        raw.startup(USER, DATABASE, PASSWORD, **startup)
    except Exception:
        raw.close()
        raise
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def play(case, port):
    """Plays a case on a fresh connection to port; returns the transcript lines."""
    raw = login(port)
    norm = parity.Normaliser()
    lines = []
    pending = [0]  # ReadyForQuery due: every Query/Sync sent adds one, every ReadyForQuery received takes one

    def receive(timeout):
        try:
            kind, payload = raw.read_message(timeout)
        except (ConnectionResetError, BrokenPipeError):
            lines.append("< <connection reset>")
            raise _Closed()
        line = norm(kind, payload)
        if line is not None:
            lines.append("< " + line)
        if kind == "":
            raise _Closed()
        if kind == "Z":
            pending[0] = max(0, pending[0] - 1)
        return kind

    def idle(ms):
        while True:
            try:
                receive(ms / 1000)
            except socket.timeout:
                return

    try:
        for number, rnd in enumerate(case.rounds):
            lines.append(f"# round {number}")
            lines.extend("> " + i.label for i in rnd.items)
            data = rnd.data
            try:
                if rnd.fragments:
                    pos, k = 0, 0
                    while pos < len(data):
                        size, pause = rnd.fragments[k % len(rnd.fragments)]
                        raw.send(data[pos:pos + size])
                        pos, k = pos + size, k + 1
                        if pause:
                            time.sleep(pause / 1000)
                elif data:
                    raw.send(data)
            except (BrokenPipeError, ConnectionResetError):
                lines.append("< <connection closed>")
                raise _Closed()
            if rnd.end == "close_unread":
                lines.append("> <client closes the connection>")
                raw.close()
                return lines
            pending[0] += sum(i.ready for i in rnd.items)
            if rnd.wait == "ready":
                while pending[0] > 0:
                    try:
                        kind = receive(READY_TIMEOUT)
                    except socket.timeout:
                        lines.append(f"< <no ReadyForQuery within {READY_TIMEOUT:g}s>")
                        pending[0] = 0
                        break
                    if kind == "G" and rnd.copy_stop:
                        break
                idle(SETTLE_MS)
            elif any(i.label.startswith(_VIOLATIONS_SENT) for i in rnd.items):
                # Both should close: wait for it (a loaded machine can take longer than MUTATED_IDLE_MS).
                deadline = time.monotonic() + VIOLATION_CLOSE_SECONDS
                while time.monotonic() < deadline:
                    try:
                        receive(max(0.01, deadline - time.monotonic()))
                    except socket.timeout:
                        break
            else:
                idle(MUTATED_IDLE_MS)
            if rnd.end:
                lines.append(f"> <client {'resets' if rnd.end == 'reset' else 'closes'} the connection>")
                if rnd.end == "reset":
                    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()
                return lines
        try:
            raw.send(pgr.terminate())
        except OSError:
            pass
        lines.append("> Terminate")
        try:
            while True:
                receive(2.0)
        except socket.timeout:
            lines.append("< <not closed within 2s of Terminate>")
    except _Closed:
        pass
    finally:
        raw.close()
    return lines


_FATAL_08P01 = re.compile(r"^< ErrorResponse FATAL 08P01 .*")
_VIOLATIONS = ("> !framing", "> !unknown type", "> !StartupMessage")
_VIOLATIONS_SENT = tuple(v[2:] for v in _VIOLATIONS)


def normalise(lines):
    """See the module docstring. Lines are grouped by the '# round N' markers play() writes."""
    rounds, current = [], []
    for line in lines:
        if line.startswith("# round") and current:
            rounds.append(current)
            current = []
        current.append(line)
    if current:
        rounds.append(current)
    out, garbled = [], False
    for rnd in rounds:
        sent = [x for x in rnd if not x.startswith("< ")]
        received = [x for x in rnd if x.startswith("< ")]
        framing = any(x.startswith("> !framing") for x in sent)
        garbled = garbled or any(x.startswith("> !length +") for x in sent)  # the stream is out of step from here
        if garbled:  # whether the client closed before the peer did is not compared either
            out += [x for x in sent if not x.startswith("> <client")]
            out.append("< <replies not compared: a too-long length put the stream out of step>")
            continue
        violation = any(x.startswith(_VIOLATIONS) for x in sent)
        if received and received[-1] == "< <connection reset>":
            out += sent + ["< <connection closed>"]  # what came before the reset may have been discarded
            continue
        closed = bool(received) and received[-1] == "< <connection closed>"
        if closed and any(x == "> !Terminate" for x in sent):
            out += sent + ["< <connection closed>"]   # replies to what came before the Terminate are not due
            continue
        if closed and violation:
            out += sent + ["< <connection closed>"]
            continue
        for n, line in enumerate(rnd):
            if _FATAL_08P01.match(line):
                if framing and n + 1 < len(rnd) and rnd[n + 1] == "< <connection closed>":
                    continue
                line = "< ErrorResponse FATAL 08P01 <text dropped>"
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The harness: pgrouter, tables, invariants

class Failure(Exception):
    def __init__(self, check, detail, signature=None):
        super().__init__(f"{check}: {detail}")
        self.check, self.detail = check, detail
        self.signature = signature or check


def strict_select(raw, sql, expected_value, who):
    """Sends a Query; the reply must be exactly RowDescription, DataRow [expected], CommandComplete, RFQ 'I'."""
    raw.send(pgr.query(sql))
    got = []
    try:
        got = raw.read_until_ready(timeout=READY_TIMEOUT)
    except socket.timeout:
        raise Failure(who, f"{sql!r}: no ReadyForQuery within {READY_TIMEOUT}s; got {summarise(got)}",
                      f"{who}: timeout")
    except OSError as e:
        raise Failure(who, f"{sql!r}: {e!r}", f"{who}: {type(e).__name__}")
    kinds = "".join(k for k, _ in got)
    rows = [pgr.parse_data_row(p) for k, p in got if k == "D"]
    if kinds != "TDCZ" or rows != [[expected_value]] or got[-1][1] != b"I":
        raise Failure(who, f"{sql!r} expected exactly [[{expected_value!r}]] got {summarise(got)}",
                      f"{who}: got {kinds_signature(got)}")


def diff_signature(direct, routed):
    """What a difference is about, with numbers and names made up by the case blurred: the first line PostgreSQL
    sent that pgrouter did not, and the first pgrouter sent instead."""
    matcher = difflib.SequenceMatcher(a=direct, b=routed, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            a = direct[i1] if i1 < i2 else "(nothing)"
            b = routed[j1] if j1 < j2 else "(nothing)"
            blur = lambda x: re.sub(r"fz_\w+_t|\d+", "N", x)[:90]  # noqa: E731
            return f"PostgreSQL {blur(a)} | pgrouter {blur(b)}"
    return "?"


def kinds_signature(messages):
    out = []
    for k, p in messages:
        if k == "E":
            f = pgr.parse_error_fields(p)
            out.append(f"E({f.get('severity')} {f.get('code')})")
        elif k == "":
            out.append("EOF")
        else:
            out.append(k)
    return " ".join(out)


def summarise(messages):
    norm = parity.Normaliser()
    return [norm(k, p) for k, p in messages]


class Harness:
    def __init__(self, cluster, mode, replica, workdir, log=print, sharded=False):
        self.cluster, self.mode, self.replica, self.sharded = cluster, mode, replica, sharded
        self.workdir = Path(workdir)
        self.log = log
        self.uid = uuid.uuid4().hex[:8]
        self.table = f"fz_{self.uid}_t"
        self.rng = random.Random()
        self.router = None
        self.bystander = None
        self.restarts = 0
        self.admin = cluster.connect("primary")
        self.replica_admin = cluster.connect("replica") if replica else None
        with cluster.connect("primary", user=USER) as c:
            c.execute(f"create table {self.table} (a int primary key, b text)")
        self.start_router()

    def overrides(self):
        o = {"listen": {"workers": 1}, "log": {"level": "warn"},
             "pool": {"mode": self.mode, "size": 3, "queue_timeout": "5s"}}
        if self.replica:
            o["databases"] = [{"name": "app", "shards": [{"primary": self.cluster.endpoint("primary"),
                                                          "replicas": [self.cluster.endpoint("replica")]}],
                               "routing": {"probe_interval": "100ms"}}]
        if self.sharded:
            # A second shard and a sharded table the cases never name: every case runs on the default shard
            # (the primary), through the sharding paths (a lone BEGIN answered by pgrouter, statements checked
            # against their transaction's shard), and must still be what PostgreSQL answers.
            shard0 = {"primary": self.cluster.endpoint("primary")}
            if self.replica:
                shard0["replicas"] = [self.cluster.endpoint("replica")]
            o["databases"] = [{"name": "app", "shards": [shard0, {"primary": self.cluster.endpoint("shard1")}],
                               "routing": {"probe_interval": "100ms"},
                               "sharding": {"tables": {"fz_elsewhere": "tenant_id"}}}]
        return o

    def start_router(self):
        self.router = pgr.Pgrouter(self.cluster, self.workdir / f"pgrouter{self.restarts}", self.overrides())
        if self.replica:  # wait for the replica's first probe, so that reads may go there from the first case
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with self.router.connect() as c:
                    if c.execute("select pg_is_in_recovery()").fetchone()[0]:
                        break
                time.sleep(0.1)
        self.open_bystander()

    def restart_router(self):
        """A fresh pgrouter (and bystander), so that a case runs on servers no earlier case touched."""
        if self.bystander:
            self.bystander.close()
            self.bystander = None
        self.router.stop(check=False)
        self.restarts += 1
        self.start_router()

    def open_bystander(self):
        if self.bystander:
            self.bystander.close()
        self.bystander = login(self.router.port)

    def close(self):
        for c in (self.bystander,):
            if c:
                try:
                    c.send(pgr.terminate())
                except OSError:
                    pass
                c.close()
        if self.router:
            self.router.stop(check=False)
        try:
            with self.cluster.connect("primary", user=USER) as c:
                c.execute(f"drop table if exists {self.table}")
        except Exception:  # noqa: BLE001
            pass
        self.admin.close()
        if self.replica_admin:
            self.replica_admin.close()

    def reset_tables(self):
        with self.admin.transaction():
            self.admin.execute(f"truncate {self.table}")
            self.admin.execute(f"insert into {self.table} select g, 'r' || g from generate_series(1, 5) g")
        if self.replica:
            # The insert position: the test cluster commits asynchronously, so the write position may trail.
            lsn = self.admin.execute("select pg_current_wal_insert_lsn()").fetchone()[0]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.replica_admin.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
                    break
                time.sleep(0.005)

    def run_case(self, case):
        """Returns None, or a Failure."""
        self.reset_tables()
        try:
            direct = normalise(play(case, self.cluster.primary_port))
        except Exception as e:  # noqa: BLE001
            return Failure("direct", f"the case failed against PostgreSQL itself: {e!r}", "harness: direct")
        self.reset_tables()
        try:
            routed = normalise(play(case, self.router.port))
        except Exception as e:  # noqa: BLE001
            routed = [f"<could not play through pgrouter: {e!r}>"]
        failures = []
        if direct != routed:
            diff = "\n".join(difflib.unified_diff(direct, routed, "direct (PostgreSQL)", "pgrouter", n=3, lineterm=""))
            failures.append(Failure("transcript", diff, "transcript: " + diff_signature(direct, routed)))
        failures += self.check_invariants()
        if not failures:
            return None
        crash = [f for f in failures if f.check == "alive"]
        if crash:
            return Failure("alive", "\n".join(str(f) for f in crash + [f for f in failures if f.check != "alive"]),
                           crash[0].signature)
        main = failures[0]
        if len(failures) > 1:
            main = Failure(main.check, "\n".join(str(f) for f in failures),
                           " + ".join(sorted({f.signature for f in failures})))
        return main

    def check_invariants(self):
        failures = self.check_alive()
        if failures:
            return failures
        failures = self.check_others()
        # A crash while the checks ran (pgrouter may die a moment after the case) is that crash, not what the
        # checks saw because of it.
        return self.check_alive(failures) or failures

    def check_alive(self, seen=()):
        """(a) alive; restarts pgrouter (and the bystander) if not."""
        time.sleep(0.02)
        if self.router.running:
            return []
        code = self.router.proc.poll()
        also = "\n".join(str(f) for f in seen)
        failure = Failure("alive", f"pgrouter exited with {code}; log tail:\n{self.router.log()[-3000:]}"
                          + (f"\nchecks that failed meanwhile:\n{also}" if also else ""),
                          f"alive: pgrouter died ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)})")
        self.restarts += 1
        self.router.stop(check=False)
        self.start_router()
        return [failure]

    def check_others(self):
        failures = []
        # (d) no server left stuck (before (b) and (c), which would use the servers)
        try:
            self.check_stuck()
        except Failure as f:
            failures.append(f)
        # (b) fresh client
        try:
            n = str(self.rng.randint(1, 10 ** 9))
            fresh = login(self.router.port, timeout=READY_TIMEOUT + 2)
            try:
                strict_select(fresh, f"select {n}", n, "fresh client")
                fresh.send(pgr.terminate())
            finally:
                fresh.close()
        except Failure as f:
            failures.append(f)
        except Exception as e:  # noqa: BLE001
            failures.append(Failure("fresh client", f"login/query failed: {e!r}", f"fresh client: {type(e).__name__} "
                                    + re.sub(r"\d+", "N", str(e))[:60]))
        # (c) bystander
        try:
            n = str(self.rng.randint(1, 10 ** 9))
            strict_select(self.bystander, f"select {n}", n, "bystander")
            strict_select(self.bystander, "show statement_timeout", "0", "bystander")
            strict_select(self.bystander, "show search_path", DEFAULT_SEARCH_PATH, "bystander")
        except Failure as f:
            failures.append(f)
            try:
                self.open_bystander()
            except Exception as e:  # noqa: BLE001
                failures.append(Failure("bystander", f"could not log in again: {e!r}", "bystander: relogin"))
        return failures

    def router_ports(self):
        """Local ports of pgrouter's TCP connections (its server connections among them)."""
        pid = self.router.proc.pid
        inodes = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            return set()
        ports = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if parts[9] in inodes:
                            ports.add(int(parts[1].split(":")[1], 16))
            except OSError:
                pass
        return ports

    def check_stuck(self):
        deadline = time.monotonic() + STUCK_SECONDS
        while True:
            ports = list(self.router_ports())
            stuck = []
            for name, conn in (("primary", self.admin), ("replica", self.replica_admin)):
                if conn is None or not ports:
                    continue
                rows = conn.execute(
                    "select pid, state, client_port, round(extract(epoch from now() - state_change)::numeric, 2), "
                    "left(query, 80) from pg_stat_activity where client_port = any(%s) and state <> 'idle' "
                    "and backend_type = 'client backend'", (ports,)).fetchall()
                stuck += [(name,) + tuple(r) for r in rows]
            if not stuck:
                return
            if time.monotonic() > deadline:
                states = sorted({s[2] for s in stuck})
                raise Failure("stuck server", f"pgrouter server connections not idle {STUCK_SECONDS}s after the case: "
                              f"{stuck}", f"stuck server: {states}")
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------------------------
# Running many cases, minimising, the command line

def report_failure(seed, number, mode, replica, case, failure, log=print):
    log(f"\n=== FAILURE seed={seed} case={number} mode={mode}{' +replica' if replica else ''} "
        f"[{failure.signature}]\n--- case ({', '.join(case.notes)}):\n{case.describe()}\n--- {failure.check}:\n"
        f"{failure.detail}\n--- replay: /usr/bin/python3 tests/fuzz/protocol_fuzz.py --replay "
        f"{str(seed) + ':' + str(number) if isinstance(number, int) else 'FILE'} "
        f"--mode {mode}{' --replica' if replica else ''}\n")


def minimise(harness, case, signature, log=print):
    """Greedy: drop rounds, then messages, then fragmentation, keeping cases that fail with the same signature.
    Each try runs on a fresh pgrouter: what earlier tries left on its servers must not make a case fail."""
    def fails(c):
        harness.restart_router()
        f = harness.run_case(c)
        return f is not None and f.signature == signature

    def copy(c):
        return Case.from_json(json.loads(json.dumps(c.to_json())))

    best, changed = copy(case), True
    while changed:
        changed = False
        for n in range(len(best.rounds)):
            if len(best.rounds) <= 1 or n >= len(best.rounds):
                break
            trial = copy(best)
            dropped = trial.rounds.pop(n)
            if dropped.end and trial.rounds:
                trial.rounds[-1].end = trial.rounds[-1].end or (dropped.end if n == len(trial.rounds) else "")
            if fails(trial):
                best, changed = trial, True
                break
        if changed:
            continue
        for n, rnd in enumerate(best.rounds):
            for i in range(len(rnd.items)):
                if len(rnd.items) <= 1:
                    break
                trial = copy(best)
                del trial.rounds[n].items[i]
                if fails(trial):
                    best, changed = trial, True
                    break
            if changed:
                break
        if changed:
            continue
        for n, rnd in enumerate(best.rounds):
            if rnd.fragments:
                trial = copy(best)
                trial.rounds[n].fragments = None
                if fails(trial):
                    best, changed = trial, True
                    break
    best.notes = case.notes + ["minimised"]
    return best


def run(cluster, mode="transaction", replica=False, seed=1, cases=None, minutes=None, workdir=None, log=print,
        minimize=False, replay=None, out=None, sharded=False):
    """Runs the fuzzer; returns the list of (number, case, failure) found."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="pgr-protocol-fuzz-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    harness = Harness(cluster, mode, replica, workdir, log, sharded)
    harness.rng.seed(f"invariants:{seed}")
    gen = Generator(harness.table)
    failures, signatures = [], {}
    played = 0
    started = time.monotonic()
    log(f"protocol_fuzz: seed={seed} mode={mode} replica={replica} sharded={sharded} pgrouter={pgr.pgrouter_bin()} "
        f"port={harness.router.port} table={harness.table} workdir={workdir}")
    try:
        if replay is not None:
            numbered = replay
        else:
            numbered = iter(range(10 ** 9)) if cases is None else iter(range(cases))
            numbered = ((None, n, "") for n in numbered)
        for given, number, name in numbered:
            if minutes is not None and time.monotonic() - started > minutes * 60:
                break
            if isinstance(given, Case):
                case = given.with_table(harness.table)
                if len(replay) > 1:
                    harness.restart_router()  # saved cases are independent: each on servers no other touched
            else:
                case = gen.case(seed, number)
            failure = harness.run_case(case)
            played += 1
            if name:
                log(f"{name}: {'ok' if failure is None else 'FAILED [' + failure.signature + ']'}")
            if failure is None:
                continue
            report_failure(seed, f"{number} ({name})" if name else number, mode, replica, case, failure, log)
            if minimize and failure.signature not in signatures:
                harness.restart_router()
                if harness.run_case(case) is None:
                    log("--- not minimised: the case passes on a fresh pgrouter (it needs what earlier cases left)")
                    signatures[failure.signature] = signatures.get(failure.signature, 0) + 1
                    failures.append((number, case, failure))
                    continue
                small = minimise(harness, case, failure.signature, log)
                log(f"--- minimised ({sum(len(r.items) for r in small.rounds)} messages):\n{small.describe()}")
                case = small
            signatures[failure.signature] = signatures.get(failure.signature, 0) + 1
            failures.append((number, case, failure))
    finally:
        harness.close()
    elapsed = time.monotonic() - started
    log(f"\nprotocol_fuzz: seed={seed} mode={mode} replica={replica}: {played} cases, {len(failures)} failing, "
        f"{len(signatures)} distinct, {harness.restarts} pgrouter restarts, {elapsed:.1f}s")
    for sig, count in sorted(signatures.items(), key=lambda x: -x[1]):
        log(f"  {count:4}x {sig}")
    if out and failures:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps([
            {"seed": seed, "case": n, "mode": mode, "replica": replica, "signature": f.signature, "check": f.check,
             "detail": f.detail, "table": harness.table, **c.to_json()} for n, c, f in failures], indent=1))
        log(f"failures written to {out}")
    return failures


CORPUS = Path(__file__).resolve().parent / "corpus.json"
CORPUS_TABLE = "fz_00000000_t"  # the table name in the corpus's bytes: as long as every run's (fz_<8 hex>_t)


def load_cases(path, mode=None, replica=None):
    """Saved cases: a failures file written by --out, or the corpus (entries with a name, a note, the modes they
    apply to and whether they need the replica). Their table name (entry "table", default that of the corpus) is
    replaced by the run's when they are played. [(Case, number, name)]"""
    data = json.loads(Path(path).read_text())
    out = []
    for n, entry in enumerate(data if isinstance(data, list) else [data]):
        if mode and entry.get("modes") and mode not in entry["modes"]:
            continue
        if replica is not None and "modes" in entry and entry.get("replica", False) != replica:
            continue
        case = Case.from_json(entry)
        case.table = entry.get("table", CORPUS_TABLE)
        out.append((case, entry.get("case", n), entry.get("name", "")))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--cases", type=int)
    limit.add_argument("--minutes", type=float)
    limit.add_argument("--replay", help="SEED:CASE to regenerate one case, or a JSON file of cases (--out's, or "
                       "tests/fuzz/corpus.json: those whose modes include --mode and that need --replica or not)")
    parser.add_argument("--mode", choices=["transaction", "session"], default="transaction")
    parser.add_argument("--replica", action="store_true", help="route reads to the cluster's streaming replica")
    parser.add_argument("--sharded", action="store_true",
                        help="a database of two shards whose sharded table the cases never name")
    parser.add_argument("--minimize", action="store_true", help="minimise the first failure of each kind")
    parser.add_argument("--workdir", help="pgrouter's config and log (default: a new /tmp/pgr-protocol-fuzz-*)")
    parser.add_argument("--out", help="JSON file for the failures")
    args = parser.parse_args(argv)
    directory = os.environ.get("PGR_CLUSTER_DIR")
    if not directory:
        parser.error("set PGR_CLUSTER_DIR to a cluster started with tests/cluster.sh")
    cluster = pgr.Cluster(directory)
    seed = args.seed if args.seed is not None else random.randrange(10 ** 6)
    replay = None
    if args.replay:
        if ":" in args.replay and not Path(args.replay).exists():
            s, n = args.replay.split(":")
            seed, replay = int(s), [(None, int(n), "")]
        else:
            seed, replay = 0, load_cases(args.replay, args.mode, args.replica)
    elif args.cases is None and args.minutes is None:
        parser.error("give --cases N, --minutes M or --replay")
    out = args.out or f"/tmp/pgr-protocol-fuzz/failures-{seed}-{args.mode}{'-replica' if args.replica else ''}.json"
    failures = run(cluster, args.mode, args.replica, seed, args.cases, args.minutes, args.workdir, print,
                   args.minimize, replay, out, args.sharded)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
