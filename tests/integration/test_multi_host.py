"""The hub apart from its compute nodes: the try-out cluster of `academy up --nodes 2`.

Two nodes, each a network namespace with its own address and slurmd (node1: stand-in H200s,
node2: stand-in L40S), the controller, slurmdbd and the hub on the service address. Sessions
and grading jobs land on either node; the hub and the proxy reach a session over its node's
address, never 127.0.0.1 (which, inside a node, is the node itself). The module lays the
machine's cluster out this way for its tests and puts the one-node cluster back after them.
"""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import time

import pytest
import requests

from hub import cluster_network, slurm_cluster
from hub import config as academy_config

from ..assessment_support import ASSIGNMENT, COURSE, NOTEBOOK, b64, enrol_and_publish, exchange, solved
from ..support import HubUser, live_jobs, run_in_kernel, wait_for

pytestmark = pytest.mark.integration

L40S_PROFILE = {"key": "gpu-l40s-1", "display": "One L40S GPU, 2 cores, 4 GB", "partition": "gpu",
                "gres": "gpu:l40s:1", "cpus": 2, "memory": "4G", "walltime_default": "00:20:00",
                "walltime_max": "00:30:00", "groups": ["learners", "trainers"]}


def two_node_overrides(base_config: dict) -> dict:
    return {"slurm": {"nodes": 2, "node_gpu_types": ["l40s"]}, "profiles": list(base_config["profiles"]) + [L40S_PROFILE]}


@pytest.fixture(scope="module")
def two_nodes(base_config, slurm_cluster_up):
    cfg = academy_config.validate(academy_config.merge(copy.deepcopy(base_config), two_node_overrides(base_config)))
    try:
        summary = slurm_cluster.ensure_running(cfg)
        yield cfg, summary
    finally:
        # Back to the one-node cluster every other test uses, whatever happened here.
        slurm_cluster.ensure_running(base_config)
        cluster_network.remove()


@pytest.fixture(scope="module")
def hub2(two_nodes, base_config, tmp_path_factory, demo_credentials):
    from ..conftest import start_hub, stop_hub

    hub = start_hub(tmp_path_factory.mktemp("multihost"), two_node_overrides(base_config))
    yield hub
    stop_hub(hub, "multi-host-hub.log")


def sinfo_nodes() -> dict[str, str]:
    out = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N %T %G"], capture_output=True, text=True).stdout
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


def test_the_try_out_cluster_has_two_nodes_with_their_own_addresses(two_nodes):
    cfg, summary = two_nodes
    assert "node node1 at 10.77.0.11, 4 x gpu:h200; node node2 at 10.77.0.12, 4 x gpu:l40s" in summary
    nodes = sinfo_nodes()
    assert "gpu:h200:4" in nodes["node1"] and "gpu:l40s:4" in nodes["node2"]
    assert re.search(r"idle|mixed", nodes["node1"]) and re.search(r"idle|mixed", nodes["node2"])
    # Each node's slurmd is in its own namespace, answering on its own address only.
    for name, address in (("node1", "10.77.0.11"), ("node2", "10.77.0.12")):
        shown = subprocess.run(["scontrol", "show", "node", name], capture_output=True, text=True).stdout
        assert f"NodeAddr={address}" in shown
    # The hub's side of it: its API and services on the service address, servers on their node's.
    assert cfg["hub"]["hub_ip"] == "10.77.0.1" and cfg["slurm"]["node_hosts"] == {"node1": "10.77.0.11",
                                                                                   "node2": "10.77.0.12"}


