"""The course store: published assignments, submissions and grading batches, root only.

    <root>/<course>/source/<assignment>/        the trainer's notebooks (solutions, hidden tests)
    <root>/<course>/release/<assignment>/       what learners fetch (nbgrader generate_assignment)
    <root>/<course>/submissions/<student>/<assignment>/<id>/   one directory per submission
    <root>/<course>/grading/<batch>/            manifest, results, graded notebooks, job logs
    <root>/<course>/feedback/<student>/<assignment>/           released feedback (HTML)

Learners never touch these directories: they fetch and submit through the exchange service,
which stamps each submission with the server's time and the authenticated owner. That replaces
nbgrader's world-writable exchange directory, where anyone may drop a file under any name.

The store shares its filesystem with the gradebook (and, on one host, with the hub's database and
Slurm's state), so what a learner may put in it is bounded: a size per submission, a number per
hour and assignment, a quota over all their submissions; only the latest ``keep_submissions`` of
an assignment are kept, besides every graded one. A refused or failed submission leaves nothing.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from courses.catalogue import Assignment

from ..courseware.release import ReleaseError, build_release
from ..gradebook import tables as gb
from ..gradebook.db import open_gradebook, url_from_config
from ..gradebook.enrolment import Enrolment
from ..progress.emit import ProgressEvents, outbox_for

ROOT = Path(__file__).resolve().parents[2]   # the checkout (or site-packages)
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_FILES = 50
RATE_WINDOW_S = 3600
# A write that failed for want of room (a full disk, a quota, a file-size limit), not for a bug.
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StoreError(Exception):
    """Something a user asked for that cannot be done; the message says what and why."""


class SubmissionRejected(StoreError):
    """A submission that was refused; nothing of it was stored. ``status``: the HTTP answer that fits."""
    status = 403


class SubmissionTooLarge(SubmissionRejected):
    status = 413


class SubmissionRateLimited(SubmissionRejected):
    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class StoreFull(SubmissionRejected):
    status = 507


@dataclass
class Store:
    root: Path
    engine: sa.Engine
    notebook_python: str
    late_penalty_per_day: float = 0.1
    late_grace_s: float = 300
    events: ProgressEvents = field(default_factory=lambda: ProgressEvents(None))
    submission_max_bytes: int = 20 << 20
    submissions_per_hour: int = 20          # per learner and assignment
    learner_quota_bytes: int = 500 << 20    # per learner, every course of this store together
    keep_submissions: int = 3               # per learner and assignment; graded ones are kept besides

    def __post_init__(self):
        self.enrolment = Enrolment(self.engine)   # who may fetch, submit, grade (the gradebook's API)

    @classmethod
    def from_config(cls, cfg: dict) -> "Store":
        a = cfg["assessments"]
        root = Path(a["root"])
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        # A service that never stores a submission (progress) is handed no limits: the fields' defaults.
        limits = {field: read(a[key]) for key, (field, read) in LIMIT_KEYS.items() if key in a}
        return cls(root, open_gradebook(url_from_config(cfg)), str(Path(cfg["notebook_env"]) / "bin" / "python"),
                   a["late_penalty_per_day"], a["late_grace_s"], ProgressEvents(outbox_for(cfg)), **limits)

    def read(self, query, *args):
        """query(conn, *args) on a connection of its own (a gradebook query from tables.py)."""
        with self.engine.connect() as conn:
            return query(conn, *args)

    def course_dir(self, course: str, *parts: str) -> Path:
        return self.root.joinpath(course, *parts)

    # --- publishing ----------------------------------------------------------------------------

    def publish(self, a: Assignment, now: float | None = None, due_at: float | None = None) -> dict:
        """Copy the source in, build the release with nbgrader, record the deadline. Re-publishing
        replaces the files and keeps the original release time and deadline unless one is given."""
        now = time.time() if now is None else now
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=self.root))
        try:
            shutil.copytree(a.folder, staging / "source", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            try:
                build_release(self.notebook_python, a, staging / "release")
            except ReleaseError as e:
                raise StoreError(str(e)) from None
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
        if self.enrolment.find_role(course, user) != "learner":
            raise SubmissionRejected(f"rejected: {user} is not a learner of {course}")
        with self.engine.connect() as conn:
            pub = gb.publication(conn, course, assignment)
        if pub is None:
            raise SubmissionRejected(f"rejected: {course}/{assignment} is not published")
        if not files:
            raise SubmissionRejected("rejected: the submission holds no files")
        if len(files) > MAX_FILES:
            raise SubmissionRejected(f"rejected: {len(files)} files, the limit is {MAX_FILES}")
        for name in files:
            if not FILE_NAME.fullmatch(name):
                raise SubmissionRejected(f"rejected: file name {name!r} is not allowed (letters, digits, '.', '_', "
                                         "'-'; no folders; at most 100 characters)")
        total = sum(len(d) for d in files.values())
        if total > self.submission_max_bytes:
            size, limit = _sizes(total, self.submission_max_bytes)
            raise SubmissionTooLarge(f"rejected: {size} is over the {limit} a submission may hold")
        now = time.time() if now is None else now  # the server's clock, whatever the client says
        self._check_rate(course, assignment, user, now)
        # What this submission will prune counts as freed: a learner at the quota can still resubmit.
        freed = sum(_folder_bytes(self.course_dir(course, "submissions", user, assignment, s["id"]))
                    for s in self._prunable(course, assignment, user, self.keep_submissions - 1))
        used = self.stored_bytes(user)
        if used - freed + total > self.learner_quota_bytes:
            size, quota = _sizes(used - freed + total, self.learner_quota_bytes)
            raise SubmissionTooLarge(
                f"rejected: with this submission ({human_size(total)}) your stored submissions would take {size}, "
                f"over your quota of {quota} (all courses together; {human_size(used)} used); ask your trainer")
        sub_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:8]}"
        folder = self.course_dir(course, "submissions", user, assignment, sub_id)
        digest = self._write(folder, files)
        row = {"id": sub_id, "course": course, "assignment": assignment, "student": user, "submitted_at": now,
               "late_s": max(0.0, now - pub["due_at"]), "sha256": digest, "path": str(folder)}
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(gb.submissions).values(**row))
                conn.execute(sa.insert(gb.recent_submissions).values(
                    submission_id=sub_id, course=course, assignment=assignment, student=user, submitted_at=now))
        except Exception as e:
            shutil.rmtree(folder, ignore_errors=True)  # a folder without its row would count for no one
            if isinstance(e, sa.exc.OperationalError) and _sqlite_full(e):
                raise StoreFull(STORE_FULL) from e
            raise
        self.events.submitted(row)
        self.prune(course, assignment, user)
        return row

    def _write(self, folder: Path, files: dict[str, bytes]) -> str:
        """Write the files into folder, whole or not at all; their digest. A full disk is StoreFull."""
        staging = folder.with_name(f".{folder.name}.tmp")
        digest = hashlib.sha256()
        try:
            staging.mkdir(parents=True, mode=0o700)
            for name in sorted(files):
                (staging / name).write_bytes(files[name])
                digest.update(name.encode() + b"\0" + files[name])
            os.replace(staging, folder)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            if e.errno in NO_ROOM:
                raise StoreFull(STORE_FULL) from e
            raise
        return digest.hexdigest()

    def _check_rate(self, course: str, assignment: str, user: str, now: float) -> None:
        t = gb.recent_submissions.c
        mine = (t.course == course, t.assignment == assignment, t.student == user)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(gb.recent_submissions).where(*mine, t.submitted_at <= now - RATE_WINDOW_S))
            times = sorted(conn.execute(sa.select(t.submitted_at).where(*mine)).scalars())
        if len(times) >= self.submissions_per_hour:
            # the oldest ones of the window have to age out before one more fits
            at = times[len(times) - self.submissions_per_hour] + RATE_WINDOW_S
            wait = max(1, math.ceil(at - now))
            raise SubmissionRateLimited(
                f"rejected: {self.submissions_per_hour} submissions of {course}/{assignment} an hour is the limit; "
                f"the next one is accepted from {time.strftime('%H:%M:%S UTC', time.gmtime(at))} "
                f"(in {math.ceil(wait / 60)} min)", retry_after=wait)

    def stored_bytes(self, user: str) -> int:
        """Bytes of every submission a learner has in this store, all courses together."""
        return sum(_folder_bytes(course / "submissions" / user) for course in self.root.iterdir()
                   if course.is_dir() and not course.name.startswith("."))

    def _prunable(self, course: str, assignment: str, user: str, keep: int) -> list[dict]:
        """Submissions older than the latest ``keep`` that nothing needs: no result, in no grading batch."""
        subs = self.submissions_of(course, assignment, user)
        older = subs[:max(0, len(subs) - keep)]
        if not older:
            return []
        with self.engine.connect() as conn:
            graded = set(conn.execute(sa.select(gb.results.c.submission_id).where(
                gb.results.c.submission_id.in_([s["id"] for s in older]))).scalars())
        # A batch lists what it grades before any result is recorded; its collect needs the row.
        grading = set()
        for manifest in self.course_dir(course, "grading").glob("*/manifest.json"):
            text = manifest.read_text()
            grading |= {s["id"] for s in older if s["id"] in text}
        return [s for s in older if s["id"] not in graded and s["id"] not in grading]

    def prune(self, course: str, assignment: str, user: str) -> list[str]:
        """Remove a learner's submissions past the latest ``keep_submissions`` (graded ones stay); their ids."""
        pruned = []
        for s in self._prunable(course, assignment, user, self.keep_submissions):
            with self.engine.begin() as conn:
                conn.execute(sa.delete(gb.submissions).where(gb.submissions.c.id == s["id"]))
            # the row goes first: a folder left behind wastes room, a row without its folder breaks grading
            shutil.rmtree(self.course_dir(course, "submissions", user, assignment, s["id"]), ignore_errors=True)
            pruned.append(s["id"])
        return pruned

    def submissions_of(self, course: str, assignment: str, user: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(gb.submissions).where(
                gb.submissions.c.course == course, gb.submissions.c.assignment == assignment,
                gb.submissions.c.student == user).order_by(gb.submissions.c.submitted_at)).mappings()]


def size_bytes(size: str) -> int:
    """A configured size such as 512M or 20G, in bytes (M, G, T are binary: MiB, GiB, TiB)."""
    return int(size[:-1]) << {"M": 20, "G": 30, "T": 40}[size[-1]]


# config key (assessments.*) -> Store field, and how the value is read
LIMIT_KEYS = {"submission_max_size": ("submission_max_bytes", size_bytes),
              "submissions_per_hour": ("submissions_per_hour", int),
              "learner_quota": ("learner_quota_bytes", size_bytes),
              "keep_submissions": ("keep_submissions", int)}
STORE_FULL = "the course store is full; your submission was not stored, nothing earlier was lost; tell your trainer"


def human_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def _sizes(n: int, limit: int) -> tuple[str, str]:
    """Both sizes readable, and different when they differ (20 MiB and a byte is not '20 MiB')."""
    a, b = human_size(n), human_size(limit)
    return (a, b) if a != b else (f"{n:,} bytes", f"{limit:,} bytes")


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # removed while we counted
    return total


def _sqlite_full(e: sa.exc.OperationalError) -> bool:
    return getattr(e.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
