"""When a course is passed and a programme track is complete, detected from the ingested grades.

The rule (a named constant, not configuration, so every certificate means the same thing):
a learner **passes a course** when, for every assignment the catalogue lists for it, their
latest recorded score (the grader's, or a trainer's later one: queries.status's "latest grade
counts") is at least PASS_FRACTION of that grade's points. A **track** (the courses whose
catalogue files name it, in prerequisite order) is complete when every one of its courses is
passed.

Both are recorded as events of the core's own types (course_completed, track_completed), with
ids derived from (learner, course) and (learner, track), in the same transaction as the grade
that earned them: the derived tables stay rebuildable from `events` alone, and detecting the
same completion twice (a replayed grade, two services) records it once. A completion is never
taken back: a later, lower regrade leaves the course passed and the certificate issued.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from courses.catalogue import GpuBudget

from . import events as ev
from .models import learner_assignments, learner_courses, track_completions
from .outbox import stable_id

PASS_FRACTION = 0.5
SOURCE = "academy-progress"            # the `source` of the events this module records
GRADES = {"assignment_autograded", "score_recorded"}
TRACK_TITLES = {"hpc-engineering": "HPC engineering", "llm-engineering": "LLM engineering"}
_LEVELS = {"introductory": 0, "intermediate": 1, "advanced": 2}
NO_BUDGET = GpuBudget()


@dataclass(frozen=True)
class Programme:
    """What completion is measured against: each course's assignments, each track's courses."""
    courses: dict[str, tuple[str, ...]]          # course -> its assignments, catalogue order
    tracks: dict[str, tuple[str, ...]]           # track -> its courses, prerequisites first
    course_titles: dict[str, str]
    track_titles: dict[str, str]
    budgets: dict[str, GpuBudget] = field(default_factory=dict)   # course -> its GPU-hour budget, if any

    def learner_budget(self, course: str) -> float | None:
        return self.budgets.get(course, NO_BUDGET).learner_gpu_hours

    def course_budget(self, course: str) -> float | None:
        return self.budgets.get(course, NO_BUDGET).course_gpu_hours

    @classmethod
    def from_catalogue(cls, catalogue: dict) -> "Programme":
        """From courses.catalogue.load_catalogue()'s courses."""
        order: list[str] = []

        def visit(course_id: str) -> None:
            if course_id in order:
                return
            for pre in sorted(catalogue[course_id].prerequisites):
                visit(pre)
            order.append(course_id)
        for c in sorted(catalogue.values(), key=lambda c: (_LEVELS.get(c.level, 9), c.id)):
            visit(c.id)
        tracks: dict[str, list[str]] = {}
        for course_id in order:
            tracks.setdefault(catalogue[course_id].track, []).append(course_id)
        return cls(courses={c.id: tuple(a.id for a in c.assignments) for c in catalogue.values()},
                   tracks={t: tuple(cs) for t, cs in sorted(tracks.items())},
                   course_titles={c.id: c.title for c in catalogue.values()},
                   track_titles={t: TRACK_TITLES.get(t, t.replace("-", " ").capitalize()) for t in tracks},
                   budgets={c.id: c.gpu_budget for c in catalogue.values() if c.gpu_budget != NO_BUDGET})

    def track_of(self, course: str) -> str | None:
        return next((t for t, cs in self.tracks.items() if course in cs), None)

    def track_title(self, track: str) -> str:
        return self.track_titles.get(track, track)


class LiveProgramme:
    """The Programme of a courses.catalogue.LiveCatalogue, rebuilt when the catalogue reloads: a
    course published since the service started has its pages, completion and certificates."""

    def __init__(self, catalogue):
        self.catalogue = catalogue
        self._version = -1
        self._programme: Programme | None = None

    def current(self) -> Programme:
        courses = self.catalogue.current()
        if self.catalogue.version != self._version or self._programme is None:
            self._programme, self._version = Programme.from_catalogue(courses), self.catalogue.version
        return self._programme

    def __getattr__(self, name):
        return getattr(self.current(), name)


