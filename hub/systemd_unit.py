"""A systemd unit for the hub, for sites that run it as a service (`academy systemd-unit`).

The unit starts what `academy up` starts for the hub (JupyterHub with this checkout's config; the
proxy and the platform's services are its children), as root (it submits sessions as their users
through sudo), and restarts it after a crash. Sessions are Slurm jobs: they are not in the unit and
outlive a restart. The rest (Slurm, munge, the database) is the site's, or `academy prepare`'s on
the embedded cluster. Checked with `systemd-analyze verify` in tests/unit/test_systemd_unit.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import SYSTEM_CONFIG
from .hub_process import CONFIG_FILE, HUB_NICE, LOG_MODE, log_file

UNIT_NAME = "academy-hub.service"


def render_unit(cfg: dict, config_file: str | None = None, venv_bin: Path | None = None) -> str:
    venv_bin = venv_bin or Path(sys.executable).parent
    config_file = config_file or os.environ.get("ACADEMY_CONFIG") or str(SYSTEM_CONFIG)
    return "\n".join([
        "# AI Factory Academy: the hub (JupyterHub, configurable-http-proxy, the exchange and progress",
        "# services). Written by `academy systemd-unit`; install it, after `academy prepare` (which makes",
        "# the state and log folders), with",
        f"#   academy systemd-unit > /etc/systemd/system/{UNIT_NAME}",
        f"#   systemctl daemon-reload && systemctl enable --now {UNIT_NAME.removesuffix('.service')}",
        "[Unit]",
        "Description=AI Factory Academy hub (JupyterHub with Slurm sessions)",
        "Documentation=https://jupyterhub.readthedocs.io/",
        "After=network-online.target munge.service slurmctld.service postgresql.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"Environment=ACADEMY_CONFIG={config_file}",
        f"Environment=PATH={venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"WorkingDirectory={cfg['hub']['state_dir']}",
        f"ExecStart={venv_bin / 'jupyterhub'} -f {CONFIG_FILE}",
        # the hub answers every click: ahead of anything else on a shared machine
        f"Nice={HUB_NICE}",
        # the log (and what the hub writes) root's and its group's only, as `academy up` makes it
        f"UMask={0o777 & ~LOG_MODE & ~0o110:04o}",
        f"StandardOutput=append:{log_file(cfg)}",
        "StandardError=inherit",
        # SIGTERM to JupyterHub, which stops its proxy and services; whatever is left after
        # TimeoutStopSec is killed. Sessions (Slurm jobs) are not part of the unit.
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
