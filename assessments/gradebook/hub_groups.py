"""Keep the hub's groups in step with course enrolment: ``<course>-learners`` and ``<course>-trainers``.

The enrolment table is the authority (the exchange checks it on every request, so access ends
the moment someone is unenrolled); the hub's groups follow within one round, for what the hub
itself decides by group (spawn profiles, roles, other services).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import sqlalchemy as sa

from spawners.options import COURSE_GROUP_SUFFIXES
from spawners.hub_api import HubAPI, HubAPIError

from . import tables as gb

log = logging.getLogger("academy.groups")
SUFFIX = {role: suffix.lstrip("-") for role, suffix in COURSE_GROUP_SUFFIXES.items()}


def desired_groups(engine: sa.Engine) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for course, user, role in conn.execute(sa.select(gb.enrolments.c.course, gb.enrolments.c.user,
                                                         gb.enrolments.c.role)):
            groups.setdefault(f"{course}-{SUFFIX[role]}", set()).add(user)
        for (course,) in conn.execute(sa.select(gb.publications.c.course).distinct()):
            for suffix in SUFFIX.values():  # a course everyone left keeps empty groups, not stale ones
                groups.setdefault(f"{course}-{suffix}", set())
    return groups


def sync_once(hub: HubAPI, engine: sa.Engine, known_groups: set[str]) -> dict[str, tuple[list, list]]:
    """Add and remove members so the hub matches the enrolment; returns what changed per group."""
    want = desired_groups(engine)
    for name in known_groups - set(want):
        want[name] = set()
    changes = {}
    existing_users = {u["name"] for u in hub.items("/users")}
    for group, members in sorted(want.items()):
        quoted = urllib.parse.quote(group)
        try:
            have = set(hub.request("GET", f"/groups/{quoted}")["users"])
        except HubAPIError as e:
            if e.status != 404:
                raise
            if not members:
                continue
            hub.request("POST", f"/groups/{quoted}", {})
            have = set()
        missing_users = sorted(members - existing_users)
        if missing_users:  # enrolled before ever logging in: the hub learns of them now
            hub.request("POST", "/users", {"usernames": missing_users})
            existing_users |= set(missing_users)
        add, remove = sorted(members - have), sorted(have - members)
        if add:
            hub.request("POST", f"/groups/{quoted}/users", {"users": add})
        if remove:
            hub.request("DELETE", f"/groups/{quoted}/users", {"users": remove})
        if add or remove:
            changes[group] = (add, remove)
            log.info("group %s: added %s, removed %s", group, add or "-", remove or "-")
    known_groups |= set(want)
    return changes


async def keep_in_sync(engine: sa.Engine, interval: float = 5.0) -> None:
    hub, known = HubAPI.from_env(), set()
    while True:
        try:
            await asyncio.to_thread(sync_once, hub, engine, known)
        except Exception as e:  # the hub restarting, a network blip: try again next round
            log.warning("could not sync the hub's groups: %s", e)
        await asyncio.sleep(interval)
