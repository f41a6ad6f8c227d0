#!/usr/bin/python3
"""Protocol parity: send the same raw frontend message script to pgrouter and straight to PostgreSQL, and diff the
backend replies message by message.

A script is a list of steps: frontend messages (Parse, Bind, Describe, Execute, Close, Sync, Flush, Query,
CopyData, CopyDone, CopyFail), pipelines and waits:

    a Query or a Sync  is a round trip: what is queued is sent in one write, then replies are read until every
                       Query and Sync sent has had its ReadyForQuery (or a CopyInResponse asks for data)
    other messages     are queued, and go out with the next write
    Pipeline(*msgs)    queues all of msgs without waiting in between (one write); it waits at its end only if its
                       last message is a Query or a Sync
    Idle(ms)           sends what is queued, reads replies until none has arrived for ms milliseconds
    Until(kinds, n)    sends what is queued, reads replies until n messages whose kind is in kinds (e.g. "E", "sZ")

At the end the tool reads until every Query and Sync sent has had its ReadyForQuery (and a short while more, to see
anything extra). The transcript is one line per message sent ('>') and received ('<'), normalised so that what may
legitimately differ does not count: BackendKeyData, process ids in texts and notifications, ErrorResponse/
NoticeResponse file/line/routine and localized severity, OIDs of tables and types created by the script's setup
(numbered in order of appearance). ParameterStatus messages sent during login are not part of the transcript; those
sent later (SET of a reported parameter) are.

Transaction pooling hands a client's next transaction to whichever server is on top of the (LIFO) idle list, which
with one client is the server it just left, so a script would never notice that its state did not follow it.
With rotate=True (--rotate-servers) two extra clients of pgrouter take turns holding a transaction open at each
point where the script's client is idle (its last ReadyForQuery was 'I' and nothing is in flight), so that the
script's next transaction gets a different server whenever pgrouter lets it move. This needs pgrouter with one
worker (pools are per worker) and pool.size >= 3.

From pytest:

    result = parity.compare("flush_replies_before_sync", router=("127.0.0.1", 6432), direct=("127.0.0.1", 5432),
                            user="pgr_scram", password="scram_pw", database="app", rotate=True)
    assert result.ok, result.report()

From the command line (exit status 1 if any script differs):

    /usr/bin/python3 tests/integration/parity.py --router 127.0.0.1:6432 --direct 127.0.0.1:5432 \
        --user pgr_scram --password scram_pw --db app [--rotate-servers] [--show] [script names...]
    /usr/bin/python3 tests/integration/parity.py --list

Each script's setup and teardown SQL run on a direct connection as the same user, once before and after each run, so
both runs start from the same state. Names the scripts create start with parity_<uid>_ (unique per compare()).
"""
import argparse
import difflib
import hashlib
import re
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgr  # noqa: E402

FIRST_NORMAL_OID = 16384  # OIDs below this are built in and the same on every server
DEFAULT_TIMEOUT = 20.0    # seconds to wait for any one expected reply


# ---------------------------------------------------------------------------------------------------------------
# Frontend messages. Counts are unsigned 16-bit as the server reads them, so 65,535 parameters can be sent.

def _u16(n):
    return n.to_bytes(2, "big")


def _short(text, limit=70):
    text = text if isinstance(text, str) else text.decode(errors="replace")
    if len(text) <= limit:
        return repr(text)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{text[:limit - 20]!r}...<{len(text)} chars sha1:{digest}>"


@dataclass
class Frontend:
    kind: str
    payload: bytes
    label: str

    def encode(self):
        return pgr.message(self.kind, self.payload)


def Parse(sql, name="", types=()):
    payload = pgr.cstr(name) + pgr.cstr(sql) + _u16(len(types)) + b"".join(pgr.int32(t) for t in types)
    label = f"Parse {name!r} {_short(sql)}" + (f" types={len(types)}" if types else "")
    return Frontend("P", payload, label)


def Bind(statement="", params=(), portal="", param_formats=(), result_formats=()):
    """Text parameters unless param_formats says otherwise; None is NULL; str/int are sent as their text."""
    body = [pgr.cstr(portal), pgr.cstr(statement), _u16(len(param_formats))]
    body += [_u16(f) for f in param_formats]
    body.append(_u16(len(params)))
    for p in params:
        if p is None:
            body.append(pgr.int32(-1))
        else:
            data = p if isinstance(p, bytes) else str(p).encode()
            body.append(pgr.int32(len(data)) + data)
    body.append(_u16(len(result_formats)) + b"".join(_u16(f) for f in result_formats))
    if len(params) > 8:
        shown = f"{len(params)} params"
    else:
        shown = "[" + ", ".join("NULL" if p is None else _short(str(p) if not isinstance(p, bytes) else p, 40)
                                for p in params) + "]"
    return Frontend("B", b"".join(body), f"Bind portal={portal!r} statement={statement!r} {shown}")


def Describe(kind="S", name=""):
    return Frontend("D", kind.encode() + pgr.cstr(name), f"Describe {kind} {name!r}")


def Execute(portal="", max_rows=0):
    return Frontend("E", pgr.cstr(portal) + pgr.int32(max_rows), f"Execute {portal!r} max_rows={max_rows}")


def Close(kind="S", name=""):
    return Frontend("C", kind.encode() + pgr.cstr(name), f"Close {kind} {name!r}")


def Sync():
    return Frontend("S", b"", "Sync")


def Flush():
    return Frontend("H", b"", "Flush")


def Query(sql):
    return Frontend("Q", pgr.cstr(sql), f"Query {_short(sql)}")


def CopyData(data):
    data = data.encode() if isinstance(data, str) else data
    return Frontend("d", data, f"CopyData {_short(data, 50)}")


def CopyDone():
    return Frontend("c", b"", "CopyDone")


def CopyFail(reason):
    return Frontend("f", pgr.cstr(reason), f"CopyFail {reason!r}")


class Pipeline:
    """Messages queued together with no wait in between."""

    def __init__(self, *messages):
        self.messages = list(messages)


@dataclass
class Idle:
    """Read replies until none has arrived for ms milliseconds."""
    ms: int = 300


@dataclass
class Until:
    """Read replies until count messages whose kind is in kinds have arrived."""
    kinds: str
    count: int = 1


@dataclass
class Script:
    name: str
    steps: list
    setup: list = field(default_factory=list)     # SQL run directly (same user) before each run
    teardown: list = field(default_factory=list)  # SQL run directly after each run, errors ignored
    startup: dict = field(default_factory=dict)   # extra startup parameters (e.g. application_name)
    doc: str = ""


class Context:
    """What a script builder gets: a uid to make the names it creates unique."""

    def __init__(self, uid):
        self.uid = uid

    def name(self, base):
        return f"parity_{self.uid}_{base}"


# ---------------------------------------------------------------------------------------------------------------
# Backend messages -> normalised transcript lines.

_PID_IN_TEXT = re.compile(r"\b(process|PID|pid) \d+")
_SIMPLE = {"1": "ParseComplete", "2": "BindComplete", "3": "CloseComplete", "n": "NoData", "s": "PortalSuspended",
           "I": "EmptyQueryResponse", "c": "CopyDone"}


def _cstrings(payload):
    return [p.decode(errors="replace") for p in payload.split(b"\0")]


