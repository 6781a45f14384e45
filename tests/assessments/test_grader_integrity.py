"""Submissions that try to cheat or to break the sandboxed grader, each graded for real.

One small nbgrader assignment (answers ``add`` and ``mul``, autograded for 2 and 3 points, and a
markdown answer a trainer grades, 1 point), released by nbgrader itself. Every submission is that
release with one attack in it. All are graded in one driver process in the notebook environment
(tests/assessments/grading.py), through ``assessments.grading.task.grade_submission``, as root,
as a grading job runs them, with grading-job variables in its environment. Each test then checks
what the trainer gets for one submission: every cell's score and status (never points the
submission did not earn, and its honest answer still earns its own), the notes, and that the
grader survived: a result came back and no process of the sandbox's uid was left running.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from . import grading

NAME = "arith.ipynb"
JOB_ID = os.getpid()          # the grading job's id: the sandbox uids are those of this job only
CELL_TIMEOUT = 5
MEMORY_LIMIT = 1 << 30  # small: a bomb meets it in well under the 5 s cell timeout, even on a busy machine
MAX_SCORE = 6.0               # 2 + 3 autograded, 1 graded by a trainer

HONEST = {"add": "def add(a, b):\n    return a + b", "mul": "def mul(a, b):\n    return a * b",
          "explain": "Because addition is commutative."}
WRONG_ADD = "def add(a, b):\n    return a - b"
WRONG_MUL = "def mul(a, b):\n    return a + b"
FULL = {"test_add": (2.0, "ok"), "test_mul": (3.0, "ok")}

# What a grading job's environment may hold; none of it may reach the learner's kernel.
HUB_SECRET = secrets.token_hex(16)
GRADING_ENV = {"NBGRADER_EXECUTION": "autograde", "SLURM_JOB_ID": str(JOB_ID), "SLURM_ARRAY_TASK_ID": "0",
               "SLURM_ARRAY_JOB_ID": str(JOB_ID), "ACADEMY_CONFIG": "/etc/academy/config.yaml",
               "ACADEMY_GRADING_BATCH": "batch-1", "JUPYTERHUB_API_TOKEN": HUB_SECRET}


# --- the assignment and the submissions ----------------------------------------------------------

@dataclass
class Context:
    """What an attacker is assumed to know: where things are on the node, the test's listener."""
    source_notebook: Path
    peer_notebook: Path
    port: int
    host_ip: str


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def index_of(nb, gid: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if grade_id(c) == gid)


def answered(nb, **answers: str):
    for gid, text in answers.items():
        nb.cells[index_of(nb, gid)].source = text
    return nb


def honest(nb, **overrides: str):
    return answered(nb, **{**HONEST, **overrides})


SUBMISSIONS: dict[str, Callable[[nbformat.NotebookNode, Context], dict]] = {}


def submission(build):
    """Register a submission: build(release, ctx) -> {file name: notebook or bytes}."""
    SUBMISSIONS[build.__name__] = build
    return build


@submission
def honest_answers(nb, ctx):
    return {NAME: honest(nb)}


@submission
def blank_release(nb, ctx):
    return {NAME: nb}


@submission
def no_notebook(nb, ctx):
    return {"notes.txt": b"I did not submit the notebook\n"}


@submission
def not_a_notebook(nb, ctx):
    return {NAME: b"{ this is not a notebook"}


@submission
def tampered_test_replaced_by_pass(nb, ctx):
    nb = honest(nb, add=WRONG_ADD)
    nb.cells[index_of(nb, "test_add")].source = "pass"
    return {NAME: nb}


@submission
def tampered_test_deleted(nb, ctx):
    nb = honest(nb, add=WRONG_ADD)
    del nb.cells[index_of(nb, "test_add")]
    return {NAME: nb}


@submission
def tampered_test_retyped_to_markdown(nb, ctx):
    nb = honest(nb, mul=WRONG_MUL)
    i = index_of(nb, "test_mul")
    nb.cells[i] = new_markdown_cell(nb.cells[i].source, metadata=nb.cells[i].metadata)
    return {NAME: nb}


