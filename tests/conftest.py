"""Fixtures that give real parts: the one-node Slurm, a JupyterHub with its proxy, demo users.

Unit tests (tests/unit) use none of them; integration and e2e tests need root.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from hub import config as academy_config
from hub import hub_process, installer, slurm_cluster
from hub.configurer import platform_tag
from spawners import reaper
from spawners.slurm_client import SlurmClient

from .support import Hub, HubUser, free_port

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="session")
def base_config() -> dict:
    return academy_config.load()


@pytest.fixture(scope="session")
def slurm_cluster_up(base_config):
    """The embedded one-node cluster, started if it is not running (needs root)."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (real Unix users, sudo, Slurm daemons): run `sudo ./academy test`")
    slurm_cluster.ensure_running(base_config)
    return base_config["slurm"]


@pytest.fixture(scope="session")
def demo_credentials(base_config) -> dict[str, str]:
    return installer.ensure_demo_users(base_config["demo"]["users"], base_config["demo"]["credentials_file"])


def start_hub(root: Path, overrides: dict) -> Hub:
    """A real JupyterHub (and configurable-http-proxy) on free ports, with its own state dir."""
    hub_port = free_port()
    # Each hub an instance name of its own, as two hubs on one cluster need: the session-long hub's
    # reaper runs beside every other hub here, and ends jobs of its tag that it has no record of.
    hub_keys = {"port": free_port(), "hub_port": hub_port, "hub_connect_url": f"http://127.0.0.1:{hub_port}",
                "proxy_api_port": free_port(), "state_dir": str(root / "state"), "log_dir": str(root / "log"),
                "start_timeout": 120, "instance": root.name.lower()[:32]}
    config = {**overrides, "hub": {**hub_keys, **overrides.get("hub", {})},
              "assessments": {"root": str(root / "courses"), "work_root": f"/var/tmp/academy-tests/{root.name}",
                              "exchange_port": free_port(), **overrides.get("assessments", {})},
              "progress": {"port": free_port(), **overrides.get("progress", {})}}
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    cfg = academy_config.load(config_file)
    hub_process.start(cfg, config_env={"ACADEMY_CONFIG": str(config_file)})
    return Hub(url=hub_process.local_url(cfg).rstrip("/"), cfg=cfg, config_file=config_file)


def stop_hub(hub: Hub, artifact: str) -> None:
    hub_process.stop(hub.cfg)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(hub_process.log_file(hub.cfg), ARTIFACTS / artifact)


@pytest.fixture(scope="session")
def hub(tmp_path_factory, base_config, slurm_cluster_up, demo_credentials):
    """The hub most tests share: the default profiles plus one that Slurm refuses."""
    profiles = list(base_config["profiles"]) + [{
        "key": "broken-reservation", "display": "Workshop with a reservation that does not exist",
        "partition": "gpu", "gres": "gpu:h200:1", "cpus": 1, "memory": "1G", "walltime_default": "00:10:00",
        "walltime_max": "00:20:00", "groups": ["learners"], "reservation": "no-such-reservation",
    }]
    hub = start_hub(tmp_path_factory.mktemp("hub"), {"profiles": profiles})
    yield hub
    stop_hub(hub, "hub.log")


@pytest.fixture
def make_hub(tmp_path_factory, slurm_cluster_up, demo_credentials, request):
    """Start a hub with its own config overrides (fault tests); everything it ran is stopped after."""
    hubs: list[Hub] = []

    def _make(overrides: dict) -> Hub:
        hub = start_hub(tmp_path_factory.mktemp("faulthub"), overrides)
        hubs.append(hub)
        return hub

    yield _make
    for i, hub in enumerate(hubs):
        stop_hub(hub, f"{request.node.name}-{i}.log")
    # Sessions outlive their hub by design: end what this test's hubs left behind. In a thread
    # of its own: Playwright's sync API may hold this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        for tag in {platform_tag(hub.cfg) for hub in hubs}:
            pool.submit(asyncio.run, reaper.cancel_all(SlurmClient(), tag)).result()


@pytest.fixture
def login(hub, demo_credentials):
    users: list[HubUser] = []

    def _login(name: str) -> HubUser:
        user = HubUser(hub, name, demo_credentials[name])
        users.append(user)
        return user

    yield _login
    for user in users:  # leave no session behind for the next test
        if user.server() is not None:
            user.stop_server()


@pytest.fixture
def learner(login) -> HubUser:
    return login("learner1")


