"""The session timer: the server extension's endpoint and the labextension in a real browser.

The hub's environment has no jupyter_server, so these start a real ``jupyter server`` from the
notebook environment with this checkout's ``spawners`` on PYTHONPATH and its prebuilt
labextension on JUPYTER_PATH (config, data and runtime dirs are private to the test). No Slurm:
the batch script's ACADEMY_WALLTIME_END and SLURM_JOB_ID are set by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from hub import config as academy_config
from spawners import session_timer

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "spawners" / "session_timer"
LABEXTENSION = PACKAGE / "labextension"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# The shared server's walltime ends this long after it is started: long enough for the server
# and JupyterLab to come up, short enough that the 2-minute warning and the save at 60 s left
# both happen within the test.
WALLTIME_S = 135
JOB_ID = "4242"
NOTEBOOK = "session-timer-check.ipynb"
WARNED = re.compile(r"@academy/session-timer:plugin: (\d+) s left, warning the learner")


# ---------------------------------------------------------------- no server needed


def test_session_info_reads_the_batch_scripts_environment():
    info = session_timer.session_info({"ACADEMY_WALLTIME_END": "1800000000", "SLURM_JOB_ID": "17"}, now=1799999000.5)
    assert info == {"walltime_end": 1800000000, "now": 1799999000.5, "job_id": "17"}


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "nan", "inf", "-5", "0"])
def test_no_or_bad_end_time_is_null(value):
    env = {} if value is None else {"ACADEMY_WALLTIME_END": value}
    info = session_timer.session_info(env)
    assert info["walltime_end"] is None and info["job_id"] is None
    assert abs(info["now"] - time.time()) < 5


def test_extension_points():
    assert session_timer._jupyter_server_extension_points() == [{"module": "spawners.session_timer"}]
    assert callable(session_timer._load_jupyter_server_extension)


def test_labextension_is_prebuilt_small_and_matches_its_source():
    meta = json.loads((LABEXTENSION / "package.json").read_text())
    source = json.loads((PACKAGE / "package.json").read_text())
    assert meta["name"] == source["name"] == "@academy/session-timer"
    assert meta["version"] == source["version"]
    entry = LABEXTENSION / meta["jupyterlab"]["_build"]["load"]
    assert re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", meta["jupyterlab"]["_build"]["load"]) and entry.is_file()
    files = [p for p in LABEXTENSION.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 200_000
    assert not any("node_modules" in p.parts for p in PACKAGE.rglob("*"))
    # The built bundle is the current source: its commands and endpoint are in there.
    bundle = "".join(p.read_text(errors="replace") for p in (LABEXTENSION / "static").glob("*.js"))
    for needle in ("academy/session", "docmanager:save-all", "Session: "):
        assert needle in bundle


# ---------------------------------------------------------------- a real Jupyter server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    root: Path
    walltime_end: int | None
    log: Path

    def get(self, path: str, token: bool = True, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        return requests.get(f"{self.url}/{path}", headers=headers, timeout=30, **kwargs)


def write_settings(config_dir: Path) -> None:
    """User settings of the test's JupyterLab: no autosave (so only the timer saves), no news."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    for plugin, values in {
        "docmanager-extension/plugin": {"autosave": False},
        "apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def running_server(base: Path, walltime_end: int | None, artifact: str):
    """``jupyter server`` from the notebook environment, set up as a Slurm job's would be."""
    jupyter = Path(academy_config.load()["notebook_env"]) / "bin" / "jupyter-server"
    if not jupyter.exists():
        pytest.fail(f"the notebook environment is missing: {jupyter} (install it with `./academy prepare`)")
    root, config_dir, data_dir, runtime_dir, path_dir = (base / d for d in ("root", "config", "data", "runtime",
                                                                            "path"))
    for d in (root, config_dir, data_dir, runtime_dir):
        d.mkdir()
    # This checkout's labextension, found first on JUPYTER_PATH (before any installed copy).
    (path_dir / "labextensions" / "@academy").mkdir(parents=True)
    (path_dir / "labextensions" / "@academy" / "session-timer").symlink_to(LABEXTENSION)
    # Enabled the way the notebook environment enables it: the shipped jupyter_server config.
    shutil.copy(PACKAGE / "jupyter-config" / "jupyter_server_config.d" / "academy-session-timer.json",
                config_dir / "jupyter_server_config.json")
    write_settings(config_dir)

    port, token = free_port(), uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("ACADEMY_WALLTIME_END", "SLURM_JOB_ID")}
    env.update({"PYTHONPATH": str(ROOT), "JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_DATA_DIR": str(data_dir),
                "JUPYTER_RUNTIME_DIR": str(runtime_dir), "JUPYTER_PATH": str(path_dir), "HOME": str(base)})
    if walltime_end is not None:
        env.update({"ACADEMY_WALLTIME_END": str(walltime_end), "SLURM_JOB_ID": JOB_ID})
    argv = [str(jupyter), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = base / "jupyter-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    srv = Server(url=f"http://127.0.0.1:{port}", token=token, root=root, walltime_end=walltime_end, log=log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if srv.get("api/status").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter server did not answer in 90 s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield srv
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / artifact)