@submission
def locked_helper_edited(nb, ctx):
    # The locked helper the mul tests call, made to accept anything.
    nb = honest(nb, mul=WRONG_MUL)
    nb.cells[index_of(nb, "helpers")].source = "def check(got, expected):\n    pass"
    return {NAME: nb}


@submission
def metadata_forged(nb, ctx):
    nb = honest(nb, mul=WRONG_MUL)
    nb.cells[index_of(nb, "test_add")].metadata.nbgrader.points = 100
    add = nb.cells[index_of(nb, "add")].metadata.nbgrader
    add.grade, add.points = True, 50
    test_mul = nb.cells[index_of(nb, "test_mul")]
    test_mul.metadata.nbgrader.update(solution=True, grade=False, locked=False)  # "my answer", not a test
    test_mul.source = "pass"
    nb.cells.append(new_code_cell("assert True", metadata={"nbgrader": {
        "grade": True, "solution": False, "locked": True, "points": 100, "grade_id": "bonus", "schema_version": 3}}))
    return {NAME: nb}


def with_copy_of_add(first: str, second: str):
    def build(nb, ctx):
        nb = honest(nb, add=first)
        i = index_of(nb, "add")
        nb.cells.insert(i + 1, copy.deepcopy(nb.cells[i]))
        nb.cells[i + 1].source = second
        nb.cells[i + 1].id = secrets.token_hex(4)  # as Jupyter's copy and paste gives it
        return {NAME: nb}
    return build


SUBMISSIONS["duplicate_wrong_copy_first"] = with_copy_of_add(WRONG_ADD, HONEST["add"])
SUBMISSIONS["duplicate_wrong_copy_later"] = with_copy_of_add(HONEST["add"], WRONG_ADD)


@submission
def bash_kernelspec(nb, ctx):
    nb = honest(nb)
    nb.metadata.kernelspec = {"name": "bash", "display_name": "Bash", "language": "bash"}
    nb.metadata.language_info = {"name": "bash"}
    return {NAME: nb}


@submission
def showtraceback_silenced(nb, ctx):
    return {NAME: honest(nb, add="get_ipython().showtraceback = lambda *a, **k: None\n\n" + WRONG_ADD)}


@submission
def showtraceback_silenced_on_the_class(nb, ctx):
    return {NAME: honest(nb, mul=(
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.showtraceback = lambda *a, **k: None\n"
        "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n\n" + WRONG_MUL))}


@submission
def grading_detected_from_environment(nb, ctx):
    # Right only where it believes it is being graded; in a learner's session, this learner's own
    # (wrong) answer. The whole environment is printed for the test to read.
    return {NAME: honest(nb, mul=(
        "import json, os\n"
        "graded = sorted(k for k in os.environ if any(w in k.upper() for w in ('GRADE', 'ACADEMY', 'SLURM')))\n"
        "print(json.dumps(dict(os.environ)))\n\n"
        "def mul(a, b):\n"
        "    if graded:\n"
        "        return a * b\n"
        "    return a + b"))}


@submission
def kernel_killed_in_answer(nb, ctx):
    return {NAME: honest(nb, mul="import os\nos.kill(os.getpid(), 9)")}


@submission
def kernel_exits_in_test(nb, ctx):
    return {NAME: honest(nb, mul="import os\n\ndef mul(a, b):\n    os._exit(1)")}


@submission
def honest_after_kernel_death(nb, ctx):
    return {NAME: honest(nb)}


@submission
def infinite_loop(nb, ctx):
    return {NAME: honest(nb, add="def add(a, b):\n    while True:\n        pass")}


@submission
def output_flood_print(nb, ctx):
    # Flushed at every line, as many 100 kB messages: the attack on the grader. (Unflushed, ipykernel
    # gathers them into one message per flush, in the kernel's own memory, which a long enough
    # loop runs out of: the kernel dies, graded as such.)
    return {NAME: honest(nb, mul=HONEST["mul"] + "\n\nwhile True:\n    print('x' * 100_000, flush=True)")}


