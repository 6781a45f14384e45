"""Run a merged notebook in a sandboxed kernel and record, per cell, what the kernel replied.

Pass or fail is the status of the kernel's execute_reply for the cell (what IPython's run_cell
found), not the cell's outputs, which learner code controls (an overridden showtraceback hides
a traceback, not the failure). Outputs are capped as they arrive, so a cell printing gigabytes
costs the grader nothing but the time until its timeout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import queue
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
import zmq
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets import Int, List, Unicode

CELL_OUTPUT_CAP = 64 * 1024       # bytes of output kept per cell
TOTAL_OUTPUT_CAP = 1024 * 1024    # and per notebook
MAX_MESSAGE_BYTES = 8 << 20       # a bigger message from the kernel is refused unread (see SandboxKernelManager.client)
RECEIVE_QUEUE = 16                # messages from the kernel waiting to be read, per socket


class SandboxKernelManager(AsyncKernelManager):
    """A kernel started through the sandbox wrapper (see sandbox.wrapper_argv)."""

    wrapper = List(Unicode())
    sandbox_uid = Int(-1)

    def write_connection_file(self, **kw):
        super().write_connection_file(**kw)
        # Written 0600 by root; the kernel, as the sandbox uid, must read its key and ports.
        if self.sandbox_uid >= 0:
            os.chown(self.connection_file, self.sandbox_uid, self.sandbox_uid)

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        # The real ipykernel_launcher by its path, never a submitted file of that name in the work
        # directory (`-m` would look there first). Not -P/PYTHONSAFEPATH: IPython would then leave
        # the notebook's folder off sys.path, and a notebook imports the modules that come with it
        # (academy_gpt.py) and that it writes, as in a session.
        if cmd[1:3] == ["-m", "ipykernel_launcher"]:
            cmd = [cmd[0], importlib.util.find_spec("ipykernel_launcher").origin, *cmd[3:]]
        return [*self.wrapper, *cmd]

    def client(self, **kw):
        kc = super().client(**kw)
        # ipykernel sends all a cell printed between two flushes as one message: hundreds of MB from
        # a print loop. Every socket of ours refuses a message over MAX_MESSAGE_BYTES before reading
        # it (libzmq drops that connection; DropWatch connects iopub again), and holds at most
        # RECEIVE_QUEUE unread (the kernel's side drops the rest), so what a kernel sends costs the
        # grader at most their product in memory, however fast it sends.
        kc.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        kc.context.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
        return kc


@dataclass
class CellRun:
    status: str                  # "ok", "error", "timeout", "not run", "kernel died"
    error: str = ""              # ename: evalue, as the kernel reported it
    output_truncated: bool = False


@dataclass
class Execution:
    notebook: nbformat.NotebookNode
    cells: dict[int, CellRun] = field(default_factory=dict)
    kernel_died_at: int | None = None
    timed_out_at: list[int] = field(default_factory=list)
    deadline_hit_at: int | None = None
    tampered_at: int | None = None   # a must-fail probe before this cell was answered "ok"
    output_truncated: bool = False
    seconds: float = 0.0
    left_running: int = 0            # processes besides the kernel still there after the last cell


class CappedClient(NotebookClient):
    """nbclient with output caps and a record of each cell's execute_reply."""

    def __init__(self, nb, km, **kw):
        super().__init__(nb, km=km, **kw)
        self.replies: dict[int, dict] = {}
        self.cell_bytes: dict[int, int] = {}
        self.total_bytes = 0
        self.truncated: set[int] = set()
        self.on_cell_executed = self._record_reply

    def _record_reply(self, cell, cell_index, execute_reply):
        self.replies[cell_index] = (execute_reply or {}).get("content", {})

    def process_message(self, msg, cell, cell_index):
        kind = msg["msg_type"]
        if kind in ("stream", "display_data", "execute_result", "error", "update_display_data") or kind.startswith("comm"):
            size = _size(msg["content"])
            used = self.cell_bytes.get(cell_index, 0)
            if used + size > CELL_OUTPUT_CAP or self.total_bytes + size > TOTAL_OUTPUT_CAP:
                if cell_index not in self.truncated:
                    self.truncated.add(cell_index)
                    cell.outputs.append(nbformat.v4.new_output(
                        "stream", name="stderr", text=f"\n[output truncated by the grader at {CELL_OUTPUT_CAP // 1024} KiB]\n"))
                if kind == "error":  # keep the failure's name, drop its bulk
                    cell.outputs.append(nbformat.v4.new_output(
                        "error", ename=str(msg["content"].get("ename", ""))[:200],
                        evalue=str(msg["content"].get("evalue", ""))[:500], traceback=[]))
                return None
            self.cell_bytes[cell_index] = used + size
            self.total_bytes += size
        return super().process_message(msg, cell, cell_index)


