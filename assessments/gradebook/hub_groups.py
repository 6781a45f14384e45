"""Keep the hub's groups in step with course enrolment: ``<course>-learners`` and ``<course>-trainers``.

The enrolment table is the authority (the exchange checks it on every request, so access ends
the moment someone is unenrolled). The hub's groups follow for what the hub itself decides by
group (spawn courses and profiles, roles, other services): every second the exchange reads the
enrolment change log (one local query, no hub request) and brings the groups of the courses that
changed into line; every few minutes a full comparison catches anything done behind its back
(a trainer editing groups in the hub's admin page, a change log written while the hub was down).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable

import sqlalchemy as sa

from courses.groups import GROUP_SUFFIXES, group_name
from spawners.hub_api import HubAPI, HubAPIError

from . import tables as gb
from .enrolment import Enrolment
from .slurm_associations import CourseAssociations

log = logging.getLogger("academy.groups")
WATCH_S = 1.0          # how often the change log is read
RECONCILE_S = 300.0    # how often every course group is compared with the enrolment


def desired_groups(enrolment: Enrolment, courses: set[str] | None = None) -> dict[str, set[str]]:
    """{group: members} the enrolment asks for; only `courses`' groups when given."""
    groups: dict[str, set[str]] = {}
    with enrolment.engine.connect() as conn:
        published = set(conn.execute(sa.select(gb.publications.c.course).distinct()).scalars())
    for course in (published if courses is None else courses):
        for role in GROUP_SUFFIXES:   # a course everyone left keeps empty groups, not stale ones
            groups.setdefault(group_name(course, role), set())
    for course, user, role in enrolment.find_all():
        if courses is None or course in courses:
            groups.setdefault(group_name(course, role), set()).add(user)
    return groups


def sync_once(hub: HubAPI, enrolment: Enrolment, known_groups: set[str],
              courses: set[str] | None = None) -> dict[str, tuple[list, list]]:
    """Add and remove members so the hub matches the enrolment (of `courses`, or all); returns what changed."""
    want = desired_groups(enrolment, courses)
    if courses is None:
        for name in known_groups - set(want):
            want[name] = set()
    changes = {}
    existing_users = {u["name"] for u in hub.items("/users")} if any(want.values()) else set()
    for group, members in sorted(want.items()):
        add, remove = _sync_group(hub, group, members, existing_users,
                                  lambda group=group: desired_groups(enrolment, courses).get(group, set()))
        if add or remove:
            changes[group] = (add, remove)
            log.info("group %s: added %s, removed %s", group, add or "-", remove or "-")
    known_groups |= set(want)
    return changes


def _sync_group(hub: HubAPI, group: str, members: set[str], existing_users: set[str],
                members_now: Callable[[], set[str]]) -> tuple[list, list]:
    quoted = urllib.parse.quote(group)
    try:
        have = set(hub.request("GET", f"/groups/{quoted}")["users"])
    except HubAPIError as e:
        if e.status != 404:
            raise
        if not members:
            return [], []
        hub.request("POST", f"/groups/{quoted}", {})
        have = set()
    missing_users = sorted(members - existing_users)
    if missing_users:  # enrolled before ever logging in: the hub learns of them now
        hub.request("POST", "/users", {"usernames": missing_users})
        existing_users |= set(missing_users)
    add, remove = sorted(members - have), have - members
    if remove:
        # Confirmed against the enrolment as it is now: a member enrolled and added while this round
        # ran (a workshop's seats, say) would otherwise be taken out again.
        remove = sorted(remove - members_now())
    if add:
        hub.request("POST", f"/groups/{quoted}/users", {"users": add})
    if remove:
        hub.request("DELETE", f"/groups/{quoted}/users", {"users": remove})
    return add, remove


async def keep_in_sync(enrolment: Enrolment, hub: HubAPI | None = None,
                       watch_s: float = WATCH_S, reconcile_s: float = RECONCILE_S,
                       associations: CourseAssociations | None = None) -> None:
    """Follow enrolment changes as they happen, and reconcile everything every `reconcile_s`;
    `hub`: the hub's API (default: the one this service was started by); `associations`: Slurm's
    course associations, brought into line right after the groups (None: a cluster without accounting)."""
    hub, known = hub or HubAPI.from_env(), set()
    seen, reconcile_at = None, 0.0

    def sync(courses: set[str] | None) -> None:
        sync_once(hub, enrolment, known, courses)
        if associations is not None:
            associations.sync(hub, enrolment, courses)

    while True:
        try:
            latest, changed = await asyncio.to_thread(enrolment.find_changes, seen or 0)
            if seen is None or time.monotonic() >= reconcile_at:
                await asyncio.to_thread(sync, None)
                reconcile_at = time.monotonic() + reconcile_s
            elif changed:
                await asyncio.to_thread(sync, changed)
            seen = latest     # only once the hub has it: a failed round is tried again
        except Exception as e:  # the hub restarting, a network blip, slurmdbd away: try again next round
            log.warning("could not sync the hub's groups or Slurm's associations: %s", e)
        await asyncio.sleep(watch_s)
