"""The gradebook as metadata.create_all made it before migrations (the baseline).

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

INDEXED = {"submissions": "ix_submissions_course_assignment_student",
           "recent_submissions": "ix_recent_submissions_course_assignment_student"}


def upgrade() -> None:
    op.create_table(
        "enrolments",
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("user", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("course", "user"),
    )
    op.create_table(
        "publications",
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("assignment", sa.String(64), nullable=False),
        sa.Column("released_at", sa.Float, nullable=False),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("points", sa.Float, nullable=False),
        sa.Column("notebooks", sa.Text, nullable=False),
        sa.Column("feedback_released_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("course", "assignment"),
    )
    op.create_table(
        "recent_submissions",
        sa.Column("submission_id", sa.String(40), nullable=False),
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("assignment", sa.String(64), nullable=False),
        sa.Column("student", sa.String(32), nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("submission_id"),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("course", sa.String(64), nullable=False),
        sa.Column("assignment", sa.String(64), nullable=False),
        sa.Column("student", sa.String(32), nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("late_s", sa.Float, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for table, index in INDEXED.items():
        op.create_index(index, table, ["course", "assignment", "student"])
    op.create_table(
        "manual_grades",
        sa.Column("submission_id", sa.String(40), nullable=False),
        sa.Column("grade_id", sa.String(100), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("grader", sa.String(32), nullable=False),
        sa.Column("graded_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"]),
        sa.PrimaryKeyConstraint("submission_id", "grade_id"),
    )
    op.create_table(
        "results",
        sa.Column("submission_id", sa.String(40), nullable=False),
        sa.Column("batch", sa.String(40), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("max_score", sa.Float, nullable=True),
        sa.Column("penalty", sa.Float, nullable=False),
        sa.Column("final_score", sa.Float, nullable=True),
        sa.Column("needs_manual", sa.Boolean, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("graded_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"]),
        sa.PrimaryKeyConstraint("submission_id"),
    )


def downgrade() -> None:
    for table in ("results", "manual_grades", "submissions", "recent_submissions", "publications", "enrolments"):
        op.drop_table(table)
