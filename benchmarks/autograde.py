"""Autograding throughput: stock serial `nbgrader autograde` (ANCHOR) against the platform's
sandboxed Slurm-array autograder (OURS), with a bare nbclient execution (BARE) as the floor.

The same N submissions of one assignment (default llm-101/tokenization, 40 submissions: three in
four solved from the trainer's solution, one in four the blank release), one per learner
bench01..benchNN, are graded in each round by:

- anchor: ONE `nbgrader autograde <assignment> --force` over all students (nbgrader 0.9.6 of the
  notebook env, serial), in a scratch nbgrader course with the same submitted notebooks;
- ours: `assessments.grading.batch.start(..., regrade=True)` on the real one-node Slurm, followed
  until every result is in, then `collect()` into the gradebook (what `academy grade` does), once
  per slot count (`assessments.max_parallel`, default 1 and 2);
- bare: one notebook-env process running plain nbclient over the same notebooks the graders
  run (the learner's answers merged into the trainer's source, hidden tests included), one
  fresh kernel each, serially: no sandbox, no Slurm, no scoring; and bare@k, k such processes
  at once (the control for ours at k slots).

overhead_ratio = ours' wall / bare's wall with as many submissions running at once (ours@1 against
the serial bare run, ours@k against bare@k), the worst over the slot counts: what the sandbox,
Slurm and scoring add to executing the same notebook under the same conditions. Comparing ours@2
with the serial bare run instead would count two kernels sharing two busy cores as overhead;
that figure is kept as `slot_seconds_ratio` (see the README for the breakdown recorded per run).

Every round checks every score (solved: all autograded points, blank: 0) and stops loudly if
one is wrong. The result is the median of the rounds.

    /opt/academy/venv-hub/bin/python benchmarks/autograde.py [--runs 3] [--submissions 40] [--quick]

Writes benchmarks/results/autograde.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
import traceback
from pathlib import Path

import nbformat
import yaml

import common
from common import NOTEBOOK_ENV, log

from assessments.courseware.release import stage_source  # noqa: E402 - common puts this checkout on sys.path
from assessments.grading import batch as autograde  # noqa: E402
from assessments.grading.notebook_merge import grade_id, merge, nbgrader_meta  # noqa: E402
from assessments.exchange.store import Store  # noqa: E402
from courses.catalogue import load_catalogue  # noqa: E402
from hub import config as academy_config  # noqa: E402
from spawners.profiles import parse_profile  # noqa: E402
from spawners.slurm_client import SlurmClient  # noqa: E402
from tests.support import LogMark  # noqa: E402

WORK_ROOT = "/var/tmp/academy-bench-grading"
NB_BIN = NOTEBOOK_ENV / "bin"
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")

# Runs in the notebook env: plain nbclient, one fresh kernel per notebook, serially. The kernel
# gets what ours' kernel gets (sandbox.kernel_env: 1 BLAS thread, MPLBACKEND=Agg, a scratch HOME
# holding the release's files) and is killed at the end as ours' is (shutdown_kernel="immediate"),
# so the difference to ours is the grading machinery alone.
BARE_RUNNER = r'''
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from assessments.grading.sandbox import kernel_env

spec, claims = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
out = []
for item in spec["notebooks"]:
    try:  # with several workers, each notebook is run by the first to claim it
        os.close(os.open(claims / item["student"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        continue
    nb = nbformat.read(item["path"], as_version=4)
    work = Path(tempfile.mkdtemp(prefix="bare-", dir=spec["work_root"]))
    (work / "tmp").mkdir()
    for name in spec["files"]:
        shutil.copy(Path(spec["release_dir"]) / name, work / name)
    marks = []
    client = NotebookClient(nb, kernel_name="python3", timeout=spec["cell_timeout"], allow_errors=True,
                            shutdown_kernel="immediate", resources={"metadata": {"path": str(work)}},
                            on_notebook_start=lambda notebook: marks.append(time.monotonic()),
                            on_cell_executed=lambda cell, cell_index, execute_reply: marks.append(time.monotonic()))
    t0 = time.monotonic()
    client.execute(env=kernel_env(work, item["student"], 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - t0
    shutil.rmtree(work, ignore_errors=True)
    errors = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    out.append({"student": item["student"], "seconds": round(seconds, 3), "kernel_start_s": round(marks[0] - t0, 3),
                "first_cell_s": round(marks[1] - marks[0], 3) if len(marks) > 1 else None, "error_cells": errors})
print(json.dumps(out))
'''

# Runs in the notebook env: the anchor's autograded scores, from nbgrader's own gradebook.
ANCHOR_SCORES = r'''
import json, sys
from nbgrader.api import Gradebook
root, assignment, notebook, students = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
out = {}
with Gradebook(f"sqlite:///{root}/gradebook.db") as gb:
    for s in students:
        try:
            grades = gb.find_submission_notebook(notebook, assignment, s).grades
        except Exception as e:
            out[s] = {"error": f"{type(e).__name__}: {e}"}
            continue
        auto = [g for g in grades if g.auto_score is not None]
        out[s] = {"score": sum(g.auto_score for g in auto), "max": sum(g.max_score for g in auto)}
print(json.dumps(out))
'''


class WrongScores(RuntimeError):
    """Grading gave a score it must not: the benchmark would measure broken grading."""


# -- the submissions ---------------------------------------------------------------------------

def solved_notebook(release_text: str, source: nbformat.NotebookNode) -> str:
    """The released notebook with every answer cell filled in from the trainer's solution."""
    answers = {grade_id(c): "\n".join(line for line in c.source.splitlines()
                                      if not any(m in line for m in SOLUTION_MARKERS))
               for c in source.cells if nbgrader_meta(c).get("solution")}
    nb = nbformat.reads(release_text, as_version=4)
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    return nbformat.writes(nb)


