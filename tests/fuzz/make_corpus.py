#!/usr/bin/python3
"""Writes tests/fuzz/corpus.json: the minimised failures protocol_fuzz.py found, as cases it can replay. Edit the
list here and run it again (/usr/bin/python3 tests/fuzz/make_corpus.py) rather than editing the JSON."""
import json
import sys
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE)); sys.path.insert(0, str(HERE.parent / 'integration'))
import parity, pgr
from protocol_fuzz import Case, Generator, Round, Item, fe, Q
P, B, E, S, C = parity.Parse, parity.Bind, parity.Execute, parity.Sync, parity.Close
def R(*msgs, **kw): return Round([fe(m) if not isinstance(m, Item) else m for m in msgs], **kw)
T = "fz_00000000_t"  # protocol_fuzz.CORPUS_TABLE: replaced by the run's table when played
bad = pgr.message("d", b"x\tbad\n"); nxt = pgr.message("d", b"6\tok\n")


def write_behind_split_read():
    """Generated case 102:0, its fourth round sent in two pieces: up to the second read batch's Sync, then (300 ms
    later) that Sync and the INSERT batch."""
    case = Generator(T).case(102, 0)
    for rnd in case.rounds:
        rnd.fragments = None
    rnd = case.rounds[4]
    k = next(n for n, i in enumerate(rnd.items) if "fs0" in i.label)
    before = sum(len(i.data) for i in rnd.items[:k - 1])
    rnd.fragments = [(before, 300), (len(rnd.data) - before, 0)]
    return case