class Normaliser:
    def __init__(self):
        self.oids = {}  # user OID -> stable token

    def oid(self, value, prefix):
        if value < FIRST_NORMAL_OID:
            return str(value)
        return self.oids.setdefault((prefix, value), f"{prefix}{sum(1 for k in self.oids if k[0] == prefix) + 1}")

    @staticmethod
    def text(value):
        return _PID_IN_TEXT.sub(lambda m: f"{m.group(1)} <pid>", value)

    def __call__(self, kind, payload):
        """The transcript line for one backend message, or None for messages not compared."""
        if kind in _SIMPLE:
            return _SIMPLE[kind]
        if kind == "K":
            return None
        if kind == "Z":
            return f"ReadyForQuery {payload.decode()}"
        if kind == "C":
            return f"CommandComplete {_cstrings(payload)[0]!r}"
        if kind == "D":
            return "DataRow [" + ", ".join("NULL" if v is None else _short(self.text(v), 80)
                                           for v in pgr.parse_data_row(payload)) + "]"
        if kind in ("E", "N"):
            fields = {}
            for part in payload.split(b"\0"):
                if part:
                    fields[chr(part[0])] = part[1:].decode(errors="replace")
            severity = fields.get("V", fields.get("S", "?"))
            line = f"{'ErrorResponse' if kind == 'E' else 'NoticeResponse'} {severity} {fields.get('C', '?')} " \
                   f"{self.text(fields.get('M', ''))!r}"
            for code in sorted(fields):
                if code in "SVCMFLR":
                    continue
                line += f" {pgr.ERROR_FIELDS.get(code, code)}={self.text(fields[code])!r}"
            return line
        if kind == "S":
            name, value = _cstrings(payload)[:2]
            return f"ParameterStatus {name}={value!r}"
        if kind == "T":
            count = int.from_bytes(payload[:2], "big")
            pos, columns = 2, []
            for _ in range(count):
                end = payload.index(b"\0", pos)
                name = payload[pos:end].decode(errors="replace")
                pos = end + 1
                table = int.from_bytes(payload[pos:pos + 4], "big")
                attnum = int.from_bytes(payload[pos + 4:pos + 6], "big", signed=True)
                typ = int.from_bytes(payload[pos + 6:pos + 10], "big")
                typmod = int.from_bytes(payload[pos + 12:pos + 16], "big", signed=True)
                fmt = int.from_bytes(payload[pos + 16:pos + 18], "big", signed=True)
                pos += 18
                col = f"{name}:{self.oid(typ, 'type')}"
                if table:
                    col += f"@{self.oid(table, 'table')}.{attnum}"
                if typmod != -1:
                    col += f"({typmod})"
                if fmt:
                    col += " binary"
                columns.append(col)
            return "RowDescription [" + ", ".join(columns) + "]"
        if kind == "t":
            count = int.from_bytes(payload[:2], "big")
            types = [self.oid(int.from_bytes(payload[2 + 4 * i:6 + 4 * i], "big"), "type") for i in range(count)]
            if count > 8:
                kinds = sorted(set(types))
                return f"ParameterDescription {count} params of {kinds}"
            return f"ParameterDescription {types}"
        if kind in ("G", "H", "W"):
            overall = payload[0]
            count = int.from_bytes(payload[1:3], "big")
            formats = [int.from_bytes(payload[3 + 2 * i:5 + 2 * i], "big") for i in range(count)]
            name = {"G": "CopyInResponse", "H": "CopyOutResponse", "W": "CopyBothResponse"}[kind]
            return f"{name} format={overall} columns={formats}"
        if kind == "d":
            return f"CopyData {_short(payload, 60)}"
        if kind == "A":
            channel, note = _cstrings(payload[4:])[:2]
            return f"NotificationResponse pid=<pid> channel={channel!r} payload={note!r}"
        if kind == "v":
            return f"NegotiateProtocolVersion {payload!r}"
        if kind == "":
            return "<connection closed>"
        return f"<unknown message {kind!r} {_short(payload, 40)}>"


# ---------------------------------------------------------------------------------------------------------------
# Running a script.

def _endpoint(value):
    if isinstance(value, (tuple, list)):
        return value[0], int(value[1])
    host, _, port = str(value).rpartition(":")
    return host or pgr.HOST, int(port)


class _Stop(Exception):
    pass


class _Runner:
    def __init__(self, raw, timeout, rotate=None):
        self.raw = raw
        self.timeout = timeout
        self.rotate = rotate          # called before a write when the client is idle between transactions
        self.lines = []
        self.pending_ready = 0        # Query/Sync sent whose ReadyForQuery has not arrived
        self.unsynced = False         # extended-protocol messages sent since the last Sync
        self.between_transactions = False
        self.queued = []
        self.normalise = Normaliser()

    def _receive(self, timeout):
        """One message, recorded; raises socket.timeout."""
        try:
            kind, payload = self.raw.read_message(timeout)
        except (ConnectionResetError, BrokenPipeError):
            kind, payload = "", b""
        if kind == "Z":
            self.pending_ready -= 1
            self.between_transactions = payload == b"I" and self.pending_ready == 0 and not self.unsynced
        line = self.normalise(kind, payload)
        if line is not None:
            self.lines.append("< " + line)
        if kind == "":
            raise _Stop()
        return kind

    def queue(self, message):
        self.queued.append(message)
        self.lines.append("> " + message.label)

    def send_queued(self):
        if not self.queued:
            return
        if self.rotate and self.between_transactions:
            self.rotate()
        self.between_transactions = False
        for m in self.queued:
            if m.kind in ("Q", "S"):
                self.pending_ready += 1
                self.unsynced = False
            elif m.kind in ("P", "B", "D", "E", "C", "H"):
                self.unsynced = True
        data = b"".join(m.encode() for m in self.queued)
        self.queued = []
        try:
            self.raw.send(data)
        except (BrokenPipeError, ConnectionResetError):
            self.lines.append("< <connection closed while sending>")
            raise _Stop()

    def idle(self, ms):
        self.send_queued()
        while True:
            try:
                self._receive(ms / 1000)
            except socket.timeout:
                return

    def until(self, kinds, count):
        self.send_queued()
        seen = 0
        while seen < count:
            try:
                kind = self._receive(self.timeout)
            except socket.timeout:
                self.lines.append(f"< <timed out after {self.timeout:g}s waiting for {count - seen} more of {kinds!r}>")
                raise _Stop()
            if kind in kinds:
                seen += 1

    def settle(self):
        """Sends what is queued and reads until every ReadyForQuery due has come, or a CopyInResponse."""
        self.send_queued()
        while self.pending_ready > 0:
            try:
                kind = self._receive(self.timeout)
            except socket.timeout:
                self.lines.append(f"< <timed out after {self.timeout:g}s waiting for {self.pending_ready} "
                                  "ReadyForQuery>")
                raise _Stop()
            if kind == "G":
                return

    def run(self, steps):
        try:
            for step in steps:
                if isinstance(step, Frontend):
                    self.queue(step)
                    if step.kind in ("Q", "S"):
                        self.settle()
                elif isinstance(step, Pipeline):
                    for m in step.messages:
                        self.queue(m)
                    if step.messages and step.messages[-1].kind in ("Q", "S"):
                        self.settle()
                elif isinstance(step, Idle):
                    self.idle(step.ms)
                elif isinstance(step, Until):
                    self.until(step.kinds, step.count)
                else:
                    raise TypeError(f"unknown script step {step!r}")
            self.settle()
            if self.pending_ready > 0:  # a COPY left waiting for data
                self.lines.append("< <script ended with a COPY waiting for data>")
            self.idle(50)  # anything more is a difference too
        except _Stop:
            pass
        return self.lines


class Rotator:
    """Two extra clients of pgrouter that take turns holding a transaction open, so that the script's client, each
    time it is idle between transactions, finds the server it just left taken and gets another (see the module
    docstring). rounds counts the turns taken."""

    def __init__(self, endpoint, user, password, database, timeout=DEFAULT_TIMEOUT):
        self.clients = []
        self.holder = None
        self.rounds = 0
        try:
            for _ in range(2):
                self.clients.append(_login(endpoint, user, password, database, timeout, {}))
        except Exception:
            self.close()
            raise

    def __call__(self):
        time.sleep(0.005)  # pgrouter gives the server back just after writing ReadyForQuery
        taker = 1 if self.holder == 0 else 0
        self._run(self.clients[taker], "begin")  # takes the top of the idle list: the server the script just left
        if self.holder is not None:
            self._run(self.clients[self.holder], "commit")  # frees the server the script had before
        self.holder = taker
        self.rounds += 1

    @staticmethod
    def _run(raw, sql):
        _, error = raw.simple_query(sql)
        if error:
            raise RuntimeError(f"rotator {sql!r}: {error.get('code')} {error.get('message')}")

    def close(self):
        for raw in self.clients:
            try:
                raw.send(pgr.terminate())
            except OSError:
                pass
            raw.close()
        self.clients = []


def _login(endpoint, user, password, database, timeout, startup):
    host, port = _endpoint(endpoint)
    raw = pgr.Raw(port, host=host, timeout=timeout)
    try:
        raw.startup(user, database, password, **startup)
    except Exception:
        raw.close()
        raise
    return raw


