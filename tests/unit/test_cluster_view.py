"""The spawn form's view of the cluster: free GPUs per type, starts now or queued, a learner's GPU
budgets and held jobs, one query of each kind per refresh."""

import asyncio

from spawners.cluster_view import ClusterView, parse_sinfo, profile_view
from spawners.gpu_budget import Allowance, Budget, parse_assoc_mgr
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


_TRES = "cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu={}"


def record(account: str, user: str, mins: str, run_mins: str) -> str:
    """One association as `scontrol show assoc_mgr flags=assoc` prints it (Slurm 22.05)."""
    return (f"ClusterName=academy Account={account} UserName={user} Partition= Priority=0 ID=7\n"
            "    SharesRaw/Norm/Level/Factor=1/0.50/2/0.00\n    UsageRaw/Norm/Efctv=0.00/0.00/0.00\n"
            "    ParentAccount=academy(3) Lft=9 DefAssoc=No\n    GrpJobs=N(0) GrpJobsAccrue=N(0)\n"
            f"    GrpTRES={_TRES.format('N(1)')}\n    GrpTRESMins={_TRES.format(mins)}\n"
            f"    GrpTRESRunMins={_TRES.format(run_mins)}\n    MaxJobs= MaxJobsAccrue= MaxSubmitJobs= MaxWallPJ=\n")


ASSOC_MGR = ("Current Association Manager state\n\nAssociation Records\n\n"
             + record("academy-llm-101", "", "12000(3000)", "N(120)")
             + record("academy-llm-101", "learner1(1001)", "360(200)", "N(60)")
             + record("academy-llm-101", "learner2(1002)", "N(10)", "N(0)")       # no budget of their own
             + record("academy-own", "learner1(1001)", "N(0)", "N(0)"))


def test_gpu_budgets_are_read_as_slurm_keeps_them():
    allowances = parse_assoc_mgr(ASSOC_MGR)
    assert allowances == {("", "academy-llm-101"): Allowance(12000, 3000, 120),
                          ("learner1", "academy-llm-101"): Allowance(360, 200, 60)}
    mine = Budget.of(allowances, "learner1", "academy-llm-101", "llm-101")
    assert mine.left_min == 100
    assert mine.describe() == "llm-101: 1.7 of 6.0 GPU-hours left for you; the course has 148.0 of 200.0 GPU-hours left"
    theirs = Budget.of(allowances, "learner2", "academy-llm-101", "llm-101")
    assert theirs.describe() == "llm-101: 148.0 of 200.0 GPU-hours left for the whole course"
    assert Budget.of(allowances, "learner1", "academy-own", "") is None


def test_a_session_the_budget_cannot_cover_is_refused_with_the_numbers():
    budget = Budget.of(parse_assoc_mgr(ASSOC_MGR), "learner1", "academy-llm-101", "llm-101")
    assert budget.refusal(PROFILES["h200-1"], 100 * 60) is None             # 100 GPU-minutes: exactly what is left
    assert budget.refusal(PROFILES["cpu"], 4 * 3600) is None                 # no GPU, no GPU-hours
    why = budget.refusal(PROFILES["h200-2"], 60 * 60)
    assert why.startswith("A 60-minute session with 2 GPUs may use 2.0 GPU-hours, and your GPU budget for llm-101 "
                          "has 1.7 left (llm-101: 1.7 of 6.0 GPU-hours left for you;")
    assert why.endswith("Choose a session of at most 50 minutes, or a profile without GPUs.")
    spent = Budget("academy-llm-101", "llm-101", Allowance(360, 360, 0), None)
    assert "ask your trainer for more GPU time" in spent.refusal(PROFILES["h200-1"], 60)


class CountingSlurm:
    def __init__(self):
        self.calls = 0

    async def node_table(self, fields):
        self.calls += 1
        await asyncio.sleep(0.01)
        return SINFO

    async def list_jobs(self, states, format):
        assert format == "%P|%u|%i|%r|%j"
        return [["gpu", "learner1", "41", "Priority", "x"], ["gpu,urgent", "learner1", "42", "AssocGrpGRESMinutes",
                                                              "my", "job"]]

    async def assoc_mgr(self):
        return ASSOC_MGR


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


def test_a_learner_sees_their_budgets_and_held_jobs_from_the_same_refresh():
    async def scenario():
        slurm = CountingSlurm()
        view = ClusterView(slurm, refresh_s=60)
        await view.views(list(PROFILES.values()))
        mine = await view.account_state("learner1", {"academy-llm-101": "llm-101", "academy-own": ""})
        theirs = await view.account_state("learner2", {"academy-own": ""})
        return slurm.calls, mine, theirs

    calls, mine, theirs = asyncio.run(scenario())
    assert calls == 1
    assert [b.course for b in mine["budgets"]] == ["llm-101"] and mine["budgets"][0].left_min == 100
    assert mine["held"] == [("42", "my|job", "AssocGrpGRESMinutes")]   # a queue wait is not a hold
    assert theirs == {"budgets": [], "held": []}


def test_a_view_slurm_cannot_give_leaves_the_form_without_one():
    class Broken(CountingSlurm):
        async def node_table(self, fields):
            raise FileNotFoundError("sinfo")

    assert asyncio.run(ClusterView(Broken()).views(list(PROFILES.values()))) == {}
