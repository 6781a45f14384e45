"""The session's server entry point (spawners/singleuser.py): no yarn lookup, no hub internals.

Run with the notebook environment's Python (the hub's has no JupyterLab) and this checkout's
``spawners`` first on sys.path. A ``node`` that records each call is first on PATH, as the real
one is on a node that runs the hub's proxy: stock JupyterLab calls it while ``jupyterlab.labapp``
is imported (the control case), the entry point must not, and JupyterLab must still work.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hub import config as academy_config

from ..support import FakeHub

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from spawners import singleuser
patched = singleuser.skip_yarn_registry_lookup() if sys.argv[2] == "entry" else None
if sys.argv[2] == "entry":
    singleuser.keep_hub_internals_out()
    singleuser.keep_database_layer_out()
import jupyterhub.singleuser.extension
import jupyterlab.labapp
hub_modules = {"alembic": "alembic" in sys.modules, "jupyterhub.handlers.base": "jupyterhub.handlers.base" in sys.modules,
               # object.__getattribute__: looking must not be what loads it
               "orm executed": "User" in object.__getattribute__(sys.modules["jupyterhub.orm"], "__dict__"),
               "sqlalchemy": "sqlalchemy" in sys.modules}
import jupyterhub.orm
hub_modules["orm on use"] = jupyterhub.orm.User.__tablename__
# Once SQLAlchemy is in (the models loaded it), the hub's modules hold the real thing.
import sqlalchemy, jupyterhub.roles, jupyterhub.scopes, jupyterhub.utils
hub_modules["real sqlalchemy after"] = (jupyterhub.utils.SQLAlchemyError is sqlalchemy.exc.SQLAlchemyError
                                        and jupyterhub.scopes.sa.inspect is sqlalchemy.inspect
                                        and jupyterhub.roles.func is sqlalchemy.func)
from jupyterlab.commands import AppOptions, get_app_info
options = AppOptions()
info = get_app_info(options)
print(json.dumps({"patched": patched, "hub_modules": hub_modules,
                  "version": jupyterlab.labapp.app_version, "registry": options.registry,
                  "app_dir": info["app_dir"], "core_extensions": info["core_extensions"],
                  "disabled": sorted(info["disabled"])}))
"""


def run_probe(tmp_path: Path, mode: str) -> tuple[dict, list[str]]:
    fake_bin = tmp_path / f"bin-{mode}"
    fake_bin.mkdir()
    calls = tmp_path / f"node-calls-{mode}.log"
    node = fake_bin / "node"
    # Answers like yarn with no configuration, after writing down that it was called.
    node.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                    'echo \'{"type":"info","data":"yarn config"}\'\necho \'{"type":"inspect","data":{}}\'\n')
    node.chmod(0o755)
    python = Path(academy_config.load()["notebook_env"]) / "bin" / "python"
    env = {**os.environ, "PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([str(python), "-c", PROBE, str(ROOT), mode], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), (calls.read_text().splitlines() if calls.exists() else [])


@pytest.fixture(scope="module")
def stock_and_entry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("singleuser")
    return run_probe(tmp, "stock"), run_probe(tmp, "entry")


def test_stock_jupyterlab_runs_node_at_import(stock_and_entry):
    (stock, stock_calls) = stock_and_entry[0]
    assert stock["patched"] is None
    assert len(stock_calls) >= 1 and stock_calls[0].endswith("yarn.js config --json")


def test_entry_point_starts_no_node_and_jupyterlab_is_unchanged(stock_and_entry):
    (stock, _), (entry, entry_calls) = stock_and_entry
    assert entry["patched"] is True
    assert entry_calls == []
    # What the server serves is the same: JupyterLab's version, app directory, extensions and
    # the plugins the platform turns off (nbgrader's trainer tools), and yarn's default
    # registry, which is what the lookup answers here.
    for key in ("version", "app_dir", "core_extensions", "disabled"):
        assert entry[key] == stock[key], key
    assert "@jupyter/nbgrader:formgrader" in entry["disabled"]
    assert entry["registry"] == stock["registry"] == "https://registry.yarnpkg.com"


def test_stock_singleuser_imports_the_hubs_handlers_and_database_layer(stock_and_entry):
    (stock, _) = stock_and_entry[0]
    assert stock["hub_modules"] == {"alembic": True, "jupyterhub.handlers.base": True, "orm executed": True,
                                    "sqlalchemy": True, "orm on use": "users", "real sqlalchemy after": True}


def test_entry_point_leaves_the_hubs_handlers_and_sqlalchemy_out_and_loads_them_only_on_use(stock_and_entry):
    (entry, _) = stock_and_entry[1]
    assert entry["hub_modules"] == {"alembic": False, "jupyterhub.handlers.base": False, "orm executed": False,
                                    "sqlalchemy": False, "orm on use": "users", "real sqlalchemy after": True}


def test_the_spawner_runs_the_entry_point():
    from spawners.slurm_spawner import AcademySlurmSpawner

    cmd = AcademySlurmSpawner(notebook_env="/opt/academy/venv-notebook").cmd
    assert cmd == ["/opt/academy/venv-notebook/bin/academy-singleuser"]


# -- --academy-report-port: the server holds its port and reports it itself -----------------

def start_session_server(tmp_path: Path, hub: FakeHub, token: str) -> subprocess.Popen:
    """The command a session's batch script runs (spawners/batch_script.py), this checkout first."""
    env_dir = Path(academy_config.load()["notebook_env"])
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{env_dir}/bin:/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(ROOT),
           "JUPYTERHUB_API_TOKEN": token, "JUPYTERHUB_API_URL": hub.url, "JUPYTERHUB_USER": "learner1",
           "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-learner1", "JUPYTERHUB_SERVICE_PREFIX": "/user/learner1/",
           "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:0/user/learner1/",
           "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/learner1/oauth_callback", "JUPYTERHUB_ACTIVITY_URL": ""}
    # Not -I here: this checkout's spawners must come first (PYTHONPATH), not the installed copy.
    return subprocess.Popen([str(env_dir / "bin" / "python"), "-m", "spawners.singleuser", "--academy-report-port",
                             "--allow-root"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_reports(hub: FakeHub, server: subprocess.Popen, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not hub.reports and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_entry_point_reports_the_port_it_serves_on(tmp_path):
    import requests

    hub, token = FakeHub(201), "t" * 40
    server = start_session_server(tmp_path, hub, token)
    try:
        wait_reports(hub, server)
        assert len(hub.reports) == 1, server.poll()
        body, auth = hub.reports[0]
        assert set(body) == {"port"} and auth == f"token {token}"  # the port and nothing else
        # What the hub then proxies to: this server, answering at once on the reported port.
        r = requests.get(f"http://127.0.0.1:{body['port']}/user/learner1/api", timeout=10)
        assert r.status_code == 200 and "version" in r.json()
        assert server.poll() is None
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    assert f"serving on 127.0.0.1:{body['port']}, reported to the hub" in out
    assert token not in out


def test_entry_point_stops_when_the_hub_refuses_its_port(tmp_path):
    import socket

    hub = FakeHub(409)  # the hub gave up on this start (or the token is not this server's)
    server = start_session_server(tmp_path, hub, "t" * 40)
    try:
        out = server.communicate(timeout=60)[0]
    finally:
        server.kill()
    assert len(hub.reports) == 1
    assert server.returncode == 1
    assert "the hub refused the port report: 409" in out
    with pytest.raises(OSError):  # nothing is left listening on the port it held
        socket.create_connection(("127.0.0.1", hub.reports[0][0]["port"]), timeout=2).close()
