"""Slurm's accounting on the embedded cluster: a private MariaDB and slurmdbd in front of it.

The database is the platform's own instance (its data under slurm.state_dir, loopback only on
slurm.db_port), never the machine's MariaDB, so `academy up` neither needs nor disturbs one.
slurmdbd reaches it as a database user with a generated password kept root-only in
slurmdbd.conf. Idempotent like slurm_cluster: a running, answering daemon is left alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .slurm_cluster import (RUN_DIR, ClusterError, _log_tail, _pid_alive, _render, _stop_pid, _wait, _write_if_changed,
                            port_in_use)

DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
MARIADB_RUN = RUN_DIR / "mariadb"          # the server (user mysql) writes its socket and pid here
MARIADB_PID = MARIADB_RUN / "mariadb.pid"
MARIADB_SOCKET = MARIADB_RUN / "mariadb.sock"
DBD_PID = RUN_DIR / "slurmdbd.pid"


def data_dir(cfg: dict) -> Path:
    return Path(cfg["slurm"]["state_dir"]) / "mariadb"


def _password_file(cfg: dict) -> Path:
    return Path(cfg["slurm"]["state_dir"]) / "slurmdbd-db-password"


def db_password(cfg: dict) -> str:
    """The database user's password: made once, root-only, reused on every `up`."""
    path = _password_file(cfg)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def render_slurmdbd_conf(cfg: dict) -> str:
    s = cfg["slurm"]
    return _render("slurmdbd.conf.j2", dbd_port=s["dbd_port"], db_port=s["db_port"], db_name=DB_NAME,
                   db_user=DB_USER, db_password=db_password(cfg), log_dir=s["log_dir"], pid_file=str(DBD_PID))


def _sql(statement: str) -> subprocess.CompletedProcess:
    # root over the instance's own socket (unix_socket authentication: no root password exists)
    return subprocess.run(["mariadb", "--no-defaults", f"--socket={MARIADB_SOCKET}", "-u", "root", "-e", statement],
                          capture_output=True, text=True, timeout=30)


def mariadb_ok() -> bool:
    try:
        return _sql("SELECT 1").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_mariadb(cfg: dict) -> None:
    if mariadb_ok():
        return
    for tool in ("mariadbd", "mariadb-install-db"):
        if shutil.which(tool) is None:
            raise ClusterError(f"{tool} is not installed: run `./academy up` (it installs mariadb-server) "
                               "or `apt-get install mariadb-server`")
    data = data_dir(cfg)
    log = Path(cfg["slurm"]["log_dir"]) / "mariadb.log"
    if not (data / "mysql").is_dir():
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "mysql", "mysql")
        os.chmod(data, 0o700)
        init = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed (exit {init.returncode}): {init.stderr.strip()[-800:]}")
    port = cfg["slurm"]["db_port"]
    if port_in_use(port):
        raise ClusterError(f"port {port} (the accounting database) is taken by another program: stop it, or set "
                           "slurm.db_port in /etc/academy/config.yaml to a free port")
    log.touch(mode=0o640)
    shutil.chown(log, "mysql")
    MARIADB_RUN.mkdir(mode=0o750, parents=True, exist_ok=True)
    shutil.chown(MARIADB_RUN, "mysql", "mysql")
    # setsid: the server outlives `academy up`; a small buffer pool, as the embedded cluster's
    # accounting is a few thousand rows
    subprocess.Popen(["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}", f"--socket={MARIADB_SOCKET}",
                      f"--pid-file={MARIADB_PID}", "--bind-address=127.0.0.1", f"--port={port}",
                      f"--log-error={log}", "--skip-name-resolve", "--innodb-buffer-pool-size=64M"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    if not _wait(mariadb_ok, 60, 0.3):
        raise ClusterError(f"MariaDB did not start; last lines of {log}:\n{_log_tail(log)}")


def ensure_db_user(cfg: dict) -> None:
    password = db_password(cfg)  # token_urlsafe: letters, digits, '-' and '_' only, safe inside quotes
    for host in ("127.0.0.1", "localhost"):
        result = _sql(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{password}'; "
                      f"ALTER USER '{DB_USER}'@'{host}' IDENTIFIED BY '{password}'; "
                      f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{host}'")
        if result.returncode != 0:
            raise ClusterError(f"could not create the accounting database user: {result.stderr.strip()}")


def dbd_ok(cfg: dict) -> bool:
    """slurmdbd answers (sacctmgr asks it, not the controller)."""
    try:
        result = subprocess.run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def start_dbd(cfg: dict) -> None:
    if _pid_alive(DBD_PID) and dbd_ok(cfg):
        return
    if shutil.which("slurmdbd") is None:
        raise ClusterError("slurmdbd is not installed: run `./academy up` (it installs slurmdbd) "
                           "or `apt-get install slurmdbd`")
    port = cfg["slurm"]["dbd_port"]
    if _pid_alive(DBD_PID) is None and port_in_use(port):
        raise ClusterError(f"port {port} (slurmdbd) is taken by another program: stop it, or set "
                           "slurm.dbd_port in /etc/academy/config.yaml to a free port")
    log = Path(cfg["slurm"]["log_dir"]) / "slurmdbd.log"
    if _pid_alive(DBD_PID) is None:
        result = subprocess.run(["slurmdbd"], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ClusterError(f"slurmdbd did not start (exit {result.returncode}); last lines of {log}:\n{_log_tail(log)}")
    # the first start creates every table: a few seconds
    if not _wait(lambda: dbd_ok(cfg), 60, 0.5):
        raise ClusterError(f"slurmdbd does not answer; last lines of {log}:\n{_log_tail(log)}")


def register_cluster(cfg: dict) -> None:
    """The cluster's row in the accounting database, before slurmctld first reports to it."""
    name = cfg["slurm"]["cluster_name"]
    have = subprocess.run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"],
                          capture_output=True, text=True, timeout=30).stdout.split()
    if name not in have:
        result = subprocess.run(["sacctmgr", "-i", "add", "cluster", name], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ClusterError(f"could not register cluster {name} with slurmdbd: {result.stdout.strip()} "
                               f"{result.stderr.strip()}")


def ensure_running(cfg: dict) -> bool:
    """MariaDB, its user, slurmdbd.conf and slurmdbd, in that order; True if slurmdbd.conf changed."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    start_mariadb(cfg)
    ensure_db_user(cfg)
    conf = Path(cfg["slurm"]["conf_dir"]) / "slurmdbd.conf"
    changed = _write_if_changed(conf, render_slurmdbd_conf(cfg), mode=0o600)  # it holds the password
    if changed:
        _stop_pid(DBD_PID)
    start_dbd(cfg)
    register_cluster(cfg)
    return changed

