"""A small async client for sbatch, squeue and scancel.

Commands run as argument lists (never through a shell), with a timeout, and return
structured results. The session spawner and the autograder both use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from . import metrics

# Under the hub's own logger: JupyterHub writes only "JupyterHub" and its children to its log (an
# info line of "spawners.*" would go nowhere). In a service, it propagates to the service's root handler.
log = logging.getLogger("JupyterHub").getChild(__name__.rpartition(".")[2])

# squeue answers "Invalid job id" for jobs that left its memory (MinJobAge); that is
# "not found", whereas any other failure means "the controller did not tell us".
INVALID_JOB_MARKERS = ("Invalid job id specified",)


SQUEUE_FORMAT = "%i|%T|%N|%r|%u|%j|%k"


class SlurmError(RuntimeError):
    """A Slurm command failed; ``stderr`` holds what it said."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str):
        self.argv, self.returncode, self.stderr = argv, returncode, stderr.strip()
        super().__init__(f"{argv[0]} failed (exit {returncode}): {self.stderr or 'no message'}")


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def is_invalid_job(error: SlurmError) -> bool:
    """Slurm's own word that it does not know the job (any more)."""
    return any(m in error.stderr for m in INVALID_JOB_MARKERS)


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str
    node: str = ""
    reason: str = ""
    user: str = ""
    name: str = ""
    comment: str = ""


