"""The hub's startup heap, frozen out of the garbage collector's full passes once the hub runs.

CPython's full collection walks every tracked object the process holds. In the hub that is
everything JupyterHub, SQLAlchemy, tornado and the platform imported and built at start-up: a
full pass took 125-170 ms (measured with gc.callbacks in the workshop benchmark's hub), on the
hub's one event loop, and one landing in a room of attendees joining at once delayed every
request behind it. ``gc.freeze()`` moves what exists now to a permanent generation that no
collection walks: startup objects live as long as the hub anyway. Objects made later are
collected as before, so cycles among users, spawners and requests are still freed.
"""

from __future__ import annotations

import asyncio
import gc

_task = None   # asyncio keeps only a weak reference to a task


async def _freeze_when_started(app) -> None:
    started = getattr(app, "_start_future", None)   # set by JupyterHub.start() at its end
    if started is not None:
        await started
    gc.collect()   # what startup left unreachable goes now, not into the permanent generation
    gc.freeze()
    app.log.info("academy: %d objects from the hub's start-up frozen out of full garbage collections",
                 gc.get_freeze_count())


def freeze_after_start() -> None:
    """From the hub's config file, which JupyterHub loads inside its running event loop; elsewhere
    (a config check, `jupyterhub --generate-config`) nothing is done."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    from jupyterhub.app import JupyterHub

    global _task
    if JupyterHub.initialized():
        _task = loop.create_task(_freeze_when_started(JupyterHub.instance()))