def run_sql(endpoint, statements, user, password, database, timeout=DEFAULT_TIMEOUT, check=True):
    """Runs each statement as a simple Query on a new connection; raises on the first error if check."""
    if not statements:
        return
    with _login(endpoint, user, password, database, timeout, {}) as raw:
        for sql in statements:
            _, error = raw.simple_query(sql)
            if error and check:
                raise RuntimeError(f"setup statement failed: {sql!r}: {error.get('code')} {error.get('message')}")
        raw.send(pgr.terminate())


def transcript(script, endpoint, user, password, database, setup_endpoint=None, timeout=DEFAULT_TIMEOUT,
               rotate=None):
    """Runs setup (on setup_endpoint, default endpoint), the script on endpoint, then teardown; returns the
    normalised transcript lines. rotate: a Rotator (or any callable) to call between transactions."""
    setup_endpoint = setup_endpoint or endpoint
    run_sql(setup_endpoint, script.setup, user, password, database, timeout)
    try:
        raw = _login(endpoint, user, password, database, timeout, script.startup)
        with raw:
            lines = _Runner(raw, timeout, rotate).run(script.steps)
            try:
                raw.send(pgr.terminate())
            except OSError:
                pass
        return lines
    finally:
        run_sql(setup_endpoint, script.teardown, user, password, database, timeout, check=False)


@dataclass
class Result:
    name: str
    direct: list
    router: list
    seconds: float
    rotations: int = 0  # times the router run was moved off its server between transactions (rotate=True)

    @property
    def ok(self):
        return self.direct == self.router

    @property
    def diff(self):
        return "\n".join(difflib.unified_diff(self.direct, self.router, "direct (PostgreSQL)", "pgrouter",
                                              n=4, lineterm=""))

    def report(self, show=False):
        if self.ok:
            text = f"{self.name}: same ({len(self.direct)} lines, {self.rotations} rotations, {self.seconds:.2f}s)"
            if show:
                text += "\n" + "\n".join("    " + line for line in self.direct)
            return text
        text = f"{self.name}: DIFFERENT\n{self.diff}"
        if show:
            text += "\n--- full direct transcript:\n" + "\n".join("    " + line for line in self.direct)
            text += "\n--- full pgrouter transcript:\n" + "\n".join("    " + line for line in self.router)
        return text


def compare(name, router, direct, user, password, database="app", uid=None, timeout=DEFAULT_TIMEOUT, rotate=False):
    """Runs script `name` directly against PostgreSQL, then through pgrouter, and returns a Result. Setup and
    teardown always run directly. rotate: move the router run to another server between transactions (see the
    module docstring)."""
    uid = uid or uuid.uuid4().hex[:10]
    script = build(name, uid)
    started = time.monotonic()
    direct_lines = transcript(script, direct, user, password, database, direct, timeout)
    rotator = Rotator(router, user, password, database, timeout) if rotate else None
    try:
        router_lines = transcript(script, router, user, password, database, direct, timeout, rotator)
    finally:
        if rotator:
            rotator.close()
    return Result(name, direct_lines, router_lines, time.monotonic() - started, rotator.rounds if rotator else 0)


# ---------------------------------------------------------------------------------------------------------------
# Scripts. Each builder takes a Context and returns a Script; the registry key is the function name.

SCRIPTS = {}


def script(fn):
    SCRIPTS[fn.__name__] = fn
    return fn


def build(name, uid):
    if name not in SCRIPTS:
        raise KeyError(f"no parity script {name!r}; known: {', '.join(SCRIPTS)}")
    built = SCRIPTS[name](Context(uid))
    built.name = name
    built.doc = built.doc or (SCRIPTS[name].__doc__ or "").strip()
    return built


def _pbes(sql, params=(), statement="", portal=""):
    """Parse/Bind/Execute/Sync of one statement."""
    return [Parse(sql, statement), Bind(statement, params, portal), Execute(portal), Sync()]


@script
def pipeline_error_delayed_sync(ctx):
    """A pipeline whose second statement fails, with the Sync sent only after the error came back; then more."""
    return Script("", [
        Parse("select 1 as one"), Bind(), Execute(),
        Parse("select 1/0"), Bind(), Execute(),
        Parse("select 3"), Bind(), Execute(),
        Until("E"), Idle(200),
        Sync(),
        *_pbes("select 4 as four"),
    ])


@script
def pipeline_error_several_syncs(ctx):
    """Three Parse/Bind/Execute/Sync groups in one write, the middle one failing; each Sync is answered."""
    return Script("", [Pipeline(*_pbes("select 1"), *_pbes("select 1/0"), *_pbes("select 3"), Query("select 4"))])


@script
def pipeline_error_skips_to_sync(ctx):
    """Messages after an error are skipped up to the Sync, including a Describe and a Close."""
    return Script("", [
        Parse("select 1/0"), Bind(), Describe("P"), Execute(), Describe("S"), Close("S"), Execute(), Sync(),
        *_pbes("select 'after' as x"),
    ])


@script
def flush_replies_before_sync(ctx):
    """Flush makes the server send what it has: the replies must arrive before the Sync is sent."""
    return Script("", [
        Parse("select 1 as a, 'x' as b"), Bind(), Describe("P"), Execute(), Flush(),
        Until("C"), Idle(200),
        Parse("select generate_series(1, 3) as g", "fl1"), Describe("S", "fl1"), Flush(),
        Until("T"), Idle(200),
        Bind("fl1"), Execute(), Flush(),
        Until("C"), Idle(200),
        Close("S", "fl1"), Flush(),
        Until("3"), Idle(200),
        Sync(),
    ])


@script
def flush_error_then_delayed_sync(ctx):
    """An error after Flush arrives at once; messages up to the Sync are skipped."""
    return Script("", [
        Parse("select 1/0"), Bind(), Execute(), Flush(),
        Until("E"), Idle(200),
        Parse("select 2"), Bind(), Execute(), Flush(), Idle(300),
        Sync(),
        *_pbes("select 3"),
    ])


@script
def flush_and_sync_alone(ctx):
    """A Flush and a Sync with nothing before them."""
    return Script("", [Flush(), Idle(200), Sync(), Sync(), Sync()])


@script
def describe_unknown_statement(ctx):
    """Describe of a statement and a portal that do not exist (26000, 34000)."""
    return Script("", [
        Describe("S", "parity_nope"), Sync(),
        Describe("P", "parity_nope"), Sync(),
        Parse("select 1"), Describe("S", "parity_nope"), Bind(), Execute(), Sync(),
        *_pbes("select 2"),
    ])


@script
def close_and_reparse_same_batch(ctx):
    """Close S1 and Parse S1 again (different text) in one batch, then use it in a later transaction."""
    return Script("", [
        Parse("select 1 as v", "s1"), Sync(),
        Bind("s1"), Execute(), Sync(),
        Close("S", "s1"), Parse("select 'two'::text as v, 2 as w", "s1"), Bind("s1"), Describe("P"), Execute(),
        Sync(),
        Query("select 3"),
        Describe("S", "s1"), Bind("s1"), Execute(), Sync(),
        Close("S", "s1"), Close("S", "s1"), Sync(),  # closing an absent statement is not an error
    ])


@script
def close_missing_is_not_an_error(ctx):
    """Close of a statement and a portal that never existed answers CloseComplete."""
    return Script("", [Close("S", "parity_never"), Close("P", "parity_never"), Close("S", ""), Sync()])


BIG = 200 * 1024


@script
def large_parse(ctx):
    """A Parse of ~200 KB of query text (bigger than the read buffer) returning a ~200 KB row."""
    literal = "".join(chr(ord("a") + i % 26) for i in range(BIG))
    sql = f"select length('{literal}') as n, '{literal}' as big"
    return Script("", [
        Parse(sql, "bigp"), Bind("bigp"), Execute(), Sync(),
        Bind("bigp"), Execute(), Sync(),
        Close("S", "bigp"), Sync(),
        Query(sql),
        *_pbes(sql),
    ])


@script
def large_bind(ctx):
    """A Bind with a ~200 KB parameter (bigger than the read buffer), named and unnamed, and echoed back."""
    value = "".join(chr(ord("A") + i % 26) for i in range(BIG))
    return Script("", [
        Parse("select length($1::text) as n, md5($1::text) as h", "bigb"), Sync(),
        Bind("bigb", [value]), Execute(), Sync(),
        Parse("select $1::text as echo"), Bind("", [value + "z"]), Execute(),
        Bind("bigb", [value * 2]), Execute(), Sync(),
    ])


