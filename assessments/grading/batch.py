"""Autograding as a Slurm job array: submit a batch, follow it, collect its results.

One array task per worker slot, not per submission: each task starts one driver process and
claims submissions one at a time (an O_EXCL file per claim), so a slow submission never leaves
the other slots idle and the driver's start-up is paid once per slot. The array spreads over
every node of the grading partition, so throughput grows with the cluster: ``max_parallel``
is the number of slots (0: this node's real cores, for the embedded one-node cluster).
Everything written into the batch directory is the trusted driver's; this side reads it as
size-capped JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from courses.catalogue import Assignment
from spawners.profiles import Profile, format_walltime, parse_profiles
from spawners.slurm_accounts import AccountingError, SlurmAccounts
from spawners.slurm_client import SlurmClient
from spawners.slurm_policy import OPERATORS_QOS, Policy, ensure_course_account

from ..gradebook import tables as gb
from ..exchange.store import Store, StoreError

MAX_RESULT_BYTES = 4 << 20
SCRIPT = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=False,
                     keep_trailing_newline=True, undefined=StrictUndefined).get_template("grading_job.sh.j2")


@dataclass
class Batch:
    id: str
    course: str
    assignment: str
    dir: Path
    job_id: str
    submissions: list[dict]


@dataclass
class Progress:
    total: int
    graded: int
    failed: int
    running: int
    pending: int
    done: bool

    def line(self) -> str:
        width = 24
        filled = round(width * self.graded / self.total) if self.total else width
        return (f"[{'#' * filled}{'-' * (width - filled)}] {self.graded}/{self.total} graded"
                f"{f', {self.failed} failed' if self.failed else ''}, {self.running} running, {self.pending} waiting")


def _memory_mb(size: str) -> int:
    return int(size[:-1]) * {"M": 1, "G": 1024, "T": 1024 * 1024}[size[-1]]


def sandbox_settings(cfg: dict, profile: Profile) -> dict:
    """What each submission's sandbox gets (also what `academy course validate` grades with)."""
    acfg = cfg["assessments"]
    return {"cell_timeout": acfg["cell_timeout"], "cpus": profile.cpus if profile.gres else 1,
            "memory_bytes": _memory_mb(acfg["sandbox_memory"]) << 20, "processes": acfg["sandbox_processes"]}


def batch_script(batch: Path, n_tasks: int, profile: Profile, cfg: dict, per_task_s: int, label: str,
                 account: str = "") -> str:
    """The grading job's script (templates/grading_job.sh.j2, shellchecked in the tests); `account`:
    the course's Slurm account it is charged to ('' on a cluster without accounting)."""
    a = cfg["assessments"]
    gpu = bool(profile.gres)  # an assignment whose profile has GPUs is graded on one
    return SCRIPT.render(
        label=label, last_task=n_tasks - 1, partition=profile.partition, cpus=profile.cpus if gpu else 1,
        memory_mb=_memory_mb(a["sandbox_memory"]) + 1024, walltime=format_walltime(per_task_s), batch=batch,
        gres=profile.gres if gpu else "", python=Path(cfg["notebook_env"]) / "bin" / "python",
        account=account, qos=OPERATORS_QOS)


def charge_account(cfg: dict, course: str) -> str:
    """The course's Slurm account, set up for root's grading jobs; '' without accounting."""
    if not cfg.get("slurm", {}).get("accounts"):
        return ""
    s = cfg["slurm"]
    return ensure_course_account(SlurmAccounts(s["bin_dir"], s.get("command_timeout", 30)),
                                 Policy.from_config(cfg), parse_profiles(cfg["profiles"]), course)


