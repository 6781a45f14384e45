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

import math
import os
import time
from typing import Any

ROUTE = "academy/session"
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


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(".*$", [(route, _make_handler())])
    info = session_info()
    serverapp.log.info("academy session timer: %s (walltime_end=%s, job %s)", route, info["walltime_end"],
                       info["job_id"])


# Older name, for jupyter_server < 2 style loaders.
load_jupyter_server_extension = _load_jupyter_server_extension
