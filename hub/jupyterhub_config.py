"""JupyterHub configuration: load the platform config (validated) and apply it.

Started as ``jupyterhub -f hub/jupyterhub_config.py`` by ``academy up``. An invalid config
stops the hub here, before anything listens, with a message naming the key.
"""

import sys

from hub.config import ConfigError, load
from hub.configurer import apply_config, db_url
from hub.hub_db import sqlite_in_wal_mode
from hub.hub_gc import freeze_after_start

try:
    _cfg = load()
except ConfigError as _e:
    print(f"academy: invalid configuration: {_e}", file=sys.stderr)
    sys.exit(2)

apply_config(c, _cfg)  # noqa: F821 - `c` is provided by JupyterHub
if db_url(_cfg).startswith("sqlite"):
    sqlite_in_wal_mode()

freeze_after_start()
