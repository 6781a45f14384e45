"""The exchange: a hub-managed service through which learners fetch, submit and read feedback.

Every request is authenticated by the hub (a learner's session token or cookie); who may do
what comes from the course enrolment, checked on every request, so removing a learner ends
their access at once. A submission is stored under the authenticated account with the server's
clock; a body naming another student is rejected with 403. Trainers of a course also start
autograding, follow it, and download the gradebook here.

    python -m assessments.exchange_service [--port N]     (started by the hub)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import re
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from courses.catalogue import load_catalogue
from spawners.profiles import parse_profile
from spawners.slurm_client import SlurmClient, SlurmError

from . import autograde, export, feedback, hub_groups
from .store import Store, StoreError, SubmissionRejected

log = logging.getLogger("academy.exchange")
SLUG = r"[a-z0-9][a-z0-9-]{0,63}"
MAX_BODY = 60 << 20


class Base(HubAuthenticated, web.RequestHandler):
    @property
    def store(self) -> Store:
        return self.settings["store"]

    def user_name(self) -> str:
        user = self.get_current_user()
        if not user:
            raise web.HTTPError(403, "log in through the hub first")
        return user["name"]

    def role_in(self, course: str) -> str:
        role = self.store.role_of(course, self.user_name())
        if role is None:
            raise web.HTTPError(403, f"you are not enrolled in {course}")
        return role

    def require_trainer(self, course: str) -> None:
        if self.role_in(course) != "trainer":
            raise web.HTTPError(403, f"only trainers of {course} may do this")

    def assignment(self, course: str, assignment_id: str):
        course_obj = self.settings["catalogue"].get(course)
        for a in (course_obj.assignments if course_obj else ()):
            if a.id == assignment_id:
                return a
        raise web.HTTPError(404, f"no assignment {course}/{assignment_id}")

    def write_error(self, status_code, **kwargs):
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": reason}))

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON")
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return body


class AssignmentsHandler(Base):
    @web.authenticated
    def get(self):
        user = self.user_name()
        out = []
        for course, role in sorted(self.store.courses_of(user).items()):
            for pub in self.store.publications(course):
                item = {"course": course, "assignment": pub["assignment"], "role": role,
                        "released_at": pub["released_at"], "due_at": pub["due_at"], "points": pub["points"],
                        "notebooks": json.loads(pub["notebooks"]),
                        "feedback_released": bool(pub["feedback_released_at"])}
                if role == "learner":
                    subs = self.store.submissions_of(course, pub["assignment"], user)
                    item["submissions"] = [{"id": s["id"], "submitted_at": s["submitted_at"], "late_s": s["late_s"]}
                                           for s in subs]
                out.append(item)
        self.write({"user": user, "assignments": out})


class FilesHandler(Base):
    @web.authenticated
    def get(self, course, assignment):
        self.role_in(course)
        self.assignment(course, assignment)
        if not any(p["assignment"] == assignment for p in self.store.publications(course)):
            raise web.HTTPError(404, f"{course}/{assignment} is not published yet")
        files = self.store.release_files(course, assignment)
        self.write({"files": {name: base64.b64encode(data).decode() for name, data in files.items()}})


class SubmissionsHandler(Base):
    @web.authenticated
    def post(self, course, assignment):
        user = self.user_name()
        self.assignment(course, assignment)
        body = self.json_body()
        files = body.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise web.HTTPError(400, 'expected {"files": {"name.ipynb": "<base64>"}}')
        try:
            decoded = {str(k): base64.b64decode(v, validate=True) for k, v in files.items()}
        except (binascii.Error, ValueError):
            raise web.HTTPError(400, "every file must be base64")
        claimed = body.get("student")
        try:
            row = self.store.submit(course, assignment, user, decoded,
                                    claimed_student=None if claimed is None else str(claimed))
        except SubmissionRejected as e:
            log.warning("submission of %s/%s by %s rejected: %s", course, assignment, user, e)
            raise web.HTTPError(403, str(e))
        log.info("submission %s of %s/%s by %s stored", row["id"], course, assignment, user)
        self.set_status(201)
        self.write({k: row[k] for k in ("id", "course", "assignment", "student", "submitted_at", "late_s", "sha256")})

    @web.authenticated
    def get(self, course, assignment):
        user = self.user_name()
        self.role_in(course)
        subs = self.store.submissions_of(course, assignment, user)
        self.write({"submissions": [{k: s[k] for k in ("id", "submitted_at", "late_s", "sha256")} for s in subs]})


class FeedbackHandler(Base):
    @web.authenticated
    def get(self, course, assignment):
        user = self.user_name()
        if self.role_in(course) != "learner":
            raise web.HTTPError(404, "trainers read feedback in the gradebook")
        files = feedback.feedback_for(self.store, course, assignment, user)
        if files is None:
            raise web.HTTPError(404, f"feedback for {course}/{assignment} has not been released yet")
        self.write({"files": files})


class GradebookHandler(Base):
    @web.authenticated
    def get(self, course):
        self.require_trainer(course)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{course}-gradebook.csv"')
        self.write(export.gradebook_csv(self.store, course))


class StatisticsHandler(Base):
    @web.authenticated
    def get(self, course):
        self.require_trainer(course)
        self.write({"assignments": export.statistics_by_assignment(self.store, course)})


class AutogradeHandler(Base):
    """POST starts grading the latest submissions; GET .../<batch> follows it (and records it when done)."""

    @web.authenticated
    async def post(self, course, assignment):
        self.require_trainer(course)
        a = self.assignment(course, assignment)
        profile = parse_profile(self.settings["profiles"][a.profile])
        try:
            batch = await autograde.start(self.store, self.settings["cfg"], a, profile, self.settings["slurm"],
                                          regrade=bool(self.json_body().get("regrade")))
        except (StoreError, SlurmError) as e:
            raise web.HTTPError(409, str(e))
        if batch is None:
            self.write({"batch": None, "message": "every submission already has a result"})
            return
        self.set_status(202)
        self.write({"batch": batch.id, "job_id": batch.job_id, "total": len(batch.submissions)})

    @web.authenticated
    async def get(self, course, assignment, batch_id):
        self.require_trainer(course)
        if not re.fullmatch(r"[0-9T]{15}-[0-9a-f]{6}", batch_id):
            raise web.HTTPError(404, "no such grading batch")
        try:
            batch = autograde.open_batch(self.store, course, assignment, batch_id)
        except OSError:
            raise web.HTTPError(404, "no such grading batch")
        progress = await autograde.progress(batch, self.settings["slurm"])
        body = {"batch": batch_id, "total": progress.total, "graded": progress.graded, "failed": progress.failed,
                "running": progress.running, "waiting": progress.pending, "done": progress.done}
        if progress.done:
            body["results"] = autograde.collect(self.store, batch)
        self.write(body)


def make_app(cfg: dict) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/academy-exchange/")
    course = rf"api/courses/({SLUG})"
    item = rf"{course}/assignments/({SLUG})"
    routes = [
        (r"api/assignments", AssignmentsHandler),
        (rf"{item}/files", FilesHandler),
        (rf"{item}/submissions", SubmissionsHandler),
        (rf"{item}/feedback", FeedbackHandler),
        (rf"{item}/autograde", AutogradeHandler),
        (rf"{item}/autograde/([^/]+)", AutogradeHandler),
        (rf"{course}/gradebook\.csv", GradebookHandler),
        (rf"{course}/statistics", StatisticsHandler),
    ]
    return web.Application(
        [(url_path_join(prefix, pattern), handler) for pattern, handler in routes],
        store=Store.from_config(cfg), cfg=cfg, slurm=SlurmClient(bin_dir=cfg["slurm"]["bin_dir"]),
        catalogue=load_catalogue(profiles={p["key"] for p in cfg["profiles"]}),
        profiles={p["key"]: p for p in cfg["profiles"]},
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    # The hub hands over its validated configuration (nothing below the hub imports hub/).
    cfg = json.loads(os.environ["ACADEMY_SERVICE_CONFIG"])
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = HTTPServer(make_app(cfg), max_body_size=MAX_BODY)
    server.listen(url.port, url.hostname)
    log.info("exchange listening on %s:%d", url.hostname, url.port)
    app_store: Store = server.request_callback.settings["store"]
    IOLoop.current().add_callback(hub_groups.keep_in_sync, app_store.engine)
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
