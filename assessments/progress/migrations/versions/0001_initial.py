"""The first schema: events, and the tables derived from them.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

USER = sa.String(32)
SLUG = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("user", USER),
        sa.Column("course", SLUG),
        sa.Column("assignment", SLUG),
        sa.Column("occurred_at", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_user_occurred_at", "events", ["user", "occurred_at"])
    op.create_index("ix_events_course_type", "events", ["course", "type"])

    op.create_table(
        "assignments",
        sa.Column("course", SLUG, nullable=False),
        sa.Column("assignment", SLUG, nullable=False),
        sa.Column("released_at", sa.Float),
        sa.Column("release_event_at", sa.Float),
        sa.Column("due_at", sa.Float),
        sa.Column("max_score", sa.Float),
        sa.Column("fetched", sa.Integer, nullable=False),
        sa.Column("submitted", sa.Integer, nullable=False),
        sa.Column("graded", sa.Integer, nullable=False),
        sa.Column("feedback", sa.Integer, nullable=False),
        sa.Column("score_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("course", "assignment", name="pk_assignments"),
    )

    op.create_table(
        "learner_assignments",
        sa.Column("course", SLUG, nullable=False),
        sa.Column("user", USER, nullable=False),
        sa.Column("assignment", SLUG, nullable=False),
        sa.Column("fetched_at", sa.Float),
        sa.Column("submitted_at", sa.Float),
        sa.Column("submissions", sa.Integer, nullable=False),
        sa.Column("graded_at", sa.Float),
        sa.Column("grade_event", sa.String(36)),
        sa.Column("score", sa.Float),
        sa.Column("max_score", sa.Float),
        sa.Column("feedback_at", sa.Float),
        sa.Column("last_event_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("course", "user", "assignment", name="pk_learner_assignments"),
    )
    op.create_index("ix_learner_assignments_user_course", "learner_assignments", ["user", "course"])
    submitted = sa.text("submitted_at IS NOT NULL")
    op.create_index("ix_learner_assignments_submitted", "learner_assignments", ["course", "assignment", "user"],
                    sqlite_where=submitted, postgresql_where=submitted)

    op.create_table(
        "learner_courses",
        sa.Column("course", SLUG, nullable=False),
        sa.Column("user", USER, nullable=False),
        sa.Column("fetched", sa.Integer, nullable=False),
        sa.Column("submitted", sa.Integer, nullable=False),
        sa.Column("graded", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("max_score", sa.Float, nullable=False),
        sa.Column("last_activity_at", sa.Float),
        sa.Column("completed_at", sa.Float),
        sa.PrimaryKeyConstraint("course", "user", name="pk_learner_courses"),
    )
    op.create_index("ix_learner_courses_user", "learner_courses", ["user"])

    op.create_table(
        "sessions",
        sa.Column("session", sa.String(128), nullable=False),
        sa.Column("user", USER, nullable=False),
        sa.Column("course", SLUG, nullable=False),
        sa.Column("profile", SLUG, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("stopped_at", sa.Float),
        sa.Column("duration_s", sa.Float),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("session", name="pk_sessions"),
    )
    op.create_index("ix_sessions_user_course", "sessions", ["user", "course"])

    op.create_table(
        "gpu_usage",
        sa.Column("user", USER, nullable=False),
        sa.Column("course", SLUG, nullable=False),
        sa.Column("sessions", sa.Integer, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("user", "course", name="pk_gpu_usage"),
    )
    op.create_index("ix_gpu_usage_course", "gpu_usage", ["course"])

    op.create_table(
        "track_completions",
        sa.Column("user", USER, nullable=False),
        sa.Column("track", SLUG, nullable=False),
        sa.Column("completed_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("user", "track", name="pk_track_completions"),
    )


def downgrade() -> None:
    for table in ("track_completions", "gpu_usage", "sessions", "learner_courses", "learner_assignments",
                  "assignments", "events"):
        op.drop_table(table)
