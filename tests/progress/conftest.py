"""Fixtures of the progress tests: a real PostgreSQL server next to SQLite, fresh databases on both.

`postgres_server` uses $ACADEMY_TEST_PG_URL when set (a server CI or a developer already runs,
the URL of a role that may CREATE DATABASE); otherwise it starts a throwaway cluster of Debian's
postgresql in a temporary directory, as the `postgres` user when run as root, reachable only on
its Unix socket, and removes it afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest
import sqlalchemy as sa

from assessments.progress import db

from ..support import free_port
from .pagesupport import Service

BACKENDS = ["sqlite", "postgresql"]


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (or set ACADEMY_TEST_PG_URL)")
    return os.path.dirname(found[-1])


@pytest.fixture(scope="session")
def postgres_server():
    """A SQLAlchemy URL (without database name) of a live PostgreSQL server."""
    if os.environ.get("ACADEMY_TEST_PG_URL"):
        yield os.environ["ACADEMY_TEST_PG_URL"].rstrip("/")
        return
    bin_dir = _pg_bin()
    base = tempfile.mkdtemp(prefix="academy-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:          # initdb refuses root: the cluster belongs to `postgres`
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = os.path.join(base, "data")
    try:
        subprocess.run([*as_user, f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        # The tests kill clients, never this server: fsync buys them nothing but time.
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "-t", "60",
                        "-o", f"-k {base} -p {port} -c listen_addresses= -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=90)
    except subprocess.CalledProcessError as e:
        log = open(os.path.join(base, "log")).read()[-2000:] if os.path.exists(os.path.join(base, "log")) else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {e.stderr.decode(errors='replace')[-2000:]}\n{log}")
    try:
        yield f"postgresql+psycopg://postgres@/?host={base}&port={port}"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _with_database(server_url: str, name: str) -> str:
    url = sa.engine.make_url(server_url)
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """The URL of a fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'progress.sqlite'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"progress_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_with_database(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server, name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def engine(database_url):
    """A migrated progress database on each backend."""
    db.upgrade(database_url)
    engine = db.engine_for(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def svc(tmp_path):
    """The progress service on a fresh SQLite database, behind a stand-in hub (pagesupport.Service)."""
    service = Service(tmp_path, f"sqlite:///{tmp_path / 'progress.sqlite'}")
    yield service
    service.close()
