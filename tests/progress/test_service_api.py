"""The service's API in-process, against a stand-in for the hub's /hub/api/user (unit level).

The tokens and what the hub says about them are fixed here, so every role and refusal is
checked quickly and exactly; the real HubOAuth code asks the stand-in over HTTP. The same
rules against a real JupyterHub: test_service_hub.py.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import requests
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpserver import HTTPServer

from assessments.gradebook import tables as gb
from assessments.progress import db, service
from assessments.gradebook import db as gradebook_db
from assessments.gradebook.enrolment import Enrolment

from ..support import free_port
from .eventgen import T0, event_id

ACCESS = "access:services!service=academy-progress"
PREFIX = "/services/academy-progress/"


def user(name, admin=False, scopes=(ACCESS,)):
    return {"kind": "user", "name": name, "admin": admin, "groups": [], "scopes": list(scopes)}


TOKENS = {
    "t-learner1": user("learner1"), "t-learner2": user("learner2"), "t-trainer1": user("trainer1"),
    "t-trainer2": user("trainer2"), "t-admin": user("admin", admin=True),
    "t-outsider": user("outsider", scopes=()),                            # no access to the service
    "t-learner1-ingest": user("learner1", scopes=(ACCESS, service.INGEST_SCOPE)),   # a user, even so
    "t-exchange": {"kind": "service", "name": "academy-exchange", "scopes": [ACCESS, service.INGEST_SCOPE]},
    "t-culler": {"kind": "service", "name": "idle-culler", "scopes": [ACCESS]},
}


class WhoAmI(web.RequestHandler):
    """The hub's GET /hub/api/user: the model of the token in the Authorization header, or 403."""
    def get(self):
        model = TOKENS.get(self.request.headers.get("Authorization", "").removeprefix("token "))
        if model is None:
            raise web.HTTPError(403)
        self.write(json.dumps(model))


def enrolled(url: str, rows) -> Enrolment:
    """A gradebook at `url` holding these (course, user, role) rows: its enrolment, as the service reads it.
    (Enrolment.add would also want real Unix accounts.)"""
    engine = gradebook_db.open_gradebook(url)
    with engine.begin() as conn:
        conn.execute(gb.enrolments.insert(),
                     [{"course": c, "user": u, "role": r, "enrolled_at": T0} for c, u, r in rows])
    return Enrolment(engine)


@pytest.fixture
def api(tmp_path, database_url):
    db.upgrade(database_url)
    engine = db.engine_for(database_url)
    store = enrolled(f"sqlite:///{tmp_path / 'gradebook.sqlite'}", [("llm-101", "learner1", "learner"), ("llm-101", "learner2", "learner"),
                  ("hpc-101", "learner1", "learner"), ("llm-101", "trainer1", "trainer"),
                  ("hpc-101", "trainer2", "trainer")])
    hub_port, port = free_port(), free_port()
    auth = HubOAuth(api_url=f"http://127.0.0.1:{hub_port}/hub/api/", api_token="service-token",
                    oauth_client_id="service-academy-progress", access_scopes={ACCESS}, cache_max_age=1)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        HTTPServer(web.Application([(r"/hub/api/user", WhoAmI)])).listen(hub_port, "127.0.0.1")
        HTTPServer(service.make_app(engine, store, auth, PREFIX)).listen(port, "127.0.0.1")
        loop.call_soon(started.set)
        loop.run_forever()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)

    def call(method, path, token=None, **kw):
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.request(method, f"http://127.0.0.1:{port}{PREFIX}api/{path}", headers=headers, timeout=30, **kw)
    yield call
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    engine.dispose()


def events_of_learners():
    item = {"course": "llm-101", "assignment": "tokenization"}
    return [
        {"id": event_id("api", 1), "type": "assignment_released", **item, "occurred_at": T0,
         "payload": {"due_at": T0 + 86400, "max_score": 10}},
        {"id": event_id("api", 2), "type": "assignment_submitted", "user": "learner1", **item, "occurred_at": T0 + 60},
        {"id": event_id("api", 3), "type": "assignment_autograded", "user": "learner1", **item,
         "occurred_at": T0 + 120, "payload": {"score": 9, "max_score": 10}},
        {"id": event_id("api", 4), "type": "assignment_fetched", "user": "learner2", **item, "occurred_at": T0 + 30},
        {"id": event_id("api", 5), "type": "assignment_fetched", "user": "learner1", "course": "hpc-101",
         "assignment": "mpi-hello", "occurred_at": T0 + 30},
    ]


