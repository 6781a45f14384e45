"""The services' boundaries, through the real hub and the services it starts (issue #13):

- every answer of the exchange and the progress service (pages, API, errors, the OAuth callback)
  carries a Content-Security-Policy that forbids framing, and nosniff; the pages still work under it
  in a real browser;
- a course that does not exist and one the caller may not see get the same 404 and the same body;
- a trainer's cohort filter offers, and accepts, only the hub groups with learners of their course;
- no ?token=, OAuth code or state reaches the log, the hub's or the services';
- the hub's log and Slurm's are not world-readable;
- each service process is handed only its own part of the config (no other service's database).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from hub import config as academy_config
from hub import hub_process, slurm_cluster
from hub.configurer import EXCHANGE, PROGRESS, service_config

from ..assessment_support import academy
from ..support import wait_for
from ..e2e.conftest import browser, page  # noqa: F401 - fixtures of the browser test below
from ..e2e.test_spawn_page import log_in

pytestmark = pytest.mark.integration
COURSE, OTHER, MISSING = "llm-101", "hpc-201", "no-such-course"     # OTHER: in the catalogue, not theirs
EXCHANGE_URL, PROGRESS_URL = f"/services/{EXCHANGE}/", f"/services/{PROGRESS}/"


@pytest.fixture(scope="module")
def cohort(hub):
    """llm-101: learner1 and learner2 learn, trainer1 teaches; none of them is in hpc-201."""
    for args in (("enrol", COURSE, "learner1", "learner2"), ("enrol", COURSE, "trainer1", "--trainer"),
                 ("unenrol", OTHER, "learner1", "learner2", "trainer1")):
        out = academy(hub, *args)
        assert out.returncode == 0, out.stderr
    return hub


def get(hub, user, path, **kw) -> requests.Response:
    """GET a service path through the hub's proxy with the user's hub token (API and pages accept it)."""
    return requests.get(f"{hub.url}{path}", headers={"Authorization": f"token {user.token}"}, timeout=60,
                        allow_redirects=False, **kw)


def assert_hardened(r: requests.Response) -> None:
    csp = r.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "script-src 'none'" in csp, \
        (r.url, r.status_code, csp)
    assert r.headers.get("X-Content-Type-Options") == "nosniff", (r.url, r.status_code)


# --- headers --------------------------------------------------------------------------------------

def test_every_answer_of_both_services_forbids_framing_and_sniffing(cohort, login):
    hub, learner, trainer = cohort, login("learner1"), login("trainer1")
    answers = {
        "exchange page": get(hub, trainer, f"{EXCHANGE_URL}courses/{COURSE}"),
        "exchange API": get(hub, learner, f"{EXCHANGE_URL}api/assignments"),
        "exchange API error": get(hub, learner, f"{EXCHANGE_URL}api/courses/{COURSE}/gradebook.csv"),
        "exchange page error": get(hub, learner, f"{EXCHANGE_URL}courses/{COURSE}"),
        "exchange unknown path": get(hub, learner, f"{EXCHANGE_URL}nothing/here"),
        "exchange oauth callback": requests.get(f"{hub.url}{EXCHANGE_URL}oauth_callback?code=x&state=y", timeout=60),
        "progress page": get(hub, learner, f"{PROGRESS_URL}me"),
        "progress API": get(hub, learner, f"{PROGRESS_URL}api/me"),
        "progress API error": get(hub, learner, f"{PROGRESS_URL}api/courses/{COURSE}/cohort"),
        "progress page error": get(hub, learner, f"{PROGRESS_URL}courses/{COURSE}"),
        "progress unknown path": get(hub, learner, f"{PROGRESS_URL}nothing/here"),
        "progress public page error": requests.get(f"{hub.url}{PROGRESS_URL}certificates/{'0' * 32}", timeout=60),
        "progress oauth callback": requests.get(f"{hub.url}{PROGRESS_URL}oauth_callback?code=x&state=y", timeout=60),
        "progress redirect to the hub": requests.get(f"{hub.url}{PROGRESS_URL}me", allow_redirects=False, timeout=60),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses["exchange page"] == statuses["exchange API"] == statuses["progress page"] == \
        statuses["progress API"] == 200, statuses
    assert statuses["progress redirect to the hub"] == 302 and all(
        s >= 400 for name, s in statuses.items() if "error" in name or "unknown" in name or "callback" in name), statuses
    for r in answers.values():
        assert_hardened(r)


def test_the_pages_work_under_the_policy_in_a_browser(cohort, page, demo_credentials):  # noqa: F811
    """The gradebook and the cohort page (inline <style>, inline SVG plots) with no CSP violation."""
    hub = cohort
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    log_in(page, hub, "trainer1", demo_credentials["trainer1"])
    page.wait_for_url(re.compile(r".*/hub/.*"))
    for path in (f"{PROGRESS_URL}courses/{COURSE}", f"{EXCHANGE_URL}courses/{COURSE}"):
        assert page.goto(f"{hub.url}{path}").status == 200
        assert "system-ui" in page.evaluate("getComputedStyle(document.body).fontFamily")   # the <style> applies
    page.goto(f"{hub.url}{PROGRESS_URL}courses/{COURSE}")
    bars = page.locator("#funnel svg path").first
    assert page.locator("#funnel svg").count() == 1 and bars.evaluate("e => getComputedStyle(e).fill") != ""
    assert refused == []


# --- courses: one answer for missing and forbidden ------------------------------------------------

def test_a_missing_course_and_a_forbidden_one_get_the_same_404_from_both_services(cohort, login):
    hub, learner, trainer = cohort, login("learner1"), login("trainer1")
    cases = {
        # who, the path with {c} for the course, the course they may not see (or are only a learner of)
        "exchange gradebook page": (trainer, EXCHANGE_URL + "courses/{c}", OTHER),
        "exchange gradebook page, a learner": (learner, EXCHANGE_URL + "courses/{c}", COURSE),
        "exchange CSV": (trainer, EXCHANGE_URL + "api/courses/{c}/gradebook.csv", OTHER),
        "exchange statistics, a learner": (learner, EXCHANGE_URL + "api/courses/{c}/statistics", COURSE),
        "exchange files": (learner, EXCHANGE_URL + "api/courses/{c}/assignments/gpu-fundamentals/files", OTHER),
        "exchange submissions": (learner, EXCHANGE_URL + "api/courses/{c}/assignments/gpu-fundamentals/submissions",
                                 OTHER),
        "progress cohort page": (trainer, PROGRESS_URL + "courses/{c}", OTHER),
        "progress cohort page, a learner": (learner, PROGRESS_URL + "courses/{c}", COURSE),
        "progress cohort CSV": (trainer, PROGRESS_URL + "courses/{c}/cohort.csv", OTHER),
        "progress cohort API": (trainer, PROGRESS_URL + "api/courses/{c}/cohort", OTHER),
    }
    for name, (user, path, forbidden) in cases.items():
        missing, refused = get(hub, user, path.format(c=MISSING)), get(hub, user, path.format(c=forbidden))
        assert (missing.status_code, refused.status_code) == (404, 404), (name, missing.text, refused.text)
        assert missing.text == refused.text, name
        assert MISSING not in missing.text and forbidden not in refused.text, name
    # Posting a submission to a course of which one is no learner: the same, before anything else is said.
    posts = [requests.post(f"{hub.url}{EXCHANGE_URL}api/courses/{c}/assignments/gpu-fundamentals/submissions",
                           json={"files": {}}, headers={"Authorization": f"token {learner.token}"}, timeout=60)
             for c in (MISSING, OTHER)]
    assert [p.status_code for p in posts] == [404, 404] and posts[0].text == posts[1].text


# --- the cohort filter: only groups with learners of the course -----------------------------------

def test_a_trainers_cohort_filter_offers_no_group_outside_their_course(cohort, login):
    hub, trainer, admin = cohort, login("trainer1"), login("admin")
    mine, strangers, other_course = "sec-workshop-mine", "sec-workshop-strangers", f"{OTHER}-learners"
    groups = {mine: ["learner1"], strangers: ["trainer1", "admin"]}     # strangers: no learner of llm-101
    for name, users in groups.items():
        admin.api("DELETE", f"/groups/{name}")
        assert admin.api("POST", f"/groups/{name}", json={"users": users}).status_code == 201
    # learner1 also takes hpc-201: its enrolment group must not tell llm-101's trainer so.
    assert academy(hub, "enrol", OTHER, "learner1").returncode == 0
    try:
        def hub_group(name):
            r = admin.api("GET", f"/groups/{name}")
            return set(r.json()["users"]) if r.status_code == 200 else set()
        assert wait_for(lambda: "learner1" in hub_group(other_course), 30), "the exchange did not sync hub groups"
        learners = {"learner1", "learner2"}

        def offered() -> list[str]:
            html = get(hub, trainer, f"{PROGRESS_URL}courses/{COURSE}").text
            select = re.search(r'<select name="group">(.*?)</select>', html, re.S)
            return re.findall(r"<option(?: selected)?>([^<]+)</option>", select.group(1)) if select else []
        assert wait_for(lambda: mine in offered(), 45), offered()      # the service keeps the list 30 s
        names = offered()
        assert strangers not in names and other_course not in names and f"{COURSE}-trainers" not in names
        for name in names:       # each one offered has a learner of llm-101, and is no other course's enrolment
            assert hub_group(name) & learners, name
            assert name == f"{COURSE}-learners" or not name.endswith(("-learners", "-trainers")), name

        only = get(hub, trainer, f"{PROGRESS_URL}courses/{COURSE}?group={mine}")
        assert only.status_code == 200 and re.findall(r'data-learner="([^"]+)"', only.text) == ["learner1"]
        unknown = get(hub, trainer, f"{PROGRESS_URL}courses/{COURSE}?group=sec-no-such-group")
        for name in (strangers, other_course):
            refused = get(hub, trainer, f"{PROGRESS_URL}courses/{COURSE}?group={name}")
            assert (refused.status_code, unknown.status_code) == (404, 404), refused.text
            assert refused.text.replace(name, "G") == unknown.text.replace("sec-no-such-group", "G")
            csv = get(hub, trainer, f"{PROGRESS_URL}courses/{COURSE}/cohort.csv?group={name}")
            assert csv.status_code == 404 and "learner1" not in csv.text
    finally:
        academy(hub, "unenrol", OTHER, "learner1")
        for name in groups:
            admin.api("DELETE", f"/groups/{name}")


# --- logs -----------------------------------------------------------------------------------------

def test_no_token_oauth_code_or_state_reaches_the_hubs_or_the_services_log(cohort, login):
    hub, trainer = cohort, login("trainer1")
    secret = {name: f"SECRET{secrets.token_hex(8)}" for name in ("hub", "hub_api", "progress", "exchange",
                                                                    "progress_oauth", "exchange_oauth")}
    stranger = requests.Session()       # no hub cookie: each service sends it to the hub's login
    stranger.get(f"{hub.url}/hub/home?token={secret['hub']}", timeout=60)
    stranger.get(f"{hub.url}/hub/api/user?token={secret['hub_api']}", timeout=60)
    stranger.get(f"{hub.url}{PROGRESS_URL}me?token={secret['progress']}", timeout=60)
    stranger.get(f"{hub.url}{EXCHANGE_URL}api/assignments?token={secret['exchange']}", timeout=60)
    # A signed-in trainer: each service signs the browser in with an OAuth code and state.
    oauth = []
    for service, key in ((PROGRESS_URL, "progress_oauth"), (EXCHANGE_URL, "exchange_oauth")):
        r = trainer.http.get(f"{hub.url}{service}courses/{COURSE}?token={secret[key]}", timeout=60)
        assert r.status_code == 200, r.text[:500]
        callback = [h.headers["Location"] for h in r.history
                    if urlparse(h.headers.get("Location", "")).path.endswith("/oauth_callback")]
        assert callback, [h.headers.get("Location") for h in r.history]
        query = parse_qs(urlparse(callback[0]).query)
        oauth += [query["code"][0], query["state"][0]]
    # Wait for the lines that show each request was logged (redacted), then look for any secret.
    # (The services' own access lines: "GET <path>"; the hub logs their paths only as "-> <path>".)
    expected = ["GET /hub/home?token=[secret]", "GET /hub/api/user?token=[secret]",
                "next=%2Fhub%2Fhome%3Ftoken%3D[secret]", f"GET {PROGRESS_URL}me?token=[secret]",
                f"GET {EXCHANGE_URL}api/assignments?token=[secret]", f"GET {PROGRESS_URL}oauth_callback?code=[secret]",
                f"GET {EXCHANGE_URL}oauth_callback?code=[secret]", f"GET {PROGRESS_URL}courses/{COURSE}?token=[secret]"]
    assert wait_for(lambda: all(line in hub.log for line in expected), 20), \
        [line for line in expected if line not in hub.log]
    log = hub.log
    leaked = [s for s in [*secret.values(), *oauth] if s in log]
    assert not leaked, [line for line in log.splitlines() if any(s in line for s in leaked)][:10]


def test_the_hubs_log_and_slurms_are_not_world_readable(cohort, base_config, tmp_path):
    mode = stat.S_IMODE(os.stat(hub_process.log_file(cohort.cfg)).st_mode)
    assert mode & 0o037 == 0, oct(mode)                         # created 0640 (or tighter)
    for name in slurm_cluster.DAEMON_LOGS:
        path = Path(base_config["slurm"]["log_dir"]) / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o037 == 0, (path, oct(path.stat().st_mode))
    # One left world-readable by an older setup is made 0640 when the hub or the cluster starts.
    old_hub_log, old_slurm_log = tmp_path / "jupyterhub.log", tmp_path / "slurmctld.log"
    for path in (old_hub_log, old_slurm_log):
        path.write_text("old lines\n")
        path.chmod(0o644)
    with hub_process.open_log(old_hub_log) as log:
        log.write(b"new line\n")
    assert slurm_cluster.restrict_daemon_logs(tmp_path) == [old_slurm_log]
    assert [stat.S_IMODE(p.stat().st_mode) for p in (old_hub_log, old_slurm_log)] == [0o640, 0o640]
    assert old_hub_log.read_text() == "old lines\nnew line\n"


# --- the config each service is handed -------------------------------------------------------------

def service_processes(hub) -> dict[str, dict]:
    """The config in ACADEMY_SERVICE_CONFIG of each of this hub's service processes, from /proc (root)."""
    hub_pid = hub_process.running_pid(hub.cfg)
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        except (OSError, IndexError, ValueError):
            continue        # ended meanwhile
        for name, module in ((EXCHANGE, b"assessments.exchange.service"), (PROGRESS, b"assessments.progress.service")):
            if ppid == hub_pid and module in cmdline:
                found[name] = json.loads(environ[b"ACADEMY_SERVICE_CONFIG"])
    return found


