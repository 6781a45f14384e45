"""SIGKILL in the middle of ingestion: committed batches survive whole, the interrupted one leaves
nothing, and every derived row still matches the events (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from assessments.progress import db, models
from assessments.progress.events import ingest

from .eventgen import random_events
from .ingest_worker import BATCH
from .recompute import assert_consistent

ROOT = Path(__file__).resolve().parents[2]


def start_worker(url: str, run: str, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.progress.ingest_worker", url, run, str(pause)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def present(conn, run: str, n: int) -> int:
    ids = [e["id"] for e in random_events(BATCH, f"{run}-{n}")]
    return conn.execute(sa.select(sa.func.count()).select_from(models.events)
                        .where(models.events.c.id.in_(ids))).scalar()


def read_line(proc: subprocess.Popen) -> list[str]:
    line = proc.stdout.readline()
    assert line, f"the worker stopped: {proc.stderr.read()[-2000:]}"
    return line.split()


def test_a_kill_inside_a_transaction_leaves_no_partial_batch(engine, database_url):
    proc = start_worker(database_url, "inside", pause=0.3)
    try:
        while read_line(proc) != ["committed", "2"]:
            pass
        assert read_line(proc) == ["half", "3"]      # half of batch 3 written, not committed
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with engine.connect() as conn:
        assert [present(conn, "inside", n) for n in range(5)] == [BATCH, BATCH, BATCH, 0, 0]
        assert assert_consistent(conn) == 3 * BATCH


def test_kills_at_random_moments_lose_nothing_committed(engine, database_url):
    rng = random.Random()
    total = 0
    for round_ in range(2):
        run = f"random{round_}"
        proc = start_worker(database_url, run, pause=0)
        try:
            assert read_line(proc)[0] == "half"      # started writing
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            said = proc.stdout.read().split("\n")
        finally:
            proc.kill()
            proc.wait()
        committed = {int(line.split()[1]) for line in said if line.startswith("committed")}
        with engine.connect() as conn:
            counts = [present(conn, run, n) for n in range(max(committed, default=-1) + 3)]
        last = max(committed, default=-1)
        assert all(counts[n] == BATCH for n in committed), counts
        # The batch after the last one reported may have committed before the kill (not printed yet).
        assert counts[last + 1] in (0, BATCH) and counts[last + 2] == 0, counts
        total += sum(counts)
        with engine.connect() as conn:
            assert assert_consistent(conn) == total
    # And the database takes new writes after all that.
    with db.write_transaction(engine) as conn:
        assert ingest(conn, random_events(10, "after")) == (10, 0)
