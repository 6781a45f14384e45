"""The batched job monitor against a scripted fake scheduler (beside the real-Slurm fault tests
in tests/integration/test_faults.py): how many squeue calls it makes, and what it keeps when
Slurm misbehaves."""

from __future__ import annotations

import asyncio

import pytest

from spawners.job_monitor import GONE, JobMonitor
from spawners.slurm_client import JobInfo, SlurmError


class ScriptedSlurm:
    """Answers like SlurmClient.jobs/query; `script` holds what the next batched calls do."""

    def __init__(self, states: dict[str, str]):
        self.states = dict(states)
        self.script: list = []  # each: "ok", "empty", or an exception to raise
        self.calls: list[list[str]] = []

    async def jobs(self, ids):
        self.calls.append(list(ids))
        await asyncio.sleep(0.01)  # concurrent callers overlap with the query in flight
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, Exception):
            raise step
        if step == "empty":
            return {}
        return {j: JobInfo(j, self.states[j]) for j in ids if j in self.states}

    async def query(self, ids):
        (job_id,) = ids
        self.calls.append([job_id])
        if job_id not in self.states:
            raise SlurmError(["squeue"], 1, "slurm_load_jobs error: Invalid job id specified")
        return {job_id: JobInfo(job_id, self.states[job_id])}


def run(coro):
    return asyncio.run(coro)


def test_one_query_answers_every_session_however_many_ask():
    slurm = ScriptedSlurm({str(i): "RUNNING" for i in range(50)})

    async def go():
        monitor = JobMonitor(slurm, interval=30)
        for i in range(50):
            monitor.watch(str(i))
        # 50 sessions' hub polls at once, then each again while the answer is fresh.
        first = await asyncio.gather(*(monitor.state(str(i)) for i in range(50)))
        again = await asyncio.gather(*(monitor.state(str(i)) for i in range(50)))
        monitor._task.cancel()
        return first, again

    first, again = run(go())
    assert [info.state for info in first + again] == ["RUNNING"] * 100
    assert len(slurm.calls) == 1 and sorted(slurm.calls[0], key=int) == [str(i) for i in range(50)]


def test_a_failing_squeue_keeps_every_job_and_backs_off_until_slurm_answers():
    slurm = ScriptedSlurm({"7": "RUNNING", "8": "RUNNING"})

    async def go():
        monitor = JobMonitor(slurm, interval=5, max_interval=30)
        monitor.watch("7"), monitor.watch("8")
        await monitor.refresh()
        seen = []
        errors = [SlurmError(["squeue"], 1, "slurm_load_jobs error: Unable to contact slurm controller"),
                  SlurmError(["squeue"], None, "timed out after 30 s"),
                  SlurmError(["squeue"], 1, "Socket timed out on send/recv operation"),
                  SlurmError(["squeue"], 1, "")]
        for error in errors:
            slurm.script = [error]
            await monitor.refresh()
            seen.append((monitor.current_interval, (await monitor.state("7", max_age=1e9)).state))
        slurm.script = ["ok"]
        await monitor.refresh()
        monitor._task.cancel()
        return seen, monitor.current_interval, monitor.last_error

    seen, interval, last_error = run(go())
    # The earlier answer stands on every kind of failure; the interval doubles up to the cap.
    assert seen == [(10, "RUNNING"), (20, "RUNNING"), (30, "RUNNING"), (30, "RUNNING")]
    assert (interval, last_error) == (5, "")


def test_a_job_missing_from_the_answer_ends_only_on_slurms_word():
    slurm = ScriptedSlurm({"1": "RUNNING", "2": "RUNNING"})

    async def go():
        monitor = JobMonitor(slurm, interval=5)
        monitor.watch("1"), monitor.watch("2")
        await monitor.refresh()
        # Empty output for everyone: as likely broken as true, so each job is asked for alone.
        slurm.script = ["empty"]
        await monitor.refresh()
        after_empty = {j: monitor.latest(j).info.state for j in ("1", "2")}
        # Job 2 is really gone: Slurm says "Invalid job id" when asked for it alone.
        del slurm.states["2"]
        await monitor.refresh()
        monitor._task.cancel()
        return after_empty, monitor.latest("1").info, monitor.latest("2").info

    after_empty, one, two = run(go())
    assert after_empty == {"1": "RUNNING", "2": "RUNNING"}
    assert one.state == "RUNNING" and two is GONE


@pytest.mark.parametrize("age, refreshes", [(30 * 1.2 + 1.5, False), (30 * 1.2 + 2.5, True)])
def test_an_answer_stays_fresh_for_the_longest_sleep_between_rounds(age, refreshes):
    """A hub poll landing just before the monitor's next round must not cause a query of its own."""
    slurm = ScriptedSlurm({"5": "RUNNING"})

    async def go():
        monitor = JobMonitor(slurm, interval=30, jitter=0.2)
        monitor.watch("5")
        await monitor.refresh()
        monitor.observations["5"].at -= age
        await monitor.state("5")
        monitor._task.cancel()

    run(go())
    assert len(slurm.calls) == (2 if refreshes else 1)