@dataclass
class SlurmClient:
    timeout_s: float = 30.0
    bin_dir: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    def _cmd(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    async def _exec(self, argv: list[str], input: str | None, env: Mapping[str, str] | None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); SlurmError only if the command hangs past the timeout."""
        full_env = {**os.environ, **self.env} if env is None else {**self.env, **env}
        command, started = metrics.command_name(argv), time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            start_new_session=True,  # its own process group, so a hung command dies with its children
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(input.encode() if input is not None else None), self.timeout_s
            )
        except asyncio.TimeoutError:
            kill_group(proc.pid)
            await proc.wait()
            metrics.SLURM_COMMANDS.labels(command, "timeout").inc()
            raise SlurmError(argv, None, f"timed out after {self.timeout_s:.0f} s") from None
        metrics.SLURM_COMMANDS.labels(command, "ok" if proc.returncode == 0 else "error").inc()
        metrics.SLURM_SECONDS.labels(command).observe(time.monotonic() - started)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def run(self, argv: list[str], input: str | None = None, env: Mapping[str, str] | None = None) -> str:
        """Run a command, return stdout; SlurmError on non-zero exit or timeout."""
        code, out, err = await self._exec(argv, input, env)
        if code != 0:
            raise SlurmError(argv, code, err)
        return out

    async def submit(self, script: str, as_user: str | None, env: Mapping[str, str]) -> str:
        """Submit a batch script on stdin, as ``as_user`` via sudo when given; return the job id."""
        argv = [self._cmd("sbatch"), "--parsable"]
        if as_user:
            # -E keeps exactly the environment we pass (the session's), and nothing else:
            # env below is the whole environment of the sudo process.
            argv = ["sudo", "-E", "-u", as_user, "--", *argv]
        out = await self.run(argv, input=script, env=dict(env))
        last = out.strip().splitlines()[-1] if out.strip() else ""
        job_id = last.split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(argv, 0, f"sbatch printed no job id: {out.strip()[:200]!r}")
        return job_id

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """One squeue call for these jobs; SlurmError (with Slurm's message) if it fails."""
        ids = [j for j in job_ids if j]
        if not ids:
            return {}
        out = await self.run([
            self._cmd("squeue"), "--noheader", "--states=all", "--jobs=" + ",".join(ids), f"--format={SQUEUE_FORMAT}",
        ])
        return parse_squeue(out)

    async def jobs(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """Like query, but jobs Slurm no longer knows are simply absent."""
        try:
            return await self.query(job_ids)
        except SlurmError as e:
            if is_invalid_job(e):
                return {}
            raise

    async def array_states(self, job_id: str) -> list[str]:
        """The state of each task of array job `job_id` (pending ones included); [] once Slurm forgot it."""
        try:
            out = await self.run([self._cmd("squeue"), "--noheader", "--array", f"--jobs={job_id}", "--format=%T"])
        except SlurmError as e:
            if is_invalid_job(e):
                return []
            raise
        return out.split()

    async def queue_position(self, job_id: str, partition: str) -> tuple[int, int] | None:
        """(position, pending jobs) of a pending job in its partition, in Slurm's priority order."""
        out = await self.run([self._cmd("squeue"), "--noheader", "--states=PENDING", f"--partition={partition}",
                              "--sort=-p,i", "--format=%i"])
        ids = out.split()
        return (ids.index(job_id) + 1, len(ids)) if job_id in ids else None

    async def expected_start(self, job_id: str) -> str:
        """Slurm's estimate of a pending job's start time (ISO), or '' when it has none."""
        out = (await self.run([self._cmd("squeue"), "--start", "--noheader", f"--jobs={job_id}", "--format=%S"])).strip()
        return out if out and out not in ("N/A", "(null)") else ""

    async def test_only(self, script: str, as_user: str | None, env: Mapping[str, str]) -> str:
        """When Slurm would start this script now (sbatch --test-only): ISO time, or '' if unknown."""
        argv = [self._cmd("sbatch"), "--test-only"]
        if as_user:
            argv = ["sudo", "-E", "-u", as_user, "--", *argv]
        try:
            _, out, err = await self._exec(argv, script, env)
        except SlurmError:
            return ""
        text = out + err
        # "sbatch: Job 123 to start at 2026-11-29T17:30:00 using 2 processors on nodes vm in partition cpu"
        marker = " to start at "
        return text.split(marker, 1)[1].split()[0] if marker in text else ""

    async def list_jobs(self, states: Iterable[str], format: str) -> list[list[str]]:
        """Every user's jobs in these states: for each, the '|'-separated fields of ``format`` (squeue's %-codes)."""
        out = await self.run([self._cmd("squeue"), "--noheader", f"--states={','.join(states)}", f"--format={format}"])
        return [line.strip().split("|") for line in out.splitlines() if line.strip()]

    async def assoc_mgr(self, users: Iterable[str] = (), accounts: Iterable[str] = ()) -> str:
        """slurmctld's live associations (limits and what is used of them): ``scontrol show
        assoc_mgr flags=assoc``, of these users and accounts (all when none are named)."""
        argv = [self._cmd("scontrol"), "show", "assoc_mgr", "flags=assoc"]
        for key, names in (("users", list(users)), ("accounts", list(accounts))):
            if names:
                argv.append(f"{key}={','.join(names)}")
        return await self.run(argv)

    async def node_table(self, fields: str) -> str:
        """sinfo's one line per node and partition, with these ``-O`` fields (e.g. 'NodeList:|,Gres:|')."""
        return await self.run([self._cmd("sinfo"), "--Node", "--noheader", "-O", fields])

    async def job(self, job_id: str) -> JobInfo | None:
        return (await self.jobs([job_id])).get(job_id)

    async def cancel(self, job_id: str) -> None:
        try:
            await self.run([self._cmd("scancel"), job_id])
        except SlurmError as e:
            if is_invalid_job(e):
                return  # already gone: nothing to cancel
            raise

    async def cancel_with_retries(self, job_id: str, attempts: int, backoff_s: float,
                                  logger: logging.Logger = log) -> bool:
        """scancel up to ``attempts`` times, waiting ``backoff_s`` and then twice as long each time;
        True once Slurm took it, False if every attempt failed (each failure is logged)."""
        delay = backoff_s
        for attempt in range(1, attempts + 1):
            try:
                await self.cancel(job_id)
                return True
            except SlurmError as e:
                logger.warning("scancel %s failed (attempt %d of %d): %s", job_id, attempt, attempts, e)
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        return False


def parse_squeue(out: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 7 or not parts[0]:
            continue
        job_id, state, node, reason, user, name, comment = parts[:7]
        jobs[job_id] = JobInfo(job_id, state, node if node != "(null)" else "", reason, user, name, comment)
    return jobs