@script
def execute_row_limit_in_transaction(ctx):
    """Execute with a row limit gives PortalSuspended; the portal lives on across Syncs inside a transaction."""
    return Script("", [
        Query("begin"),
        Parse("select g from generate_series(1, 7) g"), Bind("", (), "p1"), Execute("p1", 2), Sync(),
        Execute("p1", 2), Sync(),
        Describe("P", "p1"), Execute("p1", 2), Execute("p1", 0), Sync(),
        Execute("p1", 1), Sync(),  # already run to completion: no more rows
        Query("commit"),
        Execute("p1", 1), Sync(),  # gone with the transaction
    ])


@script
def execute_row_limit_implicit_sync_destroys_portal(ctx):
    """A suspended portal in an implicit transaction is destroyed by the Sync; the next Execute gets 34000."""
    return Script("", [
        Parse("select g from generate_series(1, 5) g"), Bind("", (), "p1"), Execute("p1", 2), Sync(),
        Execute("p1", 2), Sync(),
        Query("select 'after' as x"),
    ])


@script
def execute_row_limit_implicit_one_batch(ctx):
    """Several limited Executes of one portal before a single Sync; then with Flush between them."""
    return Script("", [
        Parse("select g from generate_series(1, 5) g"), Bind("", (), "p1"),
        Execute("p1", 2), Execute("p1", 2), Execute("p1", 2), Sync(),
        Parse("select g from generate_series(1, 3) g"), Bind("", (), "p2"), Execute("p2", 1), Flush(),
        Until("s"), Idle(200),
        Execute("p2", 1), Flush(),
        Until("s"), Idle(200),
        Execute("p2", 0), Sync(),
    ])


@script
def copy_from_stdin_bad_data(ctx):
    """COPY FROM STDIN whose second row is bad: the error arrives before CopyDone; the late CopyDone is dropped."""
    t = ctx.name("copy")
    return Script("", [
        Query(f"copy {t} (a, b) from stdin"),
        CopyData("1\tone\n"), CopyData("x\tbad\n"),
        Until("Z"), Idle(100),
        CopyData("3\tthree\n"), CopyDone(), Idle(200),
        Query(f"select count(*) from {t}"),
    ], setup=[f"create table {t} (a int, b text)"], teardown=[f"drop table if exists {t}"])


@script
def copy_error_after_copydone(ctx):
    """COPY whose rows are fine but break a deferred unique constraint: the error comes after CopyDone."""
    t = ctx.name("copyd")
    return Script("", [
        Query(f"copy {t} (a) from stdin"),
        CopyData("1\n2\n"), CopyData("1\n"), Idle(200),
        CopyDone(),
        Query(f"select count(*) from {t}"),
        Query(f"copy {t} (a) from stdin"),
        CopyData("5\n6\nzz"), Idle(200),  # the last line has no newline: it is parsed at CopyDone
        CopyDone(),
        Query(f"select count(*) from {t}"),
    ], setup=[f"create table {t} (a int unique deferrable initially deferred)"],
        teardown=[f"drop table if exists {t}"])


@script
def copy_fail(ctx):
    """CopyFail from the client aborts the COPY (57014); in an explicit transaction it fails the transaction."""
    t = ctx.name("copyf")
    return Script("", [
        Query(f"copy {t} (a) from stdin"),
        CopyData("1\n"), CopyFail("client gave up"),
        Query(f"select count(*) from {t}"),
        Query("begin"),
        Query(f"copy {t} (a) from stdin"),
        CopyData("2\n"), CopyFail("again"),
        Query("select 1"),
        Query("rollback"),
        Query(f"select count(*) from {t}"),
    ], setup=[f"create table {t} (a int)"], teardown=[f"drop table if exists {t}"])


@script
def copy_ok_in_and_out(ctx):
    """A good COPY FROM STDIN in many CopyData messages, and COPY TO STDOUT."""
    t = ctx.name("copyok")
    return Script("", [
        Query(f"copy {t} (a, b) from stdin"),
        *[CopyData(f"{i}\trow {i}\n") for i in range(50)],
        CopyData(b"".join(f"{i}\tbulk {i}\n".encode() for i in range(50, 5000))),
        CopyDone(), Until("Z"),
        Query(f"copy (select * from {t} where a % 1000 = 0 order by a) to stdout"),
        Query(f"select count(*), sum(a) from {t}"),
    ], setup=[f"create table {t} (a int, b text)"], teardown=[f"drop table if exists {t}"])


@script
def copy_in_transaction_error_then_more(ctx):
    """A failing COPY inside an explicit transaction, then queries in the failed transaction, then ROLLBACK."""
    t = ctx.name("copyt")
    return Script("", [
        Query("begin"),
        Query(f"insert into {t} values (100, 'kept?')"),
        Query(f"copy {t} (a, b) from stdin"),
        CopyData("1\tone\n2\n"), CopyDone(), Until("Z"),
        *_pbes("select 1"),
        Query("rollback"),
        Query(f"select count(*) from {t}"),
    ], setup=[f"create table {t} (a int, b text)"], teardown=[f"drop table if exists {t}"])


@script
def discard_all_then_reparse(ctx):
    """DISCARD ALL (simple Query) drops named statements: re-Parse of the same name works, Bind of another fails."""
    return Script("", [
        Parse("select 1 as v", "d1"), Parse("select 2 as v", "d2"), Sync(),
        Query("discard all"),
        Parse("select 11 as v", "d1"), Bind("d1"), Execute(), Sync(),
        Bind("d2"), Execute(), Sync(),
        Query("begin"), Query("discard all"), Query("rollback"),  # 25001 inside a transaction
        Bind("d1"), Execute(), Sync(),
    ])


@script
def deallocate_all_then_reparse(ctx):
    """DEALLOCATE ALL and DEALLOCATE name (simple Query), then Parse the names again."""
    return Script("", [
        Parse("select 1 as v", "a1"), Parse("select 2 as v", "a2"), Sync(),
        Query("deallocate all"),
        Bind("a1"), Execute(), Sync(),
        Parse("select 'again' as v", "a1"), Bind("a1"), Execute(), Sync(),
        Query("deallocate a1"),
        Query("deallocate a1"),  # 26000
        Parse("select 'third' as v", "a1"), Bind("a1"), Execute(), Sync(),
        Close("S", "a1"), Sync(),
    ])


@script
def reparse_same_text_after_deallocate_all(ctx):
    """DEALLOCATE ALL, then the same query text parsed again under the same and under a new name."""
    return Script("", [
        Parse("select $1::int + 1 as v", "r1"), Bind("r1", [1]), Execute(), Sync(),
        Query("deallocate all"),
        Parse("select $1::int + 1 as v", "r1"), Bind("r1", [2]), Execute(), Sync(),
        Query("deallocate all"),
        Parse("select $1::int + 1 as v", "r2"), Bind("r2", [3]), Execute(), Sync(),
        Bind("r2", [4]), Execute(), Sync(),
    ])


@script
def reparse_same_text_after_discard_all(ctx):
    """DISCARD ALL, then the same query text parsed again under the same and under a new name."""
    return Script("", [
        Parse("select $1::int + 1 as v", "r1"), Bind("r1", [1]), Execute(), Sync(),
        Query("discard all"),
        Parse("select $1::int + 1 as v", "r1"), Bind("r1", [2]), Execute(), Sync(),
        Query("discard all"),
        Parse("select $1::int + 1 as v", "r2"), Bind("r2", [3]), Execute(), Sync(),
    ])


def _psycopg_simple(sql):
    """How psycopg 3 sends a statement without parameters: unnamed extended-protocol round trip."""
    return [Parse(sql), Bind(result_formats=[1]), Describe("P"), Execute(), Sync()]


def _psycopg_prepared(name, sql, value, parse=True):
    """How psycopg 3 (prepare_threshold=0) runs `sql` with one small int: Parse name + Sync, then Bind (binary int2
    parameter, binary results), Describe portal, Execute, Sync."""
    steps = [Parse(sql, name, [21]), Sync()] if parse else []
    return steps + [Bind(name, [value.to_bytes(2, "big")], param_formats=[1], result_formats=[1]), Describe("P"),
                    Execute(), Sync()]


