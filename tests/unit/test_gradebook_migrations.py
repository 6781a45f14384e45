"""The gradebook's schema under Alembic (assessments.gradebook.db): a database made before
migrations existed (tests/unit/data/gradebook-before-migrations.sqlite, written by the code of
December 2026 with metadata.create_all: two submissions, their results, a hand grade, four
enrolments) is stamped and upgraded in place with every row kept; a fresh database gets exactly
the schema tables.py declares; HEAD names the last migration."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from assessments.gradebook import db, tables as gb
from assessments.gradebook.enrolment import Enrolment

BEFORE = Path(__file__).parent / "data" / "gradebook-before-migrations.sqlite"


def rows(engine, table):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table)).mappings()]


def test_a_gradebook_from_before_migrations_is_upgraded_in_place_with_every_row(tmp_path):
    copy = tmp_path / "gradebook.sqlite"
    shutil.copy(BEFORE, copy)
    old = db.engine_for(f"sqlite:///{copy}")
    before = {t.name: rows(old, t) for t in (gb.publications, gb.submissions, gb.results, gb.manual_grades,
                                             gb.enrolments, gb.recent_submissions)}
    with old.connect() as conn:
        assert db.current_revision(conn) is None and not sa.inspect(conn).has_table("enrolment_changes")
    old.dispose()

    engine = db.open_gradebook(f"sqlite:///{copy}")
    with engine.connect() as conn:
        assert db.current_revision(conn) == db.HEAD
    assert {name: rows(engine, getattr(gb, name)) for name in before} == before
    assert len(before["submissions"]) == 2 and before["manual_grades"][0]["score"] == 1.5
    with engine.connect() as conn:   # the counted score reads across the migrated tables as before
        assert gb.counted_score(conn, before["manual_grades"][0]["submission_id"]) == 8.5
    # The new table works on the migrated database: an enrolment change is logged.
    enrolment = Enrolment(engine)
    assert enrolment.remove("llm-101", "learner2")
    assert enrolment.find_changes(0) == (1, {"llm-101"})
    assert enrolment.find_members("llm-101") == ["learner1", "trainer1"]
    # Opening it again changes nothing.
    assert db.open_gradebook(f"sqlite:///{copy}") is not None
    assert rows(engine, gb.enrolment_changes)[0]["user"] == "learner2"


def test_a_fresh_gradebook_has_exactly_the_declared_schema(tmp_path):
    engine = db.open_gradebook(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), gb.metadata)
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == db.VERSION_TABLE)] == []
    db.downgrade(engine, "base")
    assert sa.inspect(engine).get_table_names() == [db.VERSION_TABLE]


def test_head_is_the_last_migration():
    script = ScriptDirectory.from_config(db.alembic_config())
    assert script.get_current_head() == db.HEAD
