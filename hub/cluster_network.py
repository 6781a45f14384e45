"""The try-out cluster's hosts: compute nodes in network namespaces on one machine.

A centre runs the hub on a service node and the notebooks on compute nodes; with
``slurm.nodes`` above 1 the embedded cluster is laid out the same way on one machine, so that
what crosses hosts there crosses an address here. Each node is a network namespace
(``academy-<node>``) with its own address on a bridge (``academy-br0``); the service address
(the bridge's own, ``.1``) is where the hub, its services, slurmctld and slurmdbd are reached.
A node's slurmd runs inside its namespace (``nsenter --net``, which leaves the mounts alone, so
Slurm's cgroups still work) with its own hostname (a UTS namespace). Jobs inherit both: a
session on node2 listens on node2's address, and the proxy reaches it there, never on
127.0.0.1. Traffic stays on this machine: only these namespaces are on the bridge.

Everything here is idempotent and uses ``ip`` (iproute2) only.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "academy-br0"
NETNS_PREFIX = "academy-"
NETNS_DIR = Path("/run/netns")


class NetworkError(RuntimeError):
    """The namespaces or the bridge could not be set up; the message says which command and why."""


@dataclass(frozen=True)
class Node:
    name: str       # Slurm's NodeName and the node's hostname
    address: str    # on the bridge
    gpu_type: str
    gpu_files: tuple[int, int]   # first and last stand-in device index (empty when first > last)

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        return f"acad-{self.name}"[:15]   # the host side; interface names have at most 15 characters


def service_address(cfg: dict) -> str:
    """The service node's address (the hub, its services, slurmctld, slurmdbd) on the bridge."""
    return str(_network(cfg).network_address + 1)


def _network(cfg: dict) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cfg["slurm"]["network"], strict=True)


def multi_host(cfg: dict) -> bool:
    return bool(cfg["slurm"]["manage"]) and int(cfg["slurm"]["nodes"]) > 1


def nodes(cfg: dict) -> list[Node]:
    """The compute nodes of a multi-host try-out cluster: node1 has ``gpu_type``, the others the
    types in ``node_gpu_types`` (the same type where that list is shorter); each ``gpus`` of them."""
    s = cfg["slurm"]
    net = _network(cfg)
    out, first = [], 0
    for i in range(1, int(s["nodes"]) + 1):
        types = s["node_gpu_types"]
        gpu_type = s["gpu_type"] if i == 1 or i - 2 >= len(types) else types[i - 2]
        out.append(Node(f"node{i}", str(net.network_address + 10 + i), gpu_type, (first, first + s["gpus"] - 1)))
        first += s["gpus"]
    return out


def node_hosts(cfg: dict) -> dict[str, str]:
    return {n.name: n.address for n in nodes(cfg)}


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    if check and result.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.returncode}")
    return result


def _exists(*args: str, netns: str | None = None) -> bool:
    return _ip(*args, netns=netns, check=False).returncode == 0


def ensure(cfg: dict) -> list[Node]:
    """The bridge with the service address, and one namespace per node wired to it (idempotent)."""
    prefix = _network(cfg).prefixlen
    service = f"{service_address(cfg)}/{prefix}"
    if not _exists("link", "show", BRIDGE):
        _ip("link", "add", BRIDGE, "type", "bridge")
    if service not in _ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", service, "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for node in nodes(cfg):
        if not (NETNS_DIR / node.netns).exists():
            _ip("netns", "add", node.netns)
        if not _exists("link", "show", node.veth):
            _ip("link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _ip("link", "set", node.veth, "master", BRIDGE, "up")
        address = f"{node.address}/{prefix}"
        if address not in _ip("-o", "addr", "show", "dev", "eth0", netns=node.netns).stdout:
            _ip("addr", "add", address, "dev", "eth0", netns=node.netns)
        _ip("link", "set", "eth0", "up", netns=node.netns)
        _ip("link", "set", "lo", "up", netns=node.netns)
    return nodes(cfg)


def remove() -> list[str]:
    """Delete the nodes' namespaces (their veths go with them) and the bridge; what it removed."""
    removed = []
    for path in sorted(NETNS_DIR.glob(NETNS_PREFIX + "*")) if NETNS_DIR.exists() else []:
        _ip("netns", "delete", path.name, check=False)
        removed.append(path.name)
    if _exists("link", "show", BRIDGE):
        _ip("link", "delete", BRIDGE, check=False)
        removed.append(BRIDGE)
    return removed


def in_node(node: Node, argv: list[str]) -> list[str]:
    """``argv`` run inside the node: its network namespace and a hostname of its own."""
    return ["nsenter", f"--net={NETNS_DIR / node.netns}", "unshare", "--uts", "--",
            "sh", "-c", 'hostname "$0" && exec "$@"', node.name, *argv]
