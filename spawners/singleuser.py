"""The session's server: JupyterHub's ``jupyterhub-singleuser``, without one start-up waste.

Importing ``jupyterlab.labapp`` computes JupyterLab's app version, and the ``AppOptions`` it
builds for that look up npm's registry by running ``node yarn.js config --json`` whenever
``node`` is on PATH. It is on a node that also runs the hub's configurable-http-proxy. That is
a quarter of a second and about 0.3 CPU-seconds of every session start, and 30 node processes
when a workshop presses start at once, for a value nothing in a learner's server uses: only
building JupyterLab or installing extensions from npm reads it, and a learner's server does
neither (its app directory is the read-only notebook environment's). Outside this process
(a learner's own ``jupyter lab build`` in a terminal) JupyterLab is unchanged.

Installed into the notebook environment as ``academy-singleuser``; the spawner runs it through
``spawners.launcher``. Import-light like the rest of ``spawners``.
"""

from __future__ import annotations

import sys

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


def main(argv: list[str] | None = None) -> None:
    skip_yarn_registry_lookup()
    from jupyterhub.singleuser import main as singleuser_main

    singleuser_main(argv)


if __name__ == "__main__":
    sys.exit(main())
