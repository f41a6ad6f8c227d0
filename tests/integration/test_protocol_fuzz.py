"""Differential protocol fuzzing, bounded (tests/fuzz/protocol_fuzz.py): a fixed number of random valid and mutated
frontend message sequences per mode, each played straight to PostgreSQL and through pgrouter; transcripts must be
the same after normalisation, and after every case pgrouter must be alive, serve a fresh client, leave a bystander
client on the same pool untouched and leave no server connection stuck. Fixed seeds, so a failure here replays with

    PGR_CLUSTER_DIR=... /usr/bin/python3 tests/fuzz/protocol_fuzz.py --replay SEED:CASE --mode MODE [--replica]

PGR_FUZZ_CASES overrides the number of cases per mode (default 25: the 4 modes take about 1.5 minutes)."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import protocol_fuzz  # noqa: E402

CASES = int(os.environ.get("PGR_FUZZ_CASES", "25"))
SEEDS = {("transaction", False): 101, ("transaction", True): 102, ("session", False): 103, ("session", True): 104}


@pytest.mark.parametrize("mode, replica", list(SEEDS), ids=[f"{m}{'-replica' if r else ''}" for m, r in SEEDS])
def test_protocol_fuzz(cluster, tmp_path, mode, replica):
    lines = []
    failures = protocol_fuzz.run(cluster, mode, replica, SEEDS[(mode, replica)], cases=CASES, workdir=tmp_path,
                                 log=lines.append)
    summary = "\n".join(lines)
    assert not failures, f"{len(failures)} of {CASES} cases failed (seed {SEEDS[(mode, replica)]}):\n{summary[-20000:]}"