async def start(store: Store, cfg: dict, a: Assignment, profile: Profile, slurm: SlurmClient,
                regrade: bool = False) -> Batch | None:
    """Grade every learner's latest submission that has no result yet (all of them with regrade)."""
    prepared = await asyncio.to_thread(_prepare, store, cfg, a, profile, regrade)   # database and files
    if prepared is None:
        return None
    folder, manifest, script = prepared
    job_id = await slurm.submit(script, None, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    (folder / "job_id").write_text(job_id + "\n")
    return Batch(folder.name, a.course_id, a.id, folder, job_id, manifest["submissions"])


def _prepare(store: Store, cfg: dict, a: Assignment, profile: Profile, regrade: bool):
    """The batch's folder, manifest and job script; None when nothing is left to grade."""
    with store.engine.connect() as conn:
        pub = gb.publication(conn, a.course_id, a.id)
        if pub is None:
            raise StoreError(f"{a.course_id}/{a.id} is not published")
        subs = gb.latest_submissions(conn, a.course_id, a.id)
        if not regrade:
            done = set(conn.execute(sa.select(gb.results.c.submission_id)).scalars())
            subs = [s for s in subs if s["id"] not in done]
    if not subs:
        return None
    try:
        account = charge_account(cfg, a.course_id)   # before anything is written: a refusal leaves nothing behind
    except AccountingError as e:
        raise StoreError(f"grading {a.course_id}/{a.id} cannot be charged to the course's Slurm account: {e}") from e
    batch_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    folder = store.course_dir(a.course_id, "grading", batch_id)
    for sub in ("results", "graded", "logs", "claims"):
        (folder / sub).mkdir(parents=True, mode=0o700)
    acfg = cfg["assessments"]
    slots = acfg["max_parallel"] or (os.cpu_count() or 1)
    n_tasks = min(len(subs), slots)
    per_sub_s = a.runtime_budget_s * 2 + 60
    settings = sandbox_settings(cfg, profile)
    manifest = {
        "course": a.course_id, "assignment": a.id, "batch_dir": str(folder),
        "source_dir": str(store.course_dir(a.course_id, "source", a.id)),
        "release_dir": str(store.course_dir(a.course_id, "release", a.id)),
        "notebooks": json.loads(pub["notebooks"]), "work_root": acfg["work_root"],
        "cell_timeout": settings["cell_timeout"], "total_timeout": a.runtime_budget_s * 2,
        "cpus": settings["cpus"],
        "limits": {"memory_bytes": settings["memory_bytes"], "processes": settings["processes"],
                   "cpu_seconds": per_sub_s * 2},
        "submissions": [{"id": s["id"], "student": s["student"], "dir": s["path"]} for s in subs],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    per_task_s = per_sub_s * math.ceil(len(subs) / n_tasks) + 120
    label = f"academy-grading:{a.course_id}:{a.id}:{batch_id}"
    script = batch_script(folder, n_tasks, profile, cfg, per_task_s, label, account)
    (folder / "grade.sbatch").write_text(script)
    return folder, manifest, script


def open_batch(store: Store, course: str, assignment: str, batch_id: str) -> Batch:
    folder = store.course_dir(course, "grading", batch_id)
    manifest = json.loads((folder / "manifest.json").read_text())
    return Batch(batch_id, course, assignment, folder, (folder / "job_id").read_text().strip(), manifest["submissions"])


async def progress(batch: Batch, slurm: SlurmClient) -> Progress:
    results = [_read_result(p) for p in (batch.dir / "results").glob("*.json")]
    failed = sum(1 for r in results if r is None or r.get("error"))
    states = await slurm.array_states(batch.job_id)      # [] once the array left Slurm's memory: it has ended
    running = sum(1 for s in states if s in ("RUNNING", "COMPLETING", "CONFIGURING"))
    alive = any(s in ("RUNNING", "COMPLETING", "CONFIGURING", "PENDING", "SUSPENDED") for s in states)
    total = len(batch.submissions)
    graded = len(results) - failed
    waiting = max(0, total - len(results) - running) if alive else 0
    return Progress(total, graded, failed, running, waiting, done=(len(results) >= total) or not alive)


def _read_result(path: Path) -> dict | None:
    if path.stat().st_size > MAX_RESULT_BYTES:
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def collect(store: Store, batch: Batch) -> list[dict]:
    """Record each submission's result in the gradebook; a missing result is recorded as an error."""
    recorded = []
    with store.engine.begin() as conn:
        for ref in batch.submissions:
            sub = conn.execute(sa.select(gb.submissions).where(gb.submissions.c.id == ref["id"])).mappings().first()
            path = batch.dir / "results" / f"{ref['id']}.json"
            result = _read_result(path) if path.exists() else None
            if result is None or result.get("submission") != ref["id"]:
                result = {"error": f"the grading task ended without a readable result (see {batch.dir}/logs)"}
            elif not result.get("error"):
                _check_shape(result)
            gb.record_result(conn, dict(sub), batch.id, result, store.late_penalty_per_day, store.late_grace_s)
            if not result.get("error"):
                counted = gb.counted_score(conn, ref["id"])
                store.events.graded(dict(sub), counted, result["max_score"], key=batch.id)
            recorded.append({"submission": ref["id"], "student": ref["student"], **{
                k: result.get(k) for k in ("score", "max_score", "error")}})
    return recorded


def _check_shape(result: dict) -> None:
    # Written by our own driver as root, but read defensively: numbers are numbers, notes are text.
    for nb in result["notebooks"]:
        nb["score"], nb["max_score"] = float(nb["score"]), float(nb["max_score"])
        nb["notes"] = [str(n)[:500] for n in nb["notes"]][:100]
    result["score"] = float(sum(nb["score"] for nb in result["notebooks"]))
    result["max_score"] = float(sum(nb["max_score"] for nb in result["notebooks"]))
