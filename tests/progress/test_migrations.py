"""The schema comes from the Alembic migrations, and they agree with the models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from assessments.progress import db, models


def test_migrated_schema_equals_the_models(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": db.VERSION_TABLE})
        assert compare_metadata(context, models.metadata) == []
        assert db.current_revision(conn) == "0003"
        tables = set(sa.inspect(conn).get_table_names())
    assert tables == {t.name for t in models.metadata.sorted_tables} | {db.VERSION_TABLE}


def test_upgrade_twice_is_harmless_and_leaves_the_hubs_alembic_version_alone(database_url):
    # The progress tables may share a PostgreSQL database with the hub, whose Alembic keeps
    # its own revision in alembic_version.
    engine = db.engine_for(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('hub-revision')")
    db.upgrade(database_url)
    db.upgrade(database_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == ["hub-revision"]
        assert db.current_revision(conn) == "0003"
    db.downgrade(engine, "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"alembic_version", db.VERSION_TABLE}
    engine.dispose()


def test_sessions_recorded_before_slurm_accounting_are_kept_and_wait_for_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    db.upgrade(url, "0002")
    engine = db.engine_for(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO sessions (session, user, course, profile, gpus, started_at, gpu_seconds) "
                             "VALUES ('academy-41', 'learner1', 'hpc-101', 'gpu-h200-1', 1, 1764979200, 0)")
    db.upgrade(url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(models.sessions)).one()
    assert (row.session, row.gpus, row.accounted, row.end_state) == ("academy-41", 1, False, None)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_and_syncs_every_commit(tmp_path):
    engine = db.engine_for(f"sqlite:///{tmp_path / 'p.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2      # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
    engine.dispose()


def test_database_urls_are_checked_and_postgresql_goes_through_psycopg():
    assert db.normalize_url("postgresql://academy@db01/progress") == "postgresql+psycopg://academy@db01/progress"
    assert db.normalize_url("sqlite:////var/lib/academy/progress.sqlite").startswith("sqlite:")
    for bad in ("mysql://x@y/z", "not a url"):
        try:
            db.normalize_url(bad)
        except db.DatabaseError as e:
            assert "accepted: sqlite:///PATH, postgresql://USER@HOST/DB" in str(e)
        else:
            raise AssertionError(f"{bad} accepted")
