"""`academy backup` and `academy restore`: what a centre must keep, in one root-only archive.

The archive (a .tar.gz, mode 0600) holds, under fixed names:

- ``db/<name>.sqlite``: the hub's, the gradebook's and the progress service's databases where
  they are SQLite, each copied with SQLite's backup API (consistent while the hub runs). A
  database on a server (PostgreSQL) is named in the manifest instead: `pg_dump` is its backup.
- ``courses/``: the course store (published releases, submissions, grading batches, feedback),
  without the gradebook's own files, which come from ``db/``.
- ``secrets/``: the hub's cookie secret, its auth-state key (OIDC tokens are encrypted with it),
  the service tokens and the certificates' signing key (without it no certificate issued so far
  can be verified), from ``hub.state_dir``.
- ``config/``: the config file and its drop-ins.
- ``manifest.json``: when, from which checkout, and what is inside.

Restore puts each back where the *current* configuration says, only while the hub is stopped
(its databases must not change under it), and checks the whole archive before it writes anything:
a member outside those names, a link, or a missing manifest refuses the archive.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from contextlib import closing
from pathlib import Path

from .config import DROP_IN_DIR, SYSTEM_CONFIG, config_path

ROOT = Path(__file__).resolve().parent.parent
SECRET_PATTERNS = ("jupyterhub_cookie_secret", "auth-state.key", "*.token", "progress-certificate-key.pem")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
TOP = ("db", "courses", "secrets", "config", "manifest.json")


class BackupError(RuntimeError):
    """The backup or restore could not be done; the message says why, and nothing was changed."""


def databases(cfg: dict) -> dict[str, str]:
    """name -> SQLAlchemy URL of the platform's three databases."""
    from assessments.gradebook.db import url_from_config as gradebook_url
    from assessments.progress.service import database_url as progress_url

    from .configurer import db_url
    return {"hub": db_url(cfg), "gradebook": gradebook_url(cfg), "progress": progress_url(cfg)}


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def _secrets(cfg: dict) -> list[Path]:
    state = Path(cfg["hub"]["state_dir"])
    return sorted({p for pattern in SECRET_PATTERNS for p in state.glob(pattern) if p.is_file()})


def _config_files() -> list[tuple[Path, str]]:
    path = config_path()
    base = path.parent if path is not None else SYSTEM_CONFIG.parent
    files = [(path, path.name)] if path is not None and path.is_file() else []
    drop_ins = base / DROP_IN_DIR
    files += [(p, f"{DROP_IN_DIR}/{p.name}") for p in sorted(drop_ins.glob("*.yaml"))] if drop_ins.is_dir() else []
    return files


def _checkout() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


def backup(cfg: dict, out: Path) -> dict:
    """Write the archive to OUT (atomically, 0600); return its manifest."""
    out = out.resolve()
    if out.exists():
        raise BackupError(f"{out} exists: name a new file (a backup never overwrites one)")
    courses = Path(cfg["assessments"]["root"])
    dbs = databases(cfg)
    skip = _sqlite_files(cfg)   # in the course store too (the gradebook): copied consistently under db/
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checkout": _checkout(),
                "databases": {}, "secrets": [], "config": [], "courses": courses.is_dir()}
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".academy-backup-")
    os.fchmod(fd, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar, \
                tempfile.TemporaryDirectory() as scratch:
            for name, url in dbs.items():
                path = sqlite_path(url)
                if path is None:
                    manifest["databases"][name] = {"included": False, "why": "on a database server: back it up "
                                                   "with its own tool (pg_dump)"}
                    continue
                if not path.exists():
                    manifest["databases"][name] = {"included": False, "why": f"{path} does not exist yet"}
                    continue
                copy = Path(scratch) / f"{name}.sqlite"
                with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(copy)) as dst:
                    src.backup(dst)   # consistent even while the hub writes
                tar.add(copy, f"db/{name}.sqlite")
                manifest["databases"][name] = {"included": True, "from": str(path)}
            if courses.is_dir():
                tar.add(courses, "courses", filter=lambda m: None if courses.joinpath(*Path(m.name).parts[1:]) in skip
                        else m)
            for path in _secrets(cfg):
                tar.add(path, f"secrets/{path.name}")
                manifest["secrets"].append(path.name)
            for path, name in _config_files():
                tar.add(path, f"config/{name}")
                manifest["config"].append(name)
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def _checked_members(tar: tarfile.TarFile) -> tuple[list[tarfile.TarInfo], dict]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not parts or parts[0] not in TOP or ".." in parts or m.name.startswith("/"):
            raise BackupError(f"not an academy backup: it holds '{m.name}' (accepted: {', '.join(TOP)})")
        if not (m.isfile() or m.isdir()):
            raise BackupError(f"not an academy backup: '{m.name}' is a link or a device, which a backup never holds")
    try:
        manifest = json.load(tar.extractfile("manifest.json"))
    except (KeyError, ValueError, TypeError):
        raise BackupError("not an academy backup: it has no readable manifest.json") from None
    return members, manifest


def restore(cfg: dict, archive: Path, hub_running: bool) -> dict:
    """Put the archive's parts back where CFG says; return its manifest."""
    if hub_running:
        raise BackupError("the hub is running: stop it with `./academy down` (its databases must not change "
                          "under it), then restore")
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"cannot read {archive}: {e}") from None
    with tar, tempfile.TemporaryDirectory() as scratch:
        members, manifest = _checked_members(tar)
        tar.extractall(scratch, members=members, filter="data")   # everything checked and unpacked first
        staged = Path(scratch)
        for name, url in databases(cfg).items():
            src, dest = staged / "db" / f"{name}.sqlite", sqlite_path(url)
            if src.exists() and dest is None:
                raise BackupError(f"the backup holds the {name} database as SQLite, but this configuration keeps it "
                                  f"on a server ({url.split('@')[-1]}): restore it there with its own tool")
        for name, url in databases(cfg).items():
            src, dest = staged / "db" / f"{name}.sqlite", sqlite_path(url)
            if src.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                for suffix in SQLITE_SIDE_FILES:
                    dest.with_name(dest.name + suffix).unlink(missing_ok=True)
                shutil.copy2(src, dest)
                os.chmod(dest, 0o600)
        if (staged / "courses").is_dir():
            _replace_tree(staged / "courses", Path(cfg["assessments"]["root"]), keep=_sqlite_files(cfg))
        state = Path(cfg["hub"]["state_dir"])
        for src in sorted((staged / "secrets").glob("*")) if (staged / "secrets").is_dir() else []:
            state.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, state / src.name)
            os.chmod(state / src.name, 0o600)
        if (staged / "config").is_dir():
            path = config_path() or SYSTEM_CONFIG
            for src in sorted((staged / "config").rglob("*.yaml")):
                dest = path.parent / src.relative_to(staged / "config")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
    return manifest


def _sqlite_files(cfg: dict) -> set[Path]:
    paths = {p for p in (sqlite_path(u) for u in databases(cfg).values()) if p is not None}
    return paths | {p.with_name(p.name + s) for p in set(paths) for s in SQLITE_SIDE_FILES}


def _replace_tree(src: Path, dest: Path, keep: set[Path]) -> None:
    """DEST becomes SRC, except the files in KEEP (the databases, restored on their own)."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)
    for entry in list(dest.iterdir()):
        if entry in keep:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in src.iterdir():
        target = dest / entry.name
        if target in keep:
            continue
        shutil.copytree(entry, target, symlinks=True) if entry.is_dir() else shutil.copy2(entry, target)
