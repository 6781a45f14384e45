"""The service's HTML pages (jinja2, autoescaped; plots are server-drawn SVG; no JavaScript).

    GET  /  or  /me                        the signed-in learner's courses, next step, GPU-hours, tracks
    GET  /users/<user>                     an admin, the user, or a trainer (only the courses they teach)
    GET  /courses/<c>?filter=&group=&page= a trainer of c or an admin: counts, plots, 100 learners a page
    GET  /courses/<c>/cohort.csv?filter=&group=   the same selection, every page, as CSV
    GET  /certificates/<id>                anyone: valid or not, and only the name, track and date
    POST /certificates/<id>                anyone: is this uploaded PDF the one issued
    GET  /certificates/<id>.pdf            anyone: the PDF as issued

Signed-in pages use the hub's OAuth (a browser without the service's cookie is sent to the hub's
login and back); who may see what is service.py's rule. The certificate pages are public on
purpose: a learner hands the link to an employer, who has no account here. They show nothing
beyond what the certificate itself states, and an id is 128 random bits, so no one can list them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from ..gradebook.export import formula_safe
from ..service.security import SecurityHeaders
from . import certificates, completion, plots, queries
from .groups import GroupError
from ..service.base import refusal
from .service import NOT_TRAINER, ApiHandler

PAGE_SIZE = 100
CSV_CHUNK = 1000
MAX_PDF_BYTES = 5 << 20
CERT_ID = re.compile(r"^[0-9a-f]{32}$")
FILTER_LABELS = {"all": "all learners", "behind": "behind: a past deadline without a submission",
                 "not_started": "not started: no activity at all"}
SYMBOLS = {"not_started": "·", "fetched": "○", "submitted": "◐", "graded": "●", "feedback": "✓"}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html", "j2"]))
TEMPLATES.filters.update(when=_when, day=certificates.day)


def render(handler: web.RequestHandler, template: str, http_status: int = 200, **context) -> None:
    handler.set_status(http_status)
    handler.set_header("Content-Type", "text/html; charset=utf-8")
    handler.finish(TEMPLATES.get_template(template).render(prefix=handler.settings["prefix"], **context))


def error_page(handler: web.RequestHandler, status_code: int, kwargs: dict, user: str | None = None) -> None:
    """Every refusal and bad input as a page that says what was wrong (never a traceback)."""
    exc = kwargs.get("exc_info", (None, None))[1]
    message = handler._reason
    if isinstance(exc, web.HTTPError) and exc.log_message:
        message = exc.log_message % exc.args if exc.args else exc.log_message
    elif status_code >= 500:
        message = "something went wrong on our side; it is logged, please try again later"
    handler.clear_header("Content-Disposition")
    render(handler, "error.html.j2", status_code, title=f"{status_code} {handler._reason}", status=status_code,
           reason=handler._reason, message=message, user=user)


class PageHandler(ApiHandler):
    async def prepare(self):
        await super().prepare()
        if self._not_allowed:       # known to the hub, without access: a redirect would only loop
            self.caller()

    def get_login_url(self):
        return HubOAuthenticated.get_login_url(self)    # pages send the browser to the hub's login

    def write_error(self, status_code, **kwargs):
        model = getattr(self, "_hub_auth_user_cache", None)
        error_page(self, status_code, kwargs, model.get("name") if isinstance(model, dict) else None)

    async def offload(self, fn, *args):
        return await self.in_thread(fn, *args)


class LearnerPage(PageHandler):
    @web.authenticated
    async def get(self, user=None):
        me = self.user_name()
        user = user or me
        roles = await self.members("find_courses", user)
        only = None
        if user != me and not self.is_admin():
            teaches = {c for c, r in (await self.members("find_courses", me)).items() if r == "trainer"}
            only = teaches & {c for c, r in roles.items() if r == "learner"}
            if not only:
                raise refusal(403, f"{me} may not see {user}'s progress: only {user}, an admin, or a trainer of "
                                   f"one of {user}'s courses may")
        now = time.time()

        def load(conn):
            return queries.learner_records(conn, user, roles, now, only), certificates.of_user(conn, user)
        record, certs = await self.read(load)
        if user != me and not record["courses"] and not certs:
            raise refusal(404, f"{user} has no enrolment and no progress records here")
        programme: completion.Programme = self.settings["programme"]
        tracks = []
        if only is None:
            passed = {c["course"] for c in record["courses"] if c["completed_at"]}
            mine = {c["course"] for c in record["courses"]}
            by_track = {c["track"]: c for c in certs}
            for track, courses in programme.tracks.items():
                if mine & set(courses) or track in by_track:
                    tracks.append({"track": track, "title": programme.track_title(track),
                                   "certificate": by_track.get(track),
                                   "courses": [{"course": c, "passed": c in passed} for c in courses]})
        render(self, "learner.html.j2", title="My progress" if user == me else f"Progress of {user}", user=me,
               subject=user, own=user == me, limited=only is not None, record=record, tracks=tracks,
               next=queries.next_step(record, now), titles=programme.course_titles,
               learner_budget=programme.learner_budget,
               pass_percent=round(100 * completion.PASS_FRACTION))


class CohortSelection(PageHandler):
    """What a cohort page and its CSV share: access, and the selection from the query string."""

    async def selection(self, course: str) -> tuple[list[str], str, str]:
        me = self.user_name()
        if not self.is_admin():
            if await self.members("find_role", course, me) != "trainer":
                raise refusal(404, NOT_TRAINER)
        elif course not in self.settings["programme"].courses and not await self.members("find_members", course):
            raise refusal(404, f"there is no course {course!r}: neither in the catalogue nor with anyone enrolled")
        only = self.get_argument("filter", "all")
        if only not in queries.FILTERS:
            raise refusal(400, f"filter {only[:40]!r} is not accepted; accepted: {', '.join(queries.FILTERS)}")
        group = self.get_argument("group", "").strip()
        learners = self.enrolled = await self.members("find_members", course, "learner")
        if group:
            try:
                members = await self.settings["groups"].of_course(course, group, learners)
            except GroupError as e:
                raise refusal(e.status, str(e))
            learners = [u for u in learners if u in members]
        return learners, group, only

    def query(self, **changes) -> str:
        args = {k: self.get_argument(k, "") for k in ("filter", "group")}
        args.update(changes)
        return urlencode({k: v for k, v in args.items() if v not in ("", None, "all")})


class CoursePage(CohortSelection):
    @web.authenticated
    async def get(self, course):
        raw_page = self.get_argument("page", "1")
        if not re.fullmatch(r"[0-9]{1,7}", raw_page) or int(raw_page) < 1:
            raise refusal(400, f"page {raw_page[:20]!r} is not accepted; expected a whole number from 1")
        page = int(raw_page)
        learners, group, only = await self.selection(course)
        now = time.time()

        def load(conn):
            cohort = queries.cohort(conn, course, learners, now, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
                                    only=only)
            data = queries.cohort_plot_data(conn, course, learners)
            return cohort, data
        cohort, data = await self.read(load)
        pages = max(1, math.ceil(cohort["total"] / PAGE_SIZE))
        if page > pages:
            raise refusal(404, f"page {page} does not exist: this selection has {cohort['total']} learners, "
                               f"{pages} page(s) of {PAGE_SIZE}")
        svgs = await self.offload(lambda: {"funnel": plots.funnel(data["funnel"]),
                                           "histogram": plots.score_histogram(data["histogram"]),
                                           "assignments": plots.assignment_scores(data["assignments"])})
        groups = await self.settings["groups"].offered(course, self.enrolled) if self.settings.get("groups") else []
        render(self, "course.html.j2", title=f"Cohort {course}", user=self.user_name(), course=course,
               course_title=self.settings["programme"].course_titles.get(course), c=cohort, plots=svgs,
               course_budget=self.settings["programme"].course_budget(course),
               learner_budget=self.settings["programme"].learner_budget(course),
               group=group, groups=groups, filters=list(FILTER_LABELS.items()), filter_label=FILTER_LABELS[only],
               page=page, pages=pages, page_query=lambda p: self.query(page=p), query=self.query(),
               symbols=SYMBOLS)


class CohortCsv(CohortSelection):
    COLUMNS = ["learner", "started", "submitted", "graded", "score", "max_score", "score_percent", "behind",
               "gpu_hours", "gpu_hours_budget", "last_activity_utc", "passed_utc"]

    @web.authenticated
    async def get(self, course):
        learners, group, only = await self.selection(course)
        now = time.time()
        budget = self.settings["programme"].learner_budget(course)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        name = "-".join(x for x in (course, group, only if only != "all" else "") if x)
        self.set_header("Content-Disposition", f'attachment; filename="{name}-cohort.csv"')
        offset, header = 0, False
        while True:
            chunk = await self.read(queries.cohort, course, learners, now, limit=CSV_CHUNK, offset=offset, only=only)
            out = io.StringIO()
            writer = csv.writer(out)
            names = [a["assignment"] for a in chunk["assignments"]]
            if not header:
                writer.writerow(self.COLUMNS + [f"{a} {k}" for a in names for k in ("status", "score")])
                header = True
            for r in chunk["learners"]:
                cells = [r["user"], "yes" if r["started"] else "no", r["submitted"], r["graded"], _num(r["score"]),
                         _num(r["max_score"]), _num(round(100 * r["score"] / r["max_score"], 1) if r["max_score"]
                                                    else None), r["behind"], _num(r["gpu_hours"]), _num(budget),
                         _iso(r["last_activity_at"]), _iso(r["completed_at"])]
                for a in names:
                    cell = r["assignments"][a]
                    cells += [cell["status"], _num(cell["score"])]
                writer.writerow([formula_safe(v) for v in cells])
            self.write(out.getvalue())
            await self.flush()
            offset += CSV_CHUNK
            if offset >= chunk["total"]:
                break
        self.finish()


def _num(x) -> str:
    return "" if x is None else f"{x:g}"


def _iso(ts) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class CertificatePage(SecurityHeaders, web.RequestHandler):
    """Public: whether a certificate is genuine, and (POST) whether a PDF is the one issued."""

    def write_error(self, status_code, **kwargs):
        error_page(self, status_code, kwargs)

    async def load(self, cert_id: str) -> dict:
        if not CERT_ID.fullmatch(cert_id):
            raise refusal(404, "no such certificate: a certificate id is 32 hexadecimal digits, as printed on it")
        if self.settings.get("signer") is None:
            raise refusal(503, "certificates are not set up on this service (no signing key)")
        record = await asyncio.get_running_loop().run_in_executor(self.settings["pool"], _by_id,
                                                                  self.settings["engine"], cert_id)
        if record is None:
            raise refusal(404, f"no certificate {cert_id} was issued here: check the id against the document")
        return record

    def show(self, record: dict, **extra) -> None:
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Robots-Tag", "noindex")
        valid, why = certificates.verify(record, self.settings["signer"].public)
        render(self, "certificate.html.j2", title="Certificate verification", user=None, cert=record, valid=valid,
               why=why, **extra)

    async def get(self, cert_id):
        self.show(await self.load(cert_id))

    async def post(self, cert_id):
        record = await self.load(cert_id)
        files = self.request.files.get("pdf") or []
        if not files or not files[0]["body"]:
            raise refusal(400, "choose the certificate's PDF file to check it")
        if len(files[0]["body"]) > MAX_PDF_BYTES:
            raise refusal(400, f"that file is over {MAX_PDF_BYTES >> 20} MB: a certificate is a few kB")
        ok, why = certificates.verify_pdf(record, files[0]["body"], self.settings["signer"].public)
        self.show(record, pdf_checked=True, pdf_ok=ok, pdf_why=why)


class CertificatePdf(CertificatePage):
    async def get(self, cert_id):
        record = await self.load(cert_id)
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Disposition", f'attachment; filename="certificate-{record["track"]}-{cert_id}.pdf"')
        self.set_header("X-Robots-Tag", "noindex")
        self.finish(record["pdf"])

    async def post(self, cert_id):
        raise refusal(405, "only GET: to check a PDF, send it to the certificate's page")


def _by_id(engine, cert_id: str) -> dict | None:
    with engine.connect() as conn:
        return certificates.by_id(conn, cert_id)


ROUTES = [
    (r"", LearnerPage),
    (r"me", LearnerPage),
    (r"users/({user})", LearnerPage),
    (r"courses/({slug})", CoursePage),
    (r"courses/({slug})/cohort\.csv", CohortCsv),
    (r"certificates/([^/]{{1,64}})\.pdf", CertificatePdf),
    (r"certificates/([^/]{{1,64}})", CertificatePage),
]


class NotFoundPage(SecurityHeaders, web.RequestHandler):
    def prepare(self):
        raise refusal(404, f"there is nothing at {self.request.path[:200]}")

    def write_error(self, status_code, **kwargs):
        if "/api/" in self.request.path:        # API clients get JSON, as from every API handler
            return ApiHandler.write_error(self, status_code, **kwargs)
        error_page(self, status_code, kwargs)
