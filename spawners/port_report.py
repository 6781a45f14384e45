"""The hub endpoint a starting session uses to report its port, and nothing else.

Stock batchspawner registers ``/hub/api/batchspawner``, which sets *any* spawner attribute
named in the body: a learner holding the server token can set ``exec_prefix`` and have the
hub run a command on its next poll. Importing this module removes that handler and adds
``/hub/api/academy/port``, which accepts one integer, only with that server's own token,
only while that server is starting.
"""

from __future__ import annotations

import hmac
import json

from jupyterhub.apihandlers import default_handlers
from tornado import web

from jupyterhub.apihandlers.base import APIHandler

try:  # batchspawner registers its handler at import; make sure it is gone either way.
    import batchspawner.api as _stock_api
except ImportError:  # pragma: no cover - batchspawner is a dependency
    _stock_api = None

MIN_PORT, MAX_PORT = 1024, 65535


def own_spawner(handler: APIHandler):
    """The spawner whose server's own API token the request carries; 403 for any other token
    (the user's own, another server's, a service's)."""
    token = handler.get_auth_token() or ""
    for candidate in handler.current_user.spawners.values():
        candidate_token = getattr(candidate, "api_token", None) or ""
        if candidate_token and hmac.compare_digest(candidate_token, token):
            return candidate
    raise web.HTTPError(403, "Only a session's own server may report on it.")


class PortReportHandler(APIHandler):
    """POST {"port": <int>} with the starting server's own API token."""

    @web.authenticated
    def post(self):
        spawner = own_spawner(self)
        body = self.request.body or b""
        try:
            data = json.loads(body)
        except ValueError:
            raise web.HTTPError(400, 'Body must be JSON of the form {"port": <integer>}.') from None
        if not isinstance(data, dict) or set(data) != {"port"}:
            raise web.HTTPError(400, 'Body must be exactly {"port": <integer>}; no other field is accepted.')
        port = data["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
            raise web.HTTPError(400, f"Port must be an integer from {MIN_PORT} to {MAX_PORT}.")
        accept = getattr(spawner, "accept_port_report", None)
        if accept is None or not accept(port):
            raise web.HTTPError(409, "This server is not waiting for a port report.")
        self.set_status(201)
        self.finish(json.dumps({"port": port}))


def install_handlers() -> None:
    """Swap batchspawner's attribute-setting handler for the port-only one (idempotent)."""
    default_handlers[:] = [
        h for h in default_handlers
        if not (_stock_api is not None and h[1] is _stock_api.BatchSpawnerAPIHandler)
        and h[1] is not PortReportHandler
    ]
    default_handlers.append((r"/api/academy/port", PortReportHandler))


install_handlers()
