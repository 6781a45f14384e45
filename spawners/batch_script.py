"""Rendering of the session's sbatch script from a validated request (templates/batch_script.sh.j2)."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .options import SessionRequest
from .singleuser import REPORT_PORT_FLAG

TEMPLATE = "batch_script.sh.j2"
_env = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class BatchScriptValues:
    """The hub's side of the script: names and paths it owns, never learner input."""

    job_name: str
    homedir: str
    comment: str
    notebook_env: str
    server_argv: list[str] = field(default_factory=list)
    account: str = ""   # Slurm account and QOS the session is charged to (spawners/slurm_policy.py)
    qos: str = ""

    @property
    def log_dir(self) -> str:
        return os.path.join(self.homedir, ".academy", "logs")


ENTRY_POINT = "academy-singleuser"  # spawners/singleuser.py, the spawner's default command


def launch_command(values: BatchScriptValues) -> str:
    python = os.path.join(values.notebook_env, "bin", "python")
    entry_point = os.path.join(values.notebook_env, "bin", ENTRY_POINT)
    # -I: isolated mode, so Python ignores PYTHON* variables and the user site.
    if values.server_argv[:1] == [entry_point]:
        # The project's entry point holds its port and reports it itself: no launcher process.
        return shlex.join([python, "-I", entry_point, REPORT_PORT_FLAG, *values.server_argv[1:]])
    # Any other server command: the launcher finds it a port and reports it once it listens.
    return shlex.join([python, "-I", "-m", "spawners.launcher", "--", *values.server_argv])


_SAFE_FIELD = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@-]{0,4000}$")


def render_batch_script(values: BatchScriptValues, request: SessionRequest) -> str:
    # Usernames reach job name, comment and paths: a name from an exotic authenticator
    # must not be able to break out of an #SBATCH line.
    for name, value, pattern in (("job name", values.job_name, _SAFE_FIELD), ("comment", values.comment, _SAFE_FIELD),
                                 ("account", values.account or "-", _SAFE_FIELD), ("QOS", values.qos or "-", _SAFE_FIELD),
                                 ("home directory", values.homedir, _SAFE_PATH),
                                 ("notebook environment", values.notebook_env, _SAFE_PATH)):
        if not pattern.match(value):
            raise ValueError(f"{name} {value!r} has characters a batch script cannot carry safely")
    p = request.profile
    return _env.get_template(TEMPLATE).render(
        job_name=values.job_name,
        output=os.path.join(values.log_dir, "session-%j.log"),
        homedir=values.homedir,
        partition=p.partition,
        walltime=request.walltime,
        walltime_s=request.walltime_s,
        cpus=p.cpus,
        memory=p.memory,
        gres=p.gres,
        reservation=p.reservation,
        account=values.account,
        qos=values.qos,
        comment=values.comment,
        env_bin=shlex.quote(os.path.join(values.notebook_env, "bin")),
        launch_cmd=launch_command(values),
    )
