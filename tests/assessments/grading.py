"""Grade submissions for real with the sandboxed grader, from the test suite's environment.

The tests run in the hub's environment; the grader needs the notebook environment (nbclient,
nbgrader, ipykernel). This file is both: imported by the tests (it builds the assignment and
runs itself as a subprocess), and run as the driver in the notebook environment:

    PYTHONPATH=REPO python tests/assessments/grading.py RUN.json

RUN.json holds {"manifest": {...}, "job_id": int, "jobs": [{"slot": int, "sub": {...}}, ...],
"out": PATH}. Each submission is graded with assessments.grading.task.grade_submission, in
order, in this one process (interpreter start-up once, and a grader that must survive every
attack before the next). After each, the driver records what the trainer would get (the result,
or the grader's exception), the sandbox uid's processes still alive, and its own peak memory;
the list is rewritten to OUT after every submission, so a run cut short still says how far it got.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(ROOT))

from assessments.grading.sandbox import sandbox_uid  # noqa: E402 - standard library only, both environments


# --- the assignment -------------------------------------------------------------------------

def nbgrader_cell(source: str, grade_id: str, *, solution=False, grade=False, locked=False, points=None,
                  markdown=False):
    meta = {"grade": grade, "solution": solution, "locked": locked, "task": False, "grade_id": grade_id,
            "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return (new_markdown_cell if markdown else new_code_cell)(source, metadata={"nbgrader": meta})


def source_notebook() -> nbformat.NotebookNode:
    """The trainer's source: two autograded answers (2 + 3 points), one manually graded (1 point)."""
    cells = [
        new_markdown_cell("# Arithmetic\n\nImplement the functions below."),
        nbgrader_cell('def check(got, expected):\n    assert got == expected, f"got {got!r}, expected {expected!r}"',
                      "helpers", locked=True),
        nbgrader_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION", "add",
                      solution=True),
        nbgrader_cell("assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\nassert add(10, 5) == 15\n### END HIDDEN TESTS",
                      "test_add", grade=True, locked=True, points=2),
        nbgrader_cell("def mul(a, b):\n    ### BEGIN SOLUTION\n    return a * b\n    ### END SOLUTION", "mul",
                      solution=True),
        nbgrader_cell("check(mul(2, 3), 6)\n### BEGIN HIDDEN TESTS\ncheck(mul(4, 5), 20)\n### END HIDDEN TESTS",
                      "test_mul", grade=True, locked=True, points=3),
        nbgrader_cell("Why is `add(a, b) == add(b, a)`?\n\n### BEGIN SOLUTION\nAddition is commutative.\n"
                      "### END SOLUTION", "explain", solution=True, grade=True, points=1, markdown=True),
    ]
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})


def notebook_env_python() -> str:
    from hub.config import load  # the hub's environment only
    return os.path.join(load()["notebook_env"], "bin", "python")


def notebook_env(python: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    # As assessments.courseware.validate runs its checker: the notebook environment's bin first on PATH.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1",
            "PATH": f"{os.path.dirname(python)}:{os.environ.get('PATH', '/usr/bin:/bin')}", **(extra or {})}


def generate_release(python: str, source: nbformat.NotebookNode, name: str, scratch: Path) -> nbformat.NotebookNode:
    """``nbgrader generate_assignment`` in a scratch course, as assessments.courseware.check does it."""
    scratch.mkdir(parents=True)
    (scratch / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.course_id = 'integrity'\nc.CourseDirectory.root = {str(scratch)!r}\n")
    (scratch / "source" / "arith").mkdir(parents=True)
    nbformat.write(source, scratch / "source" / "arith" / name)
    proc = subprocess.run([os.path.join(os.path.dirname(python), "nbgrader"), "generate_assignment", "arith",
                           "--force"], cwd=scratch, capture_output=True, text=True, env=notebook_env(python),
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{proc.stderr[-3000:]}")
    return nbformat.read(scratch / "release" / "arith" / name, as_version=4)


def write_assignment(python: str, private: Path, name: str) -> nbformat.NotebookNode:
    """The trainer's source and nbgrader's release of it under PRIVATE/source and PRIVATE/release, as
    the course store keeps them; the release, which every submission starts from."""
    source = source_notebook()
    release = generate_release(python, source, name, private / "course")
    for folder, nb in (("source", source), ("release", release)):
        (private / folder).mkdir()
        nbformat.write(nb, private / folder / name)
    return release


def run_grader(python: str, run_file: Path, timeout_s: float, env: dict[str, str] | None = None, *,
               stdout: Path, stderr: Path) -> list[dict]:
    """Grade everything in RUN_FILE in one driver process; the records, in order.

    The driver's output goes to files, as a grading job's goes to its Slurm log: whatever reaches
    them is there for the tests to see (and cannot fill this process's memory)."""
    spec = json.loads(run_file.read_text())
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.run([python, str(Path(__file__).resolve()), str(run_file)], stdout=out, stderr=err,
                              env=notebook_env(python, env), timeout=timeout_s, cwd=ROOT)
    records_file = Path(spec["out"])
    records = json.loads(records_file.read_text()) if records_file.exists() else []
    if proc.returncode != 0 or len(records) != len(spec["jobs"]):
        tail = stderr.read_bytes()[-4000:].decode(errors="replace")
        raise AssertionError(f"the grading driver failed (rc {proc.returncode}, {len(records)} of {len(spec['jobs'])} "
                             f"graded):\n{tail}")
    return records


def sandbox_processes(uids) -> list[str]:
    """'pid uid name state' of every process still running whose real uid is one of UIDS.

    Zombies are not running: dead, their parent gone, they wait for init to reap them (as the
    grader's own clean-up, sandbox.kill_everything_of, counts them)."""
    wanted, found = set(uids), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
            uid = int(status["Uid"].split()[0])
        except (OSError, KeyError, ValueError):
            continue
        if uid in wanted and not status.get("State", "").strip().startswith(("Z", "X")):
            found.append(f"{proc.name} {uid} {status.get('Name', '').strip()} {status.get('State', '').strip()}")
    return found


def sandbox_uids(job_id: int) -> list[int]:
    """Every uid the sandbox gives the slots of JOB_ID (the uids of other grading jobs are not ours)."""
    return [sandbox_uid(job_id, slot) for slot in range(100)]


def kill_processes(found: list[str]) -> None:
    """SIGKILL the processes sandbox_processes found (what a driver cut short left behind)."""
    for line in found:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- the driver (notebook environment) ----------------------------------------------------------

def main(run_file: str) -> int:
    import resource

    from assessments.grading import sandbox
    from assessments.grading.task import grade_submission

    spec = json.loads(Path(run_file).read_text())
    sandbox.check_tools()
    records = []
    for job in spec["jobs"]:
        uid = sandbox.sandbox_uid(spec["job_id"], job["slot"])
        t0 = time.monotonic()
        record = {"id": job["sub"]["id"], "uid": uid}
        try:
            record["result"] = grade_submission(spec["manifest"], job["sub"], job["slot"], spec["job_id"])
        except Exception:  # noqa: BLE001 - the test reports it: a grader that raised did not survive
            record["grader_error"] = traceback.format_exc()[-3000:]
        record["seconds"] = round(time.monotonic() - t0, 2)
        record["leftover"] = sandbox_processes([uid])
        record["grader_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        records.append(record)
        tmp = Path(spec["out"] + ".tmp")
        tmp.write_text(json.dumps(records))
        os.replace(tmp, spec["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