@script
def psycopg_rollback_flow(ctx):
    """What psycopg 3 (prepare_threshold=0) sends around a failed transaction, all in the extended protocol: BEGIN,
    a failing prepared statement, ROLLBACK, then DEALLOCATE ALL (psycopg clears its cache after a ROLLBACK) and the
    first statement prepared again under a new name."""
    q = "select $1::int + 1"
    return Script("", [
        *_psycopg_prepared("_pg3_0", q, 1),
        *_psycopg_prepared("_pg3_0", q, 2, parse=False),
        *_psycopg_simple("BEGIN"),
        *_psycopg_prepared("_pg3_1", "select $1::int / 0", 1),
        *_psycopg_simple("ROLLBACK"),
        *_psycopg_simple("DEALLOCATE ALL"),
        *_psycopg_prepared("_pg3_2", q, 3),
        *_psycopg_prepared("_pg3_2", q, 4, parse=False),
    ])


@script
def deallocate_all_extended_protocol(ctx):
    """DEALLOCATE ALL / DEALLOCATE name / DISCARD ALL sent as extended-protocol statements, then re-Parse."""
    q = "select $1::int * 5 as v"
    return Script("", [
        Parse(q, "x1"), Bind("x1", [1]), Execute(), Sync(),
        *_pbes("deallocate all"),
        Bind("x1", [2]), Execute(), Sync(),
        Parse(q, "x1"), Bind("x1", [3]), Execute(), Sync(),
        *_pbes("deallocate x1"),
        Parse(q, "x2"), Bind("x2", [4]), Execute(), Sync(),
        *_pbes("discard all"),
        Parse(q, "x2"), Bind("x2", [5]), Execute(), Sync(),
        Parse(q, "x3"), Bind("x3", [6]), Execute(), Sync(),
    ])


@script
def sql_prepare_execute_across_transactions(ctx):
    """SQL PREPARE in one transaction, EXECUTE in later ones, DEALLOCATE, EXECUTE again (26000)."""
    return Script("", [
        Query("prepare sp1 (int) as select $1 * 3 as v"),
        Query("execute sp1 (7)"),
        Query("select 'other transaction'"),
        Query("begin; execute sp1 (8); commit"),
        Describe("S", "sp1"), Bind("sp1", [9]), Execute(), Sync(),  # SQL-prepared is visible to the protocol
        Query("deallocate sp1"),
        Query("execute sp1 (10)"),
    ])


@script
def sql_prepare_execute_deallocate(ctx):
    """SQL PREPARE / EXECUTE / DEALLOCATE, each in its own transaction (so each may land on another server)."""
    return Script("", [
        Query("prepare sq1 as select 'one' as v"),
        Query("execute sq1"),
        Query("select 'other transaction'"),
        Query("EXECUTE SQ1"),  # unquoted names fold to lower case
        Query("explain (costs off) execute sq1"),
        Query("deallocate sq1"),
        Query("execute sq1"),  # 26000
        Query("prepare sq1 as select 'redefined' as v"),  # the name is free again
        Query("execute sq1"),
        Query("deallocate prepare sq1"),
    ])


@script
def parse_existing_name_error_order(ctx):
    """A Parse of a name the client has: PostgreSQL checks a failed transaction (25P02) first, then the text (42P01,
    42601), and only then the name (42P05, naming the client's statement); also inside a pipeline with other
    statements before it, and after a Sync in the same write."""
    return Script("", [
        Parse("select 1 as v", "eo1"), Sync(),
        Parse("select * from parity_no_such_table", "eo1"), Sync(),
        Parse("selec 1", "eo1"), Sync(),
        Parse("select 2 as v", "eo1"), Sync(),
        Pipeline(Parse("select 3 as v"), Bind(), Execute(), Parse("select 4 as v", "eo1"), Bind("eo1"), Execute(),
                 Sync(), Parse("select 5 as v", "eo1"), Sync(), Bind("eo1"), Execute(), Sync()),
        Query("begin"),
        Query("select 1/0"),
        Parse("select 6 as v", "eo1"), Sync(),
        Parse("rollback", "eo1"), Sync(),
        Query("rollback"),
        Bind("eo1"), Execute(), Sync(),
        Close("S", "eo1"), Sync(),
    ])


@script
def sql_prepare_duplicate_and_unknown(ctx):
    """PREPARE of a name that exists (42P05, also when it was Parsed through the protocol); EXECUTE and DEALLOCATE
    of unknown names (26000); errors in the statement text with their positions; a PREPARE that failed leaves no
    name behind."""
    return Script("", [
        Query("prepare sd1 as select 1 as v"),
        Query("prepare sd1 as select 2 as v"),
        Query("prepare sd1 as select 1 as v"),
        Parse("select 3 as v", "sd2"), Sync(),
        Query("prepare sd2 as select 4 as v"),
        Query("execute sd1"),
        Query("execute nosuch_sd"),
        Query("deallocate nosuch_sd"),
        Query("prepare sd3 as select nosuchcol"),
        Query("execute sd3"),
        Query("prepare sd4 (int) as select $1 + 1 as v"),
        Query("execute sd4 (1, 2)"),      # wrong number of parameters names the client's statement
        Query("execute sd4 ('x')"),        # a position in the EXECUTE text
        Query("/* a comment first */ execute sd4 (nosuchcol)"),
        Query("execute sd4 (41)"),
    ])


@script
def sql_prepare_with_parameter_types(ctx):
    """PREPARE with parameter types (the result and parameter types follow them), used with EXECUTE and through
    the protocol (Describe and Bind of the SQL name: one namespace)."""
    return Script("", [
        Query("prepare st1 (int8, text, numeric(5,2)) as select $1 as a, $2 as b, $3 as c"),
        Query("execute st1 (1, 'x', 2.5)"),
        Query("select 1"),
        Describe("S", "st1"), Sync(),
        Bind("st1", [7, "y", "3.25"]), Execute(), Sync(),
        Query("prepare st2 (varchar) as select length($1) as n"),
        Query("execute st2 ('abcd')"),
        Close("S", "st2"), Sync(),  # a protocol Close of a SQL name
        Query("execute st2 ('abcd')"),
    ])


@script
def sql_prepare_deallocate_among_statements(ctx):
    """PREPARE and DEALLOCATE in a Query of several statements mean what they mean alone: the name exists after it
    (42P05 for a second PREPARE), EXECUTE finds it, DEALLOCATE removes it (also one prepared by another Query, and
    in the same Query); a PREPARE after a failing statement does not happen, one before it does."""
    return Script("", [
        Query("prepare ms1 as select 1 as v; set statement_timeout = '5s'"),
        Query("prepare ms1 as select 1 as v"),
        Query("execute ms1"),
        Query("select 1; deallocate ms1"),
        Query("execute ms1"),
        Query("prepare ms2 as select 2 as v; execute ms2; deallocate ms2; prepare ms2 as select 22 as v"),
        Query("execute ms2"),
        Query('select 1; prepare "Ms3" as select 3 as v; prepare ms3 as select 33 as v'),
        Query('execute "Ms3"; execute ms3; select 1; prepare ms3 as select 1'),
        Query("execute ms3"),
        Query("select 1/0; prepare ms4 as select 4 as v"),
        Query("execute ms4"),
        Query("prepare ms5 as select 5 as v; select 1/0"),
        Query("execute ms5"),
        Query("select 1; deallocate ms5; deallocate ms5"),
        Query("execute ms5"),
        Query('deallocate ms2; deallocate "Ms3"; deallocate ms3; select 1'),
        Query("reset statement_timeout"),
    ])


@script
def sql_prepare_quoted_names(ctx):
    """Quoted statement names: case kept, quotes and spaces inside, unquoted forms folded."""
    return Script("", [
        Query('prepare "MixedCase" as select 1 as v'),
        Query('prepare mixedcase as select 2 as v'),
        Query('execute "MixedCase"'),
        Query('execute MixedCase'),
        Query('prepare "with ""quotes"" and space" as select 3 as v'),
        Query('execute "with ""quotes"" and space"'),
        Query('execute "mixedcase"'),
        Query('deallocate "MixedCase"'),
        Query('execute "MixedCase"'),
        Query('execute mixedcase'),
        Query('deallocate "with ""quotes"" and space"'),
        Query('execute "with ""quotes"" and space"'),
    ])


