"""Session timer: tells JupyterLab when this session's Slurm walltime ends.

A Jupyter server extension that adds ``GET <base_url>academy/session``::

    {"walltime_end": <unix seconds or null>, "now": <unix seconds>, "job_id": <str or null>}

``walltime_end`` comes from ``ACADEMY_WALLTIME_END`` (exported by the batch script), ``job_id``
from ``SLURM_JOB_ID``; outside Slurm both are null. The ``@academy/session-timer`` labextension
(prebuilt under ``labextension/``) counts down in the status bar, warns at 10 and 2 minutes and
runs ``docmanager:save-all`` at 60 and 20 seconds left. Slurm SIGTERMs the job at the limit; at
that point nothing server-side can save what is only in the browser, so saving is the frontend's
job, done before the limit.

Import-light like the rest of ``spawners``: jupyter_server and tornado are imported only when
the extension is loaded, so this module imports in the hub's environment too.
"""

from __future__ import annotations

import gc
import math
import os
import re
import time
from typing import Any

ROUTE = "academy/session"
OPEN_ROUTE = "academy/open"
TICKET_COOKIE = "academy-join-ticket"   # set by the hub at a workshop join (hub/workshops/tickets.py)
# A course, an assignment and a notebook path inside it: names the exchange accepts.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NOTEBOOK = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_. -]+)*\.ipynb$")
WALLTIME_END_ENV = "ACADEMY_WALLTIME_END"
JOB_ID_ENV = "SLURM_JOB_ID"


def session_info(environ: dict[str, str] | os._Environ | None = None, now: float | None = None) -> dict[str, Any]:
    """The JSON the endpoint returns; a missing or malformed end time is null (the timer hides)."""
    env = os.environ if environ is None else environ
    walltime_end: int | None = None
    raw = (env.get(WALLTIME_END_ENV) or "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            walltime_end = int(value)
    job_id = (env.get(JOB_ID_ENV) or "").strip() or None
    return {"walltime_end": walltime_end, "now": time.time() if now is None else now, "job_id": job_id}


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "spawners.session_timer"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # For `jupyter labextension develop`-style tooling; the installed copy is the data file in
    # <prefix>/share/jupyter/labextensions/@academy/session-timer/.
    return [{"src": "labextension", "dest": "@academy/session-timer"}]


def _make_handler():
    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import APIHandler
    from tornado import web

    class SessionHandler(APIHandler):
        """``GET academy/session``: the walltime end, the server's clock, the Slurm job id."""

        auth_resource = "api"
        # The page polls this now and then; that must not count as activity for the idle culler.
        _track_activity = False

        @web.authenticated
        @authorized
        def get(self) -> None:
            self.set_header("Cache-Control", "no-store")
            self.finish(session_info())

    return SessionHandler


def _make_open_handler(root_dir: str):
    from pathlib import Path
    from urllib.parse import quote

    from jupyter_server.base.handlers import JupyterHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    class OpenHandler(JupyterHandler):
        """``GET academy/open?course=C&assignment=A&notebook=N``: the assignment fetched into the
        home (never over the learner's own files) and JupyterLab opened on the notebook; the end of
        a workshop's join link and of the progress page's "open in a session" links."""

        auth_resource = "contents"

        async def get(self) -> None:
            if self.current_user is None and self.get_cookie(TICKET_COOKIE):
                await self._enter_with_ticket(self.get_cookie(TICKET_COOKIE))
            return await self._open()

        async def _enter_with_ticket(self, ticket: str) -> None:
            """The join ticket traded with the hub for this attendee's OAuth token, the cookie set as
            the OAuth callback would (hub/workshops/tickets.py). Any failure leaves the ordinary
            OAuth redirect to do the work, so a ticket can cost time but never entry."""
            import json

            from jupyterhub.singleuser.extension import JupyterHubUser

            self.clear_cookie(TICKET_COOKIE, path=url_path_join(self.base_url, "/"))
            hub_auth = self.identity_provider.hub_auth
            try:
                # private, but the one call that speaks to the hub as this server does (TLS included)
                answer = await hub_auth._api_request(
                    "POST", url_path_join(hub_auth.api_url, "academy/join-ticket"),
                    data=json.dumps({"ticket": ticket}), headers={"Content-Type": "application/json"})
                token = answer["token"]
                model = await hub_auth.user_for_token(token, session_id=hub_auth.get_session_id(self), sync=False)
            except Exception as e:   # the hub restarted, the ticket is late: OAuth as ever
                self.log.info("academy/open: join ticket not taken (%s); OAuth instead", str(e)[:120])
                return
            if model and hub_auth.check_scopes(hub_auth.access_scopes, model):
                hub_auth.set_cookie(self, token)
                self.current_user = self._jupyter_current_user = JupyterHubUser(model)

        @web.authenticated
        async def _open(self) -> None:
            course, assignment = self.get_argument("course", ""), self.get_argument("assignment", "")
            notebook = self.get_argument("notebook", "")
            if not (_NAME.match(course) and _NAME.match(assignment)) or (notebook and not _NOTEBOOK.match(notebook)) \
                    or ".." in notebook:
                raise web.HTTPError(400, "open needs a course, an assignment and optionally a notebook (a path ending "
                                         "in .ipynb)")
            if not self.authorizer.is_authorized(self, self.current_user, "write", "contents"):
                raise web.HTTPError(403)
            local = Path(root_dir, course, assignment)
            if not (local / notebook).is_file():
                from tornado.ioloop import IOLoop

                from assessments.exchange.client import ExchangeError, fetch_into
                try:
                    await IOLoop.current().run_in_executor(None, fetch_into, local, course, assignment)
                except ExchangeError as e:
                    raise web.HTTPError(502, f"{course}/{assignment} could not be fetched: {e}") from None
            # no notebook named: the assignment's first (most have one)
            notebook = notebook or next((p.name for p in sorted(local.glob("*.ipynb"))), "")
            if not notebook or not (local / notebook).is_file():
                raise web.HTTPError(404, f"{course}/{assignment} has no notebook {notebook}")
            path = quote(f"{course}/{assignment}/{notebook}")
            self.redirect(url_path_join(self.base_url, "lab", "tree", path))
            # What the server holds by now (its imports, JupyterLab's handlers, a warm-up's caches)
            # lives as long as it does: frozen out of the collector's sight, the next full
            # collection no longer walks it, which otherwise lands on the attendee's first
            # notebook model (90 of its 100 ms of CPU, measured).
            gc.freeze()

    return OpenHandler


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(".*$", [(route, _make_handler()),
                                 (url_path_join(web_app.settings["base_url"], OPEN_ROUTE),
                                  _make_open_handler(serverapp.root_dir))])
    info = session_info()
    serverapp.log.info("academy session timer: %s (walltime_end=%s, job %s)", route, info["walltime_end"],
                       info["job_id"])


# Older name, for jupyter_server < 2 style loaders.
load_jupyter_server_extension = _load_jupyter_server_extension
