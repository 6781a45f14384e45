"""A small async client for sbatch, squeue and scancel.

Commands run as argument lists (never through a shell), with a timeout, and return
structured results. The session spawner and the autograder both use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

# squeue answers "Invalid job id" for jobs that left its memory (MinJobAge); that is
# "not found", whereas any other failure means "the controller did not tell us".
INVALID_JOB_MARKERS = ("Invalid job id specified",)


class SlurmError(RuntimeError):
    """A Slurm command failed; ``stderr`` holds what it said."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str):
        self.argv, self.returncode, self.stderr = argv, returncode, stderr.strip()
        super().__init__(f"{argv[0]} failed (exit {returncode}): {self.stderr or 'no message'}")


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

    async def run(self, argv: list[str], input: str | None = None, env: Mapping[str, str] | None = None) -> str:
        """Run a command, return stdout; SlurmError on non-zero exit or timeout."""
        full_env = {**os.environ, **self.env, **(env or {})} if env is None else {**self.env, **env}
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(input.encode() if input is not None else None), self.timeout_s
            )
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmError(argv, None, f"timed out after {self.timeout_s:.0f} s") from None
        if proc.returncode != 0:
            raise SlurmError(argv, proc.returncode, err.decode(errors="replace"))
        return out.decode(errors="replace")

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

    async def jobs(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """State of the given jobs in one squeue call; jobs Slurm no longer knows are absent."""
        ids = [j for j in job_ids if j]
        if not ids:
            return {}
        argv = [
            self._cmd("squeue"), "--noheader", "--states=all", "--jobs=" + ",".join(ids),
            "--format=%i|%T|%N|%r|%u|%j|%k",
        ]
        try:
            out = await self.run(argv)
        except SlurmError as e:
            if any(m in e.stderr for m in INVALID_JOB_MARKERS):
                return {}
            raise
        return parse_squeue(out)

    async def job(self, job_id: str) -> JobInfo | None:
        return (await self.jobs([job_id])).get(job_id)

    async def cancel(self, job_id: str) -> None:
        try:
            await self.run([self._cmd("scancel"), job_id])
        except SlurmError as e:
            if any(m in e.stderr for m in INVALID_JOB_MARKERS):
                return  # already gone: nothing to cancel
            raise


def parse_squeue(out: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 7 or not parts[0]:
            continue
        job_id, state, node, reason, user, name, comment = parts[:7]
        jobs[job_id] = JobInfo(job_id, state, node if node != "(null)" else "", reason, user, name, comment)
    return jobs
