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

import json
import os
import re
import time
from typing import Iterable
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from spawners.options import COURSE_GROUP_SUFFIXES

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
GROUP_CACHE_S = 30
PAGE = 200      # groups per hub API page (JupyterHub's default api_page_max_limit)


def may_filter(course: str, name: str, members: Iterable[str], learners: Iterable[str]) -> bool:
    """Whether a trainer of `course` may see and filter by hub group `name` (of `members`);
    `learners` are the course's enrolled learners."""
    if name != f"{course}-learners" and name.endswith(tuple(COURSE_GROUP_SUFFIXES.values())):
        return False        # another course's enrolment (or this course's trainers: no learners)
    return not set(learners).isdisjoint(members)


class GroupError(Exception):
    """A group filter that cannot be applied; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HubGroups:
    def __init__(self, api_url: str | None = None, token: str | None = None):
        self.url = (api_url or os.environ.get("JUPYTERHUB_API_URL", "")).rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self._cache: dict[str, tuple[float, object]] = {}

    async def _get(self, path: str) -> object:
        hit = self._cache.get(path)
        if hit and time.monotonic() - hit[0] < GROUP_CACHE_S:
            if isinstance(hit[1], GroupError):
                raise hit[1]
            return hit[1]
        try:
            value = await self._fetch(path)
        except GroupError as e:       # a refusal is kept as long as an answer: no hub call per page
            self._cache[path] = (time.monotonic(), e)
            raise
        self._cache[path] = (time.monotonic(), value)
        return value

    async def _fetch(self, path: str) -> object:
        try:
            response = await AsyncHTTPClient().fetch(f"{self.url}{path}", headers={
                "Authorization": f"token {self.token}", "Accept": "application/jupyterhub-pagination+json"},
                request_timeout=10)
        except HTTPClientError as e:
            if e.code == 404:
                value: object = None
            elif e.code == 403:
                raise GroupError(503, "filtering by hub group is not available: the hub does not let academy-progress "
                                      "read its groups (the service's role needs the scope read:groups)")
            else:
                raise GroupError(502, f"the hub did not answer about groups: HTTP {e.code}")
        except OSError as e:
            raise GroupError(502, f"the hub did not answer about groups: {e}")
        else:
            value = json.loads(response.body)
        return value

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
        names, offset = [], 0
        while True:
            try:
                page = await self._get(f"/groups?offset={offset}&limit={PAGE}")
            except GroupError:
                return []
            # A paginated answer ({"items": [...], "_pagination": {"next": ...}}), or a plain list: all of them.
            items = page.get("items") if isinstance(page, dict) else page
            if not isinstance(items, list):
                return []
            names += [g["name"] for g in items if isinstance(g, dict) and "name" in g
                      and may_filter(course, g["name"], g.get("users") or (), learners)]
            if not (isinstance(page, dict) and (page.get("_pagination") or {}).get("next")) or not items:
                return sorted(names)
            offset += len(items)
