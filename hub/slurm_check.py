"""`academy slurm check`: does this Slurm (the site's, with slurm.manage: false) hold what the
platform needs? Read-only: it asks `scontrol show` and `sacctmgr show`, changes nothing, and
says for each missing piece the command an administrator would run.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from spawners.profiles import Profile, parse_profiles
from spawners.slurm_accounts import AccountingError, SlurmAccounts
from spawners.slurm_policy import Policy


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{'ok     ' if self.ok else 'MISSING'}  {self.what}" + ("" if self.ok else f"\n         fix: {self.fix}")


def _scontrol(*args: str) -> str:
    result = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else ""


def _config() -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in _scontrol("show", "config").splitlines())
            if v}


def _partitions() -> dict[str, dict[str, str]]:
    parts = {}
    for line in _scontrol("show", "partition", "-o").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        parts[fields.get("PartitionName", "")] = fields
    return parts


def _same_limits(have: dict[str, str], want: dict[str, str]) -> list[str]:
    """The QOS settings that differ, as 'Name: have -> want' (sacctmgr prints its own spellings)."""
    printed = {"MaxTRESPerJob": "maxtresperjob", "MaxTRESPerUser": "maxtrespu", "MaxWall": "maxwall",
               "MaxJobsPerUser": "maxjobspu", "MaxSubmitJobsPerUser": "maxsubmitpu", "Flags": "flags"}

    def norm(key: str, value: str) -> str:
        value = value.strip()
        if key in ("MaxTRESPerJob", "MaxTRESPerUser"):
            parts = {}
            for item in value.split(","):
                if "=" in item and not item.endswith("=-1"):
                    name, number = item.split("=", 1)
                    parts[name] = number[:-1] if name == "mem" and number.endswith("M") else number
            if parts.get("mem", "").endswith("G"):
                parts["mem"] = str(int(parts["mem"][:-1]) * 1024)
            return ",".join(f"{k}={v}" for k, v in sorted(parts.items()))
        return value

    return [f"{k}: {have.get(printed[k], '') or '(none)'} -> {v}" for k, v in want.items()
            if norm(k, have.get(printed[k], "")) != norm(k, v)]


def check(cfg: dict) -> list[Finding]:
    s = cfg["slurm"]
    accounts = SlurmAccounts(s["bin_dir"], s["command_timeout"])
    policy, profiles = Policy.from_config(cfg), parse_profiles(cfg["profiles"])
    conf = _config()
    if not conf:
        return [Finding(False, "slurmctld answers `scontrol show config`", "start slurmctld, or set slurm.bin_dir")]
    findings = _conf_findings(conf)
    findings += _partition_findings(_partitions(), profiles)
    try:
        findings += _accounting_findings(accounts, policy, profiles)
    except AccountingError as e:
        findings.append(Finding(False, f"slurmdbd answers sacctmgr ({e})", "start slurmdbd; see AccountingStorageHost"))
    return findings


def _conf_findings(conf: dict[str, str]) -> list[Finding]:
    enforce = set(conf.get("AccountingStorageEnforce", "").split(","))
    private = set(conf.get("PrivateData", "").split(","))
    return [
        Finding("slurmdbd" in conf.get("AccountingStorageType", ""), "accounting by slurmdbd",
                "AccountingStorageType=accounting_storage/slurmdbd in slurm.conf"),
        Finding({"associations", "limits", "qos"} <= enforce,
                f"AccountingStorageEnforce has associations,limits,qos (is: {conf.get('AccountingStorageEnforce')})",
                "AccountingStorageEnforce=associations,limits,qos,safe in slurm.conf"),
        Finding("gres/gpu" in conf.get("AccountingStorageTRES", ""), "gres/gpu is an accounted TRES (GPU-hours)",
                "AccountingStorageTRES=gres/gpu in slurm.conf"),
        Finding("jobs" in private, f"PrivateData hides other users' jobs (is: {conf.get('PrivateData')})",
                "PrivateData=jobs,usage in slurm.conf"),
        # GrpTRESMins (the courses' GPU-hour budgets) is counted only by priority/multifactor, and
        # only `safe` keeps a job from starting that its remaining budget cannot finish.
        Finding(conf.get("PriorityType") == "priority/multifactor" and "safe" in enforce,
                f"GPU-hour budgets counted and enforced (PriorityType is: {conf.get('PriorityType')}, "
                f"AccountingStorageEnforce is: {conf.get('AccountingStorageEnforce')})",
                "PriorityType=priority/multifactor and AccountingStorageEnforce=...,safe in slurm.conf (a decay "
                "half-life of 0 and PriorityUsageResetPeriod=NONE keep a budget spent once)"),
        Finding("task/cgroup" in conf.get("TaskPlugin", ""), "memory, cores and GPUs enforced by task/cgroup",
                "TaskPlugin=task/cgroup and a cgroup.conf with ConstrainRAMSpace, ConstrainCores, ConstrainDevices"),
    ]


def _partition_findings(parts: dict[str, dict[str, str]], profiles: list[Profile]) -> list[Finding]:
    findings = []
    for name in sorted({p.partition for p in profiles}):
        findings.append(Finding(name in parts, f"partition {name} (used by profiles "
                                f"{', '.join(p.key for p in profiles if p.partition == name)})",
                                f"a partition {name} in slurm.conf, or change the profiles' partition"))
    tiers = [int(parts[p.partition].get("PriorityTier", "1")) for p in profiles if p.partition in parts]
    for name, fields in sorted(parts.items()):
        open_to_all = fields.get("AllowGroups", "ALL") == "ALL" and fields.get("AllowAccounts", "ALL") == "ALL"
        if tiers and int(fields.get("PriorityTier", "1")) > max(tiers) and "preempt/none" not in fields.get("PreemptMode", ""):
            findings.append(Finding(not open_to_all, f"partition {name} (a higher priority tier, it preempts sessions) "
                                    "is closed to learners",
                                    f"AllowGroups=<operators' group> (or AllowAccounts) on partition {name}"))
    return findings


def _accounting_findings(accounts: SlurmAccounts, policy: Policy, profiles: list[Profile]) -> list[Finding]:
    have_accounts, have_qos = accounts.accounts(), accounts.qos()
    findings = [
        Finding(policy.parent in have_accounts, f"account {policy.parent} (the platform's)",
                f"sacctmgr add account {policy.parent} description='AI Factory Academy'"),
        Finding(have_accounts.get(policy.own_account) == policy.parent,
                f"account {policy.own_account} (own work) under {policy.parent}",
                f"sacctmgr add account {policy.own_account} parent={policy.parent}"),
    ]
    for p in profiles:
        name, want = policy.qos_name(p), policy.qos_settings(p)
        if name not in have_qos:
            findings.append(Finding(False, f"QOS {name} (profile {p.key})",
                                    f"sacctmgr add qos {name}; sacctmgr modify qos {name} set "
                                    + " ".join(f"{k}={v}" for k, v in want.items())))
            continue
        diff = _same_limits(have_qos[name], want)
        findings.append(Finding(not diff, f"QOS {name} (profile {p.key}) has the profile's limits"
                                + (f" (differs: {'; '.join(diff)})" if diff else ""),
                                f"sacctmgr modify qos {name} set " + " ".join(f"{k}={v}" for k, v in want.items())))
    return findings
