"""A workshop's Slurm reservation: made by the platform on the embedded cluster, or the site's, checked.

The platform's own is a core reservation (``CoreCnt``) on the profile's partition for the seats'
cores, from the pre-warm time to a few minutes past the end, for the pooled accounts (and an
account-joining attendee, added when they join): other work keeps the node's other cores. A site
names its own (``--reservation NAME``); the platform only checks that it exists, has nodes and
covers the window, and never changes or deletes it.
"""

from __future__ import annotations

import re
import subprocess
import time

from spawners.profiles import parse_profiles

from .model import Workshop, WorkshopError

MARGIN_S = 300   # the reservation outlives the window: sessions end at the window's end, then stop


def _scontrol(bin_dir: str, *args: str) -> subprocess.CompletedProcess:
    scontrol = f"{bin_dir.rstrip('/')}/scontrol" if bin_dir else "scontrol"
    return subprocess.run([scontrol, *args], capture_output=True, text=True, timeout=30)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def show(bin_dir: str, name: str) -> dict[str, str] | None:
    result = _scontrol(bin_dir, "-o", "show", "reservation", name)
    if result.returncode != 0 or "not found" in result.stdout + result.stderr:
        return None
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def check_existing(bin_dir: str, name: str, w: Workshop) -> None:
    info = show(bin_dir, name)
    if info is None:
        raise WorkshopError(f"Slurm has no reservation {name!r} (scontrol show reservation); ask the site for one, "
                            "or leave --reservation out")
    if info.get("Nodes") in ("", "(null)") or info.get("NodeCnt", "0") == "0":
        raise WorkshopError(f"reservation {name!r} has no nodes; ask the site to give it nodes with the workshop's GPUs")
    try:
        start = time.mktime(time.strptime(info["StartTime"], "%Y-%m-%dT%H:%M:%S"))
        end = time.mktime(time.strptime(info["EndTime"], "%Y-%m-%dT%H:%M:%S"))
    except (KeyError, ValueError):
        return
    if start > w.starts_at or end < w.ends_at:
        raise WorkshopError(f"reservation {name!r} runs {info['StartTime']} to {info['EndTime']}, which does not cover "
                            f"the workshop's window ({_iso(w.starts_at)} to {_iso(w.ends_at)})")


def _accounting(cfg: dict):
    from spawners.slurm_accounts import SlurmAccounts
    from spawners.slurm_policy import Policy
    return SlurmAccounts(cfg["slurm"]["bin_dir"], cfg["slurm"]["command_timeout"]), Policy.from_config(cfg)


def ensure_associations(cfg: dict, w: Workshop, users: list[str]) -> None:
    """The seats' Slurm associations with the course's account and the profile's QOS, made before
    the reservation (Slurm admits only users it knows) and before the first warm session."""
    from spawners.slurm_accounts import AccountingError
    from spawners.slurm_policy import ensure_course_account, ensure_qos, ensure_user

    if not users:
        return
    accounts, policy = _accounting(cfg)
    profiles = parse_profiles(cfg["profiles"])
    profile = {p.key: p for p in profiles}[w.profile]
    account = policy.account_for(w.course)
    try:
        if cfg["slurm"]["manage"]:
            ensure_qos(accounts, policy, [profile])
        if account not in accounts.accounts():
            ensure_course_account(accounts, policy, profiles, w.course)
        current = accounts.associations(users)
        for user in users:
            ensure_user(accounts, policy, user, [policy.qos_name(profile)], account, current)
    except AccountingError as e:
        raise WorkshopError(f"the seats' Slurm associations could not be made: {e}") from None


def remove_associations(cfg: dict, w: Workshop, users: list[str]) -> None:
    from spawners.slurm_accounts import AccountingError

    accounts, policy = _accounting(cfg)
    for user in users:
        for account in (policy.account_for(w.course), policy.own_account):
            try:
                accounts.remove_association(user, account)
            except AccountingError:
                pass   # already gone; a leftover association of a removed Unix user admits no job


def create(cfg: dict, w: Workshop, users: list[str], prewarm_s: float) -> str:
    """Make the platform's reservation for W; its name."""
    name = f"academy-ws-{w.name}"
    profile = {p.key: p for p in parse_profiles(cfg["profiles"])}[w.profile]
    nodes = sorted(cfg["slurm"]["node_hosts"]) or None
    cores = min(w.seats * profile.cpus, cfg["slurm"]["node_cpus"] * max(1, cfg["slurm"]["nodes"]))
    start = max(time.time() + 1, w.starts_at - prewarm_s)
    # Attendees with their own accounts are not known until they join, and adding a user to a
    # core reservation later is refused while its node's cores are busy ("Requested nodes are
    # busy"): such a workshop admits the course's Slurm account, which each attendee's session
    # is charged to once they have joined (and are enrolled).
    admits = f"Users={','.join(users) or 'root'}" if w.join == "code" else \
        f"Accounts={_accounting(cfg)[1].account_for(w.course)}"
    args = ["create", "reservation", f"ReservationName={name}", f"StartTime={_iso(start)}",
            f"EndTime={_iso(w.ends_at + MARGIN_S)}", admits, f"PartitionName={profile.partition}", f"CoreCnt={cores}"]
    args.append(f"Nodes={','.join(nodes)}" if nodes else "NodeCnt=1")
    result = _scontrol(cfg["slurm"]["bin_dir"], *args)
    if result.returncode != 0:
        raise WorkshopError(f"Slurm refused the reservation {name}: {(result.stderr or result.stdout).strip()}")
    return name


def delete(bin_dir: str, name: str) -> bool:
    result = _scontrol(bin_dir, "delete", f"ReservationName={name}")
    return result.returncode == 0 or "not found" in (result.stderr + result.stdout).lower()