@script
def sql_prepare_pipelined(ctx):
    """SQL PREPARE, EXECUTE and DEALLOCATE sent as separate Queries in one write, before any reply: each names what
    the Queries before it prepared (PostgreSQL runs them in order). Also an EXECUTE inside a Parse text, a
    DEALLOCATE then PREPARE of the same name, and a PREPARE that fails followed by an EXECUTE of its name."""
    return Script("", [
        Pipeline(Query("prepare pp1 as select $1::int as v"), Query("execute pp1(1)"), Query("deallocate pp1")),
        Query("execute pp1(2)"),  # 26000: gone
        Pipeline(Query("prepare pp2 (int) as select $1 * 2 as v"), Parse("execute pp2(21)"), Bind(), Execute(),
                 Sync()),
        Query("prepare pp3 as select 'three' as v"),
        Pipeline(Query("deallocate pp3"), Query("prepare pp3 as select 'three again' as v"), Query("execute pp3")),
        Pipeline(Query("prepare pp4 as select nosuchcol"), Query("execute pp4"), Query("deallocate pp4")),
        Query("execute pp2(5)"),
        Query("deallocate all"),
    ])


@script
def pipelined_error_skips_named_parse(ctx):
    """An error before a Parse of a named statement makes PostgreSQL skip it (up to the Sync): a later batch sent in
    the same write finds no such statement (26000 naming the client's statement), and may Parse the name. Also when
    the statement's text is one the server already has under another name of the client."""
    return Script("", [
        Pipeline(Parse("selec 1"), Parse("select 2 as v", "ps2"), Sync(),
                 Bind("ps2"), Execute(), Sync(),
                 Describe("S", "ps2"), Sync(),
                 Parse("select 3 as v", "ps2"), Bind("ps2"), Execute(), Sync(),
                 Bind("ps2"), Execute(), Sync()),
        Pipeline(Parse("select 4 as v", "other"), Parse("selec 1"), Parse("select 4 as v", "ps4"), Sync(),
                 Bind("ps4"), Execute(), Sync(),
                 Parse("select 4 as v", "ps4"), Sync(),
                 Bind("ps4"), Execute(), Sync()),
        Close("S", "ps2"), Close("S", "ps4"), Close("S", "other"), Sync(),
    ])


@script
def pipelined_error_skips_close(ctx):
    """A Close skipped after an error leaves the statement (a later batch of the same write binds it); one that ran
    after a good message removes it (26000 naming the client's statement)."""
    return Script("", [
        Parse("select 5 as v", "pc1"), Sync(),
        Pipeline(Parse("selec 1"), Close("S", "pc1"), Sync(),
                 Bind("pc1"), Execute(), Sync(),
                 Parse("select 55 as v", "pc1"), Sync()),  # 42P05: it still exists
        Pipeline(Parse("select 1"), Close("S", "pc1"), Sync(),
                 Bind("pc1"), Execute(), Sync(),
                 Parse("select 6 as v", "pc1"), Bind("pc1"), Execute(), Sync()),
        # Skipped, then closed for good by a Close that cannot be skipped: gone.
        Pipeline(Parse("selec 1"), Close("S", "pc1"), Sync(),
                 Close("S", "pc1"), Sync(),
                 Bind("pc1"), Execute(), Sync()),
        Close("S", "pc1"), Sync(),
    ])


@script
def pipelined_parse_error_then_reparse(ctx):
    """A named Parse that fails by itself leaves no statement: a later batch of the same write binds it (26000) and
    parses the name again; errors inside a Query of several statements skip the rest of it."""
    return Script("", [
        Pipeline(Parse("select nosuchcol", "pe1"), Sync(),
                 Bind("pe1"), Execute(), Sync(),
                 Parse("select 6 as v", "pe1"), Bind("pe1"), Execute(), Sync(),
                 Parse("select 7 as v", "pe1"), Sync()),  # 42P05
        Pipeline(Query("prepare pe2 as select 8 as v; select 1/0"), Query("execute pe2")),
        Pipeline(Query("select 1/0; prepare pe3 as select 9 as v"), Query("execute pe3")),
        Pipeline(Parse("select 10 as v", "pe4"), Bind("pe4"), Execute(), Parse("select 1/0"), Bind(), Execute(),
                 Close("S", "pe4"), Sync(),
                 Bind("pe4"), Execute(), Sync()),
        Close("S", "pe1"), Close("S", "pe4"), Sync(),
    ])


@script
def named_parse_in_failed_transaction(ctx):
    """A Parse in a failed transaction fails with 25P02 (a transaction-ending text parses), also when the server has
    the statement under another name of the client (or, with pool.unnamed_statements: prepare, as the unnamed
    statement's shared copy); after ROLLBACK the name is free."""
    return Script("", [
        Query("begin"),
        Parse("select 11 as v", "ft1"), Sync(),
        Query("select 1/0"),
        Parse("select 11 as v", "ft2"), Sync(),
        Parse("select 11 as v"), Bind(), Execute(), Sync(),  # the unnamed statement too
        Parse("select 12 as v", "ft3"), Sync(),
        Parse("rollback", "ft4"), Sync(),
        Bind("ft4"), Execute(), Sync(),
        Parse("select 11 as v", "ft2"), Bind("ft2"), Execute(), Sync(),
        Parse("select 11 as v"), Bind(), Execute(), Sync(),
        Close("S", "ft1"), Close("S", "ft2"), Close("S", "ft4"), Sync(),
    ])


@script
def named_statement_result_type_changed(ctx):
    """A table gains a column under a statement the client named (SELECT *): PostgreSQL keeps the statement's result
    type and fails each Bind with 0A000 "cached plan must not change result type" until the client parses it
    again (JDBC caches the RowDescription it got). The unnamed statement is parsed anew each time."""
    t = ctx.name("rt")
    return Script("", [
        Parse(f"select * from {t}", "rt1"), Describe("S", "rt1"), Sync(),
        Bind("rt1"), Execute(), Sync(),
        Query(f"alter table {t} add column b int default 7"),
        Bind("rt1"), Execute(), Sync(),
        Query("select 'another transaction'"),
        Bind("rt1"), Execute(), Sync(),
        Describe("S", "rt1"), Sync(),
        *_pbes(f"select * from {t}"),
        Close("S", "rt1"), Parse(f"select * from {t}", "rt1"), Bind("rt1"), Execute(), Sync(),
        Close("S", "rt1"), Sync(),
    ], setup=[f"create table {t} (a int)", f"insert into {t} values (1)"], teardown=[f"drop table if exists {t}"])


@script
def named_statement_result_type_restored(ctx):
    """The column a table gained under a named statement goes again: PostgreSQL's statement runs again with the
    columns it was parsed with (its Bind and Describe fail only while they differ), in a transaction block too,
    where the 0A000 aborts the transaction as any error."""
    t = ctx.name("rr")
    return Script("", [
        Parse(f"select * from {t}", "rr1"), Describe("S", "rr1"), Sync(),
        Query(f"alter table {t} add column b int default 7"),
        Bind("rr1"), Execute(), Sync(),
        Query("begin"),
        Bind("rr1"), Execute(), Sync(),
        Query("select 'aborted'"),
        Query("rollback"),
        Query(f"alter table {t} drop column b"),
        Bind("rr1"), Execute(), Sync(),
        Query("select 'another transaction'"),
        Describe("S", "rr1"), Bind("rr1"), Execute(), Sync(),
        Close("S", "rr1"), Sync(),
    ], setup=[f"create table {t} (a int)", f"insert into {t} values (1)"], teardown=[f"drop table if exists {t}"])


@script
def sql_prepare_deallocate_all_and_discard_all(ctx):
    """DEALLOCATE ALL and DISCARD ALL drop SQL-prepared statements (and protocol ones); the names can be reused."""
    return Script("", [
        Query("prepare da1 as select 1 as v"),
        Parse("select 2 as v", "da2"), Sync(),
        Query("deallocate all"),
        Query("execute da1"),
        Bind("da2"), Execute(), Sync(),
        Query("prepare da1 as select 3 as v"),
        Query("prepare da2 as select 4 as v"),
        Query("execute da2"),
        Query("discard all"),
        Query("execute da1"),
        Query("execute da2"),
        Query("prepare da2 as select 5 as v"),
        Query("execute da2"),
    ])