def autograded_points(source: nbformat.NotebookNode) -> float:
    """Points of the cells a grader scores by running tests (not the ones a trainer grades)."""
    return sum(float(nbgrader_meta(c).get("points", 0)) for c in source.cells
               if nbgrader_meta(c).get("grade") and c.cell_type == "code" and not nbgrader_meta(c).get("solution"))


def is_blank(i: int) -> bool:
    return i % 4 == 1  # one in four, spread through the list (40: 10 blank; 6: 2 blank)


class Setup:
    """The store with the published assignment and N submissions, the anchor's nbgrader course,
    and the merged notebooks the bare run executes."""

    def __init__(self, root: Path, assignment: str, n: int):
        self.root = root
        course_id, _, assignment_id = assignment.partition("/")
        self.base_cfg_file = root / "config.yaml"
        self.base_cfg_file.write_text(yaml.safe_dump({"assessments": {
            "root": str(root / "courses"), "work_root": WORK_ROOT, "max_parallel": 0}}))
        cfg = academy_config.load(self.base_cfg_file)
        catalogue = load_catalogue(profiles={p["key"] for p in cfg["profiles"]})
        if course_id not in catalogue:
            raise SystemExit(f"no course {course_id!r}; the catalogue has: {', '.join(catalogue)}")
        found = [a for a in catalogue[course_id].assignments if a.id == assignment_id]
        if not found:
            raise SystemExit(f"{course_id} has no assignment {assignment_id!r}")
        self.a = found[0]
        self.profile = parse_profile({p["key"]: p for p in cfg["profiles"]}[self.a.profile])
        self.slurm = SlurmClient(bin_dir=cfg["slurm"]["bin_dir"])
        self.store = Store.from_config(cfg)
        self.cell_timeout = cfg["assessments"]["cell_timeout"]
        self.users = common.bench_users(n)
        self.source = nbformat.read(self.a.path, as_version=4)
        self.auto_points = autograded_points(self.source)
        self.expected = {u: (0.0 if is_blank(i) else self.auto_points) for i, u in enumerate(self.users)}

        log(f"publishing {assignment} into a scratch store (nbgrader generate_assignment) ...")
        self.store.publish(self.a)
        release_dir = self.store.course_dir(self.a.course_id, "release", self.a.id)
        self.release_files = [str(p.relative_to(release_dir)) for p in sorted(release_dir.rglob("*"))
                              if p.is_file() and p.suffix != ".ipynb"]
        release_text = self.store.release_files(self.a.course_id, self.a.id)[self.a.notebook].decode()
        solved = solved_notebook(release_text, self.source)
        release = nbformat.reads(release_text, as_version=4)
        self.texts = {u: (release_text if is_blank(i) else solved) for i, u in enumerate(self.users)}

        for u in self.users:  # ours: enrolled learners with real accounts, one submission each
            self.store.enrolment.add(self.a.course_id, u, "learner")
            self.store.submit(self.a.course_id, self.a.id, u, {self.a.notebook: self.texts[u].encode()})

        # bare: exactly the notebooks the graders run (answers in the trainer's source, hidden tests in)
        # root-only: the merged notebooks and the anchor's course hold solutions and hidden tests, and
        # the benchmark root itself stays traversable for the sandbox accounts that grade under it
        self.bare_dir = root / "bare"
        self.bare_dir.mkdir(mode=0o700)
        self.bare_spec = root / "bare.json"
        items = []
        for u in self.users:
            path = self.bare_dir / f"{u}.ipynb"
            nbformat.write(merge(self.source, release, nbformat.reads(self.texts[u], as_version=4)).notebook, path)
            items.append({"student": u, "path": str(path)})
        self.bare_spec.write_text(json.dumps({"notebooks": items, "files": self.release_files, "work_root": WORK_ROOT,
                                              "release_dir": str(release_dir), "cell_timeout": self.cell_timeout}))

        # anchor: a scratch nbgrader course, the release generated by nbgrader itself (its gradebook
        # then knows the assignment), and the same notebooks under submitted/<student>/<assignment>/
        self.anchor_root = root / "anchor"
        self.anchor_root.mkdir(mode=0o700)
        (self.anchor_root / "source").mkdir()
        (self.anchor_root / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = {self.a.course_id!r}\n"
            f"c.CourseDirectory.root = {str(self.anchor_root)!r}\n"
            f"c.Execute.timeout = {int(self.cell_timeout)}\n")  # ours' cell_timeout (stock: 30)
        stage_source(self.a.folder, self.a.data_files, self.anchor_root / "source" / self.a.id)
        gen = subprocess.run([str(NB_BIN / "nbgrader"), "generate_assignment", self.a.id, "--force"],
                             cwd=self.anchor_root, env=nb_env(), capture_output=True, text=True)
        if gen.returncode != 0:
            raise SystemExit(f"nbgrader generate_assignment failed:\n{gen.stderr[-2000:]}")
        for u in self.users:
            folder = self.anchor_root / "submitted" / u / self.a.id
            folder.mkdir(parents=True)
            (folder / self.a.notebook).write_text(self.texts[u])

    def cfg(self, slots: int) -> dict:
        """The platform's configuration as `academy grade` loads it, with max_parallel = slots."""
        path = self.root / f"config-slots{slots}.yaml"
        path.write_text(yaml.safe_dump({"assessments": {
            "root": str(self.root / "courses"), "work_root": WORK_ROOT, "max_parallel": slots}}))
        return academy_config.load(path)

    def check(self, kind: str, scores: dict[str, float | None]) -> None:
        wrong = {u: (scores.get(u), want) for u, want in self.expected.items() if scores.get(u) != want}
        if wrong:
            detail = ", ".join(f"{u}: got {got}, expected {want}" for u, (got, want) in sorted(wrong.items()))
            raise WrongScores(f"{kind}: {len(wrong)} of {len(self.expected)} scores are wrong: {detail}")