class DropWatch:
    """Whether libzmq dropped the iopub connection since the last look, because the kernel sent a
    message over MAX_MESSAGE_BYTES (unread). libzmq takes that for a protocol error and does not
    connect again by itself: this does, so the next cells' outputs arrive."""

    def __init__(self, socket, url: str):
        self.socket, self.url = socket, url
        # A socket of the client's context: closed with it, whatever way the run ends.
        self.events = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    async def dropped(self) -> bool:
        seen = False
        while self.events.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            await self.events.recv_multipart()
            seen = True
        if seen:
            try:
                self.socket.disconnect(self.url)
            except zmq.ZMQError:
                pass
            self.socket.connect(self.url)
        return seen

    def close(self) -> None:
        self.socket.disable_monitor()
        self.events.close(linger=0)


def _poll_shell_in_slices(kc, step: float = 0.5) -> None:
    """Wait for shell replies in short slices rather than one long wait.

    About one widget cell in a hundred, a single long wait misses a reply that has arrived and
    nbclient sits out the whole cell timeout (jupyter/nbclient#312); short waits see it at the next
    slice. Measured: 4-5 stalls in 400 widget cells before, none after.
    """
    channel = kc.shell_channel
    wait = channel.get_msg

    async def get_msg(timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if deadline is None else max(0.0, min(step, deadline - time.monotonic()))
            try:
                return await wait(timeout=left)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg


def _size(content: dict) -> int:
    # Cheap upper bound on what keeping this output costs; exact for text.
    total = 0
    for value in content.values():
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, (dict, list)):
            total += len(json.dumps(value, default=str))
    return total


def probe_code(rng: random.Random) -> str:
    """A cell that must fail, in one of several shapes, so a kernel cannot tell it from a test."""
    a, b = rng.randint(2, 10**6), rng.randint(2, 10**6)
    name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
    return rng.choice([
        f"assert {a} == {a + b}",
        f"assert {name!r} in {[name + 'x']!r}",
        f"[{a}, {b}][{a}]",
        f"{{}}[{name!r}]",
        f"int({name!r})",
        f"raise ValueError({name!r})",
    ])


