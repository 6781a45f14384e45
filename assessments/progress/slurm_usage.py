"""GPU-hours from Slurm's accounting: every session the progress database knows is closed with
sacct's figures once its job has ended, however it ended (stopped from the hub, scancel, walltime,
preemption, a crash, a node failure).

The spawner's own start and stop events come first and are shown at once; this reconciles them
with what every centre trusts: one batched ``sacct -j a,b,c`` per round for the sessions not yet
accounted (started in the last ACCOUNTING_WINDOW_S), whose answer becomes a ``session_accounted``
event per ended job. Those events win over the spawner's in the folds, and a rebuild from the
event log gives the same figures.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from . import events as ev
from .models import sessions
from .outbox import stable_id

log = logging.getLogger("academy.progress.accounting")
ACCOUNTING_WINDOW_S = 7 * 86400   # sessions older than this and still open are left as they are
BATCH = 200                       # job ids per sacct call
FIELDS = "JobIDRaw,State,Start,End,ElapsedRaw,AllocTRES"
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "TIMEOUT"}


@dataclass(frozen=True)
class JobUsage:
    job_id: str
    state: str            # the first word of sacct's State ("CANCELLED by 1000" -> CANCELLED)
    started_at: float
    ended_at: float
    elapsed_s: int
    gpus: int             # gres/gpu of AllocTRES


def _epoch(text: str) -> float | None:
    # sacct prints the controller's local time without a zone, as this machine's clock reads it
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None   # "Unknown", "None": not started or not ended


def _gpus(tres: str) -> int:
    for item in tres.split(","):
        name, _, value = item.partition("=")
        if name == "gres/gpu":
            return int(value) if value.isdigit() else 0
    return 0


def parse_sacct(text: str) -> dict[str, JobUsage]:
    """{job id: usage} of the jobs sacct reports ended, from ``sacct -X -P -n -o FIELDS``."""
    found = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 6:
            continue
        job, state, start, end, elapsed, tres = parts
        state = state.split(" ")[0]
        started, ended = _epoch(start), _epoch(end)
        if state not in ENDED or ended is None or not elapsed.isdigit():
            continue
        found[job] = JobUsage(job, state, started if started is not None else ended, ended, int(elapsed), _gpus(tres))
    return found


def job_usage(job_ids: list[str], sacct: str = "sacct", timeout: float = 30) -> dict[str, JobUsage]:
    """The ended jobs among job_ids, as Slurm's accounting has them (one sacct call per BATCH ids)."""
    found: dict[str, JobUsage] = {}
    for i in range(0, len(job_ids), BATCH):
        part = job_ids[i:i + BATCH]
        result = subprocess.run([sacct, "-X", "-P", "-n", f"-o{FIELDS}", f"--jobs={','.join(part)}"],
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"sacct failed: {result.stderr.strip()[-300:]}")
        found.update(parse_sacct(result.stdout))
    return found


def job_id_of(session: str) -> str:
    """The Slurm job id of a session id ('<cluster>-<job id>', hub/session_events.py); '' if none."""
    tail = session.rpartition("-")[2]
    return tail if tail.isdigit() else ""


def reconcile(engine: sa.Engine, sacct: str = "sacct", now: float | None = None) -> int:
    """Record sacct's figures for every ended, not yet accounted session; the number recorded."""
    now = time.time() if now is None else now
    s = sessions.c
    with engine.connect() as conn:
        open_ = conn.execute(sa.select(s.session, s.user, s.course, s.profile).where(
            s.accounted.is_(False), sa.or_(s.started_at.is_(None), s.started_at >= now - ACCOUNTING_WINDOW_S))).all()
    by_job = {job_id_of(r.session): r for r in open_ if job_id_of(r.session)}
    if not by_job:
        return 0
    usage = job_usage(sorted(by_job), sacct)
    batch = [{"id": stable_id("session_accounted", row.session), "type": "session_accounted",
              "occurred_at": u.ended_at, "user": row.user, "course": row.course or None,
              "payload": {"session": row.session, "profile": row.profile, "gpus": u.gpus,
                          "duration_s": float(u.elapsed_s), "started_at": u.started_at, "ended_at": u.ended_at,
                          "state": u.state.lower().replace("_", "-")}}
             for job, u in usage.items() for row in [by_job[job]]]
    if not batch:
        return 0
    with engine.begin() as conn:
        added, _ = ev.ingest(conn, batch, source="slurm-accounting", now=now)
    return added


async def keep_reconciling(engine: sa.Engine, interval_s: float, sacct: str = "") -> None:
    """Reconcile every interval_s (in a thread: sacct and the database block)."""
    sacct = sacct or shutil.which("sacct") or "sacct"
    while True:
        try:
            added = await asyncio.to_thread(reconcile, engine, sacct)
            if added:
                log.info("GPU-hours of %d ended session(s) taken from Slurm's accounting", added)
        except Exception as e:   # slurmdbd away, a slow sacct: the next round tries again
            log.warning("could not read Slurm's accounting: %s", e)
        await asyncio.sleep(interval_s)
