"""A session's end, known in seconds however it ends, without more scheduler load.

Slurm ends a session job with SIGTERM whether a learner or operator ran ``scancel``, the
walltime ran out, or a higher tier preempted it (then SIGKILL after KillWait). The session's
server catches that SIGTERM and tells the hub at once (spawners/singleuser.py): POST
``/hub/api/academy/ended`` with its own token, nothing else in the body. The hub does not take
the server's word for it: it watches that job alone closely (the shared monitor, at most two
squeue calls a second while any end is being confirmed) until Slurm shows it ended, then runs
the spawner's poll, so the hub marks the server stopped, revokes its token and records the
session's end. An end that sends no signal (SIGKILL of the server, a node failure) is still
found by the monitor's regular batched squeue.
"""

from __future__ import annotations

import asyncio
import json
import time

from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from .job_monitor import PENDING_STATES, RUNNING_STATES
from .port_report import own_spawner

END_REPORT_PATH = "academy/ended"   # under the hub's API URL; the session side: singleuser.py
CONFIRM_S = 30.0     # how long the hub watches for the job's end after a report (KillWait is 10 s)
CONFIRM_EVERY_S = 0.5


class EndReportHandler(APIHandler):
    """POST (empty body, or {}) with the running server's own API token."""

    @web.authenticated
    def post(self):
        spawner = own_spawner(self)
        if (self.request.body or b"").strip() not in (b"", b"{}"):
            raise web.HTTPError(400, "An end report carries no fields: send an empty body.")
        accept = getattr(spawner, "accept_end_report", None)
        if accept is None or not accept():
            raise web.HTTPError(409, "This server is not running, or its end is already being followed.")
        self.set_status(202)
        self.finish(json.dumps({"following": True}))


async def follow(spawner, confirm_s: float = CONFIRM_S, every_s: float = CONFIRM_EVERY_S) -> bool:
    """Watch the spawner's job until Slurm shows it ended, then let the hub know (poll_and_notify);
    False if it still runs after confirm_s (the report was not an end: nothing changes)."""
    job = spawner.job_id
    deadline = time.monotonic() + confirm_s
    while time.monotonic() < deadline and spawner.job_id == job:
        info = await spawner.monitor.state(job, max_age=every_s)
        if getattr(spawner, "_stop_pending", False):
            return False  # the hub began stopping it meanwhile: that stop records the end (accept_end_report)
        if info is not None and info.state not in RUNNING_STATES | PENDING_STATES | {"SUSPENDED"}:
            await spawner.poll_and_notify()
            return True
        await asyncio.sleep(every_s)
    return False


def install_handlers() -> None:
    """Add the end-report endpoint to the hub's API (idempotent)."""
    default_handlers[:] = [h for h in default_handlers if h[1] is not EndReportHandler]
    default_handlers.append((rf"/api/{END_REPORT_PATH}", EndReportHandler))