def _session_facts(hub, user: HubUser) -> dict[str, str]:
    code = ("import os, socket, errno\n"
            "print('host', socket.gethostname())\n"
            "print('api', os.environ['JUPYTERHUB_API_URL'])\n"
            "print('gpus', os.environ.get('CUDA_VISIBLE_DEVICES', ''))\n"
            "for i in range(8):\n"
            "    try:\n"
            "        open(f'/dev/academy-gpu{i}', 'rb')\n"
            "    except OSError as e:\n"
            "        print(f'dev{i}', errno.errorcode[e.errno])\n")
    out = run_in_kernel(hub, user.name, user.token, code)
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_sessions_on_either_node_are_reached_at_that_nodes_address(hub2, demo_credentials):
    learner1 = HubUser(hub2, "learner1", demo_credentials["learner1"])
    learner2 = HubUser(hub2, "learner2", demo_credentials["learner2"])
    try:
        for user, profile in ((learner1, "gpu-h200-1"), (learner2, "gpu-l40s-1")):
            r = user.api("POST", f"/users/{user.name}/server", json={"profile": profile, "walltime": 10})
            assert r.status_code in (201, 202), r.text
        for user in (learner1, learner2):
            user.wait_ready()
        where = {}
        for user, node, address in ((learner1, "node1", "10.77.0.11"), (learner2, "node2", "10.77.0.12")):
            (job,) = live_jobs(user.name)
            shown = subprocess.run(["scontrol", "show", "job", job["id"]], capture_output=True, text=True).stdout
            assert f"NodeList={node}" in shown
            # The hub recorded the node's address and reaches the server there (through the proxy).
            assert re.search(rf"Session job {job['id']} of {user.name} is at {re.escape(address)}:\d+", hub2.log)
            where[user.name] = _session_facts(hub2, user)
            assert where[user.name]["host"] == node
            assert where[user.name]["api"].startswith("http://10.77.0.1:")   # the hub, from inside a node
            assert where[user.name]["gpus"] == "0"
        # Each node has its own stand-in GPUs (node2's are devices 4-7); a session opens only the one
        # it was given of its node's (ENXIO: no driver behind it; EPERM: the devices cgroup).
        assert where["learner1"]["dev0"] == "ENXIO" and where["learner1"]["dev1"] == "EPERM"
        assert where["learner2"]["dev4"] == "ENXIO" and where["learner2"]["dev5"] == "EPERM"
        assert "is at 127.0.0.1" not in hub2.log
        # Nothing listens for the sessions on this machine's loopback: their servers are in the nodes.
        port = int(re.search(r"of learner1 is at 10\.77\.0\.11:(\d+)", hub2.log).group(1))
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        for user in (learner1, learner2):
            if user.server() is not None:
                user.stop_server()
    assert wait_for(lambda: not live_jobs("learner1") and not live_jobs("learner2"), 60, what="no session job left")


def test_grading_runs_on_the_node_slurm_picks(hub2, demo_credentials):
    """node1 drained (as for maintenance): the grading job lands on node2 and grades as before."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    subprocess.run(["scontrol", "update", "nodename=node1", "state=drain", "reason=maintenance (test)"], check=True)
    try:
        enrol_and_publish(hub2)
        learner1, trainer = (HubUser(hub2, n, demo_credentials[n]) for n in ("learner1", "trainer1"))
        release = exchange(hub2, learner1, "GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/files").json()["files"]
        text = base64.b64decode(release[NOTEBOOK]).decode()
        r = exchange(hub2, learner1, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
                     json={"files": {NOTEBOOK: b64(solved(text))}})
        assert r.status_code == 201, r.text
        r = exchange(hub2, trainer, "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={})
        assert r.status_code == 202, r.text
        batch = r.json()["batch"]
        path = f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde/{batch}"
        progress = wait_for(lambda: (p := exchange(hub2, trainer, "GET", path).json())["done"] and p, 300, 1,
                            what="the grading batch to end")
        assert [(r["student"], r["score"], r["error"]) for r in progress["results"]] == [("learner1", 10.0, None)]
        ran = subprocess.run(["sacct", "-X", "--noheader", "--parsable2", f"--starttime={since}",
                              "--format=JobName,NodeList,State"], capture_output=True, text=True).stdout
        grading = [line.split("|") for line in ran.splitlines() if "grade" in line.split("|")[0]]
        assert grading and all(node == "node2" for _, node, _ in grading), ran
    finally:
        subprocess.run(["scontrol", "update", "nodename=node1", "state=resume"], check=False)
