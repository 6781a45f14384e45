"""Workshops with the real parts: the CLI, the hub and its workshop service, Slurm with a reservation,
pooled Unix accounts, JupyterLab sessions, and ten attendees joining in chromium at once."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
import tarfile
import time

import pytest
import requests

from hub import hub_process

from ..assessment_support import academy
from ..conftest import ARTIFACTS, start_hub, stop_hub
from ..support import HubUser, wait_for
from .conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.integration

COURSE, ASSIGNMENT, NOTEBOOK = "llm-101", "tokenization", "tokenization.ipynb"
NAME, SEATS = "wsdemo", 11   # ten join at once, one comes late
ROOM = 10
WS_PROFILE = {"key": "ws-cpu", "display": "Workshop CPU session, 1 core", "partition": "cpu", "cpus": 1,
              "memory": "1G", "walltime_default": "00:30:00", "walltime_max": "02:00:00", "groups": ["trainers"]}


@pytest.fixture(scope="module")
def ws_hub(tmp_path_factory, base_config, slurm_cluster_up, demo_credentials):
    root = tmp_path_factory.mktemp("workshops")
    hub = start_hub(root, {
        "profiles": list(base_config["profiles"]) + [WS_PROFILE],
        "workshops": {"interval": 1, "prewarm_minutes": 5, "keep_warm_minutes": 1, "join_failures_per_minute": 5,
                      "profiles": ["ws-cpu", "cpu-small"], "max_seats": 20, "export_dir": str(root / "exports")},
        "sessions": {"monitor_interval": 1},
    })
    for args in (("publish", COURSE, ASSIGNMENT), ("enrol", COURSE, "learner2"), ("enrol", COURSE, "trainer1", "--trainer")):
        out = academy(hub, *args)
        assert out.returncode == 0, out.stderr
    # a site's reservation, for tomorrow: it cannot serve a workshop today
    subprocess.run(["scontrol", "create", "reservation", "ReservationName=site-tomorrow", "StartTime=now+1days",
                    "Duration=60", "Nodes=ALL", "Users=root"], check=True, capture_output=True)
    yield hub
    subprocess.run(["scontrol", "delete", "ReservationName=site-tomorrow"], capture_output=True)
    for name in (NAME, "wsbad", "wsacct"):
        academy(hub, "workshop", "end", name)
    wait_for(lambda: all(not re.search(r"\bscheduled\b", line) for line in
                         academy(hub, "workshop", "list").stdout.splitlines()), 90, what="workshops to end")
    for name in (NAME, "wsbad", "wsacct"):
        academy(hub, "workshop", "delete", name)
    stop_hub(hub, "workshop-hub.log")


def create(hub, name=NAME, *extra: str) -> subprocess.CompletedProcess:
    return academy(hub, "workshop", "create", name, "--title", "LLM day", "--course", COURSE, "--assignment",
                   ASSIGNMENT, "--profile", "ws-cpu", "--seats", str(SEATS), "--duration", "40m",
                   "--trainer", "trainer1", *extra)


def show(hub, name=NAME) -> dict[str, str]:
    out = academy(hub, "workshop", "show", name).stdout
    return dict(re.findall(r"^\s+([a-z ]+):\s+(.*)$", out, re.M))


def home(account: str):
    import pwd
    from pathlib import Path
    return Path(pwd.getpwnam(account).pw_dir)


def account_exists(account: str) -> bool:
    return subprocess.run(["id", account], capture_output=True).returncode == 0


def jobs_of(accounts) -> list[dict]:
    out = subprocess.run(["squeue", "--noheader", "--format=%i|%u|%T|%v", "--users", ",".join(accounts)],
                         capture_output=True, text=True).stdout
    return [dict(zip(("id", "user", "state", "reservation"), line.split("|"))) for line in out.splitlines() if line]


# -- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    # (the checks of the request itself are unit tests: tests/unit/test_workshops.py)
    (("--duration", "40m", "--profile", "gpu-h200-2"), "profile 'gpu-h200-2' may not be used by a workshop; accepted: "
                                                       "ws-cpu, cpu-small"),
    (("--duration", "40m", "--reservation", "no-such-res"), "Slurm has no reservation 'no-such-res'"),
    (("--duration", "40m", "--reservation", "site-tomorrow"), "reservation 'site-tomorrow' runs "),
    (("--duration", "40m", "--assignment", "attention"), "has no published assignment 'attention'; published: "
                                                         "tokenization"),
])
def test_a_bad_workshop_is_refused_clearly_and_nothing_is_made(ws_hub, args, message):
    base = ["workshop", "create", "wsbad", "--title", "Bad", "--course", COURSE, "--assignment", ASSIGNMENT,
            "--profile", "ws-cpu", "--seats", "2", "--reservation", "auto"]
    # later arguments win in argparse: each case changes one thing of a good request
    out = academy(ws_hub, *base, *args)
    assert out.returncode == 1, out.stdout
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not account_exists("ws-wsbad-01")
    assert "wsbad" not in academy(ws_hub, "workshop", "list").stdout
    assert "academy-ws-wsbad" not in subprocess.run(["scontrol", "show", "reservation"], capture_output=True,
                                                    text=True).stdout


# -- the room -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workshop(ws_hub):
    # It starts in 2-3 minutes (a start is to the minute); joining opens at once (prewarm 5 minutes),
    # and a seat nobody takes is let go keep_warm_minutes (1) after the start.
    start = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 180))
    out = create(ws_hub, NAME, "--reservation", "auto", "--start", start)
    assert out.returncode == 0, out.stderr
    info = show(ws_hub)
    assert info["reservation"] == f"academy-ws-{NAME}"
    accounts = [f"ws-{NAME}-{n:02d}" for n in range(1, SEATS + 1)]
    # Pre-warmed: every seat's session runs, in the reservation, before anyone joined.
    wait_for(lambda: len([j for j in jobs_of(accounts) if j["state"] == "RUNNING"]) == SEATS, 240,
             what="eleven warm sessions running")
    assert {j["reservation"] for j in jobs_of(accounts)} == {f"academy-ws-{NAME}"}
    return {"code": info["code"], "link": info["join link"], "accounts": accounts}


def test_a_link_preview_or_a_mail_scanner_takes_no_seat(ws_hub, workshop):
    """What fetches the link without being a browser opening it (a chat's preview, a mail gateway
    checking every link) is shown the Join button: no seat, no login."""
    mark = ws_hub.log_mark()
    for agent in ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Mozilla/5.0 (compatible; scanner)"):
        r = requests.get(workshop["link"], headers={"User-Agent": agent}, timeout=30)
        assert r.status_code == 200 and 'type="submit">Join</button>' in r.text and "/user/" not in r.url
        assert not [c.name for c in r.cookies if c.name != "_xsrf"], r.cookies
    assert show(ws_hub)["seats"].startswith(f"0 of {SEATS} taken")
    assert "was shown the Join button; no seat taken" in mark.new_text()


async def _join_all(link: str, count: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

        async def attendee(i: int) -> dict:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(120_000)
            authorize = []
            page.on("request", lambda request: authorize.append(1) if "/oauth2/authorize" in request.url else None)
            began = time.monotonic()
            await page.goto(link)
            await page.wait_for_url(re.compile(r".*/lab/tree/.*"))
            oauth_hops = len(authorize)
            # the notebook itself is open in JupyterLab (its tab, and its first cell rendered)
            await page.wait_for_selector(f'.lm-TabBar-tab[title*="{NOTEBOOK}"]')
            await page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
            seconds = time.monotonic() - began
            if i == 0:
                await page.screenshot(path=str(ARTIFACTS / "workshop-attendee.png"))
            state = await context.storage_state()
            url = page.url
            # joining twice from the same browser lands in the same seat
            await page.goto(link)
            await page.wait_for_url(re.compile(r".*/lab/tree/.*"))
            again = page.url
            await context.close()
            return {"url": url, "again": again, "seconds": seconds, "state": state, "oauth_hops": oauth_hops}

        results = await asyncio.gather(*(attendee(i) for i in range(count)))
        await browser.close()
        return results


def cookies_of(state: dict) -> requests.Session:
    s = requests.Session()
    for c in state["cookies"]:
        s.cookies.set(c["name"], c["value"], domain=c["domain"], path=c["path"])
    return s


@pytest.fixture(scope="module")
def joined(ws_hub, workshop):
    results = asyncio.run(_join_all(workshop["link"], ROOM))
    accounts = [re.search(r"/user/([^/]+)/", r["url"]).group(1) for r in results]
    return {"results": results, "accounts": accounts}


def test_ten_attendees_join_by_code_at_once_and_land_in_their_own_notebook(ws_hub, workshop, joined):
    assert len(set(joined["accounts"])) == ROOM and set(joined["accounts"]) < set(workshop["accounts"])   # none shared
    for r, account in zip(joined["results"], joined["accounts"]):
        assert r["url"].endswith(f"/user/{account}/lab/tree/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}")
        assert r["again"] == r["url"]                                # same browser, same seat
        assert (home(account) / COURSE / ASSIGNMENT / NOTEBOOK).is_file()   # fetched for that attendee
        # the warm session let the browser in with its join ticket, without OAuth's round trips,
        # and the one-time ticket is gone from the browser
        assert r["oauth_hops"] == 0
        assert "academy-join-ticket" not in {c["name"] for c in r["state"]["cookies"]}
    print("join seconds:", sorted(round(r["seconds"], 2) for r in joined["results"]))
    # the sessions are the warm ones: still one job per seat, all in the reservation
    assert len(jobs_of(workshop["accounts"])) == SEATS
    assert {j["reservation"] for j in jobs_of(workshop["accounts"])} == {f"academy-ws-{NAME}"}


def test_an_attendee_cannot_take_another_profile_or_reach_another_seat(ws_hub, workshop, joined):
    me, other = joined["accounts"][0], joined["accounts"][1]
    s = cookies_of(joined["results"][0]["state"])
    home_page = s.get(f"{ws_hub.url}/hub/home", timeout=30)
    xsrf = re.search(r'xsrf_token: "([^"]+)"', home_page.text).group(1)
    r = s.post(f"{ws_hub.url}/hub/api/users/{me}/server", json={"profile": "gpu-h200-1"},
               headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code in (400, 409), r.text   # 409: its server runs; a new profile would need a stop first
    r = s.delete(f"{ws_hub.url}/hub/api/users/{me}/server", headers={"X-XSRFToken": xsrf}, timeout=60)
    assert r.status_code in (202, 204)
    wait_for(lambda: not s.get(f"{ws_hub.url}/hub/api/users/{me}", headers={"X-XSRFToken": xsrf},
                               timeout=30).json()["servers"], 60, what="the attendee's session to stop")
    r = s.post(f"{ws_hub.url}/hub/api/users/{me}/server", json={"profile": "gpu-h200-1"},
               headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 400 and "Profile 'gpu-h200-1' is not available to you; choose one of: ws-cpu" in r.text
    # a browser cannot trade a join ticket for a token itself: only a session's own token can
    r = s.post(f"{ws_hub.url}/hub/api/academy/join-ticket", json={"ticket": "x" * 43},
               headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 403 and "a session's own API token is needed" in r.text
    r = s.get(f"{ws_hub.url}/user/{other}/api/contents", timeout=30, allow_redirects=True)
    assert r.status_code in (403, 404) and ASSIGNMENT not in r.text
    r = s.get(f"{ws_hub.url}/hub/api/users/{other}", headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 404
    # back to work: the join link starts the seat's session again (cold) and opens the notebook
    r = s.get(workshop["link"], timeout=180)
    assert r.status_code == 200 and r.url.endswith(f"/user/{me}/lab/tree/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}")


def test_a_trainer_sees_the_room_and_opens_a_session_only_with_consent(ws_hub, workshop, joined, demo_credentials):
    trainer = HubUser(ws_hub, "trainer1", demo_credentials["trainer1"])
    page = trainer.http.get(f"{ws_hub.url}/hub/workshops/{NAME}", timeout=30).text
    # (the free seat's warm session counts as running until it is let go, a minute after the start)
    assert re.search(rf"{ROOM} of {SEATS} joined, ({ROOM}|{SEATS}) running, 0 stuck", page), page
    attendee = joined["accounts"][2]
    # the browser's way in: the session's page, through the hub's OAuth
    assert trainer.http.get(f"{ws_hub.url}/user/{attendee}/lab", timeout=30).status_code == 403
    # the attendee lets trainer1 in, and sees that they did
    s = cookies_of(joined["results"][2]["state"])
    help_page = s.get(f"{ws_hub.url}/hub/workshop/help", timeout=30).text
    assert "Nobody but you can open your session." in help_page
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', help_page).group(1)
    shared = s.post(f"{ws_hub.url}/hub/workshop/help", data={"trainer": "trainer1", "_xsrf": xsrf}, timeout=30).text
    assert "trainer1</strong> can open your session now" in shared
    page = trainer.http.get(f"{ws_hub.url}/hub/workshops/{NAME}", timeout=30).text
    assert f'href="/user/{attendee}/lab"' in page
    # JupyterHub asks the trainer to confirm entering someone else's session; they do
    consent = trainer.http.get(f"{ws_hub.url}/user/{attendee}/lab", timeout=60)
    assert consent.status_code == 200 and "Authorize" in consent.text
    fields = [("_xsrf", re.search(r'name="_xsrf" value="([^"]+)"', consent.text).group(1))]
    fields += [("scopes", v) for v in re.findall(r'type="hidden" name="scopes" value="([^"]+)"', consent.text)]
    lab = trainer.http.post(consent.url, data=fields, timeout=60)
    assert lab.status_code == 200 and lab.url.endswith(f"/user/{attendee}/lab"), lab.url
    xsrf = trainer.http.cookies.get("_xsrf", path=f"/user/{attendee}/")   # as JupyterLab sends it
    r = trainer.http.get(f"{ws_hub.url}/user/{attendee}/api/contents/{COURSE}/{ASSIGNMENT}", timeout=60,
                         headers={"X-XSRFToken": xsrf})
    assert r.status_code == 200 and NOTEBOOK in r.text
    # a learner who is not a trainer of the workshop sees no trainer page
    learner = HubUser(ws_hub, "learner1", demo_credentials["learner1"])
    assert learner.http.get(f"{ws_hub.url}/hub/workshops/{NAME}", timeout=30).status_code == 404


def test_a_seat_nobody_took_is_let_go_and_a_late_attendee_starts_cold(ws_hub, workshop, joined):
    free = (set(workshop["accounts"]) - set(joined["accounts"])).pop()
    # keep_warm_minutes after the start, the warm session of the seat nobody took is stopped
    wait_for(lambda: f"workshop {NAME}: warm session of free seat {free} stopped" in
             hub_process.log_file(ws_hub.cfg).read_text(), 240, what="the free seat's warm session to be let go")
    wait_for(lambda: not jobs_of([free]), 60, what="the free seat's job to end")
    assert len(jobs_of(joined["accounts"])) == ROOM   # the attendees' own go on
    # the late attendee gets that seat: a cold start, then the notebook. Their browser sends no
    # Fetch Metadata (an older one), so the link shows the Join button, which takes the seat.
    late = requests.Session()
    began = time.monotonic()
    page = late.get(workshop["link"], timeout=60)
    assert page.status_code == 200 and "/user/" not in page.url and 'type="submit">Join</button>' in page.text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = late.post(workshop["link"], data={"_xsrf": xsrf}, timeout=60)
    while "/hub/spawn-pending/" in r.url and time.monotonic() - began < 180:
        time.sleep(1)                   # what the pending page's script does once the session is up
        r = late.get(r.url, timeout=60)
    assert r.status_code == 200 and r.url.endswith(f"/user/{free}/lab/tree/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}"), r.url
    assert [j["reservation"] for j in jobs_of([free])] == [f"academy-ws-{NAME}"]


def test_a_full_workshop_says_so(ws_hub, workshop, joined):
    r = requests.get(workshop["link"], timeout=30)
    assert r.status_code == 409
    assert f"All {SEATS} seats of &#39;LLM day&#39; are taken" in r.text


def test_the_end_of_the_window_stops_locks_and_exports_and_the_next_use_sees_nothing(ws_hub, workshop, joined,
                                                                                     demo_credentials):
    first = joined["accounts"][0]
    for account in joined["accounts"]:
        (home(account) / "my-notes.txt").write_text(f"{account}'s attendee was here")
        subprocess.run(["chown", f"{account}:", str(home(account) / "my-notes.txt")], check=True)
    out = academy(ws_hub, "workshop", "end", NAME)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: show(ws_hub)["window"].endswith("(ended)"), 120, what="the workshop to end")
    assert jobs_of(workshop["accounts"]) == []
    status = subprocess.run(["passwd", "-S", first], capture_output=True, text=True).stdout.split()
    assert status[1] == "L"                                         # locked
    assert "Account expires" in subprocess.run(["chage", "-l", first], capture_output=True, text=True).stdout
    assert list(home(first).iterdir()) == []                        # wiped after the export
    assert "not found" in subprocess.run(["scontrol", "show", "reservation", f"academy-ws-{NAME}"],
                                         capture_output=True, text=True).stdout
    assert requests.get(workshop["link"], timeout=30).status_code == 410
    trainer = HubUser(ws_hub, "trainer1", demo_credentials["trainer1"])
    archive = trainer.http.get(f"{ws_hub.url}/hub/workshops/{NAME}/export", timeout=60)
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        notes = tar.extractfile(f"{first}/my-notes.txt").read().decode()
        assert notes == f"{first}'s attendee was here"
        assert f"{first}/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}" in tar.getnames()
    # the attendee's browser can start nothing any more
    s = cookies_of(joined["results"][0]["state"])
    xsrf = re.search(r'xsrf_token: "([^"]+)"', s.get(f"{ws_hub.url}/hub/home", timeout=30).text).group(1)
    r = s.post(f"{ws_hub.url}/hub/api/users/{first}/server", timeout=30, headers={"X-XSRFToken": xsrf})
    assert r.status_code == 403 and "The workshop 'LLM day' has ended; its sessions are closed." in r.text, r.text
    # the cohort stays: the pooled accounts are the workshop's hub group (the progress pages' filter)
    admin_view = trainer.http.get(f"{ws_hub.url}/hub/workshops/{NAME}", timeout=30).text
    assert 'id="export"' in admin_view
    # the course's cohort under the workshop's group: its attendees, with the GPU-hours they used
    # (a CPU profile here: none)
    cohort = trainer.http.get(f"{ws_hub.url}/services/academy-progress/courses/{COURSE}/cohort.csv",
                              params={"group": f"workshop-{NAME}"}, timeout=60)
    assert cohort.status_code == 200, cohort.text[:300]
    rows = list(csv.DictReader(io.StringIO(cohort.text)))
    assert sorted(r["learner"] for r in rows) == workshop["accounts"]
    assert {r["gpu_hours"] for r in rows} == {"0"}

    # The next use of the same pooled account: nothing of the previous attendee.
    assert academy(ws_hub, "workshop", "delete", NAME).returncode == 0
    out = create(ws_hub, NAME)
    assert out.returncode == 0, out.stderr
    link = show(ws_hub)["join link"]
    wait_for(lambda: requests.get(link, timeout=60, allow_redirects=False).status_code != 403, 60,
             what="the new workshop to open")
    fresh = asyncio.run(_join_all(link, 1))[0]
    account = re.search(r"/user/([^/]+)/", fresh["url"]).group(1)
    assert account in joined["accounts"]             # a pooled account of the first run, used again
    assert sorted(p.name for p in home(account).iterdir() if not p.name.startswith(".")) == [COURSE]
    assert not (home(account) / "my-notes.txt").exists()
    # the previous attendee's browser is logged out: its hub user was made anew
    old = cookies_of(joined["results"][joined["accounts"].index(account)]["state"])
    r = old.get(f"{ws_hub.url}/hub/home", timeout=30, allow_redirects=False)
    assert r.status_code == 302 and "/hub/login" in r.headers["Location"]


def test_an_enrolled_learner_opens_an_assignment_in_a_session_from_the_progress_page(ws_hub, demo_credentials):
    learner = HubUser(ws_hub, "learner2", demo_credentials["learner2"])
    # the release reaches the progress service through the exchange's outbox
    found = wait_for(lambda: re.search(r'class="open-in-session" href="([^"]+)"', learner.http.get(
        f"{ws_hub.url}/services/academy-progress/", timeout=60).text), 60, what="the assignment on the progress page")
    link = found.group(1).replace("&amp;", "&")
    assert link == f"/hub/open?course={COURSE}&assignment={ASSIGNMENT}"
    # no session yet: the spawn form (a link starts nothing), which then opens the notebook
    form = learner.http.get(f"{ws_hub.url}{link}", timeout=60)
    assert "/hub/spawn/learner2" in form.url and 'name="profile"' in form.text
    pending = learner.http.post(form.url, data={"profile": "cpu-small", "walltime": "10", "_xsrf": learner.xsrf},
                                timeout=180)
    if "/hub/spawn-pending/learner2?next=" in pending.url:
        learner.wait_ready()
        lab = learner.http.get(pending.url, timeout=60)    # what the pending page does once the server is up
    else:   # the session was up within the hub's slow_spawn_timeout: JupyterHub goes straight on to next
        lab = pending
    assert lab.status_code == 200 and lab.url.endswith(f"/user/learner2/lab/tree/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}"), \
        (lab.url, lab.text[-1500:])
    # with a session running, the link opens the notebook at once
    again = learner.http.get(f"{ws_hub.url}{link}", timeout=60)
    assert again.url == lab.url
    learner.stop_server()


def test_an_attendee_with_an_account_joins_with_it(ws_hub, demo_credentials):
    out = academy(ws_hub, "workshop", "create", "wsacct", "--title", "Own accounts", "--course", COURSE,
                  "--assignment", ASSIGNMENT, "--profile", "ws-cpu", "--seats", "1", "--duration", "40m",
                  "--join", "account", "--reservation", "auto", "--trainer", "trainer1")
    assert out.returncode == 0, out.stderr
    info = show(ws_hub, "wsacct")
    assert "ws-wsacct-01" not in out.stdout and not account_exists("ws-wsacct-01")   # no pooled accounts
    # not logged in: the hub's login first, then back to the link
    r = requests.get(info["join link"], timeout=30, allow_redirects=False)
    assert r.status_code == 302 and "/hub/login?next=" in r.headers["Location"]
    learner = HubUser(ws_hub, "learner1", demo_credentials["learner1"])
    began = time.monotonic()
    r = learner.http.get(info["join link"], timeout=180)
    while "/hub/spawn-pending/" in r.url and time.monotonic() - began < 180:
        time.sleep(1)
        r = learner.http.get(r.url, timeout=60)
    assert r.status_code == 200 and r.url.endswith(f"/user/learner1/lab/tree/{COURSE}/{ASSIGNMENT}/{NOTEBOOK}"), r.url
    # their own account and home, in the workshop's reservation
    assert [j["reservation"] for j in jobs_of(["learner1"])] == ["academy-ws-wsacct"]
    assert (home("learner1") / COURSE / ASSIGNMENT / NOTEBOOK).is_file()
    # one seat: the next person is told the workshop is full
    other = HubUser(ws_hub, "learner2", demo_credentials["learner2"])
    r = other.http.get(info["join link"], timeout=30)
    assert r.status_code == 409 and "All 1 seats of &#39;Own accounts&#39; are taken" in r.text
    # the end stops their session; their account is theirs and stays open
    assert academy(ws_hub, "workshop", "end", "wsacct").returncode == 0
    wait_for(lambda: show(ws_hub, "wsacct")["window"].endswith("(ended)"), 120, what="the workshop to end")
    assert jobs_of(["learner1"]) == []
    assert subprocess.run(["passwd", "-S", "learner1"], capture_output=True, text=True).stdout.split()[1] != "L"


def test_code_guessing_is_rate_limited_and_logged(ws_hub, workshop):
    # last in this module: every test's browser is 127.0.0.1, which this blocks for a minute
    mark = ws_hub.log_mark()
    answers = [requests.get(f"{ws_hub.url}/hub/workshop/join/ABCDEFGH", timeout=30) for _ in range(6)]
    assert [a.status_code for a in answers[:5]] == [404] * 5
    assert "No workshop has this code" in answers[0].text
    assert answers[5].status_code == 429 and int(answers[5].headers["Retry-After"]) > 0
    # while blocked, even the right code waits: guessing cannot go on by luck
    assert requests.get(show(ws_hub)["join link"], timeout=30).status_code == 429
    log = mark.new_text()
    assert "workshop join: unknown code from 127.0.0.1" in log and "tried another code while blocked" in log
    assert show(ws_hub)["code"] not in log
