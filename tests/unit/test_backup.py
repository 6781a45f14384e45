"""`academy backup` / `academy restore` through the CLI, on a configuration of its own in a temporary
folder: SQLite databases with unwritten WAL pages, a course store, the hub's secrets, the config."""

from __future__ import annotations

import json
import sqlite3
import stat
import tarfile
from contextlib import closing

import pytest
import yaml

from hub import cli, hub_process


@pytest.fixture
def site(tmp_path, monkeypatch):
    state, courses = tmp_path / "state", tmp_path / "courses"
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"hub": {"state_dir": str(state), "port": 9100},
                                      "assessments": {"root": str(courses)}}))
    (config.parent / "config.d").mkdir()
    (config.parent / "config.d" / "10-secrets.yaml").write_text("hub: {admin_users: [ops]}\n")
    monkeypatch.setenv("ACADEMY_CONFIG", str(config))
    monkeypatch.setattr(hub_process, "running_pid", lambda cfg: None)
    state.mkdir()
    (courses / "llm-101" / "submitted" / "learner1").mkdir(parents=True)
    (courses / "llm-101" / "submitted" / "learner1" / "tiny-gpt.ipynb").write_text('{"cells": []}')
    (state / "jupyterhub_cookie_secret").write_bytes(b"c" * 32)
    (state / "auth-state.key").write_text("ab" * 32)
    (state / "metrics.token").write_text("m" * 64)
    (state / "progress-certificate-key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (state / "jupyterhub.log.old").write_text("not a secret, not kept")
    # Databases in WAL mode with rows still only in the -wal file (connections left open):
    # a plain file copy would lose them; the backup may not.
    open_dbs = []
    for path, rows in ((state / "jupyterhub.sqlite", ["admin"]), (courses / "gradebook.sqlite", ["learner1", "learner2"]),
                       (state / "progress.sqlite", ["learner1"])):
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=wal")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE people (name TEXT)")
        db.executemany("INSERT INTO people VALUES (?)", [(r,) for r in rows])
        db.commit()
        open_dbs.append(db)
    def stop_the_hub():   # restore happens with the hub, and so every connection, stopped
        for db in open_dbs:
            db.close()
    yield tmp_path, state, courses, config, stop_the_hub
    stop_the_hub()


def people(path) -> list[str]:
    with closing(sqlite3.connect(path)) as db, db:
        return [r[0] for r in db.execute("SELECT name FROM people ORDER BY name")]


def test_a_backup_restores_databases_courses_secrets_and_config(site, capsys):
    tmp_path, state, courses, config, stop_the_hub = site
    archive = tmp_path / "b.tar.gz"
    assert cli.main(["backup", "--out", str(archive)]) == 0   # while the hub writes
    stop_the_hub()
    said = capsys.readouterr().out
    assert "database hub: included" in said and "database gradebook: included" in said
    assert "4 secret(s), 2 config file(s)" in said
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"db/hub.sqlite", "db/gradebook.sqlite", "db/progress.sqlite", "secrets/auth-state.key",
            "secrets/progress-certificate-key.pem",
            "config/config.yaml", "config/config.d/10-secrets.yaml",
            "courses/llm-101/submitted/learner1/tiny-gpt.ipynb"} <= names
    assert "courses/gradebook.sqlite" not in names and "courses/gradebook.sqlite-wal" not in names
    assert "secrets/jupyterhub.log.old" not in names
    assert manifest["databases"]["progress"] == {"included": True, "from": str(state / "progress.sqlite")}

    # Things go wrong: a submission and a secret lost, the gradebook changed, the config edited.
    (courses / "llm-101" / "submitted" / "learner1" / "tiny-gpt.ipynb").unlink()
    (courses / "stray.txt").write_text("written after the backup")
    (state / "auth-state.key").write_text("lost")
    with closing(sqlite3.connect(courses / "gradebook.sqlite")) as db, db:
        db.execute("DELETE FROM people")
    config.write_text(yaml.safe_dump({"hub": {"state_dir": str(state), "port": 9100},
                                      "assessments": {"root": str(courses)}, "demo": {"enabled": False}}))
    assert cli.main(["restore", str(archive)]) == 0
    assert "restored the backup of" in capsys.readouterr().out
    assert people(courses / "gradebook.sqlite") == ["learner1", "learner2"]
    assert people(state / "jupyterhub.sqlite") == ["admin"] and people(state / "progress.sqlite") == ["learner1"]
    assert (courses / "llm-101" / "submitted" / "learner1" / "tiny-gpt.ipynb").read_text() == '{"cells": []}'
    assert not (courses / "stray.txt").exists()
    assert (state / "auth-state.key").read_text() == "ab" * 32
    assert stat.S_IMODE((state / "auth-state.key").stat().st_mode) == 0o600
    assert "demo" not in yaml.safe_load(config.read_text())


def test_restore_refuses_while_the_hub_runs_and_a_foreign_archive_changing_nothing(site, monkeypatch, capsys):
    tmp_path, state, courses, _, stop_the_hub = site
    archive = tmp_path / "b.tar.gz"
    assert cli.main(["backup", "--out", str(archive)]) == 0
    stop_the_hub()
    assert cli.main(["backup", "--out", str(archive)]) == 1
    assert "exists: name a new file (a backup never overwrites one)" in capsys.readouterr().err

    monkeypatch.setattr(hub_process, "running_pid", lambda cfg: 4242)
    assert cli.main(["restore", str(archive)]) == 1
    assert "the hub is running: stop it with `./academy down`" in capsys.readouterr().err
    monkeypatch.setattr(hub_process, "running_pid", lambda cfg: None)

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        outside = tarfile.TarInfo("courses/../../etc/cron.d/x")
        dst.addfile(outside)
    with closing(sqlite3.connect(courses / "gradebook.sqlite")) as db, db:
        db.execute("DELETE FROM people WHERE name = 'learner2'")
    assert cli.main(["restore", str(evil)]) == 1
    assert "not an academy backup: it holds 'courses/../../etc/cron.d/x'" in capsys.readouterr().err
    assert people(courses / "gradebook.sqlite") == ["learner1"]   # checked before anything was written

    (tmp_path / "not-a-backup.tar.gz").write_text("plain text")
    assert cli.main(["restore", str(tmp_path / "not-a-backup.tar.gz")]) == 1
    assert f"cannot read {tmp_path / 'not-a-backup.tar.gz'}:" in capsys.readouterr().err

    # A configuration that now keeps the gradebook on a server: the SQLite copy is not put anywhere.
    config = tmp_path / "etc" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["assessments"]["database"] = "postgresql+psycopg://academy:secret@db01/gradebook"
    config.write_text(yaml.safe_dump(cfg))
    assert cli.main(["restore", str(archive)]) == 1
    err = capsys.readouterr().err
    assert "the backup holds the gradebook database as SQLite, but this configuration keeps it on a server " \
           "(db01/gradebook): restore it there with its own tool" in err and "secret" not in err
    assert people(courses / "gradebook.sqlite") == ["learner1"]   # nothing written

    (tmp_path / "notes.txt").write_text("hello")
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "notes.txt", "notes.txt")
    assert cli.main(["restore", str(tmp_path / "other.tar.gz")]) == 1
    assert "not an academy backup: it holds 'notes.txt'" in capsys.readouterr().err
