"""The exchange's trainer side: the gradebook (CSV, statistics, a course page), autograding started and
followed, hand-grading of written answers. Every handler first checks that the caller teaches the
course (404, as for a course that does not exist, when not); database and file work runs in the
service's pool.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import nbformat
from jinja2 import Environment, FileSystemLoader, select_autoescape
from tornado import web

from spawners.profiles import parse_profile
from spawners.slurm_client import SlurmError

from ..gradebook import export, tables as gb
from ..grading import batch as autograde
from .learner import Base
from .store import StoreError

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html", "j2"]))
BATCH_ID = re.compile(r"[0-9T]{15}-[0-9a-f]{6}")


class GradebookHandler(Base):
    @web.authenticated
    async def get(self, course):
        await self.require_trainer(course)
        csv = await self.in_thread(export.gradebook_csv, self.store, course)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{course}-gradebook.csv"')
        self.write(csv)


class StatisticsHandler(Base):
    @web.authenticated
    async def get(self, course):
        await self.require_trainer(course)
        self.write({"assignments": await self.in_thread(export.statistics_by_assignment, self.store, course)})


class AutogradeHandler(Base):
    """POST starts grading the latest submissions; GET .../<batch> follows it (and records it when done)."""

    @web.authenticated
    async def post(self, course, assignment):
        await self.require_trainer(course)
        a = await self.assignment(course, assignment)
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
        await self.require_trainer(course)
        if not BATCH_ID.fullmatch(batch_id):
            raise web.HTTPError(404, "no such grading batch")
        try:
            batch = await self.in_thread(autograde.open_batch, self.store, course, assignment, batch_id)
        except OSError:
            raise web.HTTPError(404, "no such grading batch")
        progress = await autograde.progress(batch, self.settings["slurm"])
        body = {"batch": batch_id, "total": progress.total, "graded": progress.graded, "failed": progress.failed,
                "running": progress.running, "waiting": progress.pending, "done": progress.done}
        if progress.done:
            body["results"] = await self.in_thread(autograde.collect, self.store, batch)
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
    async def get(self, course):
        await self.require_trainer(course)
        stats = {s["assignment"]: s for s in await self.in_thread(export.statistics_by_assignment, self.store, course)}
        rows = await self.in_thread(self.store.read, gb.gradebook_rows, course)
        assignments = [{"assignment": a, "stats": stat, "rows": [r for r in rows if r["assignment"] == a]}
                       for a, stat in stats.items()]
        self.render_page("trainer_course.html.j2", title=f"Gradebook {course}", course=course, assignments=assignments)


class SubmissionPage(PageBase):
    """Grade the written answers of one submission (a trainer of its course only)."""

    async def load(self, course, submission_id):
        await self.require_trainer(course)
        found = await self.in_thread(self.store.read, gb.find_graded_submission, course, submission_id)
        if found is None:
            raise web.HTTPError(404, "no graded submission with that id in this course")
        return found

    def answers(self, course, submission_id, res, grades) -> list[dict]:
        """The hand-graded cells with the learner's answer (from the graded notebook) and any grade so far."""
        cells = []
        for c in gb.manual_cells(res):
            graded = self.store.course_dir(course, "grading", res["batch"], "graded", submission_id, c["notebook"])
            nb = nbformat.read(graded, as_version=4)
            answer = next((cell.source for cell in nb.cells
                           if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == c["grade_id"]), "")
            g = grades.get(c["grade_id"])
            cells.append({**c, "answer": answer, "score": g.score if g else None, "comment": g.comment if g else ""})
        return cells

    async def show(self, course, submission_id, message="", error=False):
        sub, res, grades = await self.load(course, submission_id)
        cells = await self.in_thread(self.answers, course, submission_id, res, grades)
        if error:
            self.set_status(400)
        self.render_page("trainer_submission.html.j2", title=f"{sub['student']} {sub['assignment']}", course=course,
                         sub=sub, result=res, cells=cells, message=message, error=error, xsrf=self.xsrf_token.decode(),
                         submitted=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(sub["submitted_at"])))

    @web.authenticated
    async def get(self, course, submission_id):
        await self.show(course, submission_id)

    @web.authenticated
    async def post(self, course, submission_id):
        await self.load(course, submission_id)
        grade_id = self.get_body_argument("grade_id", "")
        try:
            score = await self.in_thread(self.record, submission_id, grade_id, self.get_body_argument("score", ""),
                                         self.get_body_argument("comment", ""))
        except gb.GradeError as e:
            return await self.show(course, submission_id, message=str(e), error=True)
        await self.show(course, submission_id, message=f"saved {grade_id}: {score:g} points")

    def record(self, submission_id: str, grade_id: str, score: str, comment: str) -> float:
        """Record a hand grade, and tell the progress records what the submission counts now."""
        grader = self.user_name()
        with self.store.engine.begin() as conn:
            recorded = gb.record_manual_grade(conn, submission_id, grade_id, score, comment, grader)
        with self.store.engine.connect() as conn:
            sub = gb.find_submission(conn, submission_id)
            _, res, _ = gb.find_graded_submission(conn, sub["course"], submission_id)
            counted = gb.counted_score(conn, submission_id)
        self.store.events.graded(sub, counted, res["max_score"], key=f"{grade_id}:{time.time()}", grader=grader)
        return recorded
