"""Progress events: what the platform's parts report, how each is checked, and how it is recorded.

An event, as emitters send it (outbox.py) and the service receives it (POST api/events):

    {"id": "<UUID, chosen once by the emitter>", "type": "assignment_submitted",
     "user": "learner1", "course": "llm-101", "assignment": "tokenization",
     "occurred_at": 1767225600.0, "payload": {"submission": "20260101T000000-1a2b3c4d"}}

`ingest` records a batch in the caller's transaction: the events with ON CONFLICT DO NOTHING on
their id (a replay is reported as a duplicate and changes nothing), then the derived tables of
models.py for the new ones only (folds.py). Either all of it commits or none of it does.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from . import db, folds
from .models import DERIVED, events

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")      # as assessments.exchange.store and the config schema
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")           # course, assignment, track and profile ids
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
MAX_PAYLOAD_BYTES = 4096
MAX_BATCH = 5000
EARLIEST = 1577836800.0                                   # 2020-01-01: older times are a unit mistake
FUTURE_SLACK_S = 86400                                    # emitters' clocks may run a little ahead


class EventError(ValueError):
    """An event that cannot be accepted; `field` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


# --- checks of single values: each returns the clean value or raises EventError --------------

def _name(pattern: re.Pattern, accepted: str) -> Callable[[str, Any], str]:
    def check(where: str, value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise EventError(where, f"{_show(value)} is not accepted; expected {accepted}")
        return value
    return check


def _number(low: float, high: float, integer: bool = False) -> Callable[[str, Any], float]:
    kind = "an integer" if integer else "a number"

    def check(where: str, value: Any) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value) or not low <= value <= high:
            raise EventError(where, f"{_show(value)} is not accepted; expected {kind} from {low:g} to {high:g}")
        return value
    return check


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


user_name = _name(USER_NAME, "a Unix user name (a-z, 0-9, '_', '-'; up to 32 characters)")
slug = _name(SLUG, "lower-case letters, digits and '-', up to 64 characters")
session_id = _name(SESSION_ID, "letters, digits and '_.:/-', up to 128 characters")
gpu_count = _number(0, 1024, integer=True)
duration = _number(0, 31 * 86400)
points = _number(0, 1e6)
epoch = _number(EARLIEST, 4102444800)                      # up to 2100


@dataclass(frozen=True)
class Spec:
    """What one event type carries: required and optional top-level names, payload fields."""
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    payload: dict[str, Callable] = field(default_factory=dict)           # required payload fields
    payload_optional: dict[str, Callable] = field(default_factory=dict)


_graded = {"score": points, "max_score": _number(0.001, 1e6)}
_item = ("user", "course", "assignment")
TYPES: dict[str, Spec] = {
    # The spawner, when the session's server is up and when it has ended (duration: wall time used).
    "session_started": Spec(("user",), ("course",), {"session": session_id, "profile": slug, "gpus": gpu_count}),
    "session_stopped": Spec(("user",), ("course",), {"session": session_id, "profile": slug, "gpus": gpu_count,
                                                     "duration_s": duration}, {"reason": slug}),
    # Slurm's accounting (sacct), once the job has ended: what counts, however the session ended.
    "session_accounted": Spec(("user",), ("course",), {"session": session_id, "profile": slug, "gpus": gpu_count,
                                                       "duration_s": duration, "started_at": epoch, "ended_at": epoch,
                                                       "state": slug}),
    # The exchange and the grader.
    "assignment_released": Spec(("course", "assignment"), (), {"due_at": epoch, "max_score": _graded["max_score"]}),
    "assignment_fetched": Spec(_item),
    "assignment_submitted": Spec(_item, (), {}, {"submission": session_id, "late_s": _number(0, 1e9)}),
    "assignment_autograded": Spec(_item, (), _graded, {"submission": session_id}),
    "score_recorded": Spec(_item, (), _graded, {"grader": user_name}),       # a trainer's (manual) grade
    "feedback_released": Spec(_item),
    # Completion (certificates).
    "course_completed": Spec(("user", "course")),
    "track_completed": Spec(("user",), (), {"track": slug}),
}
TOP_LEVEL = {"id", "type", "user", "course", "assignment", "occurred_at", "payload"}
_NAME_CHECKS = {"user": user_name, "course": slug, "assignment": slug}


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    occurred_at: float
    user: str | None = None
    course: str | None = None
    assignment: str | None = None
    payload: dict = field(default_factory=dict)

    def row(self, source: str, received_at: float) -> dict:
        return {"id": self.id, "type": self.type, "user": self.user, "course": self.course,
                "assignment": self.assignment, "occurred_at": self.occurred_at, "received_at": received_at,
                "source": source, "payload": self.payload}


