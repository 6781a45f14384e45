"""The grading sandbox as a learner's code meets it (issue #13): what it can see, where it can
write, what is left after, and what caps its memory.

One small assignment (tests/assessments/grading.py), a few submissions whose answers look
around the sandbox and report it in their output, graded for real by the grader's driver as
root, as a grading job runs them.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
import pytest

from assessments.grading.sandbox import CGROUP_ROOT
from courses.catalogue import NOTEBOOKS_DIR

from ..assessments import grading
from . import leak_walk
from .test_course_sources import course_fingerprints

NAME = "arith.ipynb"
JOB_ID = os.getpid() + 1      # sandbox uids of their own, apart from the integrity suite's
MEMORY = 1 << 30
MARK = f"academy-sandbox-mark-{secrets.token_hex(6)}"
ADD = "def add(a, b):\n    return a + b\n"
MUL = "def mul(a, b):\n    return a * b\n"


def answer(release, add: str = ADD, mul: str = MUL):
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in ("add", "mul"):
            cell.source = {"add": add, "mul": mul}[gid]
    return nb


def looks_around(hidden: list[str], host_process: str) -> str:
    return f"""
import json, os
report = {{"wrote": [], "refused": {{}}}}
for d in ("/tmp", "/var/tmp", "/dev/shm", os.environ["HOME"]):
    with open(os.path.join(d, {MARK!r}), "w") as f:
        f.write("left behind?")
    report["wrote"].append(d)
for d in ("/usr", "/etc", os.path.dirname(os.path.dirname(os.__file__)), "/"):
    try:
        open(os.path.join(d, {MARK!r}), "w").close()
    except OSError as e:
        report["refused"][d] = type(e).__name__
def shows_something(p):
    try:
        return not os.path.isdir(p) or bool(os.listdir(p))  # an empty mount point hides what was there
    except OSError:
        return True
