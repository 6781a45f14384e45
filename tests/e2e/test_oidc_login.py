"""The centre's login: a real OpenID provider (panva's oidc-provider, OpenID certified, started
here), a hub with auth.type oidc, and people signing in with chromium. Groups from the provider's
claim become hub groups (the profiles offered) and course enrolment; a user outside the allowed
groups, and one without a Unix account, are refused with what to do; a login whose token the
provider no longer honours must sign in again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest
import requests

from hub import installer
from hub.config import load

from ..support import free_port, wait_for

CLIENT = {"client_id": "academy-hub", "client_secret": "test-only-client-secret-0123456789"}
ACCOUNTS = {
    "learner1": {"preferred_username": "learner1", "name": "Lea Learner",
                 "groups": ["ai-factory-learners", "llm-101-students"]},
    "trainer1": {"preferred_username": "trainer1", "groups": ["ai-factory-staff"]},
    "mallory": {"preferred_username": "mallory", "groups": ["visitors"]},
    "ghost": {"preferred_username": "ghost", "groups": ["ai-factory-learners"]},
}
TOKEN_TTL_S = 12


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """The OpenID provider on a free port; {"issuer", "hub_port"} (the hub's redirect URI is registered)."""
    folder = installer.test_oidc_dir(load())
    if not (folder / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the tests' OpenID provider is not installed: `./academy prepare --for-tests` installs it")
    shutil.copy(installer.TEST_OIDC_SOURCE / "provider.mjs", folder / "provider.mjs")
    tmp = tmp_path_factory.mktemp("oidc")
    port, hub_port = free_port(), free_port()
    config = {**CLIENT, "redirect_uri": f"http://127.0.0.1:{hub_port}/hub/oauth_callback",
              "access_token_ttl": TOKEN_TTL_S, "accounts": ACCOUNTS}
    (tmp / "provider.json").write_text(json.dumps(config))
    log = open(tmp / "provider.log", "wb")
    proc = subprocess.Popen(["node", "provider.mjs", str(port), str(tmp / "provider.json")], cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok
        except requests.RequestException:
            return False
    try:
        wait_for(up, 30, what="the OpenID provider")
        yield {"issuer": issuer, "hub_port": hub_port, "tmp": tmp}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def oidc_hub(provider, tmp_path_factory, slurm_cluster_up, demo_credentials):
    from ..conftest import start_hub, stop_hub

    secret = provider["tmp"] / "client-secret"
    secret.write_text(CLIENT["client_secret"] + "\n")
    os.chmod(secret, 0o600)
    hub = start_hub(tmp_path_factory.mktemp("oidchub"), {
        "hub": {"port": provider["hub_port"]},
        "auth": {"type": "oidc", "oidc": {
            "issuer": provider["issuer"], "client_id": CLIENT["client_id"], "client_secret_file": str(secret),
            "login_service": "AI Factory ID", "allowed_groups": ["ai-factory-learners", "ai-factory-staff"],
            "admin_groups": [], "group_map": {"ai-factory-learners": ["learners"], "ai-factory-staff": ["trainers"]},
            "course_roles": {"llm-101-students": {"course": "llm-101", "role": "learner"}}, "refresh_s": 2}},
    })
    yield hub
    stop_hub(hub, "oidc-hub.log")


def sign_in(page, hub, login: str):
    """Through the hub's login button, the provider's form and its consent page."""
    page.goto(f"{hub.url}/hub/login")
    page.get_by_text("Sign in with AI Factory ID").click()
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    if page.locator("input[name=prompt][value=consent]").count():
        page.click("button[type=submit]")
    page.wait_for_load_state()


def test_a_learner_signs_in_with_the_centres_account_and_gets_their_groups_and_course(oidc_hub, page):
    sign_in(page, oidc_hub, "learner1")
    wait_for(lambda: "/hub/spawn" in page.url or "/hub/home" in page.url, 30, what="the hub after the login")
    page.goto(f"{oidc_hub.url}/hub/spawn")
    form = page.content()
    # group_map: ai-factory-learners -> learners, whose profiles the form offers; course_roles: llm-101
    assert 'value="cpu-small"' in form and 'value="gpu-h200-1"' in form
    assert 'value="llm-101"' in form, "the course the provider's group enrols in"
    from assessments.gradebook.db import open_gradebook, url_from_config
    from assessments.gradebook.enrolment import Enrolment

    assert Enrolment(open_gradebook(url_from_config(oidc_hub.cfg))).find_role("llm-101", "learner1") == "learner"
    # the hub knows them by the provider's username claim, in the mapped and the course's groups
    page.goto(f"{oidc_hub.url}/hub/home")
    xsrf = re.search(r'xsrf_token: "([^"]+)"', page.content()).group(1)
    me = page.request.get(f"{oidc_hub.url}/hub/api/user", headers={"X-XSRFToken": xsrf})
    assert me.status == 200, me.text()
    assert me.json()["name"] == "learner1"
    assert {"learners", "llm-101-learners"} <= set(me.json()["groups"])
    assert 'value="gpu-h200-2"' not in form, "a learner is not offered the trainers' profile"


def test_a_trainer_gets_the_trainers_profiles(oidc_hub, page):
    sign_in(page, oidc_hub, "trainer1")
    page.goto(f"{oidc_hub.url}/hub/spawn")
    form = page.content()
    assert 'value="gpu-h200-2"' in form, "the trainers' profile (group_map: ai-factory-staff -> trainers)"
    assert 'value="cpu-small"' in form


def test_someone_outside_the_allowed_groups_is_refused(oidc_hub, page):
    sign_in(page, oidc_hub, "mallory")
    text = page.inner_text("body")
    assert "403" in text and "not currently authorized" in text, text
    page.goto(f"{oidc_hub.url}/hub/spawn")     # no session was made: the hub asks for a login
    assert "/hub/login" in page.url, page.url


def test_a_login_without_a_unix_account_is_refused_and_told_why(oidc_hub, page):
    sign_in(page, oidc_hub, "ghost")
    assert "There is no account 'ghost' on the cluster yet" in page.inner_text("body")


def test_a_login_the_provider_no_longer_honours_must_sign_in_again(oidc_hub, page):
    sign_in(page, oidc_hub, "learner1")
    page.goto(f"{oidc_hub.url}/hub/home")
    assert "/hub/home" in page.url
    time.sleep(TOKEN_TTL_S + 3)            # the access token expired; no refresh token was granted
    page.goto(f"{oidc_hub.url}/hub/home")
    # the hub asked the provider again (refresh_s), was refused, and sends the browser to log in
    wait_for(lambda: "/hub/home" not in page.url, 10, what="the hub to ask for a new login")
    assert "/hub/login" in page.url, page.url
    assert "Sign in with AI Factory ID" in page.inner_text("body")
