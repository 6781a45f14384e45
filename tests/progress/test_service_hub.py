"""The service under a real JupyterHub 6: started by the hub, reached through its proxy, every
token checked by the hub (learner, trainer, admin, emitter service, forged, expired).

The hub here is a small one of its own (no Slurm, no spawning), configured with exactly the
service, custom scope and roles that hub/configurer.py is to register (see SERVICE_ENTRY and
ROLES). When the platform's own hub registers the service, the last test checks it there too.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from assessments.progress.outbox import Outbox
from assessments.progress.service import INGEST_SCOPE, NAME

from ..support import free_port
from .eventgen import T0, event_id
from .test_service_api import enrolled

ROOT = Path(__file__).resolve().parents[2]
ACCESS = f"access:services!service={NAME}"


def hub_config(tmp: Path, ports: dict, service_cfg: dict, tokens: dict) -> str:
    services = [
        {"name": NAME, "url": f"http://127.0.0.1:{ports['service']}", "oauth_no_confirm": True,
         "command": [sys.executable, "-m", "assessments.progress.service"],
         "environment": {"ACADEMY_SERVICE_CONFIG": json.dumps(service_cfg), "PYTHONPATH": str(ROOT)}},
        # Stands in for the exchange: a hub service whose token may send events.
        {"name": "academy-exchange", "api_token": tokens["exchange"]},
        {"name": "test-driver", "api_token": tokens["driver"]},       # mints the users' tokens
    ]
    roles = [
        {"name": "academy-progress-emitters", "services": ["academy-exchange"], "scopes": [ACCESS, INGEST_SCOPE]},
        {"name": "user", "scopes": ["self", ACCESS]},
        {"name": "test-driver", "services": ["test-driver"], "scopes": ["admin:users", "tokens", "list:users"]},
    ]
    return "\n".join([
        "c.JupyterHub.ip = '127.0.0.1'", f"c.JupyterHub.port = {ports['public']}",
        "c.JupyterHub.hub_ip = '127.0.0.1'", f"c.JupyterHub.hub_port = {ports['hub']}",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{ports['proxy_api']}'",
        f"c.JupyterHub.db_url = 'sqlite:///{tmp / 'jupyterhub.sqlite'}'",
        f"c.JupyterHub.cookie_secret_file = '{tmp / 'cookie_secret'}'",
        "c.Authenticator.admin_users = {'admin'}",
        "c.Authenticator.allowed_users = {'learner1', 'learner2', 'trainer1'}",
        f"c.JupyterHub.custom_scopes = {{{INGEST_SCOPE!r}: {{'description': 'send learner-progress events'}}}}",
        f"c.JupyterHub.services = {services!r}", f"c.JupyterHub.load_roles = {roles!r}",
    ]) + "\n"


@pytest.fixture(scope="module")
def progress_hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress-hub")
    ports = {k: free_port() for k in ("public", "hub", "proxy_api", "service")}
    tokens = {"exchange": secrets.token_hex(16), "driver": secrets.token_hex(16)}
    gradebook = f"sqlite:///{tmp / 'gradebook.sqlite'}"
    service_cfg = {"hub": {"state_dir": str(tmp), "public_url": f"http://127.0.0.1:{ports['public']}/"},
                   "progress": {"database": f"sqlite:///{tmp / 'progress.sqlite'}"},
                   "assessments": {"root": str(tmp / "courses"), "database": gradebook,
                                   "late_penalty_per_day": 0.1, "late_grace_s": 300}}
    enrolled(gradebook, [("llm-101", "learner1", "learner"), ("llm-101", "learner2", "learner"), ("llm-101", "trainer1", "trainer")])
    (tmp / "jupyterhub_config.py").write_text(hub_config(tmp, ports, service_cfg, tokens))
    log = open(tmp / "hub.log", "wb")
    jupyterhub = str(Path(sys.executable).with_name("jupyterhub"))
    proc = subprocess.Popen([jupyterhub, "-f", str(tmp / "jupyterhub_config.py")], cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['public']}"
    deadline = time.monotonic() + 90
    try:
        while True:
            assert proc.poll() is None, f"the hub exited: {(tmp / 'hub.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the service is not up: {(tmp / 'hub.log').read_text()[-3000:]}"
            try:
                r = requests.get(f"{url}/services/{NAME}/api/me", timeout=5)
                if r.status_code == 403 and r.headers.get("Content-Type") == "application/json":
                    break       # the service itself answers (the proxy routes to it)
            except requests.ConnectionError:
                pass
            time.sleep(0.3)

        def token_for(name, **body):
            r = requests.post(f"{url}/hub/api/users/{name}/tokens", json={"note": "progress tests", **body},
                              headers={"Authorization": f"token {tokens['driver']}"}, timeout=10)
            assert r.status_code == 201, r.text
            return r.json()["token"]
        yield {"url": url, "service_url": f"http://127.0.0.1:{ports['service']}/services/{NAME}/",
               "exchange_token": tokens["exchange"], "token_for": token_for, "tmp": tmp}
    finally:
        proc.terminate()        # the hub stops its proxy and the service
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def get(hub, path, token=None):
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(f"{hub['url']}/services/{NAME}/api/{path}", headers=headers, timeout=30,
                        allow_redirects=False)


def learner_events():
    item = {"course": "llm-101", "assignment": "tokenization"}
    return [{"id": event_id("hub", 1), "type": "assignment_released", **item, "occurred_at": T0,
             "payload": {"due_at": T0 + 86400, "max_score": 10}},
            {"id": event_id("hub", 2), "type": "assignment_submitted", "user": "learner1", **item,
             "occurred_at": T0 + 60}]


def test_events_from_an_emitters_outbox_arrive_once_and_a_learner_cannot_send_any(progress_hub, tmp_path):
    learner = progress_hub["token_for"]("learner1")
    box = Outbox(tmp_path / "spool")
    box.emit_many(learner_events())
    refused = box.flush(progress_hub["service_url"] + "api/events", learner)
    assert "HTTP 403" in refused.error and refused.pending == 1          # kept, not lost
    sent = box.flush(progress_hub["service_url"] + "api/events", progress_hub["exchange_token"])
    assert (sent.sent, sent.duplicates, sent.pending, sent.error) == (2, 0, 0, "")
    box.emit_many(learner_events())     # the same events again (an emitter that replays)
    again = box.flush(progress_hub["service_url"] + "api/events", progress_hub["exchange_token"])
    assert (again.sent, again.duplicates) == (0, 2)
    me = get(progress_hub, "me", learner).json()
    assert [(a["assignment"], a["status"], a["submissions"]) for a in me["courses"][0]["assignments"]] == \
        [("tokenization", "submitted", 1)]


def test_each_role_sees_what_it_may_through_the_hub(progress_hub):
    token = {name: progress_hub["token_for"](name) for name in ("learner1", "learner2", "trainer1", "admin")}
    assert get(progress_hub, "me", token["learner2"]).json()["user"] == "learner2"
    assert get(progress_hub, "users/learner1", token["learner2"]).status_code == 403
    assert get(progress_hub, "courses/llm-101/cohort", token["learner1"]).status_code == 404   # as if none
    cohort = get(progress_hub, "courses/llm-101/cohort", token["trainer1"])
    assert cohort.status_code == 200 and [r["user"] for r in cohort.json()["learners"]] == ["learner1", "learner2"]
    assert get(progress_hub, "users/learner2", token["trainer1"]).json()["user"] == "learner2"
    assert get(progress_hub, "users/trainer1", token["learner1"]).status_code == 403
    assert get(progress_hub, "users/learner2", token["admin"]).status_code == 200
    assert get(progress_hub, "courses/hpc-101/cohort", token["admin"]).json()["counts"]["learners"] == 0
    assert get(progress_hub, "courses/hpc-101/cohort", token["trainer1"]).status_code == 404


def test_forged_expired_and_missing_tokens_are_refused(progress_hub):
    short = progress_hub["token_for"]("learner1", expires_in=1)
    forged = secrets.token_hex(16)
    time.sleep(1.5)
    for token in (forged, short, None):
        r = get(progress_hub, "me", token)
        assert r.status_code == 403, (token, r.status_code, r.text)
        assert "valid hub token" in r.json()["message"]
    assert get(progress_hub, "me", progress_hub["token_for"]("learner1")).status_code == 200


def test_the_platforms_hub_serves_progress(hub, login):
    learner, trainer = login("learner1"), login("trainer1")
    base = f"{hub.url}/services/{NAME}/api"
    me = requests.get(f"{base}/me", headers={"Authorization": f"token {learner.token}"}, timeout=30)
    assert me.status_code == 200 and me.json()["user"] == "learner1"
    for token, status in ((learner.token, 404), (secrets.token_hex(16), 403)):   # not a trainer; no valid token
        r = requests.get(f"{base}/courses/llm-101/cohort", headers={"Authorization": f"token {token}"}, timeout=30)
        assert r.status_code == status
    r = requests.post(f"{base}/events", json={"events": learner_events()},
                      headers={"Authorization": f"token {trainer.token}"}, timeout=30)
    assert r.status_code == 403
