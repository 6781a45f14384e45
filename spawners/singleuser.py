"""The session's server: JupyterHub's ``jupyterhub-singleuser``, without two start-up wastes.

Importing ``jupyterlab.labapp`` computes JupyterLab's app version, and the ``AppOptions`` it
builds for that look up npm's registry by running ``node yarn.js config --json`` whenever
``node`` is on PATH. It is on a node that also runs the hub's configurable-http-proxy. That is
a quarter of a second and about 0.3 CPU-seconds of every session start, and 30 node processes
when a workshop presses start at once, for a value nothing in a learner's server uses: only
building JupyterLab or installing extensions from npm reads it, and a learner's server does
neither (its app directory is the read-only notebook environment's). Outside this process
(a learner's own ``jupyter lab build`` in a terminal) JupyterLab is unchanged.

The single-user extension also imports the hub's own request handlers and database models
(``jupyterhub.log`` imports ``jupyterhub.handlers.pages`` for one ``isinstance`` test, and those
import ``jupyterhub.orm``, which imports alembic, mako and pygments' lexers): a third of a CPU
second per start for code only the hub runs. ``keep_hub_internals_out`` leaves them out.

In a session job it also does what ``spawners.launcher`` does for any other command, without a
process of its own (a second Python start per session, and a process that lives as long as the
session): started with ``--academy-report-port`` it listens on a port it holds from the start
and tells the hub that port once it serves (``report_port_when_serving``).

Installed into the notebook environment as ``academy-singleuser``; the batch script runs it.
Import-light like the rest of ``spawners``.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import signal
import socket
import sys
import types
from urllib.parse import urlparse, urlunparse

# The first argument that makes the entry point hold its port and report it (batch_script.py).
REPORT_PORT_FLAG = "--academy-report-port"
PORT_REPORT_PATH = "academy/port"  # hub side: spawners/port_report.py
END_REPORT_PATH = "academy/ended"  # hub side: spawners/session_end.py
END_REPORT_TIMEOUT_S = 2.0         # Slurm sends SIGKILL KillWait (10 s) after SIGTERM
REPORT_ATTEMPTS = 5

# What JupyterLab's lookup answers when yarn has no configuration: its own default registry.
NO_YARN_CONFIG = {"yarn config": {}, "npm config": {}}


def skip_yarn_registry_lookup() -> bool:
    """Make JupyterLab's registry default its built-in one; True if JupyterLab was patched.

    Must run before ``jupyterlab.labapp`` is imported (its import is what runs the lookup).
    If a JupyterLab release renames the function, nothing is patched and the server starts
    as stock does, only slower (tests/unit/test_singleuser_entry.py notices).
    """
    from jupyterlab import commands

    if not callable(getattr(commands, "_yarn_config", None)):
        return False
    commands._yarn_config = lambda logger=None: {key: dict(value) for key, value in NO_YARN_CONFIG.items()}
    return True


class HealthCheckHandler:
    """Stands in for the hub's /hub/health handler in ``jupyterhub.log``'s ``isinstance`` test.

    ``log_request`` logs a hub health check at debug level; a single-user server serves none,
    so no handler is an instance of the real class either, and the test answers the same.
    """


class _LazyHubModules(importlib.abc.MetaPathFinder):
    """Loads the named modules only when something uses them (importlib's LazyLoader)."""

    def __init__(self, names: frozenset[str]):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


# jupyterhub.scopes, .roles and .metrics import the database models (orm) by name, and scopes
# imports roles, but they use them only in the hub's own code paths (database and role
# lookups); in a single-user server nothing touches them, and if something does, LazyLoader
# imports them then.
LAZY_HUB_MODULES = frozenset({"jupyterhub.orm", "jupyterhub.roles"})


def keep_hub_internals_out() -> None:
    """The hub's request handlers are never imported; its database models only if used.

    Must run before ``jupyterhub.singleuser`` is imported. ``jupyterhub.handlers`` becomes an
    empty package (a hub handler module imported in this process fails loudly, naming it)
    whose ``pages`` holds only what ``jupyterhub.log`` imports from it.
    """
    if "jupyterhub.handlers" in sys.modules:
        return  # already imported for real: nothing left to save
    handlers = types.ModuleType("jupyterhub.handlers", "The hub's request handlers: not loaded in a session.")
    handlers.__path__ = []
    pages = types.ModuleType("jupyterhub.handlers.pages")
    pages.HealthCheckHandler = HealthCheckHandler
    handlers.pages = pages
    sys.modules.update({"jupyterhub.handlers": handlers, "jupyterhub.handlers.pages": pages})
    sys.meta_path.insert(0, _LazyHubModules(LAZY_HUB_MODULES))


class _StandIn(types.ModuleType):
    """Named as a module while other modules import it; any attribute loads and forwards to the real one."""

    def __getattr__(self, name: str):
        if name.startswith("__") or sys.modules.get(self.__name__) is self:
            raise AttributeError(f"{self.__name__}.{name}: the real module is not loaded yet")
        return getattr(importlib.import_module(self.__name__), name)


class _StandInSQLAlchemyError(Exception):
    """``jupyterhub.utils.SQLAlchemyError`` until SQLAlchemy is really imported (then the real one)."""


class _WhenImported(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs ``then(module)`` right after the named module is really imported, whoever imports it."""

    def __init__(self, name: str, then):
        self.name, self.then, self.loader = name, then, None

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.then(module)


def keep_database_layer_out() -> None:
    """SQLAlchemy is imported only if something in the server uses it (the hub's modules do not).

    ``jupyterhub.utils`` imports ``SQLAlchemyError`` for a decorator of the hub's own handlers and
    ``jupyterhub.scopes`` imports ``sqlalchemy`` for the hub's database lookups: a session's
    server never runs either, yet pays for the whole of SQLAlchemy at start (0.12 CPU-seconds,
    times every learner pressing start at once). Both modules are imported here with stand-ins
    in ``sys.modules``, which are then removed: ``import sqlalchemy`` anywhere later (nbgrader's
    gradebook, a hub database lookup) imports the real one, ``scopes.sa`` forwards to it, and the
    moment it is imported ``jupyterhub.utils.SQLAlchemyError`` becomes the real class, so no real
    SQLAlchemy error can ever meet the stand-in.

    Must run after ``keep_hub_internals_out`` (the database models stay lazy) and before
    ``jupyterhub.singleuser`` is imported.
    """
    if "sqlalchemy" in sys.modules or "jupyterhub.utils" in sys.modules:
        return  # already imported for real: nothing left to save
    exc = types.ModuleType("sqlalchemy.exc")
    exc.SQLAlchemyError = _StandInSQLAlchemyError
    stand_ins = {"sqlalchemy": _StandIn("sqlalchemy"), "sqlalchemy.exc": exc}
    sys.modules.update(stand_ins)
    try:
        import jupyterhub.scopes  # noqa: F401  (imports jupyterhub.utils too)
        import jupyterhub.utils
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]

    def use_the_real_error(real_exc) -> None:
        jupyterhub.utils.SQLAlchemyError = real_exc.SQLAlchemyError

    sys.meta_path.insert(0, _WhenImported("sqlalchemy.exc", use_the_real_error))


def hold_port(host: str) -> socket.socket:
    """A listening socket on a port the kernel picked for this server alone.

    Held from the first moment, so no other session on the node can be handed the same port
    while this one imports (the launcher's pick-then-bind has that window and retries instead).
    Connections made before the server runs wait in the backlog.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def report_port(api_url: str, token: str, port: int, log) -> str:
    """POST the port to the hub; '' once accepted, else why not (the server must then stop)."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

    request = HTTPRequest(f"{api_url.rstrip('/')}/{PORT_REPORT_PATH}", method="POST",
                          body=json.dumps({"port": port}), request_timeout=10,
                          headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    for attempt in range(1, REPORT_ATTEMPTS + 1):
        try:
            await AsyncHTTPClient().fetch(request)
            return ""
        except HTTPClientError as e:
            if e.code != 599:  # the hub answered: a refusal is final (it no longer waits for us)
                body = e.response.body[:200] if e.response is not None and e.response.body else b""
                return f"the hub refused the port report: {e.code} {body!r}"
            log.warning("academy: hub not reachable yet (%s); attempt %d of %d", e, attempt, REPORT_ATTEMPTS)
        except OSError as e:
            log.warning("academy: hub not reachable yet (%s); attempt %d of %d", e, attempt, REPORT_ATTEMPTS)
        await asyncio.sleep(0.5 * attempt)
    return "could not reach the hub to report the port"


def report_end(api_url: str, token: str) -> str:
    """Tell the hub this server is ending (Slurm sent SIGTERM); '' once the hub took note, else why not.

    Blocking and short: it runs in the signal handler, before the server stops.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{api_url.rstrip('/')}/{END_REPORT_PATH}", data=b"", method="POST",
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=END_REPORT_TIMEOUT_S):
            return ""
    except urllib.error.HTTPError as e:
        return f"the hub answered {e.code}"
    except OSError as e:
        return f"the hub could not be reached ({e})"


def report_port_when_serving() -> list[str]:
    """Serve on a held port and report it to the hub once serving; returns the failure, if any.

    The single-user extension takes the server's port from ``$JUPYTERHUB_SERVICE_URL`` and
    forbids retries, so the URL gets the held port, and the server app adopts the held socket
    instead of binding a new one. If the hub refuses the report (it gave up on this start, or
    the token is not this server's), the server stops and the job ends with the reason.
    """
    from jupyter_server.serverapp import ServerApp
    from jupyterhub.singleuser.extension import JupyterHubSingleUser

    service_url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    host = service_url.hostname or "127.0.0.1"
    held = hold_port(host)
    port = held.getsockname()[1]
    os.environ["JUPYTERHUB_SERVICE_URL"] = urlunparse(service_url._replace(netloc=f"{host}:{port}"))
    failure: list[str] = []

    class HeldPortServerApp(ServerApp):
        def _find_http_port(self) -> None:  # the port is already ours: nothing to look for
            self.port = port

        def _signal_stop(self, sig, frame) -> None:
            # scancel, the walltime and preemption all begin with SIGTERM: the hub hears it now,
            # not at its next squeue (spawners/session_end.py)
            if sig == signal.SIGTERM:
                why = report_end(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
                self.log.info("academy: ending (SIGTERM); %s", f"not reported: {why}" if why else "reported to the hub")
            super()._signal_stop(sig, frame)

        def _bind_http_server_tcp(self) -> bool:
            self.http_server.add_sockets([held])
            self.io_loop.add_callback(self._report)
            return True

        async def _report(self) -> None:
            why = await report_port(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], port,
                                    self.log)
            if why:
                failure.append(why)
                self.log.critical("academy: %s; stopping", why)
                self.stop()
            else:
                self.log.info("academy: serving on %s:%s, reported to the hub", host, port)

    JupyterHubSingleUser.serverapp_class = HeldPortServerApp
    return failure


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    skip_yarn_registry_lookup()
    keep_hub_internals_out()
    keep_database_layer_out()
    failure: list[str] = []
    if argv[:1] == [REPORT_PORT_FLAG]:
        argv = argv[1:]
        failure = report_port_when_serving()
    from jupyterhub.singleuser import main as singleuser_main

    singleuser_main(argv)
    if failure:
        print(f"academy-singleuser: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
