"""What a workshop gives its attendees' spawners: the workshop's profile, in its reservation, to the window's end.

Wired as AcademySlurmSpawner.profile_grants. A pooled account gets the workshop's profile and
nothing else, and none once the window has ended (its hub login may outlive the workshop; its
sessions may not). An attendee with their own account keeps their profiles, the workshop's one
replaced by its workshop version (same key, so the same Slurm QOS) while the window is open.
"""

from __future__ import annotations

import dataclasses
import time

from spawners.profiles import Profile, parse_profiles

from .model import Workshop, is_pooled_account
from .store import Store

MIN_SESSION_S = 60


def workshop_of_account(account: str) -> str:
    """ws-<workshop>-NN -> <workshop>"""
    return account[3:].rsplit("-", 1)[0]


def workshop_profile(w: Workshop, base: Profile, now: float) -> Profile | None:
    """BASE for W: its reservation, and sessions that end with the window (shown as their time left)."""
    left = int((w.ends_at - now) // 60) * 60
    if left < MIN_SESSION_S:
        return None
    walltime = min(base.walltime_max_s, left)
    return dataclasses.replace(base, display=f"{w.title}: {base.display}"[:200], reservation=w.reservation or
                               base.reservation, walltime_default_s=walltime, walltime_max_s=walltime)


class ProfileGrants:
    """hook(user, groups) -> None (no workshop), or (profiles, exclusive, refusal)."""

    def __init__(self, url: str, profiles: list[dict]):
        self.url = url   # the store is opened on first use: JupyterHub deep-copies its config
        self.profiles = {p.key: p for p in parse_profiles(profiles)}

    @property
    def store(self) -> Store:
        return Store.shared(self.url)

    def __call__(self, user: str, groups: list[str], now: float | None = None):
        now = time.time() if now is None else now
        if is_pooled_account(user):
            w = self.store.get(workshop_of_account(user))
            if w is None or user not in w.accounts:
                return [], True, "This workshop account belongs to no workshop; it cannot start sessions."
            profile = workshop_profile(w, self.profiles[w.profile], now) if w.is_open(now) else None
            if profile is None:
                return [], True, f"The workshop '{w.title}' has ended; its sessions are closed."
            return [profile], True, ""
        names = [g[len("workshop-"):] for g in groups if g.startswith("workshop-")]
        granted = []
        for name in names:
            w = self.store.get(name)
            if w is not None and w.join == "account" and w.is_open(now):
                profile = workshop_profile(w, self.profiles[w.profile], now)
                if profile is not None and profile.key not in {p.key for p in granted}:
                    granted.append(profile)
        return (granted, False, "") if granted else None