def validate(raw: Any, where: str = "event", now: float | None = None) -> Event:
    """The checked event, or EventError naming the first field that is wrong and what is accepted."""
    if not isinstance(raw, dict):
        raise EventError(where, f"must be a JSON object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise EventError(f"{where}.{unknown[0]}", f"unknown field; accepted: {', '.join(sorted(TOP_LEVEL))}")
    for name in ("id", "type", "occurred_at"):
        if name not in raw:
            raise EventError(f"{where}.{name}", "is required")
    try:
        event_id = str(uuid.UUID(raw["id"])) if isinstance(raw["id"], str) and len(raw["id"]) <= 45 else None
    except ValueError:
        event_id = None
    if event_id is None:
        raise EventError(f"{where}.id", f"{_show(raw['id'])} is not a UUID")
    kind = raw["type"]
    spec = TYPES.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise EventError(f"{where}.type", f"{_show(kind)} is not an event type; accepted: {', '.join(TYPES)}")
    now = time.time() if now is None else now
    occurred = raw["occurred_at"]
    if not isinstance(occurred, (int, float)) or isinstance(occurred, bool) or not math.isfinite(occurred) \
            or not EARLIEST <= occurred <= now + FUTURE_SLACK_S:
        raise EventError(f"{where}.occurred_at", f"{_show(occurred)} is not accepted; expected epoch seconds "
                                                 "from 2020-01-01 up to a day from now")
    names = {}
    for name in ("user", "course", "assignment"):
        value = raw.get(name)
        if value is None:
            if name in spec.required:
                raise EventError(f"{where}.{name}", f"is required for {kind} events")
            continue
        if name not in spec.required and name not in spec.optional:
            raise EventError(f"{where}.{name}", f"is not part of {kind} events")
        names[name] = _NAME_CHECKS[name](f"{where}.{name}", value)
    payload = raw.get("payload", {})
    if not isinstance(payload, dict):
        raise EventError(f"{where}.payload", f"must be a JSON object, not {type(payload).__name__}")
    try:
        size = len(json.dumps(payload, allow_nan=False))
    except ValueError:
        raise EventError(f"{where}.payload", "must be plain JSON (no NaN or infinity)")
    if size > MAX_PAYLOAD_BYTES:
        raise EventError(f"{where}.payload", f"is {size} bytes; at most {MAX_PAYLOAD_BYTES} are accepted")
    clean = dict(payload)
    for name, check in spec.payload.items():
        if name not in payload:
            raise EventError(f"{where}.payload.{name}", f"is required for {kind} events")
        clean[name] = check(f"{where}.payload.{name}", payload[name])
    for name, check in spec.payload_optional.items():
        if payload.get(name) is not None:
            clean[name] = check(f"{where}.payload.{name}", payload[name])
    if "score" in spec.payload and clean["score"] > clean["max_score"]:
        raise EventError(f"{where}.payload.score",
                         f"{clean['score']:g} is more than max_score {clean['max_score']:g}")
    return Event(event_id, kind, float(occurred), payload=clean, **names)


def validate_batch(raw: Any, now: float | None = None) -> tuple[list[Event], list[dict]]:
    """Every event of a batch checked: (the good ones, one {"index", "id", "field", "error"} per bad one)."""
    if not isinstance(raw, list):
        raise EventError("events", f"must be a JSON list, not {type(raw).__name__}")
    if len(raw) > MAX_BATCH:
        raise EventError("events", f"has {len(raw)} events; at most {MAX_BATCH} are accepted in one request")
    good, bad = [], []
    for i, item in enumerate(raw):
        try:
            good.append(validate(item, f"events[{i}]", now))
        except EventError as e:
            bad.append({"index": i, "id": item.get("id") if isinstance(item, dict) else None,
                        "field": e.field, "error": str(e)})
    return good, bad


# --- ingestion ---------------------------------------------------------------------------------

def ingest(conn: sa.Connection, batch: Iterable[Event | dict], source: str = "",
           now: float | None = None) -> tuple[int, int]:
    """Record a batch in conn's transaction: (events newly accepted, duplicates ignored).

    Dicts are validated first; one bad event raises EventError (naming it) before anything is written.
    """
    now = time.time() if now is None else now
    checked = [e if isinstance(e, Event) else validate(e, f"events[{i}]", now) for i, e in enumerate(batch)]
    unique = list({e.id: e for e in reversed(checked)}.values())[::-1]   # first of each id
    if not unique:
        return 0, 0
    if conn.dialect.name == "postgresql":      # one writer at a time: the folds below read, then write
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": db.WRITE_LOCK})
    stmt = folds.insert(conn, events).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
    new_ids = set(conn.execute(stmt, [e.row(source, now) for e in unique]).scalars())
    new = [e for e in unique if e.id in new_ids]
    folds.apply(conn, new)
    return len(new), len(checked) - len(new)


def rebuild(conn: sa.Connection, chunk: int = 2000) -> int:
    """Recompute every derived table from `events` (repair, or after a change of fold); the count."""
    for table in DERIVED:
        conn.execute(sa.delete(table))
    count, last = 0, ""
    while True:
        rows = conn.execute(sa.select(events).where(events.c.id > last).order_by(events.c.id).limit(chunk)).all()
        if not rows:
            return count
        folds.apply(conn, [Event(r.id, r.type, r.occurred_at, r.user, r.course, r.assignment, r.payload) for r in rows])
        count, last = count + len(rows), rows[-1].id