@submission
def output_flood_one_message(nb, ctx):
    nb = honest(nb, mul=HONEST["mul"] + "\n\nprint('x' * (128 << 20))")
    nb.cells.insert(index_of(nb, "test_mul") + 1, new_code_cell("print('after the flood')"))
    return {NAME: nb}


@submission
def output_flood_file_descriptor(nb, ctx):
    # Below sys.stdout: ipykernel forwards fd 1 to the notebook, and echoes it to the kernel's own
    # stdout. 10 MB.
    return {NAME: honest(nb, mul="import os\n\n" + HONEST["mul"] + "\n\nfor _ in range(100):\n"
                                 "    os.write(1, b'y' * 100_000)")}


@submission
def honest_after_output_flood(nb, ctx):
    return {NAME: honest(nb)}


@submission
def memory_bomb_one_allocation(nb, ctx):
    return {NAME: honest(nb, mul="def mul(a, b):\n    hog = bytearray(4 * 2**30)  # four times the memory limit\n"
                                 "    return a * b")}


@submission
def memory_bomb_growing_list(nb, ctx):
    # 64 MiB at a time, 4 GiB at most: bounded should the limit ever be missing.
    return {NAME: honest(nb, add="def add(a, b):\n    hog = []\n    for _ in range(64):\n"
                                 "        hog.append(bytearray(2**26))\n    return a + b")}


@submission
def honest_after_memory_bomb(nb, ctx):
    return {NAME: honest(nb)}


@submission
def fork_bomb(nb, ctx):
    # Children that leave the kernel's process group (killing the kernel's group misses them),
    # each saying so before the bomb goes off, and sleep. Bounded at 1000 should the process limit
    # ever be missing.
    return {NAME: honest(nb, mul=(
        "import os, time\n\n"
        "def mul(a, b):\n"
        "    ready, say_ready = os.pipe()\n"
        "    children = 0\n"
        "    try:\n"
        "        while children < 1000:\n"
        "            if os.fork() == 0:\n"
        "                os.setsid()\n"
        "                os.write(say_ready, b'.')\n"
        "                time.sleep(300)\n"
        "                os._exit(0)\n"
        "            children += 1\n"
        "    finally:\n"
        "        escaped = 0\n"
        "        while escaped < children:\n"
        "            escaped += len(os.read(ready, children - escaped))\n"
        "        print(f'forked {children} children')\n"
        "    return a * b"))}


@submission
def honest_after_fork_bomb(nb, ctx):
    return {NAME: honest(nb)}


@submission
def reads_the_trainer_source(nb, ctx):
    return {NAME: honest(nb, add=(
        f"def add(a, b):\n    with open({str(ctx.source_notebook)!r}) as f:  # the solution is in there\n"
        "        f.read()\n    return a + b"))}


@submission
def reads_another_submission(nb, ctx):
    return {NAME: honest(nb, mul=(
        f"def mul(a, b):\n    with open({str(ctx.peer_notebook)!r}) as f:  # learner2's answers\n"
        "        f.read()\n    return a * b"))}


def network_answer(name: str, host: str, op: str, port: int) -> str:
    """An answer that asks a server for the result: right wherever the server can be reached."""
    return (f"import socket\n\n"
            f"def {name}(a, b):\n"
            f"    with socket.create_connection(({host!r}, {port}), timeout=5) as s:\n"
            f"        s.sendall(f'{{a}}{op}{{b}}\\n'.encode())\n"
            f"        return int(s.makefile().readline())")


EXTERNAL_PROBE = ("import socket\n"
                  "try:\n"
                  "    socket.create_connection(('1.1.1.1', 443), timeout=5).close()\n"
                  "    print('external: connected')\n"
                  "except OSError as e:\n"
                  "    print(f'external: {e}')\n\n")