def nb_env() -> dict[str, str]:
    return {"PATH": f"{NB_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}


def run_processes(cmds: list[list[str]], cwd: Path, log_path: Path, timeout: float) -> tuple[float, list[str]]:
    """Start every command at once, each in its own process group (kernels included), and wait for
    all; (wall seconds, their stdouts). Killed whole on timeout, Ctrl-C or SIGTERM."""
    procs, outs = [], []
    t0 = time.monotonic()
    with open(log_path, "w") as err:
        try:
            for cmd in cmds:
                procs.append(subprocess.Popen(cmd, cwd=cwd, env=nb_env(), stdout=subprocess.PIPE, stderr=err,
                                              text=True, start_new_session=True))
            for proc in procs:  # stdout is one JSON line at the end: no pipe fills up meanwhile
                outs.append(proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))[0])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    wall = time.monotonic() - t0
    failed = [p for p in procs if p.returncode != 0]
    if failed:
        raise RuntimeError(f"{' '.join(cmds[0][:3])} ... exited {failed[0].returncode}:\n{log_path.read_text()[-3000:]}")
    return wall, outs


def stalls(seconds: list[float], cell_timeout: float) -> int:
    """Submissions that took most of a cell timeout: here, nbclient waiting out the timeout for a
    reply that had arrived (a missed wake-up; see the README)."""
    return sum(1 for x in seconds if x > 0.8 * cell_timeout)


