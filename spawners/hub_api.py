"""The hub's REST API (``/hub/api``) spoken with a token: the one client every side uses.

Hub services (the reaper, the exchange's group sync, the progress service's group filter) and the
CLI's liveness probe call the hub through it. It lives in ``spawners/`` because both ``hub/`` and
``assessments/`` may import ``spawners/`` and neither may import the other's internals; it knows
nothing of Slurm or courses. A session's port report (``launcher``/``singleuser``) is not a caller:
it runs inside the job, in the session's environment, against one endpoint with its own protocol.

One transport (``urllib``), so sync and async callers get the same errors: ``request``/``items``
block (the CLI, or code already in a thread); ``request_async``/``items_async`` run them in a
thread so an event loop never waits on the hub. Every failure is a ``HubAPIError`` (an
``OSError``, so a caller's "the hub did not answer" handling catches it) with the HTTP status,
0 when no answer came. The token goes in the Authorization header and never into a message.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

PAGINATION = "application/jupyterhub-pagination+json"
PAGE_LIMIT = 200    # JupyterHub's api_page_max_limit: a larger limit is cut to it


class HubAPIError(OSError):
    """The hub refused (``status`` is its HTTP status) or did not answer (``status`` 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HubAPI:
    """``/hub/api`` at `url` with `token` (none sent when empty); `timeout` seconds per request."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    @classmethod
    def from_env(cls, timeout: float = 30.0) -> "HubAPI":
        """A hub-managed service's client: the hub sets JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN."""
        return cls(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], timeout)

    def request(self, method: str, path: str, body: object = None, accept: str = "application/json") -> object:
        """One call; the decoded JSON answer (None for an empty one), or HubAPIError."""
        headers = {"Accept": accept}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        where = f"{method} {path.split('?', 1)[0]}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise HubAPIError(e.code, f"the hub answered {where} with HTTP {e.code}: {_message(e)}") from None
        except (urllib.error.URLError, OSError) as e:     # refused, unresolvable, or past the timeout
            reason = getattr(e, "reason", None) or e
            raise HubAPIError(0, f"the hub at {self.url} did not answer {where}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise HubAPIError(0, f"the hub answered {where} with something that is not JSON") from None

    def items(self, path: str) -> list:
        """Every item of a collection (``/users``, ``/groups``), following the hub's pages."""
        found: list = []
        offset = 0
        while True:
            sep = "&" if "?" in path else "?"
            page = self.request("GET", f"{path}{sep}{urlencode({'offset': offset, 'limit': PAGE_LIMIT})}",
                                accept=PAGINATION)
            if isinstance(page, list):      # an API that does not page answers with all of it
                return found + page
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise HubAPIError(0, f"the hub answered GET {path} with neither a list nor a page of items")
            found += items
            following = (page.get("_pagination") or {}).get("next")
            if not following or not items:
                return found
            offset = int(following.get("offset", offset + len(items)))

    async def request_async(self, method: str, path: str, body: object = None) -> object:
        """``request`` off the event loop."""
        return await asyncio.to_thread(self.request, method, path, body)

    async def items_async(self, path: str) -> list:
        """``items`` off the event loop."""
        return await asyncio.to_thread(self.items, path)

    async def users(self) -> list[dict]:
        """Every user's model (with servers, and their state where the token may read it)."""
        return await self.items_async("/users")

    async def stop_server(self, user: str, server: str = "") -> None:
        """Stop a user's default server, or the named one."""
        path = f"/users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
        await self.request_async("DELETE", path)


def _message(error: urllib.error.HTTPError) -> str:
    """The hub's own reason ({"status": ..., "message": ...}), or the HTTP reason phrase."""
    try:
        body = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    return str(body.get("message") or error.reason) if isinstance(body, dict) else str(error.reason)
