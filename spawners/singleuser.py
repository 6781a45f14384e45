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

Installed into the notebook environment as ``academy-singleuser``; the spawner runs it through
``spawners.launcher``. Import-light like the rest of ``spawners``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

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


# jupyterhub.scopes, .roles and .metrics import the database models by name but use
# them only in the hub's own code paths (database lookups); in a single-user server nothing
# touches them, and if something does, LazyLoader imports them then.
LAZY_HUB_MODULES = frozenset({"jupyterhub.orm"})


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


def main(argv: list[str] | None = None) -> None:
    skip_yarn_registry_lookup()
    keep_hub_internals_out()
    from jupyterhub.singleuser import main as singleuser_main

    singleuser_main(argv)


if __name__ == "__main__":
    sys.exit(main())
