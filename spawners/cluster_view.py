"""The cluster as the spawn form shows it: per profile, the GPUs of its type free in its partition,
whether a session would start now, and how many jobs wait ahead; per learner, the GPU budgets
left on their courses and their own jobs that Slurm holds for a limit.

One view per hub process, refreshed by one ``sinfo``, one ``squeue`` and one ``scontrol show
assoc_mgr`` call at most every REFRESH_S, and only while somebody opens the form: a hundred
learners opening it at 9:00 cost the scheduler three calls, and each page reads the cache. A view
Slurm could not give (it is slow, or down) is left out of the form rather than delaying it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

from .gpu_budget import Allowance, Budget, parse_assoc_mgr
from .profiles import Profile
from .slurm_client import SlurmClient, SlurmError

# Under the hub's own logger (JupyterHub writes only "JupyterHub" and its children to its log).
log = logging.getLogger("JupyterHub").getChild(__name__.rpartition(".")[2])

REFRESH_S = 15.0
ANSWER_WITHIN_S = 2.0   # the form waits this long for a first view, then shows none
USABLE_STATES = ("idle", "mixed", "allocated", "completing")
_GRES = re.compile(r"gpu:(?:([^:(,]+):)?(\d+)")
HELD_SHOWN = 5   # a learner's own held jobs listed on the form, at most


@dataclass
class Node:
    name: str
    partitions: set[str]
    state: str
    cpus_free: int
    memory_free_mb: int
    gpus: dict[str, int] = field(default_factory=dict)        # type -> total
    gpus_used: dict[str, int] = field(default_factory=dict)   # type -> in use

    def free(self, gpu_type: str) -> int:
        return self.gpus.get(gpu_type, 0) - self.gpus_used.get(gpu_type, 0)

    def usable(self) -> bool:
        return self.state.rstrip("*~#$@+^-").lower() in USABLE_STATES


@dataclass(frozen=True)
class ProfileView:
    gpus_free: int | None     # of the profile's type in its partition (None: a CPU profile)
    gpus_total: int | None
    starts_now: bool
    waiting_ahead: int        # pending jobs in the profile's partition

    def as_dict(self) -> dict:
        return {"gpus_free": self.gpus_free, "gpus_total": self.gpus_total, "starts_now": self.starts_now,
                "waiting_ahead": self.waiting_ahead}


def _gres(text: str) -> dict[str, int]:
    """'gpu:h200:4(S:0-1),gpu:a100:2' -> {'h200': 4, 'a100': 2} (an untyped gpu:N counts as type '')."""
    out: dict[str, int] = {}
    for m in _GRES.finditer(text or ""):
        out[m.group(1) or ""] = out.get(m.group(1) or "", 0) + int(m.group(2))
    return out


def parse_sinfo(text: str) -> dict[str, Node]:
    """Nodes from ``sinfo -N -h -O NodeList:|,Partition:|,StateLong:|,CPUsState:|,Memory:|,AllocMem:|,Gres:|,GresUsed:``
    (one line per node and partition)."""
    nodes: dict[str, Node] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 8 or not parts[0]:
            continue
        name, partition, state, cpus, memory, alloc_mem, gres, used = parts[:8]
        partition = partition.rstrip("*")
        if name in nodes:
            nodes[name].partitions.add(partition)
            continue
        try:
            idle = int(cpus.split("/")[1])            # allocated/idle/other/total
            mem_free = int(memory) - int(alloc_mem or 0)
        except (IndexError, ValueError):
            continue
        nodes[name] = Node(name, {partition}, state, idle, mem_free, _gres(gres), _gres(used))
    return nodes


SINFO_FORMAT = "NodeList:|,Partition:|,StateLong:|,CPUsState:|,Memory:|,AllocMem:|,Gres:|,GresUsed:"


def profile_view(profile: Profile, nodes: dict[str, Node], pending: dict[str, int]) -> ProfileView:
    gpu_type = profile.gres.split(":")[1] if profile.gres.count(":") == 2 else ""
    here = [n for n in nodes.values() if profile.partition in n.partitions and n.usable()]
    free = total = None
    if profile.gpus:
        free = sum(max(0, n.free(gpu_type)) for n in here)
        total = sum(n.gpus.get(gpu_type, 0) for n in here)
    fits = any(n.cpus_free >= profile.cpus and n.memory_free_mb >= profile.memory_mb
               and (not profile.gpus or n.free(gpu_type) >= profile.gpus) for n in here)
    ahead = pending.get(profile.partition, 0)
    return ProfileView(free, total, fits and ahead == 0, ahead)


class ClusterView:
    """Shared by every spawner of a hub process (``ClusterView.shared``)."""

    _shared: "ClusterView | None" = None

    def __init__(self, client: SlurmClient, refresh_s: float = REFRESH_S):
        self.client, self.refresh_s = client, refresh_s
        self.nodes: dict[str, Node] = {}
        self.pending: dict[str, int] = {}
        self.held: dict[str, list[tuple[str, str, str]]] = {}     # user -> (job id, name, reason), held for a limit
        self.allowances: dict[tuple[str, str], Allowance] = {}    # (user or '', account) -> GPU budget
        self.at = 0.0          # monotonic time of the last answer
        self.queries = 0
        self._inflight: asyncio.Future | None = None

    @classmethod
    def shared(cls, client: SlurmClient, refresh_s: float = REFRESH_S) -> "ClusterView":
        if cls._shared is None:
            cls._shared = cls(client, refresh_s)
        return cls._shared

    async def views(self, profiles: list[Profile]) -> dict[str, ProfileView]:
        """{profile key: view}; {} while Slurm has not answered within ANSWER_WITHIN_S."""
        await self._fresh()
        if not self.at:
            return {}
        return {p.key: profile_view(p, self.nodes, self.pending) for p in profiles}

    async def account_state(self, user: str, accounts: dict[str, str]) -> dict:
        """The user's GPU budgets on `accounts` ({account: course}) and their jobs Slurm holds for a
        limit (a budget, a QOS): {"budgets": [Budget], "held": [(job id, name, reason)]}."""
        await self._fresh()
        budgets = [b for account, course in accounts.items()
                   if (b := Budget.of(self.allowances, user, account, course))]
        return {"budgets": budgets, "held": self.held.get(user, [])[:HELD_SHOWN]}

    async def _fresh(self) -> None:
        if time.monotonic() - self.at > self.refresh_s:
            if self._inflight is None or self._inflight.done():
                self._inflight = asyncio.ensure_future(self._refresh())
                self._inflight.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, if nobody waits
            try:
                await asyncio.wait_for(asyncio.shield(self._inflight), ANSWER_WITHIN_S if self.at == 0 else 0.05)
            except asyncio.TimeoutError:
                pass   # the older view (or none) now; the refresh finishes for the next page
            except Exception as e:  # noqa: BLE001 - Slurm down, sinfo missing: the form shows no view
                log.warning("the spawn form's view of the cluster could not be refreshed: %s", e)

    async def _refresh(self) -> None:
        self.queries += 1
        nodes = parse_sinfo(await self.client.node_table(SINFO_FORMAT))
        pending: dict[str, int] = {}
        held: dict[str, list[tuple[str, str, str]]] = {}
        for partitions, user, job_id, reason, *name in await self.client.list_jobs(["PENDING"], "%P|%u|%i|%r|%j"):
            for p in partitions.split(","):
                pending[p] = pending.get(p, 0) + 1
            if reason.startswith(("Assoc", "QOS")):
                held.setdefault(user, []).append((job_id, "|".join(name), reason))
        try:
            allowances = parse_assoc_mgr(await self.client.assoc_mgr())
        except (SlurmError, OSError) as e:   # a cluster without accounting, or scontrol: no budgets to show
            log.debug("no GPU budgets from Slurm: %s", e)
            allowances = {}
        self.nodes, self.pending, self.held, self.allowances, self.at = nodes, pending, held, allowances, time.monotonic()
