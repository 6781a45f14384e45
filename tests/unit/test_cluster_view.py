"""The spawn form's view of the cluster: free GPUs per type, starts now or queued, one query per refresh."""

import asyncio

from spawners.cluster_view import ClusterView, parse_sinfo, profile_view
from spawners.profiles import parse_profiles

SINFO = (
    "gpu01|gpu|mixed|8/56/0/64|512000|200000|gpu:h200:4(S:0-1)|gpu:h200:3(IDX:0-2)\n"
    "gpu01|urgent|mixed|8/56/0/64|512000|200000|gpu:h200:4(S:0-1)|gpu:h200:3(IDX:0-2)\n"
    "gpu02|gpu|idle|0/64/0/64|512000|0|gpu:a100:8|gpu:a100:0(IDX:N/A)\n"
    "gpu03|gpu|down*|0/0/64/64|512000|0|gpu:h200:4|gpu:h200:0(IDX:N/A)\n"
    "cpu01|cpu*|allocated|64/0/0/64|256000|256000|(null)|gpu:0\n"
)
PROFILES = {p.key: p for p in parse_profiles([
    {"key": "h200-1", "display": "x", "partition": "gpu", "gres": "gpu:h200:1", "cpus": 4, "memory": "16G",
     "walltime_default": "01:00:00", "walltime_max": "02:00:00", "groups": ["learners"]},
    {"key": "h200-2", "display": "x", "partition": "gpu", "gres": "gpu:h200:2", "cpus": 4, "memory": "16G",
     "walltime_default": "01:00:00", "walltime_max": "02:00:00", "groups": ["learners"]},
    {"key": "cpu", "display": "x", "partition": "cpu", "cpus": 2, "memory": "4G",
     "walltime_default": "01:00:00", "walltime_max": "02:00:00", "groups": ["learners"]},
])}


def test_nodes_gpus_and_partitions_are_read_from_sinfo():
    nodes = parse_sinfo(SINFO)
    assert nodes["gpu01"].partitions == {"gpu", "urgent"} and nodes["cpu01"].partitions == {"cpu"}
    assert (nodes["gpu01"].free("h200"), nodes["gpu02"].free("a100"), nodes["gpu01"].cpus_free) == (1, 8, 56)
    assert not nodes["gpu03"].usable()   # down: its GPUs count for nobody


def test_a_profile_sees_its_type_in_its_partition_and_whether_it_starts_now():
    nodes = parse_sinfo(SINFO)
    one = profile_view(PROFILES["h200-1"], nodes, {})
    assert (one.gpus_free, one.gpus_total, one.starts_now, one.waiting_ahead) == (1, 4, True, 0)
    two = profile_view(PROFILES["h200-2"], nodes, {})
    assert (two.gpus_free, two.starts_now) == (1, False)        # one H200 left: two do not fit
    assert profile_view(PROFILES["h200-1"], nodes, {"gpu": 3}).as_dict() == {
        "gpus_free": 1, "gpus_total": 4, "starts_now": False, "waiting_ahead": 3}
    cpu = profile_view(PROFILES["cpu"], nodes, {})
    assert (cpu.gpus_total, cpu.starts_now) == (None, False)    # cpu01 has no core free


class CountingSlurm:
    def __init__(self):
        self.calls = 0

    async def node_table(self, fields):
        self.calls += 1
        await asyncio.sleep(0.01)
        return SINFO

    async def list_jobs(self, states, format):
        return [["gpu"], ["gpu,urgent"]]


def test_many_pages_at_once_cost_one_query_per_refresh():
    async def scenario():
        slurm = CountingSlurm()
        view = ClusterView(slurm, refresh_s=60)
        answers = await asyncio.gather(*(view.views(list(PROFILES.values())) for _ in range(100)))
        again = await view.views(list(PROFILES.values()))
        return slurm.calls, answers, again

    calls, answers, again = asyncio.run(scenario())
    assert calls == 1
    assert all(a == answers[0] for a in answers) and again == answers[0]
    assert answers[0]["h200-1"].waiting_ahead == 2


def test_a_view_slurm_cannot_give_leaves_the_form_without_one():
    class Broken(CountingSlurm):
        async def node_table(self, fields):
            raise FileNotFoundError("sinfo")

    assert asyncio.run(ClusterView(Broken()).views(list(PROFILES.values()))) == {}