@submission
def uses_the_network(nb, ctx):
    return {NAME: honest(nb, add=network_answer("add", "127.0.0.1", "+", ctx.port),
                         mul=EXTERNAL_PROBE + network_answer("mul", ctx.host_ip, "*", ctx.port))}


# Attacks on the kernel process itself, which runs the tests too (see TAMPERING below).

@submission
def input_transformer_empties_tests(nb, ctx):
    return {NAME: honest(nb, add="get_ipython().input_transformers_cleanup.append(lambda lines: [])\n\n" + WRONG_ADD,
                         mul=WRONG_MUL)}


@submission
def kernel_reply_patched(nb, ctx):
    return {NAME: honest(nb, add=(
        "kernel = get_ipython().kernel\n_execute = kernel.do_execute\n\n"
        "async def do_execute(*args, **kwargs):\n"
        "    reply = await _execute(*args, **kwargs)\n"
        "    reply['status'] = 'ok'\n"
        "    return reply\n\n"
        "kernel.do_execute = do_execute\n\n" + WRONG_ADD), mul=WRONG_MUL)}


SHADOW_LAUNCHER = b'''"""A file of the submission named like the module the kernel is started from."""
from ipykernel.ipkernel import IPythonKernel

_execute = IPythonKernel.do_execute


async def do_execute(self, *args, **kwargs):
    reply = await _execute(self, *args, **kwargs)
    reply["status"] = "ok"
    return reply


IPythonKernel.do_execute = do_execute
from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()
'''


@submission
def submitted_file_shadows_the_kernel(nb, ctx):
    return {NAME: nb, "ipykernel_launcher.py": SHADOW_LAUNCHER}


# --- grading them all -----------------------------------------------------------------------

class Listener:
    """A TCP server on every address of this machine that computes what it is asked."""

    def __init__(self):
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                a, op, b = re.match(r"(-?\d+)([+*])(-?\d+)", conn.makefile().readline()).groups()
                conn.sendall(f"{int(a) + int(b) if op == '+' else int(a) * int(b)}\n".encode())