entries = [
 ("crash_unknown_type_split", ["transaction", "session"],
  "An unknown message type whose body comes 200 ms after its header: SIGSEGV in transaction pooling.",
  Case([Round([Item("!unknown type 'y', header then body 200 ms later", b"y\0\0\0\x08xxxx")], fragments=[(5, 200)], wait="idle", end="close")])),
 ("crash_copy_error_with_copydata_half_sent", ["transaction", "session"],
  "COPY FROM STDIN: a bad row and the header plus 1 byte of the next CopyData; the server's error arrives; then the rest of that CopyData: SIGSEGV in transaction pooling.",
  Case([R(parity.Query(f"copy {T} (a, b) from stdin")), Round([Item("CopyData 'x\\tbad\\n' + 6 bytes of CopyData '6\\tok\\n'", bad + nxt[:6])], wait="idle"),
        Round([Item("the rest of CopyData '6\\tok\\n'", nxt[6:])], wait="idle", end="close")])),
 ("unknown_type_forwarded", ["transaction", "session"],
  "An unknown message type after login: PostgreSQL says FATAL 08P01 and closes; pgrouter forwards it, and the server connection it killed goes back to the pool (next client: FATAL 08006).",
  Case([Round([Item("!unknown type 'y'", b"y\0\0\0\x08xxxx")], wait="idle", end="close")])),
 ("startup_message_after_login", ["transaction", "session"],
  "A StartupMessage after login (first byte 0x00 read as a message type): same as unknown_type_forwarded.",
  Case([Round([Item("!StartupMessage after login", pgr.startup_packet("pgr_scram", "app"))], wait="idle", end="close")])),
 ("half_sent_copydata_outside_copy", ["transaction", "session"],
  "CopyData outside COPY cut after 6 of its 9 body bytes, then the client disconnects: the server keeps the half message and the next client's first message completes it (FATAL 08P01 'invalid frontend message type 0').",
  Case([Round([Item("!truncated: CopyData '57497\\t\\\\N\\n' (6 of 9 body bytes)", b"d\0\0\0\x0d57497\t")], wait="idle", end="close")])),
 ("half_sent_copydata_after_set", ["transaction", "session"],
  "The same after a SET of a tracked parameter: the next client that gets the server fails applying its session parameters (FATAL 08006).",
  Case([R(parity.Query("set statement_timeout = '6s'")), Round([Item("!truncated: CopyData '57497\\t\\\\N\\n' (6 of 9 body bytes)", b"d\0\0\0\x0d57497\t")], wait="idle", end="reset")])),
 ("half_sent_copydone_next_client_hangs", ["transaction", "session"],
  "A CopyDone outside COPY whose length claims 200 body bytes, a Query, then the client disconnects: the server "
  "reads the next client's messages as the rest of that body, so the next client gets no answer.",
  Case([Round([Item("!length +200: CopyDone", b"c\0\0\0\xcc"), Q("select 1")], wait="idle", end="close")])),
 ("set_through_named_statement_leaks", ["transaction", "session"],
  "SET through a named prepared statement (Parse 's1' / Bind / Execute) is not tracked: the setting stays on the server and the bystander sees statement_timeout 7s.",
  Case([R(P("set statement_timeout = '7s'", "s1"), B("s1"), E(), S())])),
 ("skipped_parse_and_close_after_error", ["transaction", "session"],
  "Parse 'fs1' and Close 'fs1' after an error in the same batch are skipped by PostgreSQL; pgrouter then answers the next Parse 'fs1' with 42P05.",
  Case([R(E("nope"), P("select 1", "fs1"), C("S", "fs1"), S()), R(P("select 2", "fs1"), S())])),
 ("skipped_close_after_error", ["transaction", "session"],
  "Close 'fs2' after an error is skipped by PostgreSQL, so fs2 still exists (next Parse 'fs2': 42P05); through pgrouter the Parse succeeds.",
  Case([R(P("select $1::int", "fs2"), E("fp0", 1), C("S", "fs2"), S(), P("select generate_series(1, 5) as g", "fs2"), S())])),
 ("skipped_parse_then_bind_pipelined", ["transaction", "session"],
  "Parse 'fs0' skipped after an error, then (same write, after the Sync) Bind 'fs0': PostgreSQL 26000 for \"fs0\"; pgrouter binds its server-side name and the error shows it (\"pgr_0e96...\").",
  Case([R(E("fp1"), P("select 1", "fs0"), S(), B("fs0"), E(), S())])),
 ("skipped_unnamed_parse_after_error", ["transaction", "session"],
  "An unnamed Parse skipped after an error: the unnamed statement is still the one parsed before the error "
  "(PostgreSQL describes it after the Sync); pgrouter says 26000 'unnamed prepared statement does not exist'.",
  Case([R(P("select 1"), E("nope"), P("select 2"), S()), R(parity.Describe("S", ""), S())])),
 ("duplicate_parse_answered_with_sentinel_name", ["transaction", "session"],
  "Not minimised (case 316 of seed 1001, regenerated): a Parse of an existing name late in a long case gets "
  "26000 'prepared statement \"pgr_sentinel_error\" does not exist' through pgrouter where PostgreSQL says 42P05.",
  Generator(T).case(1001, 316)),
 ("parse_existing_name_in_aborted_transaction", ["transaction", "session"],
  "Parse of an existing statement name in an aborted transaction: PostgreSQL 25P02, pgrouter 42P05.",
  Case([R(P("select 1", "fs1"), S()), R(parity.Query("begin")), R(parity.Query("select 1/0")), R(P("select 2", "fs1"), S()), R(parity.Query("rollback"))])),
 ("parse_existing_name_with_bad_sql", ["transaction", "session"],
  "Parse of an existing statement name with SQL that does not analyse: PostgreSQL 42P01 (it analyses before it checks the name), pgrouter 42P05.",
  Case([R(P("select 1", "fs0"), S()), R(P("select * from fz_nonexistent", "fs0"), S())])),
 ("parse_of_cached_statement_in_aborted_transaction", ["transaction", "session"],
  "Parse of a statement the server already has prepared (parsed and closed earlier), in an aborted transaction: PostgreSQL 25P02, pgrouter answers ParseComplete itself.",
  Case([R(P("select 1", "fs1"), S()), R(C("S", "fs1"), S()), R(parity.Query("begin")), R(parity.Query("select 1/0")), R(P("select 1", "fs1"), S()), R(parity.Query("rollback"))])),
 ("sql_prepare_with_set_in_one_query", ["transaction", "session"],
  "SQL PREPARE and a SET in one Query: the next PREPARE of the same name succeeds through pgrouter (PostgreSQL: 42P05).",
  Case([R(parity.Query("prepare fzp as select 1; set statement_timeout = '5s'")), R(parity.Query("prepare fzp as select 1"))])),
 ("sql_deallocate_in_multi_statement_query", ["transaction", "session"],
  "DEALLOCATE of an SQL-prepared statement in a multi-statement Query: pgrouter 26000, PostgreSQL DEALLOCATE.",
  Case([R(parity.Query("prepare fzp as select 1")), R(parity.Query("select 1; deallocate fzp"))])),
 ("batch_split_across_reads_routed_to_replica", ["transaction"],
  "Parse 'fs2' (a read), then an INSERT's Parse/Bind/Execute and the Sync, arriving in 64-byte pieces: pgrouter "
  "routes the batch by its first statement to the replica and the INSERT fails with 25006 (read-only).",
  Case([R(P("select 1", "fs2"), P(f"insert into {T} values (8, 'e8')"), B(), E(), S(), fragments=[(64, 20)])]),
  True),
 ("partial_header_of_unknown_type", ["transaction", "session"],
  "3 bytes of a message header whose type byte is 0x00: PostgreSQL rejects the type at once (FATAL, close); pgrouter waits for the rest of the header.",
  Case([Round([Item("!unknown type 0x00, 3 bytes of header", b"\0\0\0")], wait="idle", end="close")])),
 ("invalid_length_behind_copy_in_one_write", ["transaction", "session"],
  "COPY FROM STDIN, a row and a CopyData whose length is 3, in one write: pgrouter waited for the replies before "
  "closing, but the server, inside the COPY, waits for data; PostgreSQL says ERROR 08006 + FATAL 08P01.",
  Case([Round([Q(f"copy {T} (a, b) from stdin"), Item("CopyData '1\\t\\N\\n'", pgr.message("d", b"1\t\\N\n")),
               Item("!framing length 3: CopyData", b"d\0\0\0\x03" + b"1\t2", framing=True)], wait="idle", end="close")])),
 ("sync_too_long_then_write_on_replica", ["transaction"],
  "A read batch on the replica whose Sync claims 20 body bytes, then an INSERT batch: the INSERT's first bytes "
  "complete the Sync, but pgrouter read the buffer as the start of a write behind a read and waited for an "
  "answer the server, still reading the Sync, never gave; the client's close was not seen and the server "
  "stayed active for good.",
  Case([Round([fe(P("select $1::int", "fs2")), fe(B("fs2", ["notanint"])), fe(parity.Describe("P", "")), fe(E()),
               Item("!length +20: Sync", b"S\0\0\0\x18")], wait="idle"),
        R(P(f"insert into {T} values ($1, $2)", "fs0"), B("fs0", ["8", "e8"]), E(), C("S", "fs0"), S(), wait="idle", end="close")]),
  True),
 ("unnamed_dropped_by_query_on_another_server", ["transaction"],
  "The unnamed statement parsed on the primary, a simple Query on the replica (which drops it, in PostgreSQL), "
  "then a Bind of it: PostgreSQL 26000; pgrouter bound the copy left on the primary.",
  Case([R(P("commit"), B(), E(), S()), R(parity.Query("select 1")), R(B(), E(), S())]),
  True),
 ("bind_inside_copy_rewritten", ["transaction", "session"],
  "Inside COPY FROM STDIN, a Bind of the unnamed statement: PostgreSQL names type 0x42 in its error; pgrouter's "
  "tracker sent a Close first and the error named 0x43.",
  Case([R(parity.Query(f"copy {T} (a, b) from stdin")), R(B(), parity.Describe("S", "fs_nope"), S())])),
 ("close_then_parse_same_statement_in_one_batch", ["transaction", "session"],
  "Parse 'fs0', Close 'fs0' and Parse 'fs0' of the same text in one batch: PostgreSQL ParseComplete; pgrouter "
  "re-created the shared statement, then tested whether the Close happened by a Parse of that same name: 42P05.",
  Case([R(P("select generate_series(1, 5) as g", "fs0"), C("S", "fs0"), P("select generate_series(1, 5) as g", "fs0"),
          B("fs0"), E(), S())])),
 ("write_batch_arrives_with_the_sync_of_a_replica_read", ["transaction"],
  "Two read batches, then a named-statement INSERT batch whose bytes arrive in the same read as the second "
  "batch's Sync (the first part of that batch already forwarded): the INSERT followed the reads to the replica "
  "(25006).",
  write_behind_split_read(),
  True),
]
out = []
for name, modes, note, case, *replica in entries:
    out.append({"name": name, "modes": modes, "replica": bool(replica and replica[0]), "note": note,
                **case.to_json()})
json.dump(out, open(HERE / 'corpus.json', 'w'), indent=1)
print(f"{len(out)} cases written to {HERE / 'corpus.json'}")
