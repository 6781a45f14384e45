"""Which Slurm account and QOS a session is charged to, and the association that lets it submit.

The learner's sbatch runs as the learner, so Slurm checks *their* association: before the first
submission for an account (a new user, a course they were just enrolled in) the spawner makes
sure it exists and lists exactly the QOS of the profiles their groups allow. The answer is kept
for a few minutes per (user, account, QOS): a burst of starts asks sacctmgr once.
"""

from __future__ import annotations

import asyncio
import time

from .options import SessionRequest
from .profiles import Profile
from .slurm_accounts import AccountingError, SlurmAccounts
from .slurm_policy import Policy, ensure_course_account, ensure_qos, ensure_user

KNOWN_FOR_S = 300.0
_known: dict[tuple[str, str, tuple[str, ...]], float] = {}   # -> monotonic time it is trusted until


def charge(policy: Policy, request: SessionRequest) -> tuple[str, str]:
    """(account, qos) of this session."""
    return policy.account_for(request.course), policy.qos_name(request.profile)


async def ensure_association(accounts: SlurmAccounts, policy: Policy, user: str, request: SessionRequest,
                             allowed: list[Profile], every_profile: list[Profile], manage_qos: bool = True) -> None:
    """The user's association with the session's account, allowing the QOS of `allowed`; with
    manage_qos, also those QOS as the profiles say (the embedded cluster: a site's QOS are its
    administrators', and `academy slurm check` says where they differ)."""
    account, _ = charge(policy, request)
    qos = [policy.qos_name(p) for p in allowed]
    key = (user, account, tuple(qos))
    if _known.get(key, 0.0) > time.monotonic():
        return

    def ensure() -> None:
        if manage_qos:
            ensure_qos(accounts, policy, allowed)   # a profile added or changed since the last start
        if request.course and account not in accounts.accounts():
            ensure_course_account(accounts, policy, every_profile, request.course)
        ensure_user(accounts, policy, user, qos, account)

    try:
        await asyncio.to_thread(ensure)
    except AccountingError as e:
        raise AccountingError(f"could not give {user} a Slurm association with account {account}: {e}") from e
    _known[key] = time.monotonic() + KNOWN_FOR_S