@contextlib.contextmanager
def chromium():
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_outside_slurm_the_endpoint_says_null_and_the_page_shows_no_timer(tmp_path):
    with running_server(tmp_path, None, "session-timer-server-no-slurm.log") as srv:
        info = srv.get("academy/session").json()
        assert info["walltime_end"] is None and info["job_id"] is None
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(60_000)
            page.goto(f"{srv.url}/lab?token={srv.token}")
            page.locator(".jp-StatusBar-Widget").wait_for()
            # The extension is there and ran, and shows nothing.
            page.wait_for_function("window.jupyterapp?.hasPlugin?.('@academy/session-timer:plugin') "
                                   "&& window.jupyterapp.isPluginActivated('@academy/session-timer:plugin')")
            page.wait_for_timeout(2000)
            assert not page.locator("#academy-session-timer").is_visible()
            assert page.locator("#academy-session-timer").text_content() == ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server most tests share; its walltime ends WALLTIME_S after it starts."""
    with running_server(tmp_path_factory.mktemp("session-timer"), int(time.time()) + WALLTIME_S,
                        "session-timer-server.log") as srv:
        yield srv


def test_endpoint_returns_the_walltime_end_and_the_servers_clock(server):
    before = time.time()
    r = server.get("academy/session")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    info = r.json()
    assert info["walltime_end"] == server.walltime_end
    assert info["job_id"] == JOB_ID
    assert before - 1 <= info["now"] <= time.time() + 1


def test_endpoint_needs_the_token(server):
    assert server.get("academy/session", token=False).status_code == 403
    assert server.get("academy/session", token=False, params={"token": "wrong"}).status_code == 403


def test_jupyterlab_lists_the_labextension_enabled(server):
    r = server.get("lab/api/extensions")
    assert r.status_code == 200, r.text
    ours = [e for e in r.json() if e["name"] in ("@academy/session-timer", "academy-session-timer")]
    assert len(ours) == 1, [e["name"] for e in r.json()]
    assert ours[0]["enabled"] and ours[0]["installed"] and ours[0]["status"] == "ok"
    # ...and the page hands it to the browser to load.
    page = server.get("lab").text
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page, re.S).group(1))
    assert "@academy/session-timer" in [e["name"] for e in config["federated_extensions"]]
    assert "@academy/session-timer" not in config.get("disabledExtensions", [])


# ---------------------------------------------------------------- a real browser


def shown_seconds_left(text: str) -> int:
    h, m, s = re.fullmatch(r"Session: (\d+):(\d\d):(\d\d) left", text.strip()).groups()
    return int(h) * 3600 + int(m) * 60 + int(s)


def test_browser_counts_down_warns_and_saves_before_the_end(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "id": "first", "metadata": {},
                           "outputs": [], "source": ""}],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    r = requests.put(f"{server.url}/api/contents/{NOTEBOOK}", json={"type": "notebook", "content": notebook},
                     headers={"Authorization": f"token {server.token}"}, timeout=30)
    assert r.status_code in (200, 201), r.text
    on_disk = server.root / NOTEBOOK
    marker = f"edited-{uuid.uuid4().hex[:8]}"

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        # The learner's computer clock is an hour slow: the countdown must still be right.
        page.clock.install(time=time.time() - 3600)
        page.goto(f"{server.url}/lab/tree/{NOTEBOOK}?token={server.token}")

        # The status bar counts down from the server's end time.
        timer = page.locator("#academy-session-timer")
        timer.wait_for(state="visible")
        page.wait_for_function("document.getElementById('academy-session-timer').textContent.startsWith('Session: ')")
        assert abs(page.evaluate("Date.now()") / 1000 - (time.time() - 3600)) < 30  # the page's clock is off
        text = timer.text_content()
        expected = server.walltime_end - time.time()
        assert abs(shown_seconds_left(text) - expected) <= 3, (text, expected)
        assert "Slurm job 4242" in timer.get_attribute("title")

        # The editor takes a change that only the browser holds (autosave is off).
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.click()
        page.keyboard.type(f"print('{marker}')")
        assert marker not in on_disk.read_text(), "saved before the timer saved it"

        # Two minutes before the end: the warning (besides the one on opening, which had < 10 min).
        remaining = server.walltime_end - time.time()
        assert remaining > 65, f"JupyterLab came up too late for the test ({remaining:.0f} s left)"
        deadline = time.time() + remaining - 62
        while not (warned_at := [int(m) for line in console for m in WARNED.findall(line)
                                 if int(m) <= 120]) and time.time() < deadline:
            page.wait_for_timeout(250)
        assert warned_at and 60 < warned_at[0] <= 120, ("no warning at 2 minutes", console[-30:])
        page.get_by_text(re.compile(r"Your session ends in about 2 minutes")).last.wait_for(state="visible")
        shown = shown_seconds_left(timer.text_content())
        assert 60 <= shown <= 125, shown
        page.wait_for_timeout(1500)  # let the toasts settle
        page.screenshot(path=str(ARTIFACTS / "session-timer.png"))

        # At 60 s left save-all runs: the edit reaches the disk, not before and soon after.
        assert marker not in on_disk.read_text(), "saved before the 60 s mark"
        saved_at = None
        deadline = server.walltime_end - 60 + 20
        while time.time() < deadline:
            if marker in on_disk.read_text():
                saved_at = time.time()
                break
            page.wait_for_timeout(250)
        assert saved_at is not None, "the edit was not saved within 20 s of the 60 s mark:\n" + "\n".join(
            console[-30:])
        assert server.walltime_end - 62 <= saved_at <= server.walltime_end - 40, \
            server.walltime_end - saved_at
        page.get_by_text(re.compile(r"ends in less than a minute")).wait_for(state="visible", timeout=10_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "session-timer-saved.png"))
