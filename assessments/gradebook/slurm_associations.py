"""Keep Slurm's associations with course accounts in step with course enrolment.

Enrolled: the user has an association with the course's account (spawners.slurm_policy), listing
the QOS of the profiles their hub groups allow (the course's group included), so a session for
the course and their own `sbatch -A <account>` are charged to it. Unenrolled: their jobs on that
account are cancelled and the association removed, at once; Slurm then refuses any job of theirs
there. Driven by hub_groups.keep_in_sync, right after the hub's groups: changed courses within a
second, every course every few minutes.

GPU budgets (the catalogue's ``gpu_budget``) become Slurm limits here too: the course's
``course_gpu_hours`` as GrpTRESMins gres/gpu on its account, ``learner_gpu_hours`` on each learner's
association with it (trainers have none of their own). Slurm then refuses a job that could not fit
and holds one that would not fit now (AccountingStorageEnforce=safe), whoever submits it.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from courses.catalogue import GpuBudget
from courses.groups import group_name
from spawners.hub_api import HubAPI
from spawners.profiles import Profile, parse_profiles
from spawners.slurm_accounts import SlurmAccounts
from spawners.slurm_policy import Policy, ensure_course_account

from .enrolment import Enrolment

log = logging.getLogger("academy.associations")


@dataclass
class CourseAssociations:
    accounts: SlurmAccounts
    policy: Policy
    profiles: list[Profile]
    scancel: str = "scancel"
    # {course id: its budget}, asked at every sync: a course published since start counts too
    budgets: Callable[[], dict[str, GpuBudget]] = field(default=dict)
    # A workshop's pooled accounts (ws-<workshop>-NN): their associations, with the workshop
    # profile's QOS, are the workshop's to make and end (hub/workshops); left to this sync, the
    # course's groups give them no QOS and every running workshop session was cancelled.
    workshop_seat: Callable[[str], bool] = field(default=lambda user: False)

    @classmethod
    def from_config(cls, cfg: dict, budgets: Callable[[], dict[str, GpuBudget]] = dict) -> "CourseAssociations | None":
        s = cfg["slurm"]
        if not s.get("accounts"):
            return None
        bin_dir = s.get("bin_dir", "")
        from hub.workshops.model import is_pooled_account

        return cls(SlurmAccounts(bin_dir, s.get("command_timeout", 30)),
                   Policy.from_config(cfg), parse_profiles(cfg["profiles"]),
                   f"{bin_dir.rstrip('/')}/scancel" if bin_dir else "scancel", budgets, is_pooled_account)

    def desired(self, enrolment: Enrolment, hub_groups: dict[str, set[str]], courses: set[str] | None,
                budgets: dict[str, GpuBudget]) -> dict[tuple[str, str], tuple[list[str], int | None]]:
        """{(user, course account): (QOS, GPU-minutes of their own)} the enrolment asks for (of `courses`, or all)."""
        want = {}
        for course, user, role in enrolment.find_all():
            if (courses is None or course in courses) and not self.workshop_seat(user):
                groups = hub_groups.get(user, set()) | {group_name(course, role)}
                own = GpuBudget.minutes(budgets[course].learner_gpu_hours) if course in budgets and role == "learner" \
                    else None
                want[(user, self.policy.account_for(course))] = (self.policy.qos_for_groups(self.profiles, groups), own)
        return want

    def sync_budgets(self, courses: set[str], budgets: dict[str, GpuBudget]) -> list[str]:
        """Each course account's GPU budget as the catalogue says; the accounts changed."""
        have = self.accounts.account_gpu_minutes()
        changed = []
        for course in sorted(courses):
            account = self.policy.account_for(course)
            want = GpuBudget.minutes(budgets[course].course_gpu_hours) if course in budgets else None
            if account in have and have[account] != want:
                self.accounts.set_account_gpu_minutes(account, want)
                changed.append(account)
        return changed

    def sync(self, hub: HubAPI, enrolment: Enrolment, courses: set[str] | None = None) -> dict[str, list]:
        """Add, change and remove associations so Slurm matches the enrolment; returns what changed.

        Only associations of people this gradebook ever enrolled are removed: those a site's
        administrators made by hand, or another platform instance's, are left alone."""
        hub_groups = {u["name"]: set(u.get("groups", [])) for u in hub.items("/users")}
        budgets = self.budgets()
        want = self.desired(enrolment, hub_groups, courses, budgets)
        existing = self.accounts.accounts()
        enrolled = {c for c, _, _ in enrolment.find_all() if courses is None or c in courses}
        for course in enrolled:
            if self.policy.account_for(course) not in existing:
                ensure_course_account(self.accounts, self.policy, self.profiles, course)
        changed: dict[str, list] = {"set": [], "removed": [], "budgets": self.sync_budgets(enrolled, budgets)}
        ours = {(user, self.policy.account_for(course)) for course, user in enrolment.find_ever_enrolled(courses)
                if not self.workshop_seat(user)}
        have = self.accounts.associations(sorted({u for u, _ in ours | set(want)}))
        for (user, account), (qos, own) in sorted(want.items()):
            if qos and self.accounts.set_association(user, account, qos, qos[0], have.get((user, account)), own):
                changed["set"].append((user, account))
        gone = (ours & set(have)) - {k for k, (q, _) in want.items() if q}
        if gone:
            # Confirmed against the enrolment as it is now: someone enrolled while this round ran
            # (whose association their enrolment's maker has just added) is kept.
            now = self.desired(enrolment, hub_groups, courses, budgets)
            gone -= {k for k, (q, _) in now.items() if q}
        for user, account in sorted(gone):
            self.end(user, account)   # unenrolled, or no profile allowed any more
            changed["removed"].append((user, account))
        for what, pairs in changed.items():
            if pairs and what != "budgets":
                log.info("Slurm associations %s: %s", what, ", ".join(f"{u}@{a}" for u, a in pairs))
        if changed["budgets"]:
            log.info("Slurm GPU budgets set on %s", ", ".join(changed["budgets"]))
        return changed

    def end(self, user: str, account: str, wait_s: float = 30) -> None:
        """Cancel the user's jobs charged to the account, then remove the association once they are
        gone (Slurm refuses to remove one with jobs active). A failure is tried again next round."""
        subprocess.run([self.scancel, f"--user={user}", f"--account={account}"], capture_output=True, timeout=30)
        deadline = time.monotonic() + wait_s
        while self._jobs(user, account) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.accounts.remove_association(user, account)

    def _jobs(self, user: str, account: str) -> list[str]:
        squeue = self.scancel[: -len("scancel")] + "squeue"
        out = subprocess.run([squeue, "-h", "-o", "%i", f"--user={user}", f"--account={account}"],
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()
