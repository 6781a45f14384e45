"""The platform's rules as Slurm policy, without Slurm: names, QOS limits, who gets which QOS,
what reaches sbatch and slurm.conf. tests/integration/test_slurm_policy.py tries them on Slurm."""

import pytest

from hub import slurm_cluster
from hub.config import load
from spawners.batch_script import BatchScriptValues, render_batch_script
from spawners.options import validate_user_options
from spawners.profiles import parse_profiles
from spawners.session_account import charge
from spawners.slurm_accounts import AccountingError, SlurmAccounts
from spawners.slurm_policy import Policy

CFG = load()
POLICY = Policy.from_config(CFG)
PROFILES = {p.key: p for p in parse_profiles(CFG["profiles"])}


def test_courses_and_own_work_have_their_accounts():
    assert POLICY.account_for("llm-101") == "academy-llm-101"
    assert POLICY.account_for("") == "academy-own"


def test_a_profiles_qos_caps_a_job_at_the_profile_and_a_user_at_its_gpus():
    q = POLICY.qos_settings(PROFILES["gpu-h200-1"])
    assert q["MaxTRESPerJob"] == "cpu=4,mem=16384M,gres/gpu=1"
    assert q["MaxTRESPerUser"] == "gres/gpu=1"
    assert q["MaxWall"] == "02:00:00"
    assert q["Flags"] == "DenyOnLimit"   # refused at submission with the reason, not left pending
    assert POLICY.qos_settings(PROFILES["cpu-small"])["MaxTRESPerJob"] == "cpu=2,mem=4096M,gres/gpu=0"


def test_users_get_the_qos_of_the_profiles_their_groups_allow():
    assert POLICY.qos_for_groups(PROFILES.values(), ["learners"]) == ["academy-cpu-small", "academy-gpu-h200-1"]
    assert POLICY.qos_for_groups(PROFILES.values(), ["trainers"])[-1] == "academy-gpu-h200-2"
    assert POLICY.qos_for_groups(PROFILES.values(), ["visitors"]) == []


@pytest.mark.parametrize("memory, mb", [("4G", 4096), ("16000M", 16000), ("1024", 1024), ("1T", 1048576),
                                        ("2048K", 2)])
def test_profile_memory_in_mb(memory, mb):
    raw = {**CFG["profiles"][0], "memory": memory}
    assert parse_profiles([raw])[0].memory_mb == mb


def test_a_session_is_charged_to_its_course_with_its_profiles_qos():
    request = validate_user_options({"profile": "gpu-h200-1", "walltime": "30", "course": "hpc-101"},
                                    list(PROFILES.values()), ["hpc-101"])
    account, qos = charge(POLICY, request)
    assert (account, qos) == ("academy-hpc-101", "academy-gpu-h200-1")
    values = BatchScriptValues(job_name="academy-nb-learner1", homedir="/home/learner1", comment="academy:learner1:x",
                               notebook_env="/opt/academy/venv-notebook", account=account, qos=qos)
    lines = render_batch_script(values, request).splitlines()
    assert "#SBATCH --account=academy-hpc-101" in lines and "#SBATCH --qos=academy-gpu-h200-1" in lines
    bare = BatchScriptValues(job_name="academy-nb-learner1", homedir="/home/learner1", comment="academy:learner1:x",
                             notebook_env="/opt/academy/venv-notebook")
    assert not any(line.startswith(("#SBATCH --account", "#SBATCH --qos")) for line in
                   render_batch_script(bare, request).splitlines())


@pytest.mark.parametrize("call", [
    lambda a: a.set_association("learner1 account=root", "academy-own", ["x"], "x"),
    lambda a: a.remove_association("learner1", "academy-own where name=root"),
    lambda a: a.ensure_account("academy-x", "academy", "a course", ["qos,normal=1"], "x"),
])
def test_nothing_unsafe_reaches_sacctmgr(call):
    with pytest.raises(AccountingError, match="safely"):
        call(SlurmAccounts(bin_dir="/nonexistent"))


