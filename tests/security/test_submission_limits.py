"""What a learner may put in the course store: a size per submission, a number per hour, a quota,
the latest few kept; a full disk refused cleanly; and the exchange service bounded against one
large request. Store-level tests use a real SQLite gradebook; the HTTP ones a real hub."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from assessments.gradebook import tables as gb
from assessments.exchange.store import (STORE_FULL, Store, StoreFull, SubmissionRateLimited, SubmissionRejected,
                               SubmissionTooLarge)
from assessments.gradebook.db import open_gradebook
from assessments.gradebook.enrolment import EnrolmentError, check_user
from hub import hub_process
from hub.config import ConfigError, load

from ..assessment_support import ASSIGNMENT, COURSE, NOTEBOOK, enrol_and_publish, exchange
from ..conftest import start_hub, stop_hub
from ..support import HubUser

NOW = 1_800_000_000.0
MiB = 1 << 20
NB = "attention.ipynb"


def make_store(root: Path, db: Path, **limits) -> Store:
    s = Store(root, open_gradebook(f"sqlite:///{db}"), "/nonexistent/python", **limits)
    s.root.mkdir(mode=0o700, exist_ok=True)
    with s.engine.begin() as conn:
        for course, assignment in (("llm-101", "attention"), ("llm-101", "lora"), ("hpc-201", "gpu-basics")):
            conn.execute(gb.publications.insert().values(course=course, assignment=assignment, released_at=NOW,
                                                         due_at=NOW + 7 * 86400, points=10, notebooks=f'["{NB}"]'))
    for course in ("llm-101", "hpc-201"):
        s.enrolment.add(course, "learner1")
        s.enrolment.add(course, "learner2")
    return s


def stored(store: Store, assignment: str = "attention", user: str = "learner1") -> list[str]:
    return [s["id"] for s in store.submissions_of("llm-101", assignment, user)]


def folders(store: Store, assignment: str = "attention", user: str = "learner1") -> list[str]:
    parent = store.course_dir("llm-101", "submissions", user, assignment)
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def grade(store: Store, sub_id: str) -> None:
    with store.engine.begin() as conn:
        sub = conn.execute(sa.select(gb.submissions).where(gb.submissions.c.id == sub_id)).mappings().one()
        gb.record_result(conn, dict(sub), "batch1", {"error": "the kernel died"}, 0.1, 300)


# --- size, rate, quota ---------------------------------------------------------------------------

def test_a_submission_over_the_size_limit_is_refused_with_413_and_nothing_is_stored(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", submission_max_bytes=MiB)
    with pytest.raises(SubmissionTooLarge, match=r"^rejected: 1\.5 MiB is over the 1 MiB a submission may hold$") as e:
        store.submit("llm-101", "attention", "learner1", {NB: b"x" * (MiB + MiB // 2)}, now=NOW)
    assert e.value.status == 413
    # a byte over is named in bytes, not as "1 MiB is over the 1 MiB"
    with pytest.raises(SubmissionTooLarge, match=r"1,048,577 bytes is over the 1,048,576 bytes"):
        store.submit("llm-101", "attention", "learner1", {NB: b"x" * (MiB + 1)}, now=NOW)
    assert stored(store) == [] and folders(store) == []
    store.submit("llm-101", "attention", "learner1", {NB: b"x" * MiB}, now=NOW)  # the limit itself is fine


def test_a_learner_past_the_hourly_limit_is_told_when_the_next_submission_is_accepted(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", submissions_per_hour=3)
    for i in range(3):
        store.submit("llm-101", "attention", "learner1", {NB: b"%d" % i}, now=NOW + 600 * i)
    with pytest.raises(SubmissionRateLimited) as e:
        store.submit("llm-101", "attention", "learner1", {NB: b"late"}, now=NOW + 1500)
    assert e.value.status == 429 and e.value.retry_after == 2100   # the first one ages out at NOW + 3600
    next_at = time.strftime("%H:%M:%S UTC", time.gmtime(NOW + 3600))
    assert str(e.value) == (f"rejected: 3 submissions of llm-101/attention an hour is the limit; "
                            f"the next one is accepted from {next_at} (in 35 min)")
    assert len(stored(store)) == 3 and len(folders(store)) == 3
    # per learner and per assignment: others are not held up
    store.submit("llm-101", "attention", "learner2", {NB: b"x"}, now=NOW + 1500)
    store.submit("llm-101", "lora", "learner1", {NB: b"x"}, now=NOW + 1500)
    store.submit("llm-101", "attention", "learner1", {NB: b"on time"}, now=NOW + 3600)


def test_pruning_old_submissions_does_not_give_a_learner_their_hourly_allowance_back(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", submissions_per_hour=3, keep_submissions=1)
    for i in range(3):
        store.submit("llm-101", "attention", "learner1", {NB: b"%d" % i}, now=NOW + i)
    assert len(stored(store)) == 1   # two were pruned ...
    with pytest.raises(SubmissionRateLimited):  # ... and still count for the hour
        store.submit("llm-101", "attention", "learner1", {NB: b"3"}, now=NOW + 3)


def test_a_learner_cannot_store_more_than_the_quota(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", submission_max_bytes=2 * MiB,
                       learner_quota_bytes=3 * MiB)
    store.submit("llm-101", "attention", "learner1", {NB: b"x" * (3 * MiB // 2)}, now=NOW)
    store.submit("hpc-201", "gpu-basics", "learner1", {NB: b"x" * (3 * MiB // 2)}, now=NOW)  # another course
    with pytest.raises(SubmissionTooLarge) as e:
        store.submit("llm-101", "lora", "learner1", {NB: b"x" * 1024}, now=NOW)
    assert e.value.status == 413
    assert str(e.value) == ("rejected: with this submission (1 KiB) your stored submissions would take "
                            "3,146,752 bytes, over your quota of 3,145,728 bytes (all courses together; 3 MiB used); "
                            "ask your trainer")
    assert stored(store, "lora") == [] and folders(store, "lora") == []
    assert store.stored_bytes("learner1") == 3 * MiB
    store.submit("llm-101", "lora", "learner2", {NB: b"x" * MiB}, now=NOW)  # the quota is each learner's own


def test_a_learner_at_the_quota_can_replace_a_submission_that_retention_removes(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", learner_quota_bytes=3 * MiB, keep_submissions=1)
    store.submit("llm-101", "attention", "learner1", {NB: b"1" * (2 * MiB)}, now=NOW)
    latest = store.submit("llm-101", "attention", "learner1", {NB: b"2" * (2 * MiB)}, now=NOW + 1)
    assert stored(store) == [latest["id"]] and folders(store) == [latest["id"]]
    assert store.stored_bytes("learner1") == 2 * MiB


# --- retention -----------------------------------------------------------------------------------

def test_only_the_latest_submissions_are_kept_and_graded_ones_are_never_removed(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", keep_submissions=2)
    ids = [store.submit("llm-101", "attention", "learner1", {NB: b"1"}, now=NOW + 1)["id"]]
    grade(store, ids[0])
    ids += [store.submit("llm-101", "attention", "learner1", {NB: b"%d" % i}, now=NOW + i)["id"] for i in (2, 3, 4, 5)]
    kept = [ids[0], ids[3], ids[4]]    # the graded one, and the latest two
    assert stored(store) == kept and folders(store) == sorted(kept)
    assert (store.course_dir("llm-101", "submissions", "learner1", "attention", ids[4], NB)).read_bytes() == b"5"
    with store.engine.connect() as conn:
        assert [s["id"] for s in gb.latest_submissions(conn, "llm-101", "attention")] == [ids[4]]
    assert stored(store, user="learner2") == []


def test_a_submission_in_a_grading_batch_is_not_removed_before_its_result_is_recorded(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite", keep_submissions=1)
    first = store.submit("llm-101", "attention", "learner1", {NB: b"1"}, now=NOW)["id"]
    batch = store.course_dir("llm-101", "grading", "20270115T080000-abcdef")
    batch.mkdir(parents=True)
    (batch / "manifest.json").write_text(json.dumps({"submissions": [{"id": first, "student": "learner1"}]}))
    second = store.submit("llm-101", "attention", "learner1", {NB: b"2"}, now=NOW + 1)["id"]
    assert stored(store) == [first, second]      # the batch's collect needs the row and the folder
    grade(store, first)
    third = store.submit("llm-101", "attention", "learner1", {NB: b"3"}, now=NOW + 2)["id"]
    assert stored(store) == [first, third]       # graded: kept for good; the ungraded second one goes


# --- full disk -----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of our own: a disk we may fill without filling the machine's."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk tests mount a tmpfs: run them as root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    yield mount
    # lazy: detached now, gone once the gradebook's pooled connections let go of their files
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass    # ENOSPC: full
    finally:
        os.close(fd)


def test_a_full_disk_stores_nothing_loses_nothing_and_says_so(tmp_path, small_disk):
    store = make_store(small_disk / "courses", tmp_path / "gb.sqlite")
    earlier = store.submit("llm-101", "attention", "learner1", {NB: b"earlier"}, now=NOW)
    with pytest.raises(StoreFull) as e:
        store.submit("llm-101", "attention", "learner1", {"a.ipynb": b"x" * (MiB // 2), NB: b"y" * MiB}, now=NOW + 1)
    assert e.value.status == 507 and str(e.value) == STORE_FULL
    assert "the course store is full; your submission was not stored, nothing earlier was lost" in STORE_FULL
    assert stored(store) == [earlier["id"]] and folders(store) == [earlier["id"]]   # no staging folder left
    folder = store.course_dir("llm-101", "submissions", "learner1", "attention", earlier["id"])
    assert (folder / NB).read_bytes() == b"earlier"
    store.submit("llm-101", "attention", "learner1", {NB: b"fits"}, now=NOW + 2)    # room again once it fits


def test_a_full_gradebook_disk_leaves_no_folder_without_its_row(small_disk):
    store = make_store(small_disk / "courses", small_disk / "gb.sqlite")   # one disk for both, as by default
    fill(small_disk)
    with pytest.raises(StoreFull, match="the course store is full"):
        store.submit("llm-101", "attention", "learner1", {NB: b""}, now=NOW)   # no data block: only the row fails
    assert stored(store) == [] and folders(store) == []


# --- names ---------------------------------------------------------------------------------------

def test_a_file_or_user_name_with_a_trailing_newline_is_refused(tmp_path):
    store = make_store(tmp_path / "courses", tmp_path / "gb.sqlite")
    with pytest.raises(SubmissionRejected, match=r"file name 'a\.ipynb\\n' is not allowed"):
        store.submit("llm-101", "attention", "learner1", {"a.ipynb\n": b"{}"}, now=NOW)
    assert stored(store) == [] and folders(store) == []
    with pytest.raises(EnrolmentError, match="is not a valid user name"):
        check_user("learner1\n")


# --- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, accepted", [
    ("submission_max_size", 20, "accepted: the most one submission may hold, a size such as 20M or 1G"),
    ("submission_max_size", "20MB", "accepted: the most one submission may hold"),
    ("submissions_per_hour", 0, "accepted: submissions a learner may store per assignment in any hour, 1 to 3600"),
    ("learner_quota", "lots", "accepted: what one learner's submissions may take in the store"),
    ("keep_submissions", 0, "accepted: the latest submissions kept per learner and assignment"),
])
def test_a_bad_limit_in_the_config_names_the_key_and_what_is_accepted(tmp_path, key, value, accepted):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"assessments": {key: value}}))
    with pytest.raises(ConfigError, match=f"config key assessments.{key}: .*; {accepted}"):
        load(path)


def test_the_configured_limits_reach_the_store(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("{}")
    assert {k: v for k, v in load(path)["assessments"].items() if k in (
        "submission_max_size", "submissions_per_hour", "learner_quota", "keep_submissions")} == {
        "submission_max_size": "20M", "submissions_per_hour": 20, "learner_quota": "500M", "keep_submissions": 3}
    path.write_text(yaml.safe_dump({"hub": {"state_dir": str(tmp_path / "state")},
                                    "assessments": {"root": str(tmp_path / "courses"), "submission_max_size": "3M",
                                                    "learner_quota": "2G", "submissions_per_hour": 7,
                                                    "keep_submissions": 5}}))
    store = Store.from_config(load(path))
    assert (store.submission_max_bytes, store.learner_quota_bytes, store.submissions_per_hour,
            store.keep_submissions) == (3 * MiB, 2 << 30, 7, 5)


# --- through the real exchange service -----------------------------------------------------------

LIMITS = {"submission_max_size": "1M", "submissions_per_hour": 2}


@pytest.fixture(scope="module")
def limited_hub(tmp_path_factory, slurm_cluster_up, demo_credentials):
    """A hub of its own whose exchange allows 1 MiB a submission and 2 an hour; llm-101 enrolled and published."""
    hub = start_hub(tmp_path_factory.mktemp("limits"), {"assessments": LIMITS})
    try:
        enrol_and_publish(hub)
        yield hub
    finally:
        stop_hub(hub, "submission-limits-hub.log")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submissions_url(hub, direct: bool = False) -> str:
    """Through the hub's proxy, or straight to the exchange as the sessions' exchange client goes."""
    base = (f"http://{hub.cfg['hub']['hub_ip']}:{hub.cfg['assessments']['exchange_port']}" if direct else hub.url)
    return f"{base}/services/academy-exchange/api/courses/{COURSE}/assignments/{ASSIGNMENT}/submissions"


def on_disk(hub, user: str) -> list[Path]:
    return list((Path(hub.cfg["assessments"]["root"]) / COURSE / "submissions" / user).rglob("*"))


def exchange_process(hub) -> int:
    hub_pid = hub_process.running_pid(hub.cfg)
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == hub_pid and b"assessments.exchange.service" in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no exchange service under the hub (pid {hub_pid})")


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM) in bytes."""
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.integration
def test_over_http_a_submission_over_the_limit_gets_413_and_one_past_the_hourly_limit_gets_429(
        limited_hub, demo_credentials):
    learner = HubUser(limited_hub, "learner2", demo_credentials["learner2"])
    post = f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions"
    r = exchange(limited_hub, learner, "POST", post, json={"files": {NOTEBOOK: b64(b"x" * (MiB + 20 * 1024))}})
    assert r.status_code == 413, r.text
    assert r.json()["message"] == "rejected: 1,069,056 bytes is over the 1,048,576 bytes a submission may hold"
    for i in range(2):
        r = exchange(limited_hub, learner, "POST", post, json={"files": {NOTEBOOK: b64(b"{}%d" % i)}})
        assert r.status_code == 201, r.text
    r = exchange(limited_hub, learner, "POST", post, json={"files": {NOTEBOOK: b64(b"{}")}})
    assert r.status_code == 429, r.text
    assert r.json()["message"].startswith(f"rejected: 2 submissions of {COURSE}/{ASSIGNMENT} an hour is the limit; "
                                          "the next one is accepted from ")
    assert 3500 < int(r.headers["Retry-After"]) <= 3600
    assert len(exchange(limited_hub, learner, "GET", post).json()["submissions"]) == 2
    assert len([p for p in on_disk(limited_hub, "learner2") if p.is_file()]) == 2


