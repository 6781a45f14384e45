"""The platform's rules as Slurm policy: one QOS per profile, the accounts jobs are charged to,
and which QOS each user's associations allow.

The spawn form refuses what a profile does not allow; this is the second lock, for the learner
who runs `sbatch` from a notebook terminal. A user's associations list only the QOS of the
profiles their groups allow, each QOS caps a job at its profile's size (DenyOnLimit: refused at
submission, not left pending) and a user at the profile's GPUs, whatever the partition; no
learner association lists `normal` (no limits: root's, operators' and grading's). Course names
are strings here: the spawner charges a session to ``account_for(course)`` without knowing what
a course is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .profiles import Profile, format_walltime, profiles_for_groups
from .slurm_accounts import Association, SlurmAccounts

OPERATORS_QOS = "normal"   # Slurm's own default QOS: root's, and the operators'


@dataclass(frozen=True)
class Policy:
    parent: str            # the platform's account; courses and own work below it
    own_account: str       # own work, every user's default account
    course_prefix: str     # a course's account is <prefix><course id>
    qos_prefix: str
    max_submit_per_user: int

    @classmethod
    def from_config(cls, cfg: dict) -> "Policy":
        a = cfg["slurm"]["accounts"]
        return cls(a["parent"], a["own_work"], a["course_prefix"], a["qos_prefix"], a["max_submit_per_user"])

    def account_for(self, course: str) -> str:
        """The account a session or grading job for this course (own work when '') is charged to."""
        return f"{self.course_prefix}{course}" if course else self.own_account

    def qos_name(self, profile: Profile) -> str:
        return f"{self.qos_prefix}{profile.key}"

    def qos_settings(self, profile: Profile) -> dict[str, str]:
        """A profile's QOS: a job at most the profile's size, a user at most its GPUs at once."""
        per_job = f"cpu={profile.cpus},mem={profile.memory_mb}M,gres/gpu={profile.gpus}"
        per_user = f"gres/gpu={profile.gpus}" if profile.gpus else "gres/gpu=-1"
        return {"MaxTRESPerJob": per_job, "MaxTRESPerUser": per_user,
                "MaxWall": format_walltime(profile.walltime_max_s), "MaxJobsPerUser": str(profile.max_jobs_per_user),
                "MaxSubmitJobsPerUser": str(self.max_submit_per_user), "Flags": "DenyOnLimit"}

    def qos_for_groups(self, profiles: Iterable[Profile], groups: Iterable[str]) -> list[str]:
        """The QOS a user in these groups may use, the default (their first profile's) first."""
        return [self.qos_name(p) for p in profiles_for_groups(profiles, groups)]



def _floor_qos(policy: Policy, profiles: list[Profile]) -> str:
    """The smallest profile's QOS: what an account's association without a QOS list of its own gets."""
    return policy.qos_name(min(profiles, key=lambda p: (p.gpus, p.cpus, p.memory_mb)))


def ensure_qos(accounts: SlurmAccounts, policy: Policy, profiles: Iterable[Profile]) -> None:
    """Each profile's QOS, with its limits as the profile now says."""
    for p in profiles:
        accounts.ensure_qos(policy.qos_name(p), policy.qos_settings(p))


def apply_base(accounts: SlurmAccounts, policy: Policy, profiles: list[Profile]) -> None:
    """QOS for every profile, the platform's account and the own-work account (idempotent).

    The accounts' own QOS is the smallest profile's: an association that somehow lists none
    inherits that, never Slurm's unlimited `normal`.
    """
    ensure_qos(accounts, policy, profiles)
    floor = _floor_qos(policy, profiles)
    accounts.ensure_account(policy.parent, "root", "AI Factory Academy", [floor], floor)
    accounts.ensure_account(policy.own_account, policy.parent, "own work on the platform", [floor], floor)


def ensure_course_account(accounts: SlurmAccounts, policy: Policy, profiles: list[Profile], course: str) -> str:
    """The course's account, with root's association (grading jobs are root's, charged to the course)."""
    account = policy.account_for(course)
    floor = _floor_qos(policy, profiles)
    if account not in accounts.accounts():
        accounts.ensure_account(account, policy.parent, f"course {course}", [floor], floor)
    accounts.set_association("root", account, [OPERATORS_QOS], OPERATORS_QOS)
    return account


def ensure_user(accounts: SlurmAccounts, policy: Policy, user: str, qos: list[str], account: str,
                current: dict[tuple[str, str], Association] | None = None) -> bool:
    """The user's associations with the own-work account and `account`, allowed `qos`.

    No profile allowed: no association with `account` (Slurm then refuses every job of theirs there).
    """
    if current is None:
        current = accounts.associations([user])
    if not qos:
        return accounts.remove_association(user, account) if (user, account) in current else False
    changed = False
    for acct in dict.fromkeys([policy.own_account, account]):
        changed |= accounts.set_association(user, acct, qos, qos[0], current.get((user, acct)))
    if (user, policy.own_account) not in current:
        accounts.set_default_account(user, policy.own_account)
    return changed
