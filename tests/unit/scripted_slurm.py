"""A scripted Slurm for unit tests: fake ``sbatch``, ``squeue``, ``scancel`` and ``sudo`` executables
in a temporary ``bin_dir``, playing a JSON scenario the test controls and logging every command line.

The fakes are one small Python program (FAKE) installed under each name. The scenario holds the
jobs Slurm knows (state, node, reason), what the next ``sbatch`` does, how many ``scancel`` calls
fail, and the tail of the session's log. ``sudo -u <user> -- <cmd>`` is logged, then plays the
command it wraps (a fake Slurm command, ``mkdir``, or ``tail`` of the session log); anything else
it refuses. ``GuardedSlurmClient`` routes ``sudo`` to the fake and fails the test on any command
outside ``bin_dir``, so nothing a test runs can reach the machine's real Slurm or sudo.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
from pathlib import Path

from spawners.slurm_client import SlurmClient

FAKE = r'''#!{python} -I
import datetime, fcntl, json, os, sys, time

SCENARIO = {scenario!r}
BIN_DIR = os.path.dirname(os.path.abspath(__file__))
SLURM = ("sbatch", "squeue", "scancel")


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    return code


def sbatch(args, stdin, s):
    if "--test-only" in args:
        # Slurm's own answer on stderr, exit 0: "sbatch: Job N to start at <ISO> using ..."
        start = s.get("test_only_start") or datetime.datetime.now().isoformat(timespec="seconds")
        sys.stderr.write("sbatch: Job 999 to start at %s using 1 processors on nodes n1 in partition cpu\n" % start)
        return 0
    if s.get("sbatch_refusals"):   # refused once each, in order
        return fail(s["sbatch_refusals"].pop(0))
    if s.get("sbatch_error"):
        return fail(s["sbatch_error"])
    job_id = str(s["next_job_id"])
    s["next_job_id"] += 1
    s["jobs"][job_id] = dict(s["submit_as"])
    print(job_id)
    return 0


def squeue(args, stdin, s):
    if s.get("squeue_error"):
        return fail(s["squeue_error"])
    opts = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if "--start" in args:
        print("N/A")
        return 0
    if opts.get("--states") == "PENDING":  # queue position
        for job_id, job in sorted(s["jobs"].items()):
            if job["state"] == "PENDING":
                print(job_id)
        return 0
    ids = opts.get("--jobs", "").split(",")
    lines = ["%s|%s|%s|%s|%s|%s|%s" % (j, s["jobs"][j]["state"], s["jobs"][j].get("node") or "(null)",
                                          s["jobs"][j].get("reason", "None"), "learner", "job", "comment")
             for j in ids if j in s["jobs"]]
    if not lines and len(ids) == 1:
        return fail("slurm_load_jobs error: Invalid job id specified")
    print("\n".join(lines))
    return 0


def scancel(args, stdin, s):
    if s["scancel_failures"] != 0:  # -1: fails for ever
        if s["scancel_failures"] > 0:
            s["scancel_failures"] -= 1
        return fail("scancel: error: Kill job error on job id %s: Unable to contact slurm controller" % args[-1])
    job = s["jobs"].get(args[-1])
    if job is None:
        return fail("scancel: error: Kill job error on job id %s: Invalid job id specified" % args[-1])
    job["state"] = "CANCELLED"
    return 0


def sudo(args, stdin, s):
    # sudo [-E] -u USER -- CMD ...: only what the spawner may run as a learner is played.
    cmd = args[args.index("--") + 1:]
    name = os.path.basename(cmd[0])
    if name in SLURM and os.path.dirname(cmd[0]) == BIN_DIR:
        s["calls"].append({{"argv": [name] + cmd[1:], "user": args[args.index("-u") + 1], "stdin": stdin}})
        return globals()[name](cmd[1:], stdin, s)
    if cmd[0] == "mkdir":
        return 0
    if cmd[0] == "tail":
        sys.stdout.write(s["log_tail"])
        return 0 if s["log_tail"] else 1
    return fail("fake sudo refuses %r" % (cmd,))


def main():
    name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    # Only sbatch gets a script on stdin; the others' stdin stays open (the client sends nothing).
    stdin = sys.stdin.read() if any(os.path.basename(a) == "sbatch" for a in [name] + args) else ""
    with open(SCENARIO + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(SCENARIO) as f:
            s = json.load(f)
        s["calls"].append({{"argv": [name] + args, "stdin": stdin, "at": time.time(),
                           "env": sorted(k for k in os.environ if k.startswith("JUPYTERHUB_"))}})
        code = globals()[name](args, stdin, s)
        with open(SCENARIO + ".new", "w") as f:
            json.dump(s, f)
        os.replace(SCENARIO + ".new", SCENARIO)
    sys.exit(code)


main()
'''


class ScriptedSlurm:
    """The scenario the fakes in ``bin_dir`` play; edit it between (or during) the spawner's calls."""

    COMMANDS = ("sbatch", "squeue", "scancel", "sudo")

    def __init__(self, root: Path, first_job_id: int = 101):
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir(parents=True)
        self.path = root / "scenario.json"
        self._write({"jobs": {}, "next_job_id": first_job_id, "calls": [], "scancel_failures": 0, "log_tail": "",
                     "submit_as": {"state": "PENDING", "node": "", "reason": "None"}})
        program = FAKE.format(python=sys.executable, scenario=str(self.path))
        for name in self.COMMANDS:
            exe = self.bin_dir / name
            exe.write_text(program)
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR)

    @contextlib.contextmanager
    def _locked(self):
        with open(str(self.path) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, scenario: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(scenario))
        os.replace(tmp, self.path)

    def read(self) -> dict:
        with self._locked():
            return json.loads(self.path.read_text())

    def update(self, **changes) -> None:
        with self._locked():
            scenario = json.loads(self.path.read_text())
            scenario.update(changes)
            self._write(scenario)

    def set_job(self, job_id: str, state: str, node: str = "", reason: str = "None") -> None:
        with self._locked():
            scenario = json.loads(self.path.read_text())
            scenario["jobs"][job_id] = {"state": state, "node": node, "reason": reason}
            self._write(scenario)

    def job_state(self, job_id: str) -> str:
        return self.read()["jobs"][job_id]["state"]

    def calls(self, name: str) -> list[dict]:
        """Every call of ``name`` (sudo-wrapped ones included), oldest first: {"argv", "stdin", ...}, with
        "at" (its time.time()) when run directly, "user" when run through sudo."""
        return [c for c in self.read()["calls"] if c["argv"][0] == name]


class GuardedSlurmClient(SlurmClient):
    """SlurmClient whose ``sudo`` is the fake in bin_dir; any command outside bin_dir fails the test."""

    async def _exec(self, argv, input, env):
        if argv[0] == "sudo":
            argv = [os.path.join(self.bin_dir, "sudo"), *argv[1:]]
        if os.path.dirname(argv[0]) != self.bin_dir:
            raise AssertionError(f"a unit test tried to run {argv!r} outside the scripted bin_dir")
        return await super()._exec(argv, input, env)
