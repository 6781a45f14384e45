"""Slurm's own word that a session's job ended, for the ends no signal reports.

A session that ends with SIGTERM (scancel, walltime, preemption) reports it itself
(session_end.py). One whose processes are SIGKILLed, or whose node fails, sends nothing; the
batched squeue finds it within sessions.monitor_interval. Faster, and with no scheduler load:
slurmctld runs EpilogSlurmctld at every job's end (hub/templates/slurm/epilog_slurmctld.sh.j2),
which leaves an empty file named by the job id in a directory the hub reads once a second. A
note is only a hint: the hub confirms the end with Slurm (session_end.follow) before it marks
anything stopped, so a note forged by someone who could write there ends nothing by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

log = logging.getLogger("JupyterHub").getChild(__name__.rpartition(".")[2])

SCAN_EVERY_S = 1.0


class EndNotices:
    """One per hub process and directory (``EndNotices.shared``): job id -> the spawner to tell."""

    _shared: dict[str, "EndNotices"] = {}

    def __init__(self, directory: str, every_s: float = SCAN_EVERY_S):
        self.directory, self.every_s = directory, every_s
        self.followed: dict[str, object] = {}
        self.noted: set[str] = set()     # told once: a note stays a few minutes, a poll may follow again
        self.scans = 0
        self._task: asyncio.Task | None = None

    @classmethod
    def shared(cls, directory: str) -> "EndNotices":
        if directory not in cls._shared:
            cls._shared[directory] = cls(directory)
        return cls._shared[directory]

    def follow(self, job_id: str, spawner) -> None:
        """Tell `spawner` (its ``accept_end_report``) when Slurm notes the end of `job_id`."""
        if not job_id or job_id in self.noted:
            return
        self.followed[job_id] = spawner
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def forget(self, job_id: str) -> None:
        self.followed.pop(job_id, None)
        self.noted.discard(job_id)

    def ended(self) -> set[str]:
        """Job ids with a note, of those followed."""
        self.scans += 1
        try:
            with os.scandir(self.directory) as entries:
                names = {e.name for e in entries}
        except OSError:
            return set()
        return names & self.followed.keys()

    async def _run(self) -> None:
        started = time.monotonic()
        while self.followed:
            for job_id in sorted(self.ended()):
                spawner = self.followed.pop(job_id)
                self.noted.add(job_id)
                try:
                    spawner.accept_end_report(source="Slurm's epilog")
                except Exception:  # noqa: BLE001 - one spawner's trouble must not stop the others' notes
                    log.exception("could not follow the end of job %s", job_id)
            await asyncio.sleep(self.every_s)
        log.debug("end notices: nothing followed after %.0f s; the scan stops", time.monotonic() - started)