def test_slurm_conf_enforces_accounting_cgroups_and_privacy():
    conf = slurm_cluster.render_slurm_conf(CFG, cgroups=True)
    for line in ("AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageEnforce=associations,limits,qos,safe",
                 "AccountingStorageTRES=gres/gpu", "PrivateData=jobs,usage", "TaskPlugin=task/cgroup",
                 "ProctrackType=proctrack/cgroup"):
        assert line in conf.splitlines()
    urgent = next(line for line in conf.splitlines() if line.startswith("PartitionName=urgent"))
    assert "AllowGroups=academy-ops" in urgent
    assert "AllowGroups" not in next(line for line in conf.splitlines() if line.startswith("PartitionName=gpu"))
    without = slurm_cluster.render_slurm_conf(CFG, cgroups=False)
    assert "TaskPlugin=task/none" in without and "NOT enforced" in without


def test_cgroup_controllers_are_probed_by_making_a_group(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpuset").mkdir()
    assert slurm_cluster.cgroup_controllers(tmp_path) == {"memory": True, "cpuset": True, "devices": False,
                                                          "freezer": False}


def test_slurm_check_wants_a_preempting_partition_closed_to_learners():
    from hub.slurm_check import _partition_findings

    profiles = list(PROFILES.values())
    parts = {"cpu": {"PriorityTier": "1"}, "gpu": {"PriorityTier": "1"},
             "urgent": {"PriorityTier": "10", "AllowGroups": "ALL", "AllowAccounts": "ALL"}}
    urgent = [f for f in _partition_findings(parts, profiles) if f.what.startswith("partition urgent")]
    assert len(urgent) == 1 and not urgent[0].ok and "AllowGroups" in urgent[0].fix
    parts["urgent"]["AllowGroups"] = "academy-ops"
    assert all(f.ok for f in _partition_findings(parts, profiles))


def test_sacct_lines_become_usage_of_ended_jobs_only():
    from assessments.progress.slurm_usage import job_id_of, parse_sacct

    text = ("777|CANCELLED by 0|2026-12-06T01:39:29|2026-12-06T01:39:37|8|billing=8,cpu=8,gres/gpu=2,mem=32G,node=1\n"
            "780|COMPLETED|2026-12-06T01:41:17|2026-12-06T01:41:22|5|billing=1,cpu=1,mem=4G,node=1\n"
            "781|RUNNING|2026-12-06T01:41:17|Unknown|3|billing=1,cpu=1,gres/gpu=1,node=1\n"
            "782|PREEMPTED|2026-12-06T01:41:00|2026-12-06T01:42:00|60|gres/gpu=4\n")
    usage = parse_sacct(text)
    assert sorted(usage) == ["777", "780", "782"]   # 781 still runs
    assert (usage["777"].state, usage["777"].gpus, usage["777"].elapsed_s) == ("CANCELLED", 2, 8)
    assert usage["777"].ended_at - usage["777"].started_at == 8
    assert usage["780"].gpus == 0 and usage["782"].state == "PREEMPTED"
    assert job_id_of("academy-777") == "777" and job_id_of("sec13-12") == "12" and job_id_of("nojob") == ""


class RecordingAccounts:
    """sacctmgr as the spawner sees it, recording what it would change."""

    def __init__(self):
        self.changes = []

    def qos(self):
        return {}

    def accounts(self):
        return {"academy": "root", "academy-own": "academy", "academy-hpc-101": "academy"}

    def associations(self, users=None):
        return {}

    def add_qos(self, name):
        self.changes.append(("add qos", name))

    def ensure_qos(self, name, settings):
        self.changes.append(("qos", name))

    def set_association(self, user, account, qos, default_qos, current=None):
        self.changes.append(("association", user, account, tuple(qos)))
        return True

    def set_default_account(self, user, account):
        self.changes.append(("default", user, account))


@pytest.mark.parametrize("manage_qos", [True, False])
def test_a_sites_qos_are_left_to_its_administrators(manage_qos):
    import asyncio

    from spawners import session_account

    request = validate_user_options({"profile": "gpu-h200-1", "walltime": "30", "course": "hpc-101"},
                                    list(PROFILES.values()), ["hpc-101"])
    allowed = [PROFILES["cpu-small"], PROFILES["gpu-h200-1"]]
    accounts = RecordingAccounts()
    asyncio.run(session_account.ensure_association(accounts, POLICY, "learner1", request, allowed,
                                                   list(PROFILES.values()), manage_qos=manage_qos))
    assert (("qos", "academy-gpu-h200-1") in accounts.changes) is manage_qos
    qos = ("academy-cpu-small", "academy-gpu-h200-1")
    assert ("association", "learner1", "academy-hpc-101", qos) in accounts.changes
    assert ("association", "learner1", "academy-own", qos) in accounts.changes
