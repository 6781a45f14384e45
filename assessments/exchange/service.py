"""The exchange: a hub-managed service through which learners fetch, submit and read feedback.

Every request is authenticated by the hub (a learner's session token or cookie); who may do
what comes from the course enrolment, checked on every request, so removing a learner ends
their access at once. A submission is stored under the authenticated account with the server's
clock; a body naming another student is rejected with 403. Trainers of a course also start
autograding, follow it, and download the gradebook here.

    python -m assessments.exchange.service [--port N]     (started by the hub)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from courses.catalogue import load_catalogue
from spawners.profiles import parse_profile
from spawners.slurm_client import SlurmClient, SlurmError

import nbformat
import sqlalchemy as sa

from ..gradebook import export, hub_groups, tables as gb
from ..grading import batch as autograde
from ..progress import emit as progress_events
from . import feedback
from .store import MAX_FILES, Store, StoreError, SubmissionRateLimited, SubmissionRejected, StoreFull, human_size
from ..service.security import OAuthCallback, SecurityHeaders, redact_tornado_logs

log = logging.getLogger("academy.exchange")
SLUG = r"[a-z0-9][a-z0-9-]{0,63}"
AUTH_CACHE_S = 2  # seconds the hub's answer about a token is reused (0 would mean forever)
MAX_BODY = 1 << 20   # any request but a submission (forms, small JSON); SubmissionsHandler raises its own
# A refused submission up to this size is read and dropped before the answer, so that the client
# hears why: urllib (the learners' exchange client) reports only a reset when the connection
# closes while it is still sending. Past it, the connection is closed at once.
DRAIN_MAX = 100 << 20


TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html", "j2"]))


# One answer for a course that does not exist and for one the caller may not see, so that no
# one learns from the exchange which courses exist: the same status, the same body.
NOT_ENROLLED = "no such course, or you are not enrolled in it"
NOT_TRAINER = "no such course, or you are not one of its trainers"


class Base(SecurityHeaders, HubOAuthenticated, web.RequestHandler):
    """A hub token (Authorization header) for the API, the hub's OAuth cookie for pages."""
    @property
    def store(self) -> Store:
        return self.settings["store"]

    def user_name(self) -> str:
        user = self.get_current_user()
        if not user:
            raise web.HTTPError(403, "log in through the hub first")
        return user["name"]

    def role_in(self, course: str) -> str:
        """The caller's role in `course`; 404 (as for no such course) when they have none."""
        role = self.store.role_of(course, self.user_name())
        if role is None:
            raise web.HTTPError(404, NOT_ENROLLED)
        return role

    def require_trainer(self, course: str) -> None:
        if self.store.role_of(course, self.user_name()) != "trainer":
            raise web.HTTPError(404, NOT_TRAINER)

    def assignment(self, course: str, assignment_id: str):
        self.role_in(course)    # before the catalogue: an outsider learns nothing of the course's assignments
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
        if self.role_in(course) == "learner":
            self.store.events.fetched(self.user_name(), course, assignment)
        self.write({"files": {name: base64.b64encode(data).decode() for name, data in files.items()}})


def submission_body_limit(max_bytes: int) -> int:
    """The largest request that can carry max_bytes of files: base64 (4 for 3), names and JSON around them."""
    return (max_bytes + 2) // 3 * 4 + MAX_FILES * 1024 + (64 << 10)


