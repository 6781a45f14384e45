"""The gradebook database: engines, and its schema migrations (Alembic).

SQLite in WAL mode by default (readers never wait on the grader's writes), any SQLAlchemy URL
in production. ``open_gradebook`` is how every process gets an engine: it brings the schema to
the latest revision first, so a process started after an upgrade never meets an old schema.

Databases made before migrations existed (``metadata.create_all``, until December 2026) hold the
tables of revision 0001 and no version table: they are stamped 0001, then upgraded. Processes
that start together (the exchange, the progress service, a CLI command) migrate one at a time:
on SQLite a lock file beside the database serializes them; on PostgreSQL, DDL is transactional.

    python -m assessments.gradebook.db upgrade URL              bring a database to the latest schema
    python -m assessments.gradebook.db revision URL -m "what"   write a new migration (autogenerate)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Not "alembic_version": the gradebook may share a PostgreSQL database with the hub's and the
# progress service's tables, each with its own Alembic history.
VERSION_TABLE = "gradebook_alembic_version"
BASELINE = "0001"   # the schema create_all made before migrations
HEAD = "0002"       # the latest revision (a test checks it against the migrations folder)


def url_from_config(cfg: dict) -> str:
    """assessments.database, or SQLite in the course store (assessments.root)."""
    a = cfg["assessments"]
    return a["database"] or f"sqlite:///{Path(a['root']) / 'gradebook.sqlite'}"


def engine_for(url: str) -> sa.Engine:
    """An engine on the gradebook, as it is (open_gradebook also migrates it)."""
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    return engine


def open_gradebook(url: str) -> sa.Engine:
    """An engine on the gradebook at the latest schema (migrated here when it is behind)."""
    engine = engine_for(url)
    with engine.connect() as conn:
        current = current_revision(conn)
    if current != HEAD:
        upgrade(engine)
    return engine


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Migrate to `revision`; a database from before migrations is stamped with the baseline first."""
    with _migration_lock(engine), engine.begin() as conn:
        cfg = alembic_config(conn)
        if current_revision(conn) is None and sa.inspect(conn).has_table("submissions"):
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    """Undo migrations down to `revision` ("base": drop every gradebook table)."""
    with _migration_lock(engine), engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: sa.Engine):
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("upgrade").add_argument("url")
    rev = sub.add_parser("revision")
    rev.add_argument("url", help="a database at the current head, compared with tables.py")
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "upgrade":
        upgrade(engine_for(args.url))
    else:
        command.revision(alembic_config(url=args.url), message=args.message, autogenerate=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