@pytest.mark.integration
def test_a_44_mib_submission_is_refused_without_growing_the_exchange(limited_hub, demo_credentials):
    """The security review's case: 44 MiB sent as the sessions' exchange client sends it (urllib)."""
    learner = HubUser(limited_hub, "learner1", demo_credentials["learner1"])
    auth = {"Authorization": f"token {learner.token}", "Content-Type": "application/json"}
    pid = exchange_process(limited_hub)
    listing = urllib.request.Request(submissions_url(limited_hub, direct=True), headers=auth)
    with urllib.request.urlopen(listing, timeout=30) as r:   # the token is known and cached before we measure
        assert json.loads(r.read())["submissions"] == []
    Path(f"/proc/{pid}/clear_refs").write_text("5")              # peak RSS := current RSS
    before = peak_rss(pid)
    body = json.dumps({"files": {NOTEBOOK: b64(os.urandom(44 * MiB))}}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(submissions_url(limited_hub, direct=True), data=body,
                                                      headers=auth, method="POST"), timeout=120)
    assert e.value.code == 413
    assert json.loads(e.value.read())["message"] == \
        "rejected: about 44 MiB of files is over the 1 MiB a submission may hold"
    grown = peak_rss(pid) - before
    assert grown < 2 * MiB, f"the exchange's peak RSS grew by {grown / MiB:.1f} MiB for a refused request"
    assert on_disk(limited_hub, "learner1") == []


@pytest.mark.integration
def test_a_request_far_over_the_limit_is_refused_before_its_body_is_sent(limited_hub, demo_credentials):
    learner = HubUser(limited_hub, "learner1", demo_credentials["learner1"])
    host, port = limited_hub.cfg["hub"]["hub_ip"], limited_hub.cfg["assessments"]["exchange_port"]
    path = submissions_url(limited_hub, direct=True).split(str(port), 1)[1]
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: token {learner.token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {200 * MiB}\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):    # not one byte of the body sent: the answer comes, and the close
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert json.loads(rest[:int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                                     if ln.lower().startswith(b"content-length:")))])["message"] == \
        "rejected: about 150 MiB of files is over the 1 MiB a submission may hold"
    assert on_disk(limited_hub, "learner1") == []
