"""The service with its pages in-process, against a stand-in hub (/hub/api/user and /hub/api/groups).

Shared by the page and certificate tests: a small programme of its own (so a track completes in
a few events), a signing key in the test's directory, the gradebook's enrolment in SQLite.
"""

from __future__ import annotations

import asyncio
import json
import threading

import requests
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpserver import HTTPServer

from assessments.progress import certificates, db, service
from assessments.progress.completion import Programme
from assessments.progress.groups import HubGroups
from courses.catalogue import GpuBudget

from ..support import free_port
from .eventgen import T0, event_id
from .test_service_api import ACCESS, WhoAmI, enrolled

PUBLIC_URL = "https://academy.example.eu/"  # the hub's address as learners and employers know it
PREFIX = "/services/academy-progress/"
PROGRAMME = Programme(
    courses={"llm-101": ("tokenization", "attention"), "llm-201": ("finetune",), "hpc-101": ("mpi-hello",)},
    tracks={"llm-engineering": ("llm-101", "llm-201"), "hpc-engineering": ("hpc-101",)},
    course_titles={"llm-101": "LLM foundations", "llm-201": "LLM fine-tuning", "hpc-101": "HPC foundations"},
    track_titles={"llm-engineering": "LLM engineering", "hpc-engineering": "HPC engineering"},
    budgets={"llm-101": GpuBudget(course_gpu_hours=100, learner_gpu_hours=2.5)})
ENROLMENT = [("llm-101", "learner1", "learner"), ("llm-101", "learner2", "learner"), ("llm-201", "learner1", "learner"),
             ("llm-201", "learner2", "learner"), ("hpc-101", "learner1", "learner"), ("llm-101", "trainer1", "trainer"),
             ("hpc-101", "trainer2", "trainer")]
GROUPS = {"workshop-a": ["learner2", "trainer1"], "everyone": ["learner1", "learner2"]}


class Groups(web.RequestHandler):
    """The hub's GET /hub/api/groups[/<name>]; the group "forbidden" stands for a missing read:groups scope."""
    def get(self, name=None):
        if self.request.headers.get("Authorization") != "token service-token":
            raise web.HTTPError(403)
        if name is None:
            self.write(json.dumps([{"name": g, "users": u} for g, u in GROUPS.items()]))
        elif name == "forbidden":
            raise web.HTTPError(403)
        elif name in GROUPS:
            self.write({"name": name, "users": GROUPS[name]})
        else:
            raise web.HTTPError(404)


class Service:
    """The running service: `get`/`post` a page (with a token), and its database and key."""

    def __init__(self, tmp_path, database_url, programme=PROGRAMME, enrolment=ENROLMENT):
        db.upgrade(database_url)
        self.engine = db.engine_for(database_url)
        self.store = enrolled(f"sqlite:///{tmp_path / 'gradebook.sqlite'}", enrolment)
        self.signer = certificates.Signer.load_or_create(tmp_path / certificates.KEY_FILE)
        hub_port, self.port = free_port(), free_port()
        hub_api = f"http://127.0.0.1:{hub_port}/hub/api"
        auth = HubOAuth(api_url=hub_api + "/", api_token="service-token", oauth_client_id="service-academy-progress",
                        access_scopes={ACCESS}, cache_max_age=1, hub_prefix="/hub/",
                        oauth_redirect_uri=f"http://127.0.0.1:{self.port}{PREFIX}oauth_callback")
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            HTTPServer(web.Application([(r"/hub/api/user", WhoAmI), (r"/hub/api/groups", Groups),
                                        (r"/hub/api/groups/([^/]+)", Groups)])).listen(hub_port, "127.0.0.1")
            self.app = service.make_app(self.engine, self.store, auth, PREFIX, programme=programme, signer=self.signer,
                                        groups=HubGroups(hub_api, "service-token"), public_url=PUBLIC_URL)
            HTTPServer(self.app).listen(self.port, "127.0.0.1")
            self.loop.call_soon(started.set)
            self.loop.run_forever()
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}{path}"

    def get(self, path, token=None, **kw):
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.get(self.url(path), headers=headers, timeout=30, allow_redirects=False, **kw)

    def post(self, path, token=None, **kw):
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.post(self.url(path), headers=headers, timeout=30, allow_redirects=False, **kw)

    def send(self, events):
        r = self.post("api/events", "t-exchange", json={"events": events})
        assert r.status_code == 200, r.text
        return r.json()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.engine.dispose()


def released(course, assignment, due=T0 + 7 * 86400, points=10.0, at=T0):
    return {"id": event_id("rel", course, assignment), "type": "assignment_released", "course": course,
            "assignment": assignment, "occurred_at": at, "payload": {"due_at": due, "max_score": points}}


def graded(user, course, assignment, score, points=10.0, at=T0 + 3600, tag="g"):
    """A submission and its autograde result."""
    item = {"user": user, "course": course, "assignment": assignment}
    return [{"id": event_id(tag, "sub", user, course, assignment), "type": "assignment_submitted", **item,
             "occurred_at": at - 60},
            {"id": event_id(tag, "grade", user, course, assignment), "type": "assignment_autograded", **item,
             "occurred_at": at, "payload": {"score": score, "max_score": points}}]


def track_passed(user, scores=None, tag="g"):
    """Every assignment of the llm-engineering track released and graded (8 of 10 unless told)."""
    scores = scores or {}
    out = []
    for course, assignments in PROGRAMME.courses.items():
        if course == "hpc-101":
            continue
        for i, a in enumerate(assignments):
            out.append(released(course, a))
            out += graded(user, course, a, scores.get(a, 8.0), at=T0 + 3600 * (i + 1), tag=tag)
    return out
