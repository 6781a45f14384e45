"""Slurm's accounting database through `sacctmgr`: accounts, QOS and user associations.

Blocking calls (the hub and services run them in a thread). Every value passed here is the
platform's own (profile keys, course ids, Unix user names), still checked against a strict
pattern: an argument that reached sacctmgr's ``name=value`` syntax with a space or '=' in it
would change what is asked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SAFE_SETTING = re.compile(r"^[A-Za-z]+=[A-Za-z0-9_,/=:. -]*$")


class AccountingError(RuntimeError):
    """sacctmgr failed or is missing; the message carries its words."""


@dataclass(frozen=True)
class Association:
    user: str
    account: str
    qos: frozenset[str]
    default_qos: str
    gpu_minutes: int | None = None   # GrpTRESMins gres/gpu: the user's GPU budget on the account


KEEP = object()   # set_association: leave the GPU budget as it is


def gpu_minutes(tres: str) -> int | None:
    """'cpu=10,gres/gpu=600' -> 600; None when gres/gpu has no limit."""
    for item in tres.split(","):
        name, _, value = item.partition("=")
        if name == "gres/gpu" and value.isdigit():
            return int(value)
    return None


def _gpu_setting(minutes: int | None) -> str:
    return f"GrpTRESMins=gres/gpu={-1 if minutes is None else int(minutes)}"


def _check(*names: str) -> None:
    for name in names:
        if not _SAFE.match(name or ""):
            raise AccountingError(f"{name!r} is not a name sacctmgr can be given safely")


class SlurmAccounts:
    # No cluster= anywhere: sacctmgr then works on the cluster of this machine's slurm.conf.
    def __init__(self, bin_dir: str = "", timeout: float = 30):
        self.sacctmgr = f"{bin_dir.rstrip('/')}/sacctmgr" if bin_dir else (shutil.which("sacctmgr") or "sacctmgr")
        self.timeout = timeout

    def _run(self, *args: str) -> str:
        try:
            result = subprocess.run([self.sacctmgr, *args], capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError as e:
            raise AccountingError(f"sacctmgr is not installed ({e.filename})") from e
        except subprocess.TimeoutExpired as e:
            raise AccountingError(f"sacctmgr {args[1] if len(args) > 1 else ''} did not answer in {self.timeout:g} s") from e
        if result.returncode != 0 and "Nothing " not in result.stdout + result.stderr:
            words = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise AccountingError(f"sacctmgr {' '.join(args[:3])}: {' '.join(words)[-600:]}")
        return result.stdout

    def _show(self, entity: str, fields: str, *where: str) -> list[list[str]]:
        out = self._run("-n", "-P", "show", entity, *where, f"format={fields}")
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def _modify(self, *args: str) -> None:
        for a in args:
            if "=" in a and not _SAFE_SETTING.match(a):
                raise AccountingError(f"{a!r} is not a setting sacctmgr can be given safely")
        self._run("-i", *args)

    # -- reading ------------------------------------------------------------------------------

    def accounts(self) -> dict[str, str]:
        """{account: parent account}."""
        rows = self._show("association", "account,parentname,user")
        return {account: parent for account, parent, user in rows if not user}

    def account_gpu_minutes(self) -> dict[str, int | None]:
        """{account: its GPU budget in GPU-minutes (GrpTRESMins gres/gpu), None for no limit}."""
        rows = self._show("association", "account,user,grptresmins")
        return {account: gpu_minutes(tres) for account, user, tres in rows if not user}

    def qos(self) -> dict[str, dict[str, str]]:
        """{qos: its limits and flags as sacctmgr prints them}."""
        fields = "name,maxtresperjob,maxtrespu,maxwall,maxjobspu,maxsubmitpu,flags"
        keys = fields.split(",")[1:]
        return {row[0]: dict(zip(keys, row[1:])) for row in self._show("qos", fields)}

    def associations(self, users: list[str] | None = None) -> dict[tuple[str, str], Association]:
        """{(user, account): association} of users (all users when None)."""
        where = []
        if users is not None:
            if not users:
                return {}
            _check(*users)
            where.append(f"users={','.join(users)}")
        rows = self._show("association", "user,account,qos,defaultqos,grptresmins", *where)
        return {(u, a): Association(u, a, frozenset(q for q in qos.split(",") if q), dq, gpu_minutes(tres))
                for u, a, qos, dq, tres in rows if u}

    # -- writing (idempotent) -----------------------------------------------------------------

    def add_qos(self, name: str) -> None:
        _check(name)
        self._modify("add", "qos", name)

    def ensure_qos(self, name: str, settings: dict[str, str]) -> None:
        """The QOS, with these settings."""
        if name not in self.qos():
            self.add_qos(name)
        self._modify("modify", "qos", "where", f"name={name}", "set", *(f"{k}={v}" for k, v in settings.items()))

    def ensure_account(self, name: str, parent: str, description: str, qos: list[str], default_qos: str) -> None:
        _check(name, parent, *qos)
        if name not in self.accounts():
            self._modify("add", "account", name, f"parent={parent}", f"description={description}",
                         f"organization={parent}")
        self._modify("modify", "account", "where", f"name={name}", "set",
                     f"qos={','.join(qos)}", f"defaultqos={default_qos}")

    def set_account_gpu_minutes(self, account: str, minutes: int | None) -> None:
        """The account's GPU budget (None: no limit); its users' jobs together stay within it."""
        _check(account)
        self._modify("modify", "account", "where", f"name={account}", "set", _gpu_setting(minutes))

    def set_association(self, user: str, account: str, qos: list[str], default_qos: str,
                        current: Association | None = None, gpu_minutes=KEEP) -> bool:
        """The user's association with the account, allowed exactly `qos`, with a GPU budget of
        `gpu_minutes` (None: no limit; KEEP: as it is); True if anything changed."""
        _check(user, account, *qos)
        want = frozenset(qos)
        if current is None:
            current = self.associations([user]).get((user, account))
        budget_right = gpu_minutes is KEEP or (current is not None and current.gpu_minutes == gpu_minutes)
        if current is not None and current.qos == want and current.default_qos == default_qos and budget_right:
            return False
        if current is None:
            self._modify("add", "user", user, f"account={account}")
        budget = [] if budget_right else [_gpu_setting(gpu_minutes)]
        self._modify("modify", "user", "where", f"name={user}", f"account={account}", "set",
                     f"qos={','.join(sorted(want))}", f"defaultqos={default_qos}", *budget)
        return True

    def set_default_account(self, user: str, account: str) -> None:
        _check(user, account)
        self._modify("modify", "user", "where", f"name={user}", "set", f"defaultaccount={account}")

    def remove_association(self, user: str, account: str) -> bool:
        """End the user's association with the account (their pending jobs on it are refused from now)."""
        _check(user, account)
        out = self._run("-i", "delete", "user", "where", f"name={user}", f"account={account}")
        return "Deleting" in out
