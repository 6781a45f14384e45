"""GPU-hour budgets as Slurm keeps them, and what the spawn form says of them.

A budget is a GrpTRESMins limit on gres/gpu: on a course's account (the whole course) and on a
learner's association with it (theirs). Slurm counts what ended and what running jobs have done
so far ("used"), and with AccountingStorageEnforce=safe starts a job only if its whole time limit
also fits beside what running jobs may still use ("reserved", GrpTRESRunMins). The spawner reads
the same figures (``scontrol show assoc_mgr``) so the form can say, before Slurm does, what is
left and which session it cannot cover. The limits themselves are set by the gradebook service
(assessments.gradebook.slurm_associations) from the course catalogue.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .profiles import Profile

_RECORD = re.compile(r"^ClusterName=\S*\s+Account=(\S+)\s+UserName=(\S*)", re.M)
_LIMIT = re.compile(r"^\s*(GrpTRESMins|GrpTRESRunMins)=.*?gres/gpu=(N|\d+)\((\d+)\)", re.M)


@dataclass(frozen=True)
class Allowance:
    """One association's GPU budget, in GPU-minutes."""
    limit_min: int
    used_min: int        # ended jobs, and running jobs so far
    reserved_min: int    # what running jobs may still use before their time limit

    @property
    def left_min(self) -> int:
        return max(0, self.limit_min - self.used_min - self.reserved_min)


def parse_assoc_mgr(text: str) -> dict[tuple[str, str], Allowance]:
    """{(user, account): allowance} from ``scontrol show assoc_mgr flags=assoc`` for associations
    with a gres/gpu GrpTRESMins limit; an account's own record has user ''."""
    out: dict[tuple[str, str], Allowance] = {}
    starts = list(_RECORD.finditer(text))
    for i, m in enumerate(starts):
        body = text[m.end(): starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        found = {name: (limit, int(used)) for name, limit, used in _LIMIT.findall(body)}
        limit, used = found.get("GrpTRESMins", ("N", 0))
        if limit == "N":
            continue
        user = m.group(2).split("(")[0]
        out[(user, m.group(1))] = Allowance(int(limit), used, found.get("GrpTRESRunMins", ("N", 0))[1])
    return out


def hours(minutes: float) -> str:
    return f"{minutes / 60:.1f}"


def session_minutes(profile: Profile, walltime_s: int) -> int:
    """GPU-minutes a session may use: its GPUs for its whole time limit (what Slurm reserves)."""
    return profile.gpus * math.ceil(walltime_s / 60)


@dataclass(frozen=True)
class Budget:
    """A user's budget on one account: theirs and the course's, either may be absent."""
    account: str
    course: str
    mine: Allowance | None
    whole: Allowance | None

    @classmethod
    def of(cls, allowances: dict[tuple[str, str], Allowance], user: str, account: str, course: str) -> "Budget | None":
        mine, whole = allowances.get((user, account)), allowances.get(("", account))
        return cls(account, course, mine, whole) if mine or whole else None

    @property
    def left_min(self) -> int:
        return min(a.left_min for a in (self.mine, self.whole) if a)

    def describe(self) -> str:
        """'llm-101: 4.5 of 6.0 GPU-hours left for you; the course has 180.0 of 200.0 left'."""
        what = self.course or "your own work"
        parts = []
        if self.mine:
            parts.append(f"{hours(self.mine.left_min)} of {hours(self.mine.limit_min)} GPU-hours left for you")
        if self.whole:
            parts.append(f"{'the course has ' if self.mine else ''}{hours(self.whole.left_min)} of "
                         f"{hours(self.whole.limit_min)} GPU-hours left{'' if self.mine else ' for the whole course'}")
        return f"{what}: " + "; ".join(parts)

    def refusal(self, profile: Profile, walltime_s: int) -> str | None:
        """Why this session cannot start on this budget, with the numbers; None when it fits."""
        need = session_minutes(profile, walltime_s)
        if not need or need <= self.left_min:
            return None
        which = "your" if self.mine and self.mine.left_min == self.left_min else "the course's"
        ask = (f"A {math.ceil(walltime_s / 60)}-minute session with {profile.gpus} GPU{'s' if profile.gpus != 1 else ''} "
               f"may use {hours(need)} GPU-hours, and {which} GPU budget for "
               f"{self.course or 'your own work'} has {hours(self.left_min)} left")
        longest = self.left_min // profile.gpus
        if longest >= 1:
            return (f"{ask} ({self.describe()}). Choose a session of at most {longest} minutes, "
                    f"or a profile without GPUs.")
        return f"{ask} ({self.describe()}). Choose a profile without GPUs, or ask your trainer for more GPU time."
