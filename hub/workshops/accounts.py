"""The pooled Unix accounts of a workshop's seats: ``ws-<workshop>-NN``.

Made (or, left from an earlier workshop of the same name, recycled: home emptied, unlocked)
before the start; locked at the end, their files archived for the trainer or wiped. Nothing of
one use reaches the next: the home is emptied, the account is in no supplementary group, and its
hub user is made anew by the workshop service (no token, group or cookie survives).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tarfile
from pathlib import Path

from .model import WorkshopError, is_pooled_account


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise WorkshopError(f"{argv[0]} {argv[-1]} failed: {(result.stderr or result.stdout).strip()}")


def exists(account: str) -> bool:
    try:
        pwd.getpwnam(account)
        return True
    except KeyError:
        return False


def _guard(account: str) -> None:
    # Only ever a pooled account: these functions empty homes and lock logins.
    if not is_pooled_account(account):
        raise WorkshopError(f"{account!r} is not a pooled workshop account")


def prepare(accounts: list[str], home_root: str) -> list[str]:
    """Each account usable and empty; returns the ones made here (to remove if creation fails later)."""
    made = []
    for account in accounts:
        _guard(account)
        if exists(account):
            wipe_home(account)
            _run(["usermod", "-U", "-e", "", "-G", "", account])   # unlocked, no expiry, no extra groups
        else:
            _run(["useradd", "-m", "-b", home_root, "-s", "/bin/bash", "-K", "UMASK=077", account])
            made.append(account)
    return made


def remove(accounts: list[str]) -> None:
    for account in accounts:
        _guard(account)
        if exists(account):
            _run(["userdel", "-r", account])


def lock(account: str) -> None:
    """No login, no password, no cron or sudo: the account has expired."""
    _guard(account)
    if exists(account):
        _run(["usermod", "-L", "-e", "1", account])


def home(account: str) -> Path:
    return Path(pwd.getpwnam(account).pw_dir)


def wipe_home(account: str) -> None:
    """Empty the home (dot files too), keeping the directory, its owner and its mode."""
    _guard(account)
    root = home(account)
    if not root.is_dir():
        return
    for entry in os.scandir(root):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path)
        else:
            path.unlink()


def archive_path(export_dir: str | Path, workshop: str) -> Path:
    """Where a workshop's attendees' files are archived at its end (the trainer's page serves it)."""
    return Path(export_dir) / f"{workshop}.tar.gz"


def export(accounts: list[str], archive: Path) -> Path:
    """One tar.gz of the accounts' homes (each under its account's name), written root-only."""
    archive.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = archive.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for account in accounts:
            if exists(account) and home(account).is_dir():
                # A learner's symlink is archived as a link, never followed (tarfile's default).
                tar.add(home(account), arcname=account,
                        filter=lambda info: None if "/.cache" in f"/{info.name}" else info)
    os.replace(partial, archive)
    return archive
