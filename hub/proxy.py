"""configurable-http-proxy, ranked for the CPU with the hub it serves."""

from __future__ import annotations

import os

from jupyterhub.proxy import ConfigurableHTTPProxy

from .hub_process import raise_session_priority


class PrioritisedProxy(ConfigurableHTTPProxy):
    """JupyterHub's own proxy, given the hub's session priority.

    JupyterHub starts configurable-http-proxy in a session of its own (so that a Ctrl-C meant
    for the hub does not reach it), which with the kernel's autogroup scheduling also puts it
    outside the hub's raised priority: during a burst of starting sessions every learner's
    request would wait behind them at the proxy. Same process, same behaviour otherwise.
    """

    async def start(self):
        await super().start()
        if os.geteuid() == 0 and self.proxy_process is not None:
            raise_session_priority(self.proxy_process.pid)
