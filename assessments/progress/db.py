"""Engines for the progress database, and its schema migrations (Alembic).

SQLite (the default) runs in WAL mode with ``synchronous=FULL``. A SIGKILL never loses a
committed transaction in WAL mode at any setting (the WAL is written before COMMIT returns, and
the kernel keeps it), and an uncommitted one leaves nothing: the WAL frames without a commit
record are ignored on the next open. What FULL adds is that a commit is on disk (fsync of the
WAL) before the service answers 2xx: emitters delete their spooled events on that answer, so
with NORMAL a power cut right after it could lose events that exist nowhere else. Batched
ingestion pays one fsync per batch, not per event. PostgreSQL (production) is durable at commit
by default; ``postgresql://`` URLs are served by psycopg 3.

    python -m assessments.progress.db upgrade URL              bring a database to the latest schema
    python -m assessments.progress.db revision URL -m "what"   write a new migration (autogenerate)
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Not "alembic_version": the progress tables may share a PostgreSQL database with the hub's,
# which keeps its own Alembic version there.
VERSION_TABLE = "progress_alembic_version"
# pg_advisory_xact_lock key that serializes writers (ingestion, migrations) on PostgreSQL.
WRITE_LOCK = 0x61636164  # "acad"


class DatabaseError(ValueError):
    """A database URL the service cannot use; the message says what is accepted."""


def normalize_url(url: str) -> str:
    """The URL with its driver made explicit: SQLite, or PostgreSQL through psycopg 3."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"progress database URL {url!r} is not a URL; accepted: sqlite:///PATH, "
                            "postgresql://USER@HOST/DB")
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return url
    raise DatabaseError(f"progress database URL {parsed.render_as_string()!r}: backend {backend!r} is not "
                        "supported; accepted: sqlite:///PATH, postgresql://USER@HOST/DB")


def engine_for(url: str) -> sa.Engine:
    url = normalize_url(url)
    if sa.engine.make_url(url).get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        # Transactions are begun below, not by pysqlite (which begins late, and never IMMEDIATE).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn):
        # A writer takes the write lock first (waiting busy_timeout), so it never fails half-way
        # upgrading a read snapshot that another writer has moved on from.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("progress_write") else "BEGIN")

    return engine


@contextlib.contextmanager
def write_transaction(engine: sa.Engine):
    """A connection in a transaction that holds the database's write lock until it commits."""
    with engine.connect() as conn:
        conn.execution_options(progress_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            yield conn


def alembic_config(url: str | None = None, connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(url_or_engine: str | sa.Engine, revision: str = "head") -> None:
    """Migrate the database to `revision` (run at service start; safe to run again)."""
    _migrate(command.upgrade, url_or_engine, revision)


def downgrade(url_or_engine: str | sa.Engine, revision: str) -> None:
    """Undo migrations down to `revision` ("base": drop every progress table)."""
    _migrate(command.downgrade, url_or_engine, revision)


def _migrate(step, url_or_engine: str | sa.Engine, revision: str) -> None:
    engine = engine_for(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with write_transaction(engine) as conn:
            step(alembic_config(connection=conn), revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def current_revision(conn: sa.Connection) -> str | None:
    from alembic.migration import MigrationContext
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("upgrade").add_argument("url")
    rev = sub.add_parser("revision")
    rev.add_argument("url", help="a database at the current head, compared with models.py")
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "upgrade":
            upgrade(args.url)
        else:
            command.revision(alembic_config(args.url), message=args.message, autogenerate=True)
    except DatabaseError as e:
        parser.exit(2, f"{e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
