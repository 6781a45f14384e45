"""The exchange's learner API: what a learner's JupyterLab (assessments.exchange.client) calls to list,
fetch and submit assignments and to read feedback; and ``Base``, what every exchange handler knows
(the store, the caller's role in a course, the course's assignments).

Who may do what comes from the course enrolment, checked on every request, so removing a learner
ends their access at once. A submission is stored under the authenticated account with the
server's clock; a body naming another student is rejected with 403. Database and file work runs in
the service's pool, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging

from tornado import web

from ..service.base import ServiceHandler
from . import feedback
from .store import MAX_FILES, Store, StoreFull, SubmissionRateLimited, SubmissionRejected, human_size

log = logging.getLogger("academy.exchange")
# A refused submission up to this size is read and dropped before the answer, so that the client
# hears why: urllib (the learners' exchange client) reports only a reset when the connection
# closes while it is still sending. Past it, the connection is closed at once.
DRAIN_MAX = 100 << 20

# One answer for a course that does not exist and for one the caller may not see, so that no
# one learns from the exchange which courses exist: the same status, the same body.
NOT_ENROLLED = "no such course, or you are not enrolled in it"
NOT_TRAINER = "no such course, or you are not one of its trainers"


class Base(ServiceHandler):
    """A hub token (Authorization header) for the API, the hub's OAuth cookie for pages."""

    @property
    def store(self) -> Store:
        return self.settings["store"]

    def user_name(self) -> str:
        user = self.get_current_user()
        if not user:
            raise web.HTTPError(403, "log in through the hub first")
        return user["name"]

    async def role_in(self, course: str) -> str:
        """The caller's role in `course`; 404 (as for no such course) when they have none."""
        role = await self.in_thread(self.store.enrolment.find_role, course, self.user_name())
        if role is None:
            raise web.HTTPError(404, NOT_ENROLLED)
        return role

    async def require_trainer(self, course: str) -> None:
        if await self.in_thread(self.store.enrolment.find_role, course, self.user_name()) != "trainer":
            raise web.HTTPError(404, NOT_TRAINER)

    async def assignment(self, course: str, assignment_id: str):
        await self.role_in(course)    # before the catalogue: an outsider learns nothing of the course's assignments
        course_obj = self.settings["catalogue"].get(course)
        for a in (course_obj.assignments if course_obj else ()):
            if a.id == assignment_id:
                return a
        raise web.HTTPError(404, f"no assignment {course}/{assignment_id}")


class AssignmentsHandler(Base):
    @web.authenticated
    async def get(self):
        user = self.user_name()
        self.write({"user": user, "assignments": await self.in_thread(self.listing, user)})

    def listing(self, user: str) -> list[dict]:
        out = []
        for course, role in sorted(self.store.enrolment.find_courses(user).items()):
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
        return out


class FilesHandler(Base):
    @web.authenticated
    async def get(self, course, assignment):
        role = await self.role_in(course)
        await self.assignment(course, assignment)
        files = await self.in_thread(self.fetch, course, assignment, role)
        self.write({"files": {name: base64.b64encode(data).decode() for name, data in files.items()}})

    def fetch(self, course: str, assignment: str, role: str) -> dict[str, bytes]:
        if not any(p["assignment"] == assignment for p in self.store.publications(course)):
            raise web.HTTPError(404, f"{course}/{assignment} is not published yet")
        files = self.store.release_files(course, assignment)
        if role == "learner":
            self.store.events.fetched(self.user_name(), course, assignment)
        return files


def submission_body_limit(max_bytes: int) -> int:
    """The largest request that can carry max_bytes of files: base64 (4 for 3), names and JSON around them."""
    return (max_bytes + 2) // 3 * 4 + MAX_FILES * 1024 + (64 << 10)


@web.stream_request_body
class SubmissionsHandler(Base):
    """POST stores a submission. Its body is streamed in, so a request too large for any acceptable
    submission is refused on its Content-Length before a byte of it is kept (a chunked one once it
    passes the limit): one request cannot balloon the service."""

    async def prepare(self):
        await super().prepare()
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
    async def post(self, course, assignment):
        user = self.user_name()
        if self.refusal is not None:
            raise self.refusal
        await self.assignment(course, assignment)
        decoded, claimed = self.submitted_files()
        try:
            row = await self.in_thread(self.store.submit, course, assignment, user, decoded, claimed_student=claimed)
        except SubmissionRejected as e:
            if isinstance(e, StoreFull):  # the trainer hears it from the learner; the operator, here
                log.error("submission of %s/%s by %s not stored: %s", course, assignment, user, e.__cause__)
            else:
                log.warning("submission of %s/%s by %s rejected: %s", course, assignment, user, e)
            raise web.HTTPError(e.status, str(e)) from e
        log.info("submission %s of %s/%s by %s stored", row["id"], course, assignment, user)
        self.set_status(201)
        self.write({k: row[k] for k in ("id", "course", "assignment", "student", "submitted_at", "late_s", "sha256")})

    def submitted_files(self) -> tuple[dict[str, bytes], str | None]:
        """The body's files, decoded, and the student it names (None: it names none)."""
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
        return decoded, None if claimed is None else str(claimed)

    def write_error(self, status_code, **kwargs):
        cause = getattr(kwargs.get("exc_info", (None, None, None))[1], "__cause__", None)
        if isinstance(cause, SubmissionRateLimited):
            self.set_header("Retry-After", str(cause.retry_after))
        super().write_error(status_code, **kwargs)

    @web.authenticated
    async def get(self, course, assignment):
        user = self.user_name()
        await self.role_in(course)
        subs = await self.in_thread(self.store.submissions_of, course, assignment, user)
        self.write({"submissions": [{k: s[k] for k in ("id", "submitted_at", "late_s", "sha256")} for s in subs]})


class FeedbackHandler(Base):
    @web.authenticated
    async def get(self, course, assignment):
        user = self.user_name()
        if await self.role_in(course) != "learner":
            raise web.HTTPError(404, "trainers read feedback in the gradebook")
        files = await self.in_thread(feedback.feedback_for, self.store, course, assignment, user)
        if files is None:
            raise web.HTTPError(404, f"feedback for {course}/{assignment} has not been released yet")
        self.write({"files": files})


class NotFound(Base):
    """Any other path: a JSON 404, with the headers every answer carries."""

    def prepare(self):
        raise web.HTTPError(404, "there is nothing here")