@web.stream_request_body
class SubmissionsHandler(Base):
    """POST stores a submission. Its body is streamed in, so a request too large for any acceptable
    submission is refused on its Content-Length before a byte of it is kept (a chunked one once it
    passes the limit): one request cannot balloon the service."""

    async def prepare(self):
        parent = super().prepare()
        if parent is not None:
            await parent
        self.chunks: list[bytes] = []
        self.refusal: web.HTTPError | None = None
        if self.request.method != "POST":
            return
        self.user_name()  # 403 before reading anything from a caller the hub does not know
        max_bytes = self.store.submission_max_bytes
        limit = submission_body_limit(max_bytes)
        try:
            length = int(self.request.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0  # tornado refuses it (400) when it comes to read the body
        if length > limit:
            self.refusal = web.HTTPError(413, f"rejected: about {human_size(length // 4 * 3)} of files is over "
                                              f"the {human_size(max_bytes)} a submission may hold")
            if length > DRAIN_MAX:
                raise self.refusal
            limit = length  # to be dropped as it comes (data_received), then answered (post)
        self.request.connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        if self.refusal is None:
            self.chunks.append(chunk)

    @web.authenticated
    def post(self, course, assignment):
        user = self.user_name()
        if self.refusal is not None:
            raise self.refusal
        self.assignment(course, assignment)
        self.request.body, self.chunks = b"".join(self.chunks), []
        body = self.json_body()
        self.request.body = b""
        files = body.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise web.HTTPError(400, 'expected {"files": {"name.ipynb": "<base64>"}}')
        try:  # one file at a time, each text dropped once decoded
            decoded = {str(k): base64.b64decode(files.pop(k), validate=True) for k in list(files)}
        except (binascii.Error, ValueError):
            raise web.HTTPError(400, "every file must be base64")
        claimed = body.get("student")
        try:
            row = self.store.submit(course, assignment, user, decoded,
                                    claimed_student=None if claimed is None else str(claimed))
        except SubmissionRejected as e:
            if isinstance(e, StoreFull):  # the trainer hears it from the learner; the operator, here
                log.error("submission of %s/%s by %s not stored: %s", course, assignment, user, e.__cause__)
            else:
                log.warning("submission of %s/%s by %s rejected: %s", course, assignment, user, e)
            raise web.HTTPError(e.status, str(e)) from e
        log.info("submission %s of %s/%s by %s stored", row["id"], course, assignment, user)
        self.set_status(201)
        self.write({k: row[k] for k in ("id", "course", "assignment", "student", "submitted_at", "late_s", "sha256")})

    def write_error(self, status_code, **kwargs):
        cause = getattr(kwargs.get("exc_info", (None, None, None))[1], "__cause__", None)
        if isinstance(cause, SubmissionRateLimited):
            self.set_header("Retry-After", str(cause.retry_after))
        super().write_error(status_code, **kwargs)

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


class PageBase(Base):
    def render_page(self, template: str, **context) -> None:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/academy-exchange/")
        self.finish(TEMPLATES.get_template(template).render(prefix=prefix, user=self.user_name(), **context))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!doctype html><title>{status_code}</title><h1>{status_code}</h1>"
                    f"<p>{web.escape.xhtml_escape(message)}</p>")


class CoursePage(PageBase):
    """A trainer's gradebook of one course: every assignment, every learner, what is left to grade."""

    @web.authenticated
    def get(self, course):
        self.require_trainer(course)
        stats = {s["assignment"]: s for s in export.statistics_by_assignment(self.store, course)}
        with self.store.engine.connect() as conn:
            rows = gb.gradebook_rows(conn, course)
        assignments = [{"assignment": a, "stats": stat, "rows": [r for r in rows if r["assignment"] == a]}
                       for a, stat in stats.items()]
        self.render_page("trainer_course.html.j2", title=f"Gradebook {course}", course=course, assignments=assignments)