# -- the three contestants -------------------------------------------------------------------

def run_anchor(s: Setup, run_dir: Path, timeout: float) -> dict:
    shutil.rmtree(s.anchor_root / "autograded", ignore_errors=True)
    load = common.loadavg()
    t0_wall = time.time()
    wall, _ = run_processes([[str(NB_BIN / "nbgrader"), "autograde", s.a.id, "--force"]], s.anchor_root,
                            run_dir / "anchor-nbgrader.log", timeout)
    graded = [s.anchor_root / "autograded" / u / s.a.id / s.a.notebook for u in s.users]
    missing = [u for u, path in zip(s.users, graded) if not path.exists()]
    if missing:
        raise WrongScores(f"anchor: nbgrader wrote no autograded notebook for {', '.join(missing)}")
    _, outs = run_processes([[str(NB_BIN / "python"), "-c", ANCHOR_SCORES, str(s.anchor_root), s.a.id,
                              Path(s.a.notebook).stem, ",".join(s.users)]], s.anchor_root,
                            run_dir / "anchor-scores.log", 120)
    got = json.loads(outs[0])
    s.check("anchor", {u: (r.get("score") if "error" not in r else None) for u, r in got.items()})
    # nbgrader grades one student after the other: each took from the previous one's last write to its own
    ends = sorted(path.stat().st_mtime - t0_wall for path in graded)
    per = [round(b - a, 3) for a, b in zip([0.0, *ends], ends)]
    return {"wall_s": round(wall, 3), "loadavg_before": load, "per_submission_s": per,
            "stalls": stalls(per, s.cell_timeout)}


def run_bare(s: Setup, run_dir: Path, timeout: float, workers: int = 1) -> dict:
    load = common.loadavg()
    claims = run_dir / f"bare{workers}-claims"
    claims.mkdir()
    wall, outs = run_processes([[str(NB_BIN / "python"), "-c", BARE_RUNNER, str(s.bare_spec), str(claims)]] * workers,
                               common.REPO, run_dir / f"bare{workers}.log", timeout)
    per = sorted((p for out in outs for p in json.loads(out)), key=lambda p: p["student"])
    if [p["student"] for p in per] != s.users:
        raise WrongScores(f"bare: ran {[p['student'] for p in per]}, not each of {s.users} once")
    # No scores without grading: a solved notebook must run without an error, a blank one must fail.
    bad = [p["student"] for p in per if bool(p["error_cells"]) != (s.expected[p["student"]] == 0)]
    if bad:
        raise WrongScores(f"bare: unexpected errors (or none) in the notebooks of {', '.join(bad)}: "
                          f"{[p['error_cells'] for p in per if p['student'] in bad]}")
    secs = [p["seconds"] for p in per]
    return {"wall_s": round(wall, 3), "workers": workers, "loadavg_before": load, "stalls": stalls(secs, s.cell_timeout),
            "execute_sum_s": round(sum(secs), 3),
            "per_notebook_median_s": common.median(secs),
            "kernel_start_median_s": common.median([p["kernel_start_s"] for p in per]),
            "first_cell_median_s": common.median([p["first_cell_s"] for p in per if p["first_cell_s"] is not None]),
            "per_notebook_s": secs}