def test_only_a_service_with_the_ingest_scope_may_send_events(api):
    evs = events_of_learners()
    for token in ("t-learner1", "t-learner1-ingest", "t-admin", "t-trainer1", "t-culler", "t-outsider",
                  "forged-token", None):
        r = api("POST", "events", token, json={"events": evs})
        assert r.status_code == 403, (token, r.text)
        assert r.headers["Content-Type"] == "application/json" and r.json()["message"]
    assert api("GET", "me", "t-learner1").json()["courses"][0]["assignments"] == []   # nothing got in
    r = api("POST", "events", "t-exchange", json={"events": evs})
    assert (r.status_code, r.json()) == (200, {"accepted": 5, "duplicates": 0})
    assert api("POST", "events", "t-exchange", json={"events": evs}).json() == {"accepted": 0, "duplicates": 5}


def test_a_batch_with_a_bad_event_is_refused_whole_naming_it(api):
    evs = events_of_learners()
    evs[2] = {**evs[2], "payload": {"score": 12, "max_score": 10}}
    r = api("POST", "events", "t-exchange", json={"events": evs})
    assert r.status_code == 400
    body = r.json()
    assert body["message"].startswith("events[2].payload.score: 12 is more than max_score 10")
    assert [(x["index"], x["field"], x["id"]) for x in body["rejected"]] == \
        [(2, "events[2].payload.score", evs[2]["id"])]
    assert api("POST", "events", "t-exchange", json={"events": evs[:2]}).json()["accepted"] == 2   # none were kept
    assert api("POST", "events", "t-exchange", data="[").status_code == 400
    assert api("POST", "events", "t-exchange", json=evs).json()["message"] == 'the body must be {"events": [...]}'


def test_a_learner_sees_their_own_records_and_no_one_elses(api):
    api("POST", "events", "t-exchange", json={"events": events_of_learners()})
    me = api("GET", "me", "t-learner1").json()
    assert me["user"] == "learner1"
    courses = {c["course"]: c for c in me["courses"]}
    assert set(courses) == {"llm-101", "hpc-101"}
    tok = courses["llm-101"]["assignments"][0]
    assert (tok["assignment"], tok["status"], tok["score"], tok["due_at"]) == ("tokenization", "graded", 9, T0 + 86400)
    assert api("GET", "users/learner1", "t-learner1").json()["courses"] == me["courses"]
    r = api("GET", "users/learner2", "t-learner1")
    assert r.status_code == 403 and "may" in r.json()["message"]
    r = api("GET", "courses/llm-101/cohort", "t-learner1")     # as if there were no such course
    assert r.status_code == 404 and r.json()["message"] == "no such course, or you are not one of its trainers"


def test_a_trainer_sees_only_their_courses(api):
    api("POST", "events", "t-exchange", json={"events": events_of_learners()})
    cohort = api("GET", "courses/llm-101/cohort", "t-trainer1").json()
    assert [(r["user"], r["assignments"]["tokenization"]["status"]) for r in cohort["learners"]] == \
        [("learner1", "graded"), ("learner2", "fetched")]
    assert api("GET", "courses/hpc-101/cohort", "t-trainer1").status_code == 404
    # learner1 is in both courses: trainer1 sees llm-101 only, trainer2 hpc-101 only.
    assert [c["course"] for c in api("GET", "users/learner1", "t-trainer1").json()["courses"]] == ["llm-101"]
    assert [c["course"] for c in api("GET", "users/learner1", "t-trainer2").json()["courses"]] == ["hpc-101"]
    assert api("GET", "users/learner2", "t-trainer2").status_code == 403
    assert api("GET", "users/trainer1", "t-trainer2").status_code == 403
    r = api("GET", "courses/llm-101/cohort?filter=late%25s", "t-trainer1")
    assert (r.status_code, r.json()["message"]) == (400, "filter 'late%s' is not one of: all, behind, not_started")
    assert api("GET", "courses/llm-101/cohort?limit=0", "t-trainer1").status_code == 400


def test_an_admin_sees_everything(api):
    api("POST", "events", "t-exchange", json={"events": events_of_learners()})
    assert api("GET", "courses/hpc-101/cohort", "t-admin").json()["counts"]["learners"] == 1
    assert len(api("GET", "users/learner1", "t-admin").json()["courses"]) == 2
    assert api("GET", "courses/llm-101/cohort?limit=1&offset=1", "t-admin").json()["learners"][0]["user"] == "learner2"


def test_no_token_a_forged_one_or_one_without_access_is_refused_without_a_redirect(api):
    for token, says in ((None, "valid hub token"), ("forged-token", "valid hub token"),
                        ("t-outsider", "user outsider may not use academy-progress")):
        for path in ("me", "users/learner1", "courses/llm-101/cohort"):
            r = api("GET", path, token, allow_redirects=False)
            assert r.status_code == 403, (token, path, r.status_code)
            assert says in r.json()["message"]
    r = api("GET", "me", "t-exchange")        # a service has no learner records
    assert r.status_code == 403 and "service academy-exchange" in r.json()["message"]
