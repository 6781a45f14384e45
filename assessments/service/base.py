"""What the platform's hub-managed services (the exchange, the progress service) share: how a request
learns who is calling, how a refusal reaches the caller, how blocking work leaves the event loop,
and how the process is built and started from the config the hub hands over.

- ``ServiceHandler``: asks the hub who the caller is without blocking the event loop
  (HubAuthenticated's own ``get_current_user`` waits for the hub's answer in a thread while the
  request holds the loop); answers every error as JSON ``{"status", "message", ...}``;
  ``in_thread`` runs database and file work in the service's pool.
- ``refusal``: an HTTP error whose message reaches the caller verbatim (``%`` included).
- ``make_application`` / ``serve``: the routes under the service's prefix (``/metrics`` included,
  metrics.py), log redaction, the cookie and XSRF settings every service uses; listening where the
  hub expects the service.
- ``service_config``: the part of the platform's config the hub handed this service
  (``ACADEMY_SERVICE_CONFIG``; nothing below the hub imports ``hub/``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer

from . import metrics
from .security import SecurityHeaders, redact_tornado_logs

SLUG = r"[a-z0-9][a-z0-9-]{0,63}"          # a course or assignment id
USER = r"[a-z_][a-z0-9_-]{0,31}"           # a Unix user name
LOG_FORMAT = "[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"


def refusal(status: int, message: str, **extra) -> web.HTTPError:
    """An HTTP error whose message (and `extra` fields) reach the client as JSON, and the log verbatim."""
    error = web.HTTPError(status, "%s", message)
    error.extra = extra
    return error


def error_message(handler: web.RequestHandler, exc: BaseException | None) -> str:
    """What a failed request tells its caller: the HTTPError's own message, else the status's reason."""
    if isinstance(exc, web.HTTPError) and exc.log_message:
        return exc.log_message % exc.args if exc.args else exc.log_message
    return handler._reason


class ServiceHandler(SecurityHeaders, HubOAuthenticated, web.RequestHandler):
    """The base of every handler a service answers with a hub token or the hub's OAuth cookie."""

    def initialize(self):
        if self.settings.get("hub_auth") is not None:   # tests hand in their own HubOAuth
            self.hub_auth = self.settings["hub_auth"]

    async def prepare(self):
        model = await self.hub_auth.get_user(self, sync=False)
        self._not_allowed = None
        try:
            self._hub_auth_user_cache = self.check_hub_user(model) if model else None
        except UserNotAllowed:      # known to the hub, but without access to this service
            self._hub_auth_user_cache, self._not_allowed = None, model

    def on_finish(self):
        metrics.observe(self)

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        body = {"status": status_code, "message": error_message(self, exc)}
        body.update(getattr(exc, "extra", {}))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON")
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return body

    async def in_thread(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) in the service's pool: database and file work never holds the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.settings["pool"], lambda: fn(*args, **kwargs))


def make_application(prefix: str, routes: list, default_handler, pool_size: int = 4, **settings) -> web.Application:
    """The service's routes under `prefix`, with the settings every service shares."""
    redact_tornado_logs()   # no ?token= or OAuth code in the service's log lines
    routes = [*routes, (r"metrics", metrics.metrics_handler(ServiceHandler))]
    settings.setdefault("service_name", prefix.rstrip("/").rpartition("/")[2] or "service")
    return web.Application(
        [(url_path_join(prefix, pattern), handler) for pattern, handler in routes],
        default_handler_class=default_handler,
        pool=ThreadPoolExecutor(pool_size, thread_name_prefix="service"),
        prefix=prefix,
        cookie_secret=os.urandom(32),   # sign-ins last as long as the process; the hub signs them in again
        xsrf_cookie_kwargs={"samesite": "Lax"},
        **settings,
    )


def service_config() -> dict:
    """The config the hub handed this service, and logging set up the way every service logs."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return json.loads(os.environ["ACADEMY_SERVICE_CONFIG"])


def serve(app: web.Application, max_body_size: int, log: logging.Logger, what: str) -> HTTPServer:
    """Listen where the hub proxies the service to (JUPYTERHUB_SERVICE_URL)."""
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = HTTPServer(app, max_body_size=max_body_size)
    server.listen(url.port, url.hostname)
    log.info("%s listening on %s:%d", what, url.hostname, url.port)
    return server