def passed(scores: dict[str, tuple[float | None, float | None]], assignments: tuple[str, ...]) -> bool:
    """Whether (score, max_score) per assignment meets the pass rule for every assignment listed."""
    for a in assignments:
        score, top = scores.get(a, (None, None))
        if score is None or not top or score < PASS_FRACTION * top:
            return False
    return bool(assignments)


def record(conn: sa.Connection, programme: Programme, batch: list[ev.Event], now: float) -> list[tuple[str, str]]:
    """Record the completions that `batch` (just ingested in conn's transaction) earned.

    Returns the (learner, track) pairs whose track is complete and newly recorded, for certificates.
    """
    courses = _passed_courses(conn, programme, {(e.user, e.course) for e in batch if e.type in GRADES
                                                 and e.course in programme.courses})
    ev.ingest(conn, courses, source=SOURCE, now=now)
    # Tracks: from courses completed now, and from course_completed events another part sent.
    touched = {(e.user, programme.track_of(e.course)) for e in [*batch, *courses]
               if e.type == "course_completed" and programme.track_of(e.course)}
    tracks = _complete_tracks(conn, programme, touched)
    ev.ingest(conn, tracks, source=SOURCE, now=now)
    return [(e.user, e.payload["track"]) for e in tracks]


def _chunks(items: list, size: int = 300):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _passed_courses(conn: sa.Connection, programme: Programme, pairs: set[tuple[str, str]]) -> list[ev.Event]:
    if not pairs:
        return []
    la, lc = learner_assignments.c, learner_courses.c
    keys = sorted(pairs)
    # Only learners not yet through the course with a grade for as many assignments as it has:
    # most grades are not a course's last, and this keeps them to one primary-key read each.
    candidates = []
    for part in _chunks(keys):
        candidates += [(r.user, r.course) for r in conn.execute(
            sa.select(lc.user, lc.course, lc.graded).where(sa.tuple_(lc.course, lc.user).in_([(c, u) for u, c in part]),
                                                           lc.completed_at.is_(None)))
            if r.graded >= len(programme.courses[r.course])]
    scores: dict[tuple[str, str], dict] = {}
    for part in _chunks(candidates):
        for r in conn.execute(sa.select(la.user, la.course, la.assignment, la.score, la.max_score, la.graded_at)
                              .where(sa.tuple_(la.course, la.user).in_([(c, u) for u, c in part]),
                                     la.graded_at.is_not(None))):
            scores.setdefault((r.user, r.course), {})[r.assignment] = (r.score, r.max_score, r.graded_at)
    out = []
    for user, course in candidates:
        mine = scores.get((user, course), {})
        wanted = programme.courses[course]
        if not passed({a: v[:2] for a, v in mine.items()}, wanted):
            continue
        # When the last passing grade arrived: the same whatever order the grades came in.
        at = max(mine[a][2] for a in wanted)
        out.append(ev.Event(stable_id("course_completed", user, course), "course_completed", at, user=user,
                            course=course))
    return out


def _complete_tracks(conn: sa.Connection, programme: Programme, pairs: set[tuple[str, str]]) -> list[ev.Event]:
    if not pairs:
        return []
    lc, tc = learner_courses.c, track_completions.c
    users = sorted({u for u, _ in pairs})
    completed: dict[str, dict[str, float]] = {}
    recorded: set[tuple[str, str]] = set()
    for part in _chunks(users):
        for r in conn.execute(sa.select(lc.user, lc.course, lc.completed_at).where(
                lc.user.in_(part), lc.completed_at.is_not(None))):
            completed.setdefault(r.user, {})[r.course] = r.completed_at
        recorded.update(tuple(r) for r in conn.execute(sa.select(tc.user, tc.track).where(tc.user.in_(part))))
    out = []
    for user, track in sorted(pairs):
        mine = completed.get(user, {})
        courses = programme.tracks[track]
        if (user, track) in recorded or not all(c in mine for c in courses):
            continue
        out.append(ev.Event(stable_id("track_completed", user, track), "track_completed",
                            max(mine[c] for c in courses), user=user, payload={"track": track}))
    return out