def test_each_running_service_holds_only_its_own_part_of_the_config(cohort):
    handed = service_processes(cohort)
    assert set(handed) == {EXCHANGE, PROGRESS}
    exchange, progress = handed[EXCHANGE], handed[PROGRESS]
    assert "db_url" not in exchange["hub"] and "db_url" not in progress["hub"]      # the hub's database
    assert "database" not in exchange["progress"]                                   # the progress service's
    # The progress service reads the gradebook's enrolment (who teaches what): where that database is,
    # and nothing else of the assessments (no submission limits, no grading settings, no notebook env);
    # of Slurm, where sacct is (GPU-hours from its accounting).
    assert set(progress) == {"hub", "progress", "assessments", "slurm"}
    assert set(progress["assessments"]) == {"root", "database"} and set(progress["slurm"]) == {"bin_dir"}
    assert set(progress["hub"]) == {"state_dir", "public_url"} and progress["hub"]["public_url"].startswith("http")
    assert "demo" not in exchange and "demo" not in progress                         # nor the demo passwords' file
    assert exchange == json.loads(json.dumps(service_config(cohort.cfg, EXCHANGE)))


def test_a_service_config_names_no_other_database():
    hub_db, progress_db, gradebook = ("postgresql://hub:pw-hub@db/jupyterhub", "postgresql+psycopg://p:pw-p@db/progress",
                                      "postgresql://g:pw-g@db/gradebook")
    cfg = academy_config.load()
    cfg = {**cfg, "hub": {**cfg["hub"], "db_url": hub_db}, "progress": {**cfg["progress"], "database": progress_db},
           "assessments": {**cfg["assessments"], "database": gradebook}}
    exchange, progress = (json.dumps(service_config(cfg, s)) for s in (EXCHANGE, PROGRESS))
    assert hub_db not in exchange and progress_db not in exchange and gradebook in exchange
    assert hub_db not in progress and progress_db in progress