async def _probe(client: "CappedClient", rng: random.Random, timeout: float) -> str | None:
    """Run a must-fail cell; its reply's status, or None if the kernel gave none in time."""
    # stop_on_error=False: else the kernel aborts the next request (the real test) as "aborted".
    msg_id = client.kc.execute(probe_code(rng), store_history=False, allow_stdin=False, stop_on_error=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = await client.kc.shell_channel.get_msg(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # queue.Empty: no reply yet
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"].get("status")
    return None


TRUNCATED_NOTE = f"\n[output truncated by the grader: a message over {MAX_MESSAGE_BYTES >> 20} MiB was dropped]\n"


def _cell_run(reply: dict, cell_timeout: int) -> CellRun:
    """What a cell's execute_reply says of it: ok, an error (its name and value), or our own timeout."""
    status = reply.get("status", "error")
    if reply.get("ename") == "Timeout" and status == "error" and "ran over" in str(reply.get("evalue", "")):
        return CellRun("timeout", f"Timeout: cell ran over {cell_timeout} s")
    if status == "ok":
        return CellRun("ok")
    return CellRun("error", f"{reply.get('ename', 'Error')}: {str(reply.get('evalue', ''))[:300]}")


async def run_notebook(nb: nbformat.NotebookNode, *, wrapper: list[str], uid: int, env: dict[str, str], workdir: Path,
                       cell_timeout: int, total_timeout: float, startup_timeout: int = 60,
                       probe_before: set[int] = frozenset(), processes: Callable[[], int] = lambda: 1) -> Execution:
    """Execute every code cell in order, in a kernel started through ``wrapper``.

    Before each cell in ``probe_before`` (the tests), a cell that must fail is run: a kernel whose
    learner code made failures report success (a patched ``do_execute``, an input transformer that
    empties cells) answers it "ok", and the run is marked tampered: no test of it counts.
    ``processes`` counts the sandbox's processes; it is asked once the cells have run, before the
    kernel is shut down (which ends its whole PID namespace), to say what the notebook left running.
    """
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    km = SandboxKernelManager(kernel_name="python3", transport="ipc", ip=str(workdir / ".kernel"), wrapper=wrapper,
                              sandbox_uid=uid)
    km.connection_file = str(workdir / ".kernel-connection.json")
    client = CappedClient(
        nb, km, timeout=cell_timeout, startup_timeout=startup_timeout, allow_errors=True,
        interrupt_on_timeout=True, error_on_timeout={"ename": "Timeout", "evalue": f"cell ran over {cell_timeout} s"},
        iopub_timeout=4, raise_on_iopub_timeout=False, record_timing=False, shutdown_kernel="immediate",
        resources={"metadata": {"path": str(workdir)}},
    )
    run = Execution(notebook=nb)
    t0 = time.monotonic()
    deadline = t0 + total_timeout
    # nbclient leaves running a kernel whose manager it was handed (km=): cleanup_kc makes it kill
    # and reap ours, else the kernel outlives the run and ends as a zombie of the grader. The
    # kernel's stdout and stderr are not the job's: ipykernel echoes fd-level output (os.write(1, ...))
    # there, which would put whatever the learner wrote into the grading job's log.
    async with client.async_setup_kernel(env=env, cleanup_kc=True, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL):
        drops = DropWatch(client.kc.iopub_channel.socket, client.kc._make_url("iopub"))
        _poll_shell_in_slices(client.kc)
        code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        for n, index in enumerate(code_cells):
            cell = nb.cells[index]
            if not cell.source.strip():
                run.cells[index] = CellRun("ok")
                continue
            if time.monotonic() > deadline:
                run.deadline_hit_at = index
                for rest in code_cells[n:]:
                    run.cells[rest] = CellRun("not run")
                break
            try:
                if index in probe_before and run.tampered_at is None:
                    status = await _probe(client, rng, min(30.0, cell_timeout))
                    if status == "ok":
                        run.tampered_at = index
                await client.async_execute_cell(cell, index, execution_count=n + 1)
            except DeadKernelError:
                run.kernel_died_at = index
                run.cells[index] = CellRun("kernel died")
                for rest in code_cells[n + 1:]:
                    run.cells[rest] = CellRun("not run")
                break
            run.cells[index] = _cell_run(client.replies.get(index, {}), cell_timeout)
            if run.cells[index].status == "timeout":
                run.timed_out_at.append(index)
            if await drops.dropped() and index not in client.truncated:
                client.truncated.add(index)
                cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=TRUNCATED_NOTE))
            run.cells[index].output_truncated = index in client.truncated
        drops.close()
        run.left_running = max(0, processes() - 1)
    run.output_truncated = bool(client.truncated)
    run.seconds = time.monotonic() - t0
    return run


def run_notebook_sync(nb, **kw) -> Execution:
    return asyncio.run(run_notebook(nb, **kw))
