"""The progress database (SQLAlchemy Core): the events as received, and what is derived from them.

`events` is the record: one row per event, keyed by the emitter's UUID, so a replayed event is
found and not counted twice. Every other table is derived from it in the same transaction as
the insert (see events.ingest), so a reader never sees an event without its effect, and each
derived value is an order-independent fold (earliest, latest, count, sum): events that arrive
late or out of order give the same result as in order, and the tables can be rebuilt from
`events` alone. Times are epoch seconds; user, course and assignment names are the platform's
(Unix user names, catalogue ids).

The schema is created by the Alembic migrations in migrations/, never by create_all; a test
checks that the migrations and these tables agree.
"""

from __future__ import annotations

import sqlalchemy as sa

# Named constraints and indexes, so migrations can refer to them on every backend.
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

USER = sa.String(32)
SLUG = sa.String(64)
TIME = sa.Float          # epoch seconds, like the gradebook

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.String(36), primary_key=True),      # the emitter's UUID: the idempotency key
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("user", USER),
    sa.Column("course", SLUG),
    sa.Column("assignment", SLUG),
    sa.Column("occurred_at", TIME, nullable=False),         # the emitter's clock
    sa.Column("received_at", TIME, nullable=False),         # the service's clock
    sa.Column("source", sa.String(64), nullable=False),     # the hub service that sent it
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index(None, "user", "occurred_at"),
    sa.Index(None, "course", "type"),
)

# A course's assignments as released (deadline, points); a placeholder row (released_at NULL)
# when a learner's event names an assignment whose release was not (yet) received.
assignments = sa.Table(
    "assignments", metadata,
    sa.Column("course", SLUG, primary_key=True),
    sa.Column("assignment", SLUG, primary_key=True),
    sa.Column("released_at", TIME),                         # first release
    sa.Column("release_event_at", TIME),                    # the latest release, whose values count
    sa.Column("due_at", TIME),
    sa.Column("max_score", sa.Float),
    # How many learners reached each step (kept per event, so a cohort page reads 30 rows, not 300,000).
    sa.Column("fetched", sa.Integer, nullable=False),
    sa.Column("submitted", sa.Integer, nullable=False),
    sa.Column("graded", sa.Integer, nullable=False),
    sa.Column("feedback", sa.Integer, nullable=False),
    sa.Column("score_sum", sa.Float, nullable=False),       # over the graded ones
)

# One learner's state in one assignment; the status is read from the times (queries.status).
learner_assignments = sa.Table(
    "learner_assignments", metadata,
    sa.Column("course", SLUG, primary_key=True),
    sa.Column("user", USER, primary_key=True),
    sa.Column("assignment", SLUG, primary_key=True),
    sa.Column("fetched_at", TIME),                          # first fetch
    sa.Column("submitted_at", TIME),                        # latest submission (the one that counts)
    sa.Column("submissions", sa.Integer, nullable=False),
    sa.Column("graded_at", TIME),                           # latest grade (autograde or trainer)
    sa.Column("grade_event", sa.String(36)),                # which event gave score (ties: highest id)
    sa.Column("score", sa.Float),
    sa.Column("max_score", sa.Float),
    sa.Column("feedback_at", TIME),                         # latest feedback release
    sa.Column("last_event_at", TIME, nullable=False),
    sa.Index(None, "user", "course"),
    # Who submitted what: a cohort's "behind" count reads only this (index-only, submitted rows only).
    sa.Index("ix_learner_assignments_submitted", "course", "assignment", "user",
             sqlite_where=sa.text("submitted_at IS NOT NULL"), postgresql_where=sa.text("submitted_at IS NOT NULL")),
)

# One learner in one course: the sums a cohort page sorts and filters on, kept per event.
learner_courses = sa.Table(
    "learner_courses", metadata,
    sa.Column("course", SLUG, primary_key=True),
    sa.Column("user", USER, primary_key=True),
    sa.Column("fetched", sa.Integer, nullable=False),       # assignments fetched
    sa.Column("submitted", sa.Integer, nullable=False),     # assignments submitted at least once
    sa.Column("graded", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),           # sum over graded assignments
    sa.Column("max_score", sa.Float, nullable=False),
    sa.Column("last_activity_at", TIME),
    sa.Column("completed_at", TIME),                        # first course_completed event
    sa.Index(None, "user"),
)

# A notebook session (Slurm job); GPU time counts once per session however often it is reported.
sessions = sa.Table(
    "sessions", metadata,
    sa.Column("session", sa.String(128), primary_key=True),
    sa.Column("user", USER, nullable=False),
    sa.Column("course", SLUG, nullable=False),              # "" when not tied to a course
    sa.Column("profile", SLUG, nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("started_at", TIME),
    sa.Column("stopped_at", TIME),
    sa.Column("duration_s", sa.Float),
    sa.Column("gpu_seconds", sa.Float, nullable=False),     # gpus x duration, once stopped
    sa.Column("end_state", sa.String(32)),                  # Slurm's final state (sacct), once accounted
    sa.Column("accounted", sa.Boolean, nullable=False, server_default=sa.false()),  # figures from sacct
    sa.Index(None, "user", "course"),
)

# GPU use per learner and course ("" = sessions outside any course): sums over `sessions`.
gpu_usage = sa.Table(
    "gpu_usage", metadata,
    sa.Column("user", USER, primary_key=True),
    sa.Column("course", SLUG, primary_key=True),
    sa.Column("sessions", sa.Integer, nullable=False),      # stopped sessions
    sa.Column("gpu_seconds", sa.Float, nullable=False),
    sa.Index(None, "course"),
)

track_completions = sa.Table(
    "track_completions", metadata,
    sa.Column("user", USER, primary_key=True),
    sa.Column("track", SLUG, primary_key=True),
    sa.Column("completed_at", TIME, nullable=False),        # first track_completed event
)

# Certificates are issued, not derived: a rebuild of the derived tables keeps them, and a row is
# never changed once written. One per learner and track (issuing twice finds the first). The
# id is random (128 bits) because the verification page is public: ids cannot be enumerated.
certificates = sa.Table(
    "certificates", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", USER, nullable=False),
    sa.Column("track", SLUG, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),            # as printed: the account's full name
    sa.Column("track_title", sa.String(200), nullable=False),
    sa.Column("completed_at", sa.Integer, nullable=False),        # whole epoch seconds (signed as such)
    sa.Column("issued_at", sa.Integer, nullable=False),
    sa.Column("pdf", sa.LargeBinary, nullable=False),             # the document as issued
    sa.Column("pdf_sha256", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),           # which signing key
    sa.Column("signature", sa.String(100), nullable=False),       # Ed25519 over the statement, base64
    sa.UniqueConstraint("user", "track"),
)

DERIVED = (assignments, learner_assignments, learner_courses, sessions, gpu_usage, track_completions)
