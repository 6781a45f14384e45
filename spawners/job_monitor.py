"""One squeue call per interval for every session job the hub knows, however many there are.

Stock batchspawner runs ``sudo -u <user> squeue -j <id>`` per learner per poll, and forgets a
live job on any squeue error but two message strings. Here:
- all watched jobs are queried in one ``squeue --jobs=a,b,c`` call, as the hub's user, with
  jitter on the interval so hubs do not beat in step;
- a failed query (non-zero exit, timeout, unreachable controller, empty output) never ends a
  session: the previous answer stands, and the interval backs off until Slurm answers again;
- a job counts as ended only on positive evidence: a terminal state in squeue's answer, or
  "Invalid job id" from a query for that job alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from .slurm_client import JobInfo, SlurmClient, SlurmError, is_invalid_job

# Under the hub's own logger: JupyterHub writes only "JupyterHub" and its children to its log (an
# info line of "spawners.*" would go nowhere). In a service, it propagates to the service's root handler.
log = logging.getLogger("JupyterHub").getChild(__name__.rpartition(".")[2])

TERMINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}  # SUSPENDED is neither
QUERY_MARGIN_S = 2.0  # room for a slow squeue between two rounds of the loop
GONE = JobInfo(job_id="", state="GONE")  # Slurm confirmed it no longer knows the job


@dataclass
class Observation:
    info: JobInfo | None  # None: nothing reliable known yet
    at: float  # monotonic time of the answer


class JobMonitor:
    """Shared by all spawners of a hub process (see ``JobMonitor.shared``)."""

    _shared: "JobMonitor | None" = None

    # No default interval: it is sessions.monitor_interval, handed down by the spawner's trait.
    def __init__(self, client: SlurmClient, interval: float, max_interval: float = 120.0, jitter: float = 0.2):
        self.client = client
        self.interval, self.max_interval, self.jitter = interval, max_interval, jitter
        self.current_interval = interval
        self.watched: set[str] = set()
        self.observations: dict[str, Observation] = {}
        self.failures = 0
        self.queries = 0
        self.last_error = ""
        self._task: asyncio.Task | None = None
        self._inflight: asyncio.Future | None = None

    @classmethod
    def shared(cls, client: SlurmClient, **kwargs) -> "JobMonitor":
        if cls._shared is None:
            cls._shared = cls(client, **kwargs)
        return cls._shared

    def watch(self, job_id: str) -> None:
        if job_id:
            self.watched.add(job_id)
            self._ensure_running()

    def forget(self, job_id: str) -> None:
        self.watched.discard(job_id)
        self.observations.pop(job_id, None)

    def latest(self, job_id: str) -> Observation | None:
        return self.observations.get(job_id)

    async def state(self, job_id: str, max_age: float | None = None) -> JobInfo | None:
        """The newest answer for a watched job, waiting for a refresh if it is older than max_age.

        None means Slurm has not answered reliably (keep the session); ``GONE`` or a terminal
        state means it ended.
        """
        self.watch(job_id)
        # The loop sleeps interval +- jitter after each query: an answer is fresh for the longest
        # such sleep plus the query's own time (QUERY_MARGIN_S), or hub polls landing between
        # rounds would each trigger an extra squeue.
        max_age = self.interval * (1 + self.jitter) + QUERY_MARGIN_S if max_age is None else max_age
        obs = self.observations.get(job_id)
        if obs is None or time.monotonic() - obs.at > max_age:
            await self.refresh()
            obs = self.observations.get(job_id)
        return obs.info if obs else None

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.watched:
            try:
                await self.refresh()
            except Exception:  # never let the loop die: a dead monitor would freeze every session
                log.exception("job monitor refresh failed")
            delay = self.current_interval * (1 + random.uniform(-self.jitter, self.jitter))
            await asyncio.sleep(delay)

    async def refresh(self) -> None:
        """Query all watched jobs once (concurrent callers share one query)."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        self._inflight = asyncio.ensure_future(self._query())
        try:
            await asyncio.shield(self._inflight)
        finally:
            self._inflight = None

    async def _query(self) -> None:
        ids = sorted(self.watched)
        if not ids:
            return
        self.queries += 1
        now = time.monotonic()
        try:
            found = await self.client.jobs(ids)
        except SlurmError as e:
            self._failed(str(e))
            return
        if not found:
            # squeue answered with nothing at all: as likely broken as truthful. Confirm per job.
            for job_id in ids:
                await self._confirm(job_id, now)
            return
        self._succeeded()
        for job_id in ids:
            if job_id in found:
                self.observations[job_id] = Observation(found[job_id], now)
            else:
                await self._confirm(job_id, now)

    async def _confirm(self, job_id: str, now: float) -> None:
        """A job missing from squeue's answer: ask for it alone; only 'Invalid job id' means gone."""
        try:
            found = await self.client.query([job_id])
        except SlurmError as e:
            if is_invalid_job(e):
                self.observations[job_id] = Observation(GONE, now)
                self._succeeded()
            else:
                self._failed(str(e))
            return
        if job_id in found:
            self.observations[job_id] = Observation(found[job_id], now)
            self._succeeded()
        else:
            self._failed(f"squeue printed nothing for job {job_id}")

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.current_interval = min(self.max_interval, self.current_interval * 2)
        log.warning("Slurm did not answer (%s); keeping all sessions, next try in %.0f s", error, self.current_interval)

    def _succeeded(self) -> None:
        if self.current_interval != self.interval:
            log.info("Slurm answers again; polling every %.0f s", self.interval)
        self.current_interval = self.interval
        self.last_error = ""