def host_address() -> str:
    """This machine's address on its default route (no packet is sent); without one, another
    loopback address than 127.0.0.1 (still this machine's, and not the sandbox's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return "127.0.0.2"
        return s.getsockname()[0]


@dataclass
class Graded:
    records: dict[str, dict]
    batch: Path
    driver_stdout: Path
    driver_stderr: Path
    listener: Listener
    ctx: Context
    uids: list[int]
    after: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def graded() -> Graded:
    python = grading.notebook_env_python()
    # The sandbox uid must be able to enter the work root; everything else sits in a root-only
    # directory, as on the platform (sources, releases, submissions, the batch).
    base = Path(tempfile.mkdtemp(prefix="academy-integrity-"))
    os.chmod(base, 0o711)
    private = base / "private"
    private.mkdir(mode=0o700)
    listener = Listener()
    try:
        release = grading.write_assignment(python, private, NAME)
        peer = private / "submissions" / "learner2"
        peer.mkdir(parents=True, mode=0o700)
        nbformat.write(honest(copy.deepcopy(release)), peer / NAME)
        ctx = Context(private / "source" / NAME, peer / NAME, listener.port, host_address())

        # Control: outside the sandbox, the network answers work from this machine.
        for name, host, op in (("add", "127.0.0.1", "+"), ("mul", ctx.host_ip, "*")):
            namespace: dict = {}
            exec(network_answer(name, host, op, ctx.port), namespace)  # noqa: S102 - our own test code
            assert namespace[name](4, 5) == (9 if op == "+" else 20)
        listener.peers.clear()

        jobs = []
        for slot, (sid, build) in enumerate(SUBMISSIONS.items()):
            folder = private / "submissions" / sid
            folder.mkdir(mode=0o700)
            for file_name, content in build(copy.deepcopy(release), ctx).items():
                (folder / file_name).write_bytes(content if isinstance(content, bytes)
                                                 else nbformat.writes(content).encode())
            jobs.append({"slot": slot, "sub": {"id": sid, "student": "learner1", "dir": str(folder)}})
        manifest = {"source_dir": str(private / "source"), "release_dir": str(private / "release"),
                    "notebooks": [NAME], "work_root": str(base / "work"), "batch_dir": str(private / "batch"),
                    "cell_timeout": CELL_TIMEOUT, "total_timeout": 120.0, "cpus": 1,
                    "limits": {"memory_bytes": MEMORY_LIMIT}}
        run_file = private / "run.json"
        run_file.write_text(json.dumps({"manifest": manifest, "job_id": JOB_ID, "jobs": jobs,
                                        "out": str(private / "records.json")}))
        records = grading.run_grader(python, run_file, timeout_s=900, env=GRADING_ENV,
                                     stdout=private / "driver.stdout", stderr=private / "driver.stderr")
        result = Graded({r["id"]: r for r in records}, private / "batch", private / "driver.stdout",
                        private / "driver.stderr", listener, ctx, grading.sandbox_uids(JOB_ID))
        result.after = grading.sandbox_processes(result.uids)
        yield result
    finally:
        listener.sock.close()
        grading.kill_processes(grading.sandbox_processes(grading.sandbox_uids(JOB_ID)))  # a driver cut short
        shutil.rmtree(base, ignore_errors=True)


def graded_notebook(graded: Graded, sid: str) -> nbformat.NotebookNode:
    return nbformat.read(graded.batch / "graded" / sid / NAME, as_version=4)


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def check(graded: Graded, sid: str, cells: dict, notes: list, submission_notes: list | None = None) -> dict:
    """What the trainer gets for SID is exactly this: per-cell (score, status), notes, totals.

    And the grader survived it: a result (not the grader's own error), nothing of the sandbox
    uid still running once grade_submission returned."""
    record = graded.records[sid]
    assert "grader_error" not in record, record["grader_error"]
    assert record["leftover"] == []
    result = record["result"]
    assert result["submission"] == sid and result["student"] == "learner1"
    assert result["notes"] == (submission_notes or [])
    [nb] = result["notebooks"]
    assert nb["notebook"] == NAME
    got = {c["grade_id"]: (c["score"], c["status"]) for c in nb["cells"]}
    expected = {"test_add": (0.0, "error"), "test_mul": (0.0, "error"), **cells, "explain": (None, "not run")}
    assert got == expected
    assert {c["grade_id"]: (c["kind"], c["points"]) for c in nb["cells"]} == {
        "test_add": ("test", 2.0), "test_mul": ("test", 3.0), "explain": ("manual", 1.0)}
    auto = sum(score for score, _ in expected.values() if score is not None)
    assert nb["score"] == result["score"] == auto
    assert nb["max_score"] == result["max_score"] == MAX_SCORE
    assert nb["notes"] == notes
    return nb


def error_of(nb: dict, gid: str) -> str:
    return next(c["error"] for c in nb["cells"] if c["grade_id"] == gid)


def died_note(cell: str) -> str:
    return f"the kernel died in cell {cell}: the tests after it scored 0"


TIMEOUT_NOTE = "cell {} ran over its time limit and was interrupted"
TRUNCATED_NOTE = "output was truncated: a cell printed more than the grader keeps"
# Cell numbers as the trainer sees them (1-based, title first): 4 test_add, 5 mul, 6 test_mul.


# --- the tests ------------------------------------------------------------------------------

def test_honest_answers_earn_every_autograded_point(graded):
    nb = check(graded, "honest_answers", FULL, [])
    assert all(c["error"] == "" for c in nb["cells"])
    notebook = graded_notebook(graded, "honest_answers")
    assert notebook.cells[index_of(notebook, "explain")].source == HONEST["explain"]  # for the trainer to grade


def test_blank_release_earns_nothing(graded):
    nb = check(graded, "blank_release", {}, [])
    assert error_of(nb, "test_add") == error_of(nb, "test_mul") == "NotImplementedError: "


def test_missing_or_unreadable_notebook_grades_the_release(graded):
    check(graded, "no_notebook", {}, [], [f"{NAME} was not submitted: the released notebook was graded"])
    unreadable = graded.records["not_a_notebook"]["result"]["notes"]
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{NAME} could not be read (NotJSONError: ")
    assert unreadable[0].endswith("): the released notebook was graded")
    check(graded, "not_a_notebook", {}, [], unreadable)


def test_test_cell_replaced_by_pass_runs_the_original(graded):
    nb = check(graded, "tampered_test_replaced_by_pass", {"test_mul": (3.0, "ok")},
               ["test cell 'test_add' was edited: the original ran"])
    assert error_of(nb, "test_add") == "AssertionError: "
    cell = graded_notebook(graded, "tampered_test_replaced_by_pass").cells[3]
    assert "### BEGIN HIDDEN TESTS" in cell.source  # the trainer's test, hidden part included, is what ran


def test_deleted_test_cell_is_restored(graded):
    check(graded, "tampered_test_deleted", {"test_mul": (3.0, "ok")},
          ["cell 'test_add' was deleted: the original was restored"])


def test_test_cell_retyped_to_markdown_runs_as_code(graded):
    nb = check(graded, "tampered_test_retyped_to_markdown", {"test_add": (2.0, "ok")},
               ["cell 'test_mul' was changed from code to markdown: the original type was restored"])
    assert error_of(nb, "test_mul") == "AssertionError: got 5, expected 6"


def test_edited_locked_cell_runs_the_original(graded):
    nb = check(graded, "locked_helper_edited", {"test_add": (2.0, "ok")},
               ["locked cell 'helpers' was edited: the original ran"])
    assert error_of(nb, "test_mul") == "AssertionError: got 5, expected 6"


def test_forged_metadata_is_ignored(graded):
    check(graded, "metadata_forged", {"test_add": (2.0, "ok")}, [
        "cell 'bonus' is not in the assignment: it ran as the learner's own cell, ungraded",
        "cell 'add' was marked as graded: it is not, and scores nothing",
        "cell 'test_add' claims 100 points: it is worth 2",
        "test cell 'test_mul' was edited: the original ran",
    ])


DUPLICATE_NOTE = ("cell 'add' appears more than once: the first copy is graded, later copies ran as the "
                  "learner's own cells")


def test_duplicated_answer_cell_first_copy_is_graded(graded):
    # The first copy sits in the graded cell; the later copy runs right after it as the learner's
    # own cell, as it did in the learner's session: the definition that ran last is tested.
    check(graded, "duplicate_wrong_copy_first", FULL, [DUPLICATE_NOTE])
    check(graded, "duplicate_wrong_copy_later", {"test_mul": (3.0, "ok")}, [DUPLICATE_NOTE])
    for sid, graded_copy, own_copy in (("duplicate_wrong_copy_first", WRONG_ADD, HONEST["add"]),
                                       ("duplicate_wrong_copy_later", HONEST["add"], WRONG_ADD)):
        nb = graded_notebook(graded, sid)
        i = index_of(nb, "add")
        assert nb.cells[i].source == graded_copy
        assert nb.cells[i + 1].source == own_copy and "nbgrader" not in nb.cells[i + 1].metadata
        assert grade_id(nb.cells[i + 2]) == "test_add"


def test_swapped_kernelspec_runs_on_python3(graded):
    check(graded, "bash_kernelspec", FULL,
          ["the notebook asked for kernel 'bash': it ran on the assignment's 'python3'"])
    assert graded_notebook(graded, "bash_kernelspec").metadata.kernelspec.name == "python3"


def test_silenced_traceback_still_fails(graded):
    nb = check(graded, "showtraceback_silenced", {"test_mul": (3.0, "ok")}, [])
    assert error_of(nb, "test_add") == "AssertionError: "
    # The attack worked on what it touches: no traceback was shown for the failed test.
    test_add = graded_notebook(graded, "showtraceback_silenced").cells[3]
    assert grade_id(test_add) == "test_add" and not [o for o in test_add.outputs if o.output_type == "error"]

    nb = check(graded, "showtraceback_silenced_on_the_class", {"test_add": (2.0, "ok")}, [])
    assert error_of(nb, "test_mul") == "AssertionError: got 5, expected 6"


def test_kernel_sees_no_grading_environment(graded):
    check(graded, "grading_detected_from_environment", {"test_add": (2.0, "ok")}, [])
    mul = graded_notebook(graded, "grading_detected_from_environment").cells[4]
    env = json.loads(outputs_text(mul))
    assert [k for k in env if any(w in k.upper() for w in ("GRADE", "ACADEMY", "SLURM"))] == []
    assert [k for k in GRADING_ENV if k in env] == []
    assert [k for k, v in GRADING_ENV.items() if len(v) > 8 and any(v in value for value in env.values())] == []
    uid = graded.records["grading_detected_from_environment"]["uid"]
    assert env["USER"] == "learner1" and env["HOME"].endswith(f"sandbox-{uid}")


def test_kernel_killed_in_an_answer(graded):
    check(graded, "kernel_killed_in_answer", {"test_add": (2.0, "ok"), "test_mul": (0.0, "not run")},
          [died_note("5 (mul)")])
    check(graded, "kernel_exits_in_test", {"test_add": (2.0, "ok"), "test_mul": (0.0, "kernel died")},
          [died_note("6 (test_mul)")])
    check(graded, "honest_after_kernel_death", FULL, [])


def test_infinite_loop_times_out_and_the_rest_is_graded(graded):
    nb = check(graded, "infinite_loop", {"test_add": (0.0, "timeout"), "test_mul": (3.0, "ok")},
               [TIMEOUT_NOTE.format("4 (test_add)")])
    assert error_of(nb, "test_add") == f"Timeout: cell ran over {CELL_TIMEOUT} s"


@pytest.mark.parametrize("sid, notes", [
    ("output_flood_print", [TIMEOUT_NOTE.format("5 (mul)"), TRUNCATED_NOTE]),
    ("output_flood_one_message", [TRUNCATED_NOTE]),
    ("output_flood_file_descriptor", [TRUNCATED_NOTE]),
])
def test_output_flood_is_truncated(graded, sid, notes):
    check(graded, sid, FULL, notes)
    assert (graded.batch / "graded" / sid / NAME).stat().st_size < 2 << 20
    # Cut at the cap, or refused unread when one message was over the grader's limit.
    assert re.search(r"\[output truncated by the grader( at 64 KiB|: a message over 8 MiB was dropped)\]",
                     outputs_text(graded_notebook(graded, sid).cells[4]))
    # The grader's peak memory, over everything it graded so far (a 128 MiB message held would show).
    assert graded.records[sid]["grader_maxrss_kib"] < 256 << 10
    # Nothing of it reached the grading job's own output (its log on a Slurm node).
    for log in (graded.driver_stdout, graded.driver_stderr):
        assert log.stat().st_size < 64 << 10 and "yyyyyyyy" not in log.read_text(errors="replace")
    check(graded, "honest_after_output_flood", FULL, [])
    if sid == "output_flood_one_message":  # the outputs of the cells after it still arrive
        assert outputs_text(graded_notebook(graded, sid).cells[6]) == "after the flood\n"


def test_memory_bombs_fail_their_test(graded):
    nb = check(graded, "memory_bomb_one_allocation", {"test_add": (2.0, "ok")}, [])
    assert error_of(nb, "test_mul") == "MemoryError: "
    nb = check(graded, "memory_bomb_growing_list", {"test_mul": (3.0, "ok")}, [])
    assert error_of(nb, "test_add") == "MemoryError: "
    check(graded, "honest_after_memory_bomb", FULL, [])


def test_fork_bomb_is_stopped_and_cleaned_up(graded):
    record = graded.records["fork_bomb"]
    forked = int(re.search(r"forked (\d+) children", outputs_text(graded_notebook(graded, "fork_bomb").cells[5]))[1])
    assert 0 < forked < 64  # the sandbox's process limit stopped it
    killed = record["result"]["notebooks"][0]["notes"]
    assert len(killed) == 1
    count = re.fullmatch(r"(\d+) process\(es\) the notebook started were still running and were killed", killed[0])
    assert count and int(count[1]) >= forked
    nb = check(graded, "fork_bomb", {"test_add": (2.0, "ok")}, killed)
    assert error_of(nb, "test_mul") == "BlockingIOError: [Errno 11] Resource temporarily unavailable"
    check(graded, "honest_after_fork_bomb", FULL, [])


def test_trainer_files_and_other_submissions_are_unreadable(graded):
    # Not refused but absent: the sandbox's file system holds only the system, the notebook
    # environment and its own work directory.
    nb = check(graded, "reads_the_trainer_source", {"test_mul": (3.0, "ok")}, [])
    absent = "FileNotFoundError: [Errno 2] No such file or directory: {!r}"
    assert error_of(nb, "test_add") == absent.format(str(graded.ctx.source_notebook))
    nb = check(graded, "reads_another_submission", {"test_add": (2.0, "ok")}, [])
    assert error_of(nb, "test_mul") == absent.format(str(graded.ctx.peer_notebook))
    # Both are there, as root-only as on the platform.
    private = graded.ctx.source_notebook.parent.parent
    assert graded.ctx.source_notebook.is_file() and graded.ctx.peer_notebook.is_file()
    assert stat.S_IMODE(private.stat().st_mode) == stat.S_IMODE(graded.ctx.peer_notebook.parent.stat().st_mode) == 0o700


def test_no_network_from_the_kernel(graded):
    nb = check(graded, "uses_the_network", {}, [])
    # 127.0.0.1 is the sandbox's own loopback, where nothing listens; any other address has no route.
    assert error_of(nb, "test_add") == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert error_of(nb, "test_mul") == "OSError: [Errno 101] Network is unreachable"
    assert graded.listener.peers == []  # the server the control reached was never reached from the sandbox
    mul = graded_notebook(graded, "uses_the_network").cells[4]
    assert outputs_text(mul) == "external: [Errno 101] Network is unreachable\n"


# Attacks on the kernel process itself, which runs the tests too. A must-fail check before each
# test catches a kernel that reports failures as successes; a file named like a module the
# kernel (or the tests) import never reaches the sandbox.
TAMPERING = ["input_transformer_empties_tests", "kernel_reply_patched", "submitted_file_shadows_the_kernel"]
TAMPERED_NOTE = ("the kernel reported success for a check that must fail, before cell 4 (test_add): the learner's "
                 "code changed how failures are reported, so no test of this notebook counts")


def test_input_transformer_that_empties_the_tests_scores_nothing(graded):
    check(graded, "input_transformer_empties_tests", {"test_add": (0.0, "ok"), "test_mul": (0.0, "ok")},
          [TAMPERED_NOTE])


def test_patched_kernel_reply_scores_nothing(graded):
    check(graded, "kernel_reply_patched", {"test_add": (0.0, "ok"), "test_mul": (0.0, "ok")}, [TAMPERED_NOTE])


def test_submitted_file_named_like_the_kernel_is_left_out(graded):
    check(graded, "submitted_file_shadows_the_kernel", {}, [], submission_notes=[
        "the submitted file ipykernel_launcher.py has the name of an installed module and was left out"])


def test_nothing_of_the_sandbox_is_left_running(graded):
    assert len(graded.records) == len(SUBMISSIONS)
    assert graded.after == []
    assert grading.sandbox_processes(graded.uids) == []
