"""Keep Slurm's associations with course accounts in step with course enrolment.

Enrolled: the user has an association with the course's account (spawners.slurm_policy), listing
the QOS of the profiles their hub groups allow (the course's group included), so a session for
the course and their own `sbatch -A <account>` are charged to it. Unenrolled: their jobs on that
account are cancelled and the association removed, at once; Slurm then refuses any job of theirs
there. Driven by hub_groups.keep_in_sync, right after the hub's groups: changed courses within a
second, every course every few minutes.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass

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

    @classmethod
    def from_config(cls, cfg: dict) -> "CourseAssociations | None":
        s = cfg["slurm"]
        if not s.get("accounts"):
            return None
        bin_dir = s.get("bin_dir", "")
        return cls(SlurmAccounts(bin_dir, s.get("command_timeout", 30)),
                   Policy.from_config(cfg), parse_profiles(cfg["profiles"]),
                   f"{bin_dir.rstrip('/')}/scancel" if bin_dir else "scancel")

    def desired(self, enrolment: Enrolment, hub_groups: dict[str, set[str]],
                courses: set[str] | None) -> dict[tuple[str, str], list[str]]:
        """{(user, course account): QOS} the enrolment asks for (of `courses`, or all)."""
        want = {}
        for course, user, role in enrolment.find_all():
            if courses is None or course in courses:
                groups = hub_groups.get(user, set()) | {group_name(course, role)}
                want[(user, self.policy.account_for(course))] = self.policy.qos_for_groups(self.profiles, groups)
        return want

    def sync(self, hub: HubAPI, enrolment: Enrolment, courses: set[str] | None = None) -> dict[str, list]:
        """Add, change and remove associations so Slurm matches the enrolment; returns what changed.

        Only associations of people this gradebook ever enrolled are removed: those a site's
        administrators made by hand, or another platform instance's, are left alone."""
        hub_groups = {u["name"]: set(u.get("groups", [])) for u in hub.items("/users")}
        want = self.desired(enrolment, hub_groups, courses)
        existing = self.accounts.accounts()
        for course in {c for c, _, _ in enrolment.find_all() if courses is None or c in courses}:
            if self.policy.account_for(course) not in existing:
                ensure_course_account(self.accounts, self.policy, self.profiles, course)
        ours = {(user, self.policy.account_for(course)) for course, user in enrolment.find_ever_enrolled(courses)}
        have = self.accounts.associations(sorted({u for u, _ in ours | set(want)}))
        changed: dict[str, list] = {"set": [], "removed": []}
        for (user, account), qos in sorted(want.items()):
            if qos and self.accounts.set_association(user, account, qos, qos[0], have.get((user, account))):
                changed["set"].append((user, account))
        for user, account in sorted((ours & set(have)) - {k for k, q in want.items() if q}):
            self.end(user, account)   # unenrolled, or no profile allowed any more
            changed["removed"].append((user, account))
        for what, pairs in changed.items():
            if pairs:
                log.info("Slurm associations %s: %s", what, ", ".join(f"{u}@{a}" for u, a in pairs))
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