report["present"] = [p for p in {hidden!r} if os.path.lexists(p) and shows_something(p)]
report["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cmdlines = []
for p in report["pids"]:
    try:
        cmdlines.append(open(f"/proc/{{p}}/cmdline", "rb").read().decode(errors="replace"))
    except OSError:
        pass
report["sees_host_process"] = any({host_process!r} in c for c in cmdlines)
import socket
report["hostname"] = socket.gethostname()
report["resolves_to"] = sorted({{a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}})
print("SANDBOX " + json.dumps(report))
""" + ADD


def walks_the_sandbox(prints: dict) -> str:
    walker = Path(leak_walk.__file__).read_text().split('\nif __name__ == "__main__":')[0]
    return walker + f"\nprint('WALK ' + json.dumps(scan(['/'], {prints!r})))\n" + MUL


FILLS_SHARED_MEMORY = """
import os
def fill():
    for i in range(60):   # 60 MiB files (RLIMIT_FSIZE is 64 MiB), 3.5 GiB in all
        with open(f"/dev/shm/fill-{i}", "wb") as f:
            f.write(b"x" * (60 << 20))
fill()
""" + MUL


@pytest.fixture(scope="module")
def sandboxed(base_config):
    python = grading.notebook_env_python()
    base = Path(tempfile.mkdtemp(prefix="academy-sandbox-"))
    private = base / "private"
    private.mkdir(mode=0o700)
    host_process = f"sleep 3{secrets.randbelow(10**6):06d}"
    sleeper = subprocess.Popen(["/bin/sh", "-c", f"exec {host_process}"])
    hidden = [str(p) for p in (Path("/home/learner1"), Path("/root"), Path(base_config["hub"]["state_dir"]),
                               Path(base_config["assessments"]["root"]), Path("/var/log"), Path("/run/munge"),
                               Path("/etc/munge"), NOTEBOOKS_DIR, private)
              if p.exists()]
    try:
        release = grading.write_assignment(python, private, NAME)
        # A module that comes with the assignment (as courses/data/academy_gpt.py does), and one a
        # learner's submission brings: the notebook imports both from its folder, as in a session.
        (private / "release" / "given_helpers.py").write_text("def add(a, b):\n    return a + b\n")
        submissions = {
            "looks_around": answer(release, add=looks_around(hidden, host_process)),
            "walks_for_course_sources": answer(release, mul=walks_the_sandbox(course_fingerprints())),
            "fills_shared_memory": answer(release, mul=FILLS_SHARED_MEMORY),
            "honest_after_memory": answer(release),
            "imports_what_came_with_it": answer(release, add="from given_helpers import add\n",
                                                mul="from my_helpers import mul\n"),
        }
        jobs = []
        for slot, (sid, nb) in enumerate(submissions.items()):
            (private / "submissions" / sid).mkdir(parents=True, mode=0o700)
            nbformat.write(nb, private / "submissions" / sid / NAME)
            if sid == "imports_what_came_with_it":
                (private / "submissions" / sid / "my_helpers.py").write_text(MUL)
            jobs.append({"slot": slot, "sub": {"id": sid, "student": "learner1", "dir": str(private / "submissions" / sid)}})
        manifest = {"source_dir": str(private / "source"), "release_dir": str(private / "release"),
                    "notebooks": [NAME], "work_root": str(base / "work"), "batch_dir": str(private / "batch"),
                    "cell_timeout": 300, "total_timeout": 600.0, "cpus": 1, "limits": {"memory_bytes": MEMORY}}
        run_file = private / "run.json"
        run_file.write_text(json.dumps({"manifest": manifest, "job_id": JOB_ID, "jobs": jobs,
                                        "out": str(private / "records.json")}))
        records = grading.run_grader(python, run_file, timeout_s=900, stdout=private / "driver.stdout",
                                     stderr=private / "driver.stderr")
        yield {"records": {r["id"]: r for r in records}, "batch": private / "batch", "work": base / "work",
               "hidden": hidden}
    finally:
        sleeper.kill()
        grading.kill_processes(grading.sandbox_processes(grading.sandbox_uids(JOB_ID)))
        shutil.rmtree(base, ignore_errors=True)


def output_of(sandboxed, sid: str, prefix: str) -> dict:
    nb = nbformat.read(sandboxed["batch"] / "graded" / sid / NAME, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith(prefix + " "):
                    return json.loads(line[len(prefix) + 1:])
    raise AssertionError(f"{sid} printed no {prefix} line")


def scores(sandboxed, sid: str) -> dict:
    record = sandboxed["records"][sid]
    assert "grader_error" not in record, record["grader_error"]
    return {c["grade_id"]: c["score"] for c in record["result"]["notebooks"][0]["cells"] if c["kind"] == "test"}


def test_the_sandbox_sees_no_home_state_checkout_or_source_and_no_other_process(sandboxed):
    report = output_of(sandboxed, "looks_around", "SANDBOX")
    assert len(sandboxed["hidden"]) >= 6 and report["present"] == []
    assert report["sees_host_process"] is False
    assert len(report["pids"]) <= 3  # its namespace's init, the kernel, the listing itself
    # Everything outside its own scratch space is read-only or not there.
    assert len(report["refused"]) == 4, report["refused"]
    assert scores(sandboxed, "looks_around") == {"test_add": 2.0, "test_mul": 3.0}


def test_a_notebook_imports_the_modules_that_came_with_it(sandboxed):
    """The kernel starts from the real ipykernel_launcher by its path (a submitted file of that
    name cannot take its place), and the notebook's folder is on sys.path, as in a session."""
    assert scores(sandboxed, "imports_what_came_with_it") == {"test_add": 2.0, "test_mul": 3.0}


def test_the_sandbox_name_resolves_to_its_own_loopback(sandboxed):
    """torchrun --standalone, Gloo and MPI look their host up by name: without an answer they
    wait on DNS (a network the sandbox does not have) until they time out."""
    report = output_of(sandboxed, "looks_around", "SANDBOX")
    assert report["hostname"] == "sandbox" and report["resolves_to"] == ["127.0.0.1", "::1"]


def test_what_the_sandbox_wrote_is_gone_after_grading(sandboxed):
    report = output_of(sandboxed, "looks_around", "SANDBOX")
    assert len(report["wrote"]) == 4  # it could write its scratch space, and did
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not os.path.lexists(os.path.join(d, MARK))
    assert not any(sandboxed["work"].iterdir())  # its work directory is removed too
    leftover_cgroups = [p for c in ("memory", "pids") for p in (CGROUP_ROOT / c).rglob("academy-sandbox-19*")]
    assert leftover_cgroups == []


def test_a_walk_inside_the_sandbox_finds_no_course_source(sandboxed):
    walked = output_of(sandboxed, "walks_for_course_sources", "WALK")
    assert walked["scanned"] > 5_000 and walked["findings"] == []


def test_memory_is_capped_by_a_cgroup_whatever_form_it_takes(sandboxed):
    # Files in /dev/shm are memory no RLIMIT_DATA counts: the cgroup stops the kernel.
    record = sandboxed["records"]["fills_shared_memory"]
    notes = record["result"]["notebooks"][0]["notes"]
    assert any("went over its memory" in n for n in notes), notes
    assert scores(sandboxed, "fills_shared_memory") == {"test_add": 2.0, "test_mul": 0.0}
    assert not list(Path("/dev/shm").glob("fill-*"))
    assert scores(sandboxed, "honest_after_memory") == {"test_add": 2.0, "test_mul": 3.0}
