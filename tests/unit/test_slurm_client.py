"""SlurmClient against a scripted squeue in `bin_dir`: array_states and the grader's progress that
reads it (assessments.grading.batch.progress), what a live, a forgotten and an unreachable array
mean to a grading batch; list_jobs and the reaper's search for the platform's jobs that uses it."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest

from assessments.grading.batch import Batch, progress
from spawners.reaper import tagged_jobs
from spawners.slurm_client import SlurmClient, SlurmError

# The fake squeue logs its arguments, then plays what the file `answer` says: its first line is
# the exit code, the rest goes to stdout (exit 0) or stderr.
FAKE_SQUEUE = """#!/bin/sh
here=$(dirname "$0")
printf '%s\\n' "$*" >> "$here/calls"
code=$(head -n 1 "$here/answer")
if [ "$code" = 0 ]; then tail -n +2 "$here/answer"; else tail -n +2 "$here/answer" >&2; fi
exit "$code"
"""


@pytest.fixture
def scripted_squeue(tmp_path):
    """A bin_dir whose squeue answers what `answer(code, text)` sets; `calls()` lists its argument lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(FAKE_SQUEUE)
    squeue.chmod(squeue.stat().st_mode | stat.S_IXUSR)

    class Scripted:
        client = SlurmClient(bin_dir=str(bin_dir), timeout_s=10)

        @staticmethod
        def answer(code: int, text: str) -> None:
            (bin_dir / "answer").write_text(f"{code}\n{text}\n")

        @staticmethod
        def calls() -> list[str]:
            return (bin_dir / "calls").read_text().splitlines()
    return Scripted


def test_array_states_lists_every_task_of_the_one_array_asked_for(scripted_squeue):
    scripted_squeue.answer(0, "RUNNING\nRUNNING\nPENDING")
    assert asyncio.run(scripted_squeue.client.array_states("4242")) == ["RUNNING", "RUNNING", "PENDING"]
    assert scripted_squeue.calls() == ["--noheader --array --jobs=4242 --format=%T"]


def test_an_array_slurm_has_forgotten_has_no_states(scripted_squeue):
    scripted_squeue.answer(1, "slurm_load_jobs error: Invalid job id specified")
    assert asyncio.run(scripted_squeue.client.array_states("4242")) == []


def test_a_controller_that_does_not_answer_is_an_error_not_an_ended_array(scripted_squeue):
    scripted_squeue.answer(1, "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        asyncio.run(scripted_squeue.client.array_states("4242"))


def test_list_jobs_asks_for_every_users_jobs_in_the_states_given_and_splits_their_fields(scripted_squeue):
    scripted_squeue.answer(0, "101|RUNNING|academy-academy:learner1:default\n\n102|PENDING|\n")
    rows = asyncio.run(scripted_squeue.client.list_jobs(("PENDING", "RUNNING"), "%i|%T|%k"))
    assert rows == [["101", "RUNNING", "academy-academy:learner1:default"], ["102", "PENDING", ""]]
    assert scripted_squeue.calls() == ["--noheader --states=PENDING,RUNNING --format=%i|%T|%k"]


def test_the_reaper_finds_the_platforms_jobs_by_the_tag_in_their_comment(scripted_squeue):
    scripted_squeue.answer(0, "101|RUNNING|academy-academy:learner1:default|2026-12-05T10:00:00|1:00:00\n"
                              "102|PENDING|other-site:learner2:default|2026-12-05T10:01:00|1:00:00\n"
                              "103|PENDING|academy-academy:learner2:gpu|Unknown|30:00")
    jobs = asyncio.run(tagged_jobs(scripted_squeue.client, "academy-academy"))
    assert [(j.job_id, j.user, j.server, j.submitted is not None) for j in jobs] == [
        ("101", "learner1", "", True), ("103", "learner2", "gpu", False)]
    (call,) = scripted_squeue.calls()
    assert call.startswith("--noheader --states=PENDING,RUNNING,SUSPENDED,") and call.endswith(" --format=%i|%T|%k|%V|%l")


def make_batch(tmp_path, graded: int, total: int) -> Batch:
    results = tmp_path / "batch" / "results"
    results.mkdir(parents=True)
    for i in range(graded):
        (results / f"{i}.json").write_text(json.dumps({"id": i, "score": 1}))
    return Batch("b1", "llm-101", "tokenization", tmp_path / "batch", "4242",
                 [{"id": i, "student": f"learner{i}", "dir": "/x"} for i in range(total)])


def test_grading_progress_counts_the_arrays_running_and_waiting_tasks(tmp_path, scripted_squeue):
    scripted_squeue.answer(0, "RUNNING\nPENDING")
    state = asyncio.run(progress(make_batch(tmp_path, graded=1, total=4), scripted_squeue.client))
    assert (state.graded, state.running, state.pending, state.done) == (1, 1, 2, False)


def test_grading_is_done_once_slurm_forgot_the_array_even_with_results_missing(tmp_path, scripted_squeue):
    scripted_squeue.answer(1, "slurm_load_jobs error: Invalid job id specified")
    state = asyncio.run(progress(make_batch(tmp_path, graded=1, total=4), scripted_squeue.client))
    assert (state.graded, state.running, state.pending, state.done) == (1, 0, 0, True)
