"""The course store: published assignments, submissions and grading batches, root only.

    <root>/<course>/source/<assignment>/        the trainer's notebooks (solutions, hidden tests)
    <root>/<course>/release/<assignment>/       what learners fetch (nbgrader generate_assignment)
    <root>/<course>/submissions/<student>/<assignment>/<id>/   one directory per submission
    <root>/<course>/grading/<batch>/            manifest, results, graded notebooks, job logs
    <root>/<course>/feedback/<student>/<assignment>/           released feedback (HTML)

Learners never touch these directories: they fetch and submit through the exchange service,
which stamps each submission with the server's time and the authenticated owner. That replaces
nbgrader's world-writable exchange directory, where anyone may drop a file under any name.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from courses.catalogue import Assignment

from . import gradebook as gb
from .progress_events import ProgressEvents, outbox_for

ROOT = Path(__file__).resolve().parent.parent
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MAX_SUBMISSION_BYTES = 50 << 20
MAX_FILES = 50


class StoreError(Exception):
    """Something a user asked for that cannot be done; the message says what and why."""


class SubmissionRejected(StoreError):
    pass


@dataclass
class Store:
    root: Path
    engine: sa.Engine
    notebook_python: str
    late_penalty_per_day: float = 0.1
    late_grace_s: float = 300
    events: ProgressEvents = field(default_factory=lambda: ProgressEvents(None))

    @classmethod
    def from_config(cls, cfg: dict) -> "Store":
        a = cfg["assessments"]
        root = Path(a["root"])
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        url = a["database"] or f"sqlite:///{root / 'gradebook.sqlite'}"
        return cls(root, gb.engine_for(url), str(Path(cfg["notebook_env"]) / "bin" / "python"),
                   a["late_penalty_per_day"], a["late_grace_s"], ProgressEvents(outbox_for(cfg)))

    def course_dir(self, course: str, *parts: str) -> Path:
        return self.root.joinpath(course, *parts)

    # --- enrolment -----------------------------------------------------------------------------

    def role_of(self, course: str, user: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(gb.enrolments.c.role).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user)).scalar()

    def courses_of(self, user: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(gb.enrolments.c.course, gb.enrolments.c.role)
                                .where(gb.enrolments.c.user == user)).all()
        return {course: role for course, role in rows}

    def members(self, course: str, role: str | None = None) -> list[str]:
        q = sa.select(gb.enrolments.c.user).where(gb.enrolments.c.course == course)
        if role:
            q = q.where(gb.enrolments.c.role == role)
        with self.engine.connect() as conn:
            return sorted(conn.execute(q).scalars())

    def enrol(self, course: str, user: str, role: str = "learner") -> bool:
        """True if this added or changed the enrolment."""
        check_user(user)
        if role not in ("learner", "trainer"):
            raise StoreError(f"role {role!r} is not one of: learner, trainer")
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(gb.enrolments.c.role).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user)).scalar()
            if current == role:
                return False
            conn.execute(sa.delete(gb.enrolments).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user))
            conn.execute(sa.insert(gb.enrolments).values(course=course, user=user, role=role, enrolled_at=time.time()))
        return True

    def unenrol(self, course: str, user: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(gb.enrolments).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user)).rowcount > 0

    # --- publishing ----------------------------------------------------------------------------

    def publish(self, a: Assignment, now: float | None = None, due_at: float | None = None) -> dict:
        """Copy the source in, build the release with nbgrader, record the deadline. Re-publishing
        replaces the files and keeps the original release time and deadline unless one is given."""
        now = time.time() if now is None else now
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=self.root))
        try:
            shutil.copytree(a.folder, staging / "source", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            build_release(self.notebook_python, a, staging / "release")
            for kind in ("source", "release"):
                target = self.course_dir(a.course_id, kind, a.id)
                target.parent.mkdir(parents=True, exist_ok=True)
                old = target.with_name(f".{a.id}.old")
                if target.exists():
                    os.replace(target, old)
                os.replace(staging / kind, target)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self.engine.begin() as conn:
            existing = gb.publication(conn, a.course_id, a.id)
            row = {"released_at": existing["released_at"] if existing else now,
                   "due_at": due_at if due_at is not None else (existing["due_at"] if existing else now + a.due_days * 86400),
                   "points": a.points, "notebooks": f'["{a.notebook}"]'}
            if existing:
                conn.execute(sa.update(gb.publications).where(
                    gb.publications.c.course == a.course_id, gb.publications.c.assignment == a.id).values(**row))
            else:
                conn.execute(sa.insert(gb.publications).values(course=a.course_id, assignment=a.id, **row))
        self.events.released(a.course_id, a.id, row["released_at"], row["due_at"], a.points)
        return {"course": a.course_id, "assignment": a.id, **row}

    def publications(self, course: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(gb.publications).where(
                gb.publications.c.course == course).order_by(gb.publications.c.released_at)).mappings()]

    def release_files(self, course: str, assignment: str) -> dict[str, bytes]:
        folder = self.course_dir(course, "release", assignment)
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    # --- submissions ---------------------------------------------------------------------------

    def submit(self, course: str, assignment: str, user: str, files: dict[str, bytes],
               claimed_student: str | None = None, now: float | None = None) -> dict:
        """Store a submission as the authenticated ``user``; never under another name."""
        if claimed_student is not None and claimed_student != user:
            raise SubmissionRejected(f"rejected: {user} may not submit as {claimed_student!r}; a submission is "
                                     "always stored under the account that sent it")
        if self.role_of(course, user) != "learner":
            raise SubmissionRejected(f"rejected: {user} is not a learner of {course}")
        with self.engine.connect() as conn:
            pub = gb.publication(conn, course, assignment)
        if pub is None:
            raise SubmissionRejected(f"rejected: {course}/{assignment} is not published")
        if not files:
            raise SubmissionRejected("rejected: the submission holds no files")
        if len(files) > MAX_FILES:
            raise SubmissionRejected(f"rejected: {len(files)} files, the limit is {MAX_FILES}")
        total = sum(len(d) for d in files.values())
        if total > MAX_SUBMISSION_BYTES:
            raise SubmissionRejected(f"rejected: {total >> 20} MiB, the limit is {MAX_SUBMISSION_BYTES >> 20} MiB")
        for name in files:
            if not FILE_NAME.match(name):
                raise SubmissionRejected(f"rejected: file name {name!r} is not allowed (letters, digits, '.', '_', "
                                         "'-'; no folders; at most 100 characters)")
        now = time.time() if now is None else now  # the server's clock, whatever the client says
        sub_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:8]}"
        folder = self.course_dir(course, "submissions", user, assignment, sub_id)
        staging = folder.with_name(f".{sub_id}.tmp")
        staging.mkdir(parents=True, mode=0o700)
        digest = hashlib.sha256()
        for name in sorted(files):
            (staging / name).write_bytes(files[name])
            digest.update(name.encode() + b"\0" + files[name])
        os.replace(staging, folder)  # whole or not at all
        row = {"id": sub_id, "course": course, "assignment": assignment, "student": user, "submitted_at": now,
               "late_s": max(0.0, now - pub["due_at"]), "sha256": digest.hexdigest(), "path": str(folder)}
        with self.engine.begin() as conn:
            conn.execute(sa.insert(gb.submissions).values(**row))
        self.events.submitted(row)
        return row

    def submissions_of(self, course: str, assignment: str, user: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(gb.submissions).where(
                gb.submissions.c.course == course, gb.submissions.c.assignment == assignment,
                gb.submissions.c.student == user).order_by(gb.submissions.c.submitted_at)).mappings()]


def build_release(notebook_python: str, a: Assignment, dest: Path) -> None:
    """The learners' version of an assignment (nbgrader generate_assignment) into dest, which must not exist."""
    build = subprocess.run(
        [notebook_python, "-m", "assessments.release_build", str(a.folder), str(dest), a.course_id, a.id],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1",
             "PATH": f"{Path(notebook_python).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    if build.returncode != 0:
        raise StoreError(f"building the release of {a.course_id}/{a.id} failed: "
                         f"{(build.stderr or build.stdout).strip()[-1200:]}")


def check_user(user: str) -> None:
    if not USER_NAME.match(user or ""):
        raise StoreError(f"{user!r} is not a valid user name (lower-case letters, digits, '_' and '-')")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise StoreError(f"no account named {user!r} on this system: create it (or add it to the directory) first")