@script
def sql_prepare_in_transactions(ctx):
    """PREPARE is not transactional: it survives a ROLLBACK; in a failed transaction it fails (25P02) and leaves
    nothing; EXECUTE in a transaction block and in a failed one."""
    return Script("", [
        Query("begin"),
        Query("prepare tx1 as select 'kept' as v"),
        Query("rollback"),
        Query("execute tx1"),
        Query("begin"),
        Query("select 1/0"),
        Query("prepare tx2 as select 2"),
        Query("execute tx1"),
        Query("rollback"),
        Query("execute tx2"),
        Query("begin; execute tx1; commit"),
        Query("begin"),
        Query("execute tx1"),
        Query("commit"),
    ])


@script
def sql_execute_through_the_extended_protocol(ctx):
    """EXECUTE of a SQL-prepared statement sent as an unnamed and a named Parse (as drivers with parameters do), and
    DEALLOCATE through the protocol."""
    return Script("", [
        Query("prepare xe1 (int) as select $1 * 10 as v"),
        Parse("execute xe1 ($1)", "", [23]), Bind("", [4]), Execute(), Sync(),
        Query("select 'other transaction'"),
        Parse("execute xe1 (5)", "xe_wrap"), Sync(),
        Query("select 'another transaction'"),
        Bind("xe_wrap"), Execute(), Sync(),
        *_pbes("deallocate xe1"),
        Parse("execute xe1 (7)"), Bind(), Execute(), Sync(),
    ])


def _many_params(n):
    return [str(i) for i in range(1, n + 1)]


@script
def params_65535_array(ctx):
    """Parse+Bind of a statement with 65,535 parameters (ARRAY[$1::int, ..., $65535::int]), ~1 MB of messages."""
    n = 65535
    sql = "select sum(v)::int8 as s, count(*) as n from unnest(array[" + \
        ",".join(f"${i}::int" for i in range(1, n + 1)) + "]) v"
    return Script("", [
        Parse(sql, "many"), Describe("S", "many"), Sync(),
        Bind("many", _many_params(n)), Execute(), Sync(),
        Close("S", "many"), Sync(),
    ])


@script
def params_65535_declared(ctx):
    """65,535 declared parameter types and values where the query uses only the first and the last."""
    n = 65535
    return Script("", [
        Parse("select $1::int8 + $65535::int8 as s", "", [23] * n), Bind("", _many_params(n)), Execute(), Sync(),
        Parse("select $1::int8 + $65535::int8 as s", "", [23] * n), Bind("", _many_params(n - 1)), Execute(), Sync(),
    ])


@script
def named_statement_across_transactions(ctx):
    """Parse S1, Sync; later Bind/Describe S1 in other transactions; Close S1; then Bind S1 fails (26000)."""
    return Script("", [
        Parse("select $1::int * 2 as doubled", "s1"), Sync(),
        Query("select 'unrelated' as x"),
        Bind("s1", [21]), Execute(), Sync(),
        Describe("S", "s1"), Sync(),
        Query("begin"),
        Bind("s1", [5]), Execute(), Sync(),
        Query("commit"),
        *_pbes("select 'unnamed in between'"),
        Describe("S", "s1"), Bind("s1", [7], "p"), Describe("P", "p"), Execute("p"), Sync(),
        Close("S", "s1"), Sync(),
        Bind("s1", [1]), Execute(), Sync(),
        Describe("S", "s1"), Sync(),
    ])


@script
def named_statement_pipelined(ctx):
    """Named statements parsed, used, closed and parsed again across several Syncs sent in one write."""
    return Script("", [Pipeline(
        Parse("select $1::int + 100 as v", "pl1"), Sync(),
        Bind("pl1", [1]), Execute(), Sync(),
        Query("select 'simple in between'"),
        Bind("pl1", [2]), Execute(), Sync(),
        Close("S", "pl1"), Parse("select $1::text || '!' as v", "pl1"), Sync(),
        Bind("pl1", ["x"]), Execute(), Sync(),
        Query("begin"), Bind("pl1", ["in txn"]), Execute(), Sync(), Query("commit"),
        Close("S", "pl1"), Sync(),
        Bind("pl1", ["gone"]), Execute(), Sync(),
    )])


@script
def named_statement_delayed_sync(ctx):
    """Parse/Bind/Execute of a named statement flushed and answered before its Sync; used after the Sync."""
    return Script("", [
        Parse("select $1::int * 10 as v", "ds1"), Bind("ds1", [4]), Execute(), Flush(),
        Until("C"), Idle(200),
        Sync(),
        Bind("ds1", [5]), Execute(), Sync(),
        Close("S", "ds1"), Sync(),
    ])


@script
def named_statements_many(ctx):
    """Many named statements parsed in separate transactions, used in reverse order, then closed."""
    steps = []
    for i in range(10):
        steps += [Parse(f"select {i} as n, $1::text as t", f"m{i}"), Sync()]
    for i in reversed(range(10)):
        steps += [Bind(f"m{i}", [f"v{i}"]), Execute(), Sync()]
    steps += [Close("S", f"m{i}") for i in range(10)] + [Sync()]
    steps += [Bind("m3", ["x"]), Execute(), Sync()]
    return Script("", steps)


@script
def duplicate_parse(ctx):
    """Parse of a name that exists (42P05), alone and in a batch; the original statement still works."""
    return Script("", [
        Parse("select 1 as v", "dup"), Sync(),
        Parse("select 2 as v", "dup"), Sync(),
        Parse("select 3 as v", "dup"), Bind("dup"), Execute(), Sync(),
        Bind("dup"), Execute(), Sync(),
        Parse("select 4 as v", "dup2"), Parse("select 5 as v", "dup2"), Sync(),
        Bind("dup2"), Execute(), Sync(),  # statements are not transactional: the first dup2 stays
        Close("S", "dup"), Close("S", "dup2"), Sync(),
    ])


@script
def bind_unknown_statement(ctx):
    """Bind of a statement that does not exist (26000), alone and after a good unnamed Parse."""
    return Script("", [
        Bind("parity_nope", [1]), Execute(), Sync(),
        Parse("select 1"), Bind("parity_nope"), Execute(), Sync(),
        *_pbes("select 2"),
    ])


@script
def unnamed_statement_after_sync(ctx):
    """The unnamed statement outlives its Sync until the next unnamed Parse or simple Query."""
    return Script("", [
        Parse("select $1::int + 1 as v"), Sync(),
        Bind("", [1]), Execute(), Sync(),
        Describe("S", ""), Sync(),
        Query("select 'simple query drops it'"),
        Bind("", [2]), Execute(), Sync(),
    ])


@script
def named_portal_across_syncs_in_transaction(ctx):
    """A named portal bound in one Sync and executed in later ones, inside BEGIN ... COMMIT."""
    return Script("", [
        Query("begin"),
        Parse("select $1::int as v"), Bind("", [41], "np"), Sync(),
        Execute("np"), Sync(),
        Close("P", "np"), Sync(),
        Execute("np"), Sync(),
        Query("rollback"),
    ])


@script
def error_in_explicit_transaction(ctx):
    """An error inside BEGIN; everything after fails with 25P02 until ROLLBACK; then the session works."""
    t = ctx.name("txerr")
    return Script("", [
        Query("begin"),
        *_pbes(f"insert into {t} values (1)"),
        *_pbes("select 1/0"),
        *_pbes("select 1"),
        Query("select 2"),
        Parse("select 3", "in_failed"), Sync(),
        Query("commit"),  # ROLLBACK tag
        Query(f"select count(*) from {t}"),
        Query("begin"),
        Query(f"insert into {t} values (2); select 1/0; insert into {t} values (3)"),
        Query("rollback"),
        Query("begin"), Query("savepoint a"), Query("select 1/0"), Query("rollback to savepoint a"),
        Query(f"insert into {t} values (4)"), Query("commit"),
        Query(f"select array_agg(a order by a) from {t}"),
    ], setup=[f"create table {t} (a int)"], teardown=[f"drop table if exists {t}"])


@script
def simple_query_multi_statement_error(ctx):
    """Several statements in one Query, one failing: the rest is skipped; one ReadyForQuery."""
    return Script("", [
        Query("select 1; select 1/0; select 3"),
        Query("select 4; begin; select 5"),
        Query("commit"),
    ])


