"""Who learns and who teaches which course: the gradebook's enrolment, and the log of its changes.

The exchange and the progress service ask this on every request, so a change applies at once.
Every change is also appended to ``enrolment_changes`` in the same transaction, which is how
what follows enrolment outside the gradebook (the hub's course groups, hub_groups.py) learns of
it within a second, without comparing everything on every round.
"""

from __future__ import annotations

import pwd
import re
import time

import sqlalchemy as sa

from . import tables as gb

ROLES = ("learner", "trainer")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class EnrolmentError(ValueError):
    """A user or role that cannot be enrolled; the message says what is accepted."""


def check_user(user: str) -> None:
    """A name the system knows, in the accepted form; EnrolmentError says which rule failed."""
    if not USER_NAME.fullmatch(user or ""):
        raise EnrolmentError(f"{user!r} is not a valid user name (lower-case letters, digits, '_' and '-')")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise EnrolmentError(f"no account named {user!r} on this system: create it (or add it to the directory) first")


class Enrolment:
    """The enrolment of one gradebook (an engine from db.open_gradebook)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def find_role(self, course: str, user: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(gb.enrolments.c.role).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user)).scalar()

    def find_courses(self, user: str) -> dict[str, str]:
        """{course: role} for every course `user` is enrolled in."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(gb.enrolments.c.course, gb.enrolments.c.role)
                                .where(gb.enrolments.c.user == user)).all()
        return {course: role for course, role in rows}

    def find_members(self, course: str, role: str | None = None) -> list[str]:
        q = sa.select(gb.enrolments.c.user).where(gb.enrolments.c.course == course)
        if role:
            q = q.where(gb.enrolments.c.role == role)
        with self.engine.connect() as conn:
            return sorted(conn.execute(q).scalars())

    def find_all(self) -> list[tuple[str, str, str]]:
        """(course, user, role) of every enrolment."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(gb.enrolments.c.course, gb.enrolments.c.user, gb.enrolments.c.role))]

    def add(self, course: str, user: str, role: str = "learner") -> bool:
        """Enrol (or change the role of) `user`; True if this changed anything."""
        check_user(user)
        if role not in ROLES:
            raise EnrolmentError(f"role {role!r} is not one of: {', '.join(ROLES)}")
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(gb.enrolments.c.role).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user)).scalar()
            if current == role:
                return False
            conn.execute(sa.delete(gb.enrolments).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user))
            conn.execute(sa.insert(gb.enrolments).values(course=course, user=user, role=role, enrolled_at=time.time()))
            _log_change(conn, course, user)
        return True

    def remove(self, course: str, user: str) -> bool:
        """Unenrol `user`; True if they were enrolled."""
        with self.engine.begin() as conn:
            removed = conn.execute(sa.delete(gb.enrolments).where(
                gb.enrolments.c.course == course, gb.enrolments.c.user == user)).rowcount > 0
            if removed:
                _log_change(conn, course, user)
        return removed

    def find_ever_enrolled(self, courses: set[str] | None = None) -> set[tuple[str, str]]:
        """(course, user) of everyone whose enrolment ever changed here (of `courses`, or all)."""
        q = sa.select(gb.enrolment_changes.c.course, gb.enrolment_changes.c.user).distinct()
        if courses is not None:
            q = q.where(gb.enrolment_changes.c.course.in_(sorted(courses)))
        with self.engine.connect() as conn:
            return {tuple(r) for r in conn.execute(q)}

    def find_changes(self, after: int) -> tuple[int, set[str]]:
        """(the latest change id, the courses changed since change id `after`)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(gb.enrolment_changes.c.id, gb.enrolment_changes.c.course)
                                .where(gb.enrolment_changes.c.id > after)).all()
            latest = conn.execute(sa.select(sa.func.max(gb.enrolment_changes.c.id))).scalar() or 0
        return max(latest, after), {course for _, course in rows}


def _log_change(conn: sa.Connection, course: str, user: str) -> None:
    conn.execute(sa.insert(gb.enrolment_changes).values(course=course, user=user, changed_at=time.time()))