async def _wait_array_gone(job_id: str, timeout: float) -> bool:
    """Wait until every task of the array has left squeue (the next contestant starts on a quiet node)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%i"],
                             capture_output=True, text=True).stdout
        if not out.strip():
            return True
        await asyncio.sleep(0.5)
    log(f"warning: grading job {job_id} still in Slurm after {timeout:.0f} s")
    return False


def _squeue(*args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--noheader", *args], capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


async def _grade_ours(s: Setup, cfg: dict, timeout: float, jobs: list[str], poll: float) -> dict:
    # Other work on this Slurm (other sessions' tests share the machine) can hold our tasks back.
    others = [{"job": j, "user": u, "state": st, "cpus": c, "memory": m}
              for j, u, st, c, m in _squeue("--format=%i|%u|%T|%C|%m")]
    t0_wall, t0 = time.time(), time.monotonic()
    batch = await autograde.start(s.store, cfg, s.a, s.profile, s.slurm, regrade=True)
    submitted = time.monotonic() - t0
    jobs.append(batch.job_id)
    results_dir, total = batch.dir / "results", len(batch.submissions)
    last_progress = time.monotonic()
    pending_reasons: set[str] = set()
    started = False
    while len(list(results_dir.glob("*.json"))) < total:
        if not started:  # why Slurm has not started the tasks yet, sampled each poll until one runs
            states = _squeue("--array", f"--jobs={batch.job_id}", "--format=%T|%r")
            started = any(st != "PENDING" for st, _ in states) or not states
            pending_reasons.update(r for st, r in states if st == "PENDING")
        if time.monotonic() - last_progress >= 1.0:  # as `academy grade` does, once a second
            last_progress = time.monotonic()
            if (await autograde.progress(batch, s.slurm)).done:
                break  # the array ended with results missing: collect() records them as errors
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"ours: not done after {timeout:.0f} s (batch {batch.dir})")
        await asyncio.sleep(poll)
    all_in = time.monotonic() - t0
    recorded = autograde.collect(s.store, batch)
    wall = time.monotonic() - t0
    if await _wait_array_gone(batch.job_id, 120):
        jobs.remove(batch.job_id)  # nothing left to cancel
    ended = time.monotonic() - t0
    errors = {r["student"]: r["error"] for r in recorded if r["error"]}
    if errors:
        first = next(iter(errors.items()))
        raise WrongScores(f"ours: {len(errors)} submission(s) failed to grade, e.g. {first[0]}: {first[1][-1500:]}")
    s.check("ours", {r["student"]: r["score"] for r in recorded})
    return {"t0_wall": t0_wall, "wall_s": round(wall, 3), "sbatch_returned_s": round(submitted, 3),
            "all_results_s": round(all_in, 3), "collect_s": round(wall - all_in, 3),
            "array_gone_s": round(ended, 3), "job_id": batch.job_id, "batch_dir": str(batch.dir),
            "slurm_pending_reasons": sorted(pending_reasons), "other_slurm_jobs_at_start": others}


def run_ours(s: Setup, slots: int, timeout: float, jobs: list[str], poll: float) -> dict:
    cfg = s.cfg(slots)
    marks = (LogMark(common.daemon_log("slurmctld", common.SLURMCTLD_LOG)),
             LogMark(common.daemon_log("slurmd", common.SLURMD_LOG)))
    load = common.loadavg()
    run = asyncio.run(_grade_ours(s, cfg, timeout, jobs, poll))
    run["loadavg_before"] = load
    run["breakdown"] = ours_breakdown(run, slots, *(m.new_text() for m in marks))
    run["stalls"] = stalls(run["breakdown"]["per_submission_s"], s.cell_timeout)
    return run


def ours_breakdown(run: dict, slots: int, ctld: str, slurmd: str) -> dict:
    """Where each slot's time went, in seconds, from the task logs, the results' timestamps and
    Slurm's logs. Per task: start-up (sbatch, Slurm's scheduling, slurmd's launch, the driver's
    start) until its first submission begins; grading (its submissions' `seconds`: kernel and
    cells in `execute_s`, the rest is merge, sandbox set-up and clean-up, writing the graded
    notebook); gaps between submissions; and idle at the end, until the benchmark saw the last
    result and collected. The four add up to the run's wall time for every task."""
    batch, t0, wall = Path(run["batch_dir"]), run["t0_wall"], run["wall_s"]
    results = {}
    for p in (batch / "results").glob("*.json"):
        r = json.loads(p.read_text())
        r["end"] = r["graded_at"] - t0
        r["start"] = r["end"] - r["seconds"]
        r["execute_s"] = sum(nb.get("seconds", 0.0) for nb in r.get("notebooks", []))
        results[r["submission"]] = r
    tasks = []
    for logfile in sorted((batch / "logs").glob("task-*.log")):
        task = int(re.search(r"task-(\d+)\.log", logfile.name).group(1))
        mine = [results[m] for m in re.findall(r"^graded (\S+) ", logfile.read_text(errors="replace"), re.M)
                if m in results]
        alloc = common.first_time(ctld, rf"(Allocate|Started) JobId={run['job_id']}_{task}\(", slurm=True)
        m = re.search(rf"JobId={run['job_id']}_{task}\((\d+)\)", ctld)
        launch = common.first_time(slurmd, rf"Launching batch job {m.group(1)}\b", slurm=True) if m else None
        if not mine:
            tasks.append({"task": task, "submissions": 0})
            continue
        mine.sort(key=lambda r: r["start"])
        busy = sum(r["seconds"] for r in mine)
        first, last = mine[0]["start"], mine[-1]["end"]
        tasks.append({
            "task": task, "submissions": len(mine),
            "slurm_allocated_s": round(alloc - t0, 3) if alloc else None,
            "slurmd_launch_s": round(launch - t0, 3) if launch else None,
            "first_submission_start_s": round(first, 3),
            "startup_s": round(first, 3), "grading_s": round(busy, 3),
            "execute_s": round(sum(r["execute_s"] for r in mine), 3),
            "gaps_s": round(last - first - busy, 3), "idle_at_end_s": round(wall - last, 3),
        })
    subs = list(results.values())
    live = [t for t in tasks if t["submissions"]]
    totals = {k: round(sum(t[k] for t in live), 3) for k in ("startup_s", "grading_s", "execute_s", "gaps_s",
                                                            "idle_at_end_s")}
    return {
        "tasks": tasks,
        "per_submission_s": [r["seconds"] for r in sorted(subs, key=lambda r: r["student"])],
        "slot_seconds": round(wall * slots, 3),
        "slot_seconds_split": {**totals, "prep_and_cleanup_s": round(totals["grading_s"] - totals["execute_s"], 3)},
        "per_submission_median": {
            "grading_s": common.median([r["seconds"] for r in subs]),
            "execute_s": common.median([r["execute_s"] for r in subs]),
            "prep_and_cleanup_s": common.median([r["seconds"] - r["execute_s"] for r in subs]),
        },
    }