class SubmissionPage(PageBase):
    """Grade the written answers of one submission (a trainer of its course only)."""

    def load(self, course, submission_id):
        self.require_trainer(course)
        with self.store.engine.connect() as conn:
            sub = conn.execute(sa.select(gb.submissions).where(gb.submissions.c.id == submission_id,
                                                               gb.submissions.c.course == course)).mappings().first()
            res = conn.execute(sa.select(gb.results).where(gb.results.c.submission_id == submission_id)).mappings().first()
            grades = {r.grade_id: r for r in conn.execute(sa.select(gb.manual_grades).where(
                gb.manual_grades.c.submission_id == submission_id))}
        if sub is None or res is None or res["error"]:
            raise web.HTTPError(404, "no graded submission with that id in this course")
        return sub, res, grades

    def show(self, course, submission_id, message="", error=False):
        sub, res, grades = self.load(course, submission_id)
        cells = []
        for c in gb.manual_cells(res):
            graded = self.store.course_dir(course, "grading", res["batch"], "graded", submission_id, c["notebook"])
            nb = nbformat.read(graded, as_version=4)
            answer = next((cell.source for cell in nb.cells
                           if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == c["grade_id"]), "")
            g = grades.get(c["grade_id"])
            cells.append({**c, "answer": answer, "score": g.score if g else None, "comment": g.comment if g else ""})
        if error:
            self.set_status(400)
        self.render_page("trainer_submission.html.j2", title=f"{sub['student']} {sub['assignment']}", course=course,
                         sub=sub, result=res, cells=cells, message=message, error=error, xsrf=self.xsrf_token.decode(),
                         submitted=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(sub["submitted_at"])))

    @web.authenticated
    def get(self, course, submission_id):
        self.show(course, submission_id)

    @web.authenticated
    def post(self, course, submission_id):
        self.load(course, submission_id)
        grade_id = self.get_body_argument("grade_id", "")
        try:
            with self.store.engine.begin() as conn:
                score = gb.record_manual_grade(conn, submission_id, grade_id, self.get_body_argument("score", ""),
                                               self.get_body_argument("comment", ""), self.user_name())
        except gb.GradeError as e:
            return self.show(course, submission_id, message=str(e), error=True)
        with self.store.engine.connect() as conn:  # the score that counts now, for the progress records
            sub = conn.execute(sa.select(gb.submissions).where(gb.submissions.c.id == submission_id)).mappings().one()
            res = conn.execute(sa.select(gb.results).where(gb.results.c.submission_id == submission_id)).mappings().one()
            counted = gb.counted_score(conn, submission_id)
        self.store.events.graded(dict(sub), counted, res["max_score"], key=f"{grade_id}:{time.time()}",
                                 grader=self.user_name())
        self.show(course, submission_id, message=f"saved {grade_id}: {score:g} points")


class NotFound(Base):
    """Any other path: a JSON 404, with the headers every answer carries."""

    def prepare(self):
        raise web.HTTPError(404, "there is nothing here")


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
        (rf"courses/({SLUG})", CoursePage),
        (rf"courses/({SLUG})/submissions/([0-9T]{{15}}-[0-9a-f]{{8}})", SubmissionPage),
        (r"oauth_callback", OAuthCallback),
    ]
    redact_tornado_logs()   # no ?token= or OAuth code in the service's log lines
    return web.Application(
        [(url_path_join(prefix, pattern), handler) for pattern, handler in routes],
        default_handler_class=NotFound,
        store=Store.from_config(cfg), cfg=cfg, slurm=SlurmClient(bin_dir=cfg["slurm"]["bin_dir"]),
        catalogue=load_catalogue(profiles={p["key"] for p in cfg["profiles"]}),
        profiles={p["key"]: p for p in cfg["profiles"]},
        cookie_secret=os.urandom(32),  # sign-ins last as long as the service; the hub signs them in again
        xsrf_cookie_kwargs={"samesite": "Lax"},
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    # The hub hands over its validated configuration (nothing below the hub imports hub/).
    cfg = json.loads(os.environ["ACADEMY_SERVICE_CONFIG"])
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    # HubOAuthenticated handlers share this instance: a token the hub revoked (a session that
    # ended) is refused here within AUTH_CACHE_S, not JupyterHub's default 5 minutes.
    HubOAuth.instance(cache_max_age=AUTH_CACHE_S)
    server = HTTPServer(make_app(cfg), max_body_size=MAX_BODY)
    server.listen(url.port, url.hostname)
    log.info("exchange listening on %s:%d", url.hostname, url.port)
    progress_events.start_sending(cfg)
    app_store: Store = server.request_callback.settings["store"]
    IOLoop.current().add_callback(hub_groups.keep_in_sync, app_store.engine)
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
