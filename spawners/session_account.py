"""Which Slurm account and QOS a session is charged to, and the association that lets it submit.

The learner's sbatch runs as the learner, so Slurm checks *their* association. Asking sacctmgr
before every start would cost a learner a second or more (several sacctmgr round trips), for an
answer that is nearly always "it is there": the spawner submits first, and only when Slurm refuses
for want of an association or of a QOS in it (a new user, a course they were just enrolled in, a
profile their groups now allow) does it make the association, then submit again.
"""

from __future__ import annotations

import asyncio

from .options import SessionRequest
from .profiles import Profile
from .slurm_accounts import AccountingError, SlurmAccounts
from .slurm_policy import Policy, ensure_course_account, ensure_qos, ensure_user

# sbatch's words when the submitting user's association does not allow the account or the QOS
ASSOCIATION_REFUSALS = ("Invalid account or account/partition combination specified", "Invalid qos specification")


def charge(policy: Policy, request: SessionRequest) -> tuple[str, str]:
    """(account, qos) of this session."""
    return policy.account_for(request.course), policy.qos_name(request.profile)


def refused_for_association(message: str) -> bool:
    return any(words in message for words in ASSOCIATION_REFUSALS)


async def ensure_association(accounts: SlurmAccounts, policy: Policy, user: str, request: SessionRequest,
                             allowed: list[Profile], every_profile: list[Profile], manage_qos: bool = True) -> None:
    """The user's association with the session's account, allowing the QOS of `allowed`; with
    manage_qos, also those QOS as the profiles say (the embedded cluster: a site's QOS are its
    administrators', and `academy slurm check` says where they differ)."""
    account, _ = charge(policy, request)
    qos = [policy.qos_name(p) for p in allowed]

    def ensure() -> None:
        if manage_qos:
            ensure_qos(accounts, policy, allowed)   # a profile added since `academy up`
        if request.course and account not in accounts.accounts():
            ensure_course_account(accounts, policy, every_profile, request.course)
        ensure_user(accounts, policy, user, qos, account)

    try:
        await asyncio.to_thread(ensure)
    except AccountingError as e:
        raise AccountingError(f"could not give {user} a Slurm association with account {account}: {e}") from e
