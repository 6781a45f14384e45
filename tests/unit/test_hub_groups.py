"""The hub's course groups follow the gradebook's enrolment (assessments.gradebook.hub_groups): a
change reaches the hub within a round of the change log, touching only that course's groups, a
quiet round asks the hub nothing, and the slow reconcile undoes what was changed behind its back.
The hub here is a scripted stand-in holding groups in memory; tests/integration/
test_assessment_flow.py checks the same against the real hub through `academy unenrol`/`enrol`."""

from __future__ import annotations

import asyncio
import time

import pytest

from assessments.gradebook import hub_groups
from assessments.gradebook import tables as gb
from assessments.gradebook.db import open_gradebook
from assessments.gradebook.enrolment import Enrolment
from spawners.hub_api import HubAPIError

from ..support import wait_for


class ScriptedHub:
    """Users and groups in memory, answering the calls hub_groups makes; every call is recorded."""

    def __init__(self, users=("learner1", "learner2", "trainer1")):
        self.users, self.groups, self.calls = set(users), {}, []

    def items(self, path):
        self.calls.append(("GET", path))
        return [{"name": u} for u in sorted(self.users)]

    def request(self, method, path, body=None):
        self.calls.append((method, path))
        if path == "/users":
            self.users |= set(body["usernames"])
            return {}
        name, _, rest = path.removeprefix("/groups/").partition("/")
        if method == "GET":
            if name not in self.groups:
                raise HubAPIError(404, "no such group")
            return {"name": name, "users": sorted(self.groups[name])}
        if method == "POST" and not rest:
            self.groups[name] = set()
        elif method == "POST":
            self.groups[name] |= set(body["users"])
        elif method == "DELETE":
            self.groups[name] -= set(body["users"])
        return {}


@pytest.fixture
def enrolment(tmp_path):
    engine = open_gradebook(f"sqlite:///{tmp_path / 'gradebook.sqlite'}")
    with engine.begin() as conn:
        for course in ("llm-101", "hpc-101"):
            conn.execute(gb.publications.insert().values(course=course, assignment="a", released_at=0, due_at=1,
                                                         points=1, notebooks="[]"))
    e = Enrolment(engine)
    e.add("llm-101", "learner1")
    e.add("llm-101", "learner2")
    e.add("llm-101", "trainer1", "trainer")
    e.add("hpc-101", "learner1")
    return e


def run_rounds(hub, enrolment, between, rounds=4, reconcile_s=3600.0):
    """keep_in_sync (rounds of 20 ms) while between(0), between(1), ... run, 50 ms apart."""
    async def main():
        syncing = asyncio.create_task(hub_groups.keep_in_sync(enrolment, hub, watch_s=0.02, reconcile_s=reconcile_s))
        for i in range(rounds):
            await asyncio.sleep(0.05)
            await asyncio.to_thread(between, i)
        await asyncio.sleep(0.2)
        syncing.cancel()
    asyncio.run(main())


def test_a_change_reaches_only_its_courses_groups_and_a_quiet_round_asks_the_hub_nothing(enrolment):
    hub = ScriptedHub()
    marks = {}

    def between(i):
        if i == 0:   # the first round compares everything; its last call fills llm-101-trainers
            wait_for(lambda: hub.groups.get("llm-101-trainers") == {"trainer1"}, 10, interval=0.01)
            marks["quiet"] = len(hub.calls)
        if i == 1:
            time.sleep(0.2)     # about ten rounds with no change
            marks["change"] = len(hub.calls)
            enrolment.remove("llm-101", "learner2")

    run_rounds(hub, enrolment, between)
    assert hub.groups["llm-101-learners"] == {"learner1"}          # learner2 left
    assert hub.groups["llm-101-trainers"] == {"trainer1"} and hub.groups["hpc-101-learners"] == {"learner1"}
    assert marks["change"] == marks["quiet"], f"rounds without a change asked the hub: {hub.calls[marks['quiet']:][:6]}..."
    touched = {path for _, path in hub.calls[marks["change"]:] if path.startswith("/groups/")}
    assert touched and all(path.startswith("/groups/llm-101-") for path in touched), touched


def test_the_reconcile_undoes_a_change_made_behind_its_back(enrolment):
    hub = ScriptedHub(users=("learner1", "learner2", "trainer1", "stranger"))

    def between(i):
        if i == 1:
            hub.groups["hpc-101-learners"].add("stranger")     # someone edits the group in the hub

    run_rounds(hub, enrolment, between, rounds=6, reconcile_s=0.15)
    assert hub.groups["hpc-101-learners"] == {"learner1"}


def test_a_round_the_hub_refuses_is_tried_again(enrolment):
    hub = ScriptedHub()
    refusing = {"on": False}
    answer = hub.request

    def flaky(method, path, body=None):
        if refusing["on"]:
            raise HubAPIError(0, "the hub did not answer")
        return answer(method, path, body)
    hub.request = flaky

    def between(i):
        if i == 1:
            refusing["on"] = True
            enrolment.remove("llm-101", "learner2")
        if i == 3:
            refusing["on"] = False

    run_rounds(hub, enrolment, between, rounds=5)
    assert hub.groups["llm-101-learners"] == {"learner1"}


def test_a_member_enrolled_and_added_while_a_round_runs_is_not_taken_out(enrolment):
    """A workshop's seats are enrolled, then added to the course's group by the workshop service; a
    round that read the enrolment before them finds them in the group and must leave them there."""
    hub = ScriptedHub()
    hub_groups.sync_once(hub, enrolment, set())
    read_group = hub.request

    def group_read_after_the_enrolment_changed(method, path, body=None):
        if (method, path) == ("GET", "/groups/hpc-101-learners") and "learner2" not in hub.groups["hpc-101-learners"]:
            enrolment.add("hpc-101", "learner2")
            hub.groups["hpc-101-learners"].add("learner2")
        return read_group(method, path, body)

    hub.request = group_read_after_the_enrolment_changed
    enrolment.remove("hpc-101", "learner1")
    hub_groups.sync_once(hub, enrolment, set(), {"hpc-101"})
    assert hub.groups["hpc-101-learners"] == {"learner2"}   # the unenrolled one out, the new one kept