@script
def empty_query(ctx):
    """Empty query strings in simple and extended protocol."""
    return Script("", [
        Query(""), Query(";"), Query("  -- just a comment\n"),
        Parse(""), Bind(), Describe("P"), Execute(), Sync(),
        Parse("", "empty_named"), Describe("S", "empty_named"), Bind("empty_named"), Execute(), Sync(),
        Close("S", "empty_named"), Sync(),
        Query("begin"), Query(""), Query("commit"),
    ])


@script
def set_reset_search_path(ctx):
    """SET search_path, SHOW it in later transactions, SET LOCAL, RESET."""
    return Script("", [
        Query("set search_path = pg_catalog, public"),
        Query("show search_path"),
        *_pbes("show search_path"),
        Query("begin"), Query("set local search_path = information_schema"), Query("show search_path"),
        Query("commit"),
        Query("show search_path"),
        Query("begin"), Query("set search_path = public"), Query("rollback"),  # rolled back
        Query("show search_path"),
        Query("reset search_path"),
        Query("show search_path"),
        *_pbes("select current_setting('search_path')"),
    ])


@script
def set_reset_timezone(ctx):
    """SET TimeZone (a reported parameter: ParameterStatus), SHOW later, extended-protocol SET, RESET."""
    return Script("", [
        Query("set timezone = 'Asia/Tokyo'"),
        Query("show timezone"),
        Query("select '2024-01-01 00:00:00+00'::timestamptz::text"),
        *_pbes("set timezone = 'America/New_York'"),
        *_pbes("show timezone"),
        Query("begin"), Query("set local timezone = 'UTC'"), Query("show timezone"), Query("commit"),
        Query("show timezone"),
        Query("reset timezone"),
        Query("show timezone"),
        Query("set datestyle = 'SQL, DMY'"), Query("show datestyle"),
        Query("set intervalstyle = 'iso_8601'"), Query("select interval '1 day'"),
        Query("reset all"),
        Query("show datestyle"),
    ])


@script
def set_application_name_and_reset(ctx):
    """application_name from the startup packet: SET, RESET goes back to the startup value; so does RESET ALL."""
    return Script("", [
        Query("show application_name"),
        Query("set application_name = 'changed'"),
        Query("select 1"),
        Query("show application_name"),
        Query("reset application_name"),
        Query("show application_name"),
        Query("set application_name = 'changed again'"),
        Query("discard all"),
        Query("show application_name"),
    ], startup={"application_name": "pgr-parity"})


@script
def startup_options_and_reset_all(ctx):
    """TimeZone and options=-c ... from the startup packet survive RESET and DISCARD ALL (they are the defaults)."""
    return Script("", [
        Query("show timezone"), Query("show statement_timeout"),
        Query("set timezone = 'UTC'"), Query("set statement_timeout = 5000"),
        Query("reset timezone"), Query("reset statement_timeout"),
        Query("show timezone"), Query("show statement_timeout"),
        Query("set timezone = 'UTC'"),
        Query("discard all"),
        Query("select current_setting('timezone'), current_setting('statement_timeout')"),
    ], startup={"TimeZone": "Asia/Tokyo", "options": "-c statement_timeout=1111"})


@script
def startup_values_after_reset_all_and_default(ctx):
    """RESET ALL, SET ... TO DEFAULT, RESET in a multi-statement query, in a transaction that rolls back and in one
    that fails, and DISCARD ALL pipelined between other queries: each goes back to the startup values."""
    return Script("", [
        Query("set application_name = 'a1'; set timezone = 'UTC'"),
        Query("reset all"),
        Query("select current_setting('application_name'), current_setting('timezone')"),
        Query("set application_name = 'a2'"),
        Query("set application_name to default"),
        Query("set time zone 'UTC'"),
        Query("set time zone local"),
        Query("set application_name = 'a3'; reset application_name; show application_name"),
        Query("reset all; set timezone = 'Europe/Paris'"),
        Query("show timezone"),
        Query("begin"), Query("set application_name = 'a4'"), Query("reset all"), Query("show application_name"),
        Query("rollback"),
        Query("show application_name"),
        Query("set application_name = 'a5'"),
        Query("reset application_name; select 1/0"),
        Query("show application_name"),
        Pipeline(Query("set timezone = 'UTC'"), Query("discard all"),
                 Query("select current_setting('timezone'), current_setting('application_name')")),
        Query("begin"), Query("discard all"), Query("rollback"),
        Query("show timezone"),
    ], startup={"application_name": "pgr-parity", "TimeZone": "Asia/Tokyo"})


@script
def discard_all_without_startup_parameters(ctx):
    """DISCARD ALL and RESET ALL on a session that sent no startup parameters: nothing is reported."""
    return Script("", [
        Query("set statement_timeout = 1234"),
        Query("discard all"),
        Query("show statement_timeout"),
        Query("reset all"),
        Query("show application_name"),
    ])


@script
def temp_table_across_transactions(ctx):
    """A temporary table made in one transaction is used in later ones."""
    t = ctx.name("tmp")
    return Script("", [
        Query(f"create temp table {t} (a int)"),
        Query(f"insert into {t} values (1), (2)"),
        *_pbes(f"select sum(a) from {t}"),
        Query(f"drop table {t}"),
    ])


@script
def notice_and_notify(ctx):
    """NoticeResponse from RAISE NOTICE; LISTEN/NOTIFY to oneself (the notification carries a pid)."""
    channel = ctx.name("chan")
    return Script("", [
        Query("do $$ begin raise notice 'hello %', 42; end $$"),
        *_pbes("do $$ begin raise warning 'careful'; end $$"),
        Query(f"listen {channel}"),
        Query(f"notify {channel}, 'payload 1'"),
        Query(f"select pg_notify('{channel}', 'payload 2')"),
        Query(f"unlisten {channel}"),
        Query(f"notify {channel}, 'not heard'"),
    ])


@script
def sample_schema_queries(ctx):
    """Queries over the sample schema (tables with real OIDs in RowDescription), extended with binary results."""
    return Script("", [
        Query("select id, name from brands where deleted_at is null order by id"),
        Parse("select id, name, price from products where tenant_id = $1 and deleted_at is null "
              "order by id limit 3", "prod"),
        Describe("S", "prod"), Bind("prod", [1]), Execute(), Sync(),
        Bind("prod", [2], result_formats=[1]), Execute(), Sync(),
        Close("S", "prod"), Sync(),
        Query("begin"),
        *_pbes("insert into users (tenant_id, email, name) values (1, 'ada@example.com', 'dup')"),  # 23505
        Query("rollback"),
    ])


# ---------------------------------------------------------------------------------------------------------------
# Command line.

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", help="pgrouter HOST:PORT")
    parser.add_argument("--direct", help="PostgreSQL (the primary behind pgrouter) HOST:PORT")
    parser.add_argument("--user", default="pgr_scram")
    parser.add_argument("--password", help="default: the test password of --user from pgr.py")
    parser.add_argument("--db", default="app")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for a reply")
    parser.add_argument("--rotate-servers", action="store_true",
                        help="transaction pooling: move the script to another server between transactions (needs "
                             "pgrouter with listen.workers 1 and pool.size >= 3)")
    parser.add_argument("--show", action="store_true", help="print the transcripts, not only the diffs")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    parser.add_argument("scripts", nargs="*", help="script names (default: all)")
    args = parser.parse_args(argv)
    if args.list:
        for name, fn in SCRIPTS.items():
            print(f"{name:45} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if not args.router or not args.direct:
        parser.error("--router and --direct are required")
    password = args.password if args.password is not None else pgr.USERS.get(args.user)
    failed = 0
    for name in args.scripts or list(SCRIPTS):
        try:
            result = compare(name, args.router, args.direct, args.user, password, args.db, timeout=args.timeout,
                             rotate=args.rotate_servers)
        except Exception as e:  # noqa: BLE001 - one broken script should not hide the others
            print(f"{name}: ERROR {type(e).__name__}: {e}")
            failed += 1
            continue
        print(result.report(args.show))
        failed += not result.ok
    total = len(args.scripts or SCRIPTS)
    print(f"\n{total - failed}/{total} scripts same through pgrouter as direct")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