# -- the report ------------------------------------------------------------------------------

def summarise(kind_runs: list[dict], n: int) -> dict:
    walls = [r["wall_s"] for r in kind_runs]
    med = common.median(walls)
    return {"median_s": med, "per_submission_s": round(med / n, 3) if med else None,
            "throughput_per_s": round(n / med, 4) if med else None, "runs_s": walls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignment", default="llm-101/tokenization", help="course/assignment (default %(default)s)")
    parser.add_argument("--submissions", type=int, default=40, help="one per learner bench01.. (default 40, at most 99)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; each grades with every contestant (default 3)")
    parser.add_argument("--slots", default="1,2", help="ours' max_parallel values, comma-separated (default 1,2)")
    parser.add_argument("--poll", type=float, default=0.1, help="how often ours' results folder is looked at, s")
    parser.add_argument("--timeout", type=float, default=1800, help="per contestant and round, s (default 1800)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 6 submissions, 1 round, results in the state folder, not results/")
    parser.add_argument("--out", default="autograde", help="results/<name>.json (default autograde)")
    args = parser.parse_args()
    if args.quick:
        args.submissions, args.runs = 6, 1
    if not 1 <= args.submissions <= 99:
        raise SystemExit("--submissions: 1 to 99")
    slots_list = [int(x) for x in args.slots.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("the grading job and the store are root's: run this benchmark as root")
    if not (NB_BIN / "nbgrader").exists():
        raise SystemExit(f"{NOTEBOOK_ENV} has no nbgrader: run `./academy up` (or `./academy prepare`) first")
    common.install_signal_handlers()

    started = time.monotonic()
    users = common.bench_users(args.submissions)
    if any(subprocess.run(["id", u], capture_output=True).returncode for u in users):
        common.ensure_users(args.submissions)  # creates the missing accounts (and sets random passwords)
    root = common.make_root("autograde")
    log(f"state and logs under {root}")
    s = Setup(root, args.assignment, args.submissions)
    n, blanks = args.submissions, sum(1 for i in range(args.submissions) if is_blank(i))
    log(f"{n} submissions of {args.assignment} ({n - blanks} solved: {s.auto_points:g} points, {blanks} blank: 0)")

    # Unrecorded warm-up: the page cache holds torch, nbclient and nbgrader before the first contestant.
    subprocess.run([str(NB_BIN / "python"), "-c", "import torch, nbclient, nbgrader.apps, matplotlib.pyplot"],
                   env=nb_env(), capture_output=True)
    kinds = ["anchor", *[f"ours@{k}" for k in slots_list], "bare", *[f"bare@{k}" for k in slots_list if k > 1]]
    per_run: list[dict] = []
    jobs: list[str] = []
    try:
        for i in range(args.runs):
            run_dir = root / f"run{i + 1}"
            run_dir.mkdir()
            order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]  # each kind goes first once in a while
            this = {"run": i + 1, "order": order}
            for kind in order:
                if kind == "anchor":
                    r = run_anchor(s, run_dir, args.timeout)
                elif kind.startswith("bare"):
                    r = run_bare(s, run_dir, args.timeout, int(kind.partition("@")[2] or 1))
                else:
                    r = run_ours(s, int(kind.split("@")[1]), args.timeout, jobs, args.poll)
                this[kind] = r
                extra = ""
                if kind.startswith("ours"):
                    pm = r["breakdown"]["per_submission_median"]
                    extra = (f"  (sbatch {r['sbatch_returned_s']:.2f} s, first start "
                             f"{min(t.get('startup_s', 1e9) for t in r['breakdown']['tasks']):.2f} s, per submission "
                             f"{pm['grading_s']} s of which executing {pm['execute_s']} s)")
                if r["stalls"]:
                    extra += f"  [{r['stalls']} submission(s) took most of a cell timeout]"
                log(f"run {i + 1}/{args.runs} {kind:7s} {r['wall_s']:7.2f} s = {r['wall_s'] / n:.2f} s/submission{extra}")
            per_run.append(this)
    except WrongScores as e:
        log(f"ABORTED: {e}")
        return 2
    except Exception:  # noqa: BLE001 - reported, and the finally block still cleans up
        traceback.print_exc()
        return 1
    finally:
        for job in jobs:
            subprocess.run(["scancel", job], capture_output=True)
        # the copies of the course (sources with solutions, graded notebooks) go; the logs stay
        for copy in (s.anchor_root, s.bare_dir, root / "courses"):
            shutil.rmtree(copy, ignore_errors=True)

    anchor = summarise([r["anchor"] for r in per_run], n)
    bare = summarise([r["bare"] for r in per_run], n)
    bare["per_notebook_median_s"] = common.median([r["bare"]["per_notebook_median_s"] for r in per_run])
    bare["kernel_start_median_s"] = common.median([r["bare"]["kernel_start_median_s"] for r in per_run])
    bare["first_cell_median_s"] = common.median([r["bare"]["first_cell_median_s"] for r in per_run])
    bare["stalls"] = [r["bare"]["stalls"] for r in per_run]
    anchor["stalls"] = [r["anchor"]["stalls"] for r in per_run]
    bare_parallel = {}
    for k in slots_list:
        if k > 1:
            bare_parallel[str(k)] = {**summarise([r[f"bare@{k}"] for r in per_run], n), "workers": k,
                                     "stalls": [r[f"bare@{k}"]["stalls"] for r in per_run]}
    by_slots = {}
    for k in slots_list:
        o = summarise([r[f"ours@{k}"] for r in per_run], n)
        o["slots"] = k
        # slot-seconds per submission over the serial bare run's seconds per submission
        o["slot_seconds_ratio"] = round(o["median_s"] * k / bare["median_s"], 3)
        o["throughput_ratio"] = round(o["throughput_per_s"] / anchor["throughput_per_s"], 3)
        # against plain nbclient with as many workers at once (1: the serial bare run)
        control = bare_parallel.get(str(k), bare)
        o["overhead_ratio"] = round(o["median_s"] / control["median_s"], 3)
        o["stalls"] = [r[f"ours@{k}"]["stalls"] for r in per_run]
        o["per_submission_median"] = {key: common.median([r[f"ours@{k}"]["breakdown"]["per_submission_median"][key]
                                                           for r in per_run])
                                      for key in ("grading_s", "execute_s", "prep_and_cleanup_s")}
        tasks = [t for r in per_run for t in r[f"ours@{k}"]["breakdown"]["tasks"] if t.get("submissions")]
        o["task_start_median_s"] = {  # seconds after start() was called, over every task of every round
            key: common.median([t[key] for t in tasks if t.get(key) is not None])
            for key in ("slurm_allocated_s", "slurmd_launch_s", "first_submission_start_s")}
        o["slot_seconds_split_median"] = {
            key: common.median([r[f"ours@{k}"]["breakdown"]["slot_seconds_split"][key] for r in per_run])
            for key in ("startup_s", "execute_s", "prep_and_cleanup_s", "gaps_s", "idle_at_end_s")}
        by_slots[str(k)] = o
    head = str(max(slots_list))
    ours = by_slots[head]
    ratio, overhead = ours["throughput_ratio"], max(o["overhead_ratio"] for o in by_slots.values())
    targets = {"throughput_ratio_min": 1.8, "overhead_ratio_max": 1.15,
               "throughput_met": ratio >= 1.8, "overhead_met": overhead <= 1.15}

    data = {
        "benchmark": "autograde",
        "assignment": args.assignment,
        "submissions": {"total": n, "solved": n - blanks, "blank": blanks, "learners": f"{users[0]}..{users[-1]}",
                        "expected_score": {"solved": s.auto_points, "blank": 0.0}},
        "slots": slots_list,
        "anchor": anchor,
        "ours": ours,
        "ours_by_slots": by_slots,
        "bare": bare,
        "bare_parallel": bare_parallel,
        "ratio": ratio,
        "ratio_meaning": f"ours' throughput (submissions/s, {head} slots) / the anchor's: higher is better",
        "time_ratio": round(ours["median_s"] / anchor["median_s"], 3),
        "overhead_ratio": overhead,
        "overhead_meaning": "ours' wall time / bare nbclient's wall time over the same N submissions with as many "
                            "running at once (ours@k against bare@k), the worst over the slot counts; 1.0 = no "
                            "overhead. slot_seconds_ratio per slot count: ours@k wall x k / the serial bare wall",
        "targets": targets,
        "runs": args.runs,
        "per_run": per_run,
        "setup": {
            "anchor": "one `nbgrader autograde <assignment> --force` (nbgrader 0.9.6, venv-notebook), serial over all "
                      "students, in a scratch course; c.Execute.timeout = ours' cell_timeout; kernel env inherited",
            "ours": "assessments.grading.batch.start(regrade=True) -> Slurm array (one task per slot, partition of the "
                    "assignment's profile, 1 CPU each) -> results folder polled every "
                    f"{args.poll} s and autograde.progress() once a second -> autograde.collect(); "
                    "wall time = start() called to collect() returned",
            "bare": "one venv-notebook process: plain nbclient over the merged notebooks (the graders' input), fresh "
                    "kernel each, serial, kernel env as ours' (1 BLAS thread, MPLBACKEND=Agg), shutdown immediate",
            "bare_parallel": "the same with k such processes at once, each claiming the next notebook (as ours' "
                             "array tasks do): the control for ours at k slots",
            "stalls": "per contestant and round: submissions that took over 0.8 x cell_timeout",
            "work_root": WORK_ROOT, "state_dir": str(root),
        },
        "machine": common.machine(),
        "loadavg_end": common.loadavg(),
        "date": common.now_iso(),
        "duration_s": round(time.monotonic() - started, 1),
    }
    if args.quick:  # a smoke run never replaces the recorded figures
        path = root / f"{args.out}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path = common.write_result(args.out, data)
    log(f"anchor (nbgrader, serial): {anchor['median_s']} s  ({anchor['per_submission_s']} s/submission)")
    for k, o in by_slots.items():
        log(f"ours, {k} slot(s):          {o['median_s']} s  ({o['per_submission_s']} s/submission)  "
            f"throughput x{o['throughput_ratio']} of the anchor, overhead x{o['overhead_ratio']} of bare@{k} "
            f"(slot-seconds x{o['slot_seconds_ratio']} of serial bare)")
    log(f"bare nbclient, serial:     {bare['median_s']} s  ({bare['per_submission_s']} s/submission)")
    for k, b in bare_parallel.items():
        log(f"bare nbclient, {k} at once: {b['median_s']} s  (ours@{k} / this: {by_slots[k]['overhead_ratio']})")
    log(f"ratio (throughput, ours@{head} / anchor): {ratio}  target >= 1.8: {'met' if targets['throughput_met'] else 'NOT met'}")
    log(f"overhead (worst over slot counts): {overhead}  target <= 1.15: {'met' if targets['overhead_met'] else 'NOT met'}")
    log(f"wrote {path} in {data['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
