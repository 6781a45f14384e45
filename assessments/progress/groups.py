"""Hub groups as cohort filters: a workshop's or an intake's attendees are a JupyterHub group.

The cohort page can be narrowed to the enrolled learners who are also members of one hub group
(e.g. `workshop-llm-2026-12`, the group a workshop's reservation profile is granted to). The
members are read from the hub's REST API with the service's own token, which needs the scope
`read:groups` (and `list:groups` to offer the names); answers are kept GROUP_CACHE_S seconds.

A trainer sees the hub's groups only through their course (`may_filter`): a group is offered, and
accepted, only when at least one of its members is a learner of the course, and only those
members are shown. Other courses' enrolment groups (`<course>-learners`, `<course>-trainers`) are
never offered: they would tell a trainer which of their learners take which other course. A group
that is not offered gets the same answer as one that does not exist.
"""

from __future__ import annotations

import os
import re
import time
from typing import Iterable
from urllib.parse import quote

from courses.groups import course_of_group, group_name
from spawners.hub_api import HubAPI, HubAPIError

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
GROUP_CACHE_S = 30


def may_filter(course: str, name: str, members: Iterable[str], learners: Iterable[str]) -> bool:
    """Whether a trainer of `course` may see and filter by hub group `name` (of `members`);
    `learners` are the course's enrolled learners."""
    if name != group_name(course, "learner") and course_of_group(name):
        return False        # another course's enrolment (or this course's trainers: no learners)
    return not set(learners).isdisjoint(members)


class GroupError(Exception):
    """A group filter that cannot be applied; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HubGroups:
    def __init__(self, api_url: str | None = None, token: str | None = None):
        self.hub = HubAPI(api_url or os.environ.get("JUPYTERHUB_API_URL", ""),
                          token or os.environ.get("JUPYTERHUB_API_TOKEN", ""), timeout=10)
        self._cache: dict[str, tuple[float, object]] = {}

    async def _get(self, path: str, every_page: bool = False) -> object:
        hit = self._cache.get(path)
        if hit and time.monotonic() - hit[0] < GROUP_CACHE_S:
            if isinstance(hit[1], GroupError):
                raise hit[1]
            return hit[1]
        try:
            value = await self._fetch(path, every_page)
        except GroupError as e:       # a refusal is kept as long as an answer: no hub call per page
            self._cache[path] = (time.monotonic(), e)
            raise
        self._cache[path] = (time.monotonic(), value)
        return value

    async def _fetch(self, path: str, every_page: bool) -> object:
        try:
            if every_page:
                return await self.hub.items_async(path)
            return await self.hub.request_async("GET", path)
        except HubAPIError as e:
            if e.status == 404:
                return None
            if e.status == 403:
                raise GroupError(503, "filtering by hub group is not available: the hub does not let academy-progress "
                                      "read its groups (the service's role needs the scope read:groups)")
            raise GroupError(502, f"the hub did not answer about groups: {f'HTTP {e.status}' if e.status else e}")

    async def members(self, name: str) -> set[str]:
        """The group's members; GroupError 400 for a malformed name, 404 for no such group."""
        if not GROUP_NAME.fullmatch(name):
            raise GroupError(400, f"group {name[:40]!r} is not a hub group name (letters, digits, '.', '_', '-')")
        model = await self._get(f"/groups/{quote(name)}")
        if not isinstance(model, dict):
            raise GroupError(404, f"there is no hub group named {name!r}")
        return set(model.get("users") or ())

    async def of_course(self, course: str, name: str, learners: Iterable[str]) -> set[str]:
        """The learners of `course` in group `name`; GroupError 404, as for no such group, unless may_filter."""
        try:
            members = await self.members(name)
        except GroupError as e:
            if e.status != 404:
                raise
            members = set()
        learners = set(learners)
        if not may_filter(course, name, members, learners):
            raise GroupError(404, f"there is no hub group named {name!r} with learners of {course}")
        return members & learners

    async def offered(self, course: str, learners: Iterable[str]) -> list[str]:
        """The names of the groups a trainer of `course` may filter by, or [] when the service may not list them."""
        learners = set(learners)
        try:
            groups = await self._get("/groups", every_page=True)
        except GroupError:
            return []
        return sorted(g["name"] for g in groups if isinstance(g, dict) and "name" in g
                      and may_filter(course, g["name"], g.get("users") or (), learners))
