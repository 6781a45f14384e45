"""The hub's own SQLite database in write-ahead-log mode.

JupyterHub opens SQLite in its default rollback-journal mode, where every commit costs several
fsyncs (the journal, the database, the journal's removal), and the hub commits on most
requests: a token's or a server's last activity, each step of a spawn. Those fsyncs run on the
hub's one event loop; when a workshop pressed start at once they were a quarter of py-spy's
samples of the hub (benchmarks/README.md). In WAL mode a commit is one append and one fsync of
the log, and with ``synchronous=FULL`` it is as durable as before: on disk before the request
that made it is answered. The progress database runs the same way (assessments/progress/db.py).

WAL needs the database on a local filesystem (it uses shared memory beside the file);
``hub.db_url`` can point the hub at PostgreSQL instead.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine


def _wal_on_connect(dbapi_connection, _connection_record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def sqlite_in_wal_mode() -> None:
    """Every SQLite connection this process opens (the hub's database) uses WAL; idempotent."""
    if not event.contains(Engine, "connect", _wal_on_connect):
        event.listen(Engine, "connect", _wal_on_connect)
