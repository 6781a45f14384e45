"""AcademySlurmSpawner: batchspawner's SlurmSpawner with validated profiles and no trust in learners.

What changes against stock batchspawner 1.3.0, and why:
- ``user_options`` is reduced to a profile key and a walltime (options.py) before anything is
  submitted; the batch script is rendered from the profile alone. Stock merges the raw
  options into the template, so a learner could ask for more GPUs or inject ``#SBATCH`` lines.
- Slurm commands run as argument lists through SlurmClient, never through a shell; status
  polls run squeue as the hub (no sudo per poll).
- The port comes through port_report.py, only while this spawner waits for it.
- A job that dies before reporting its port fails the spawn at once, with its log's tail.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path

from batchspawner import SlurmSpawner
from batchspawner.batchspawner import JobStatus
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Dict, Float, Integer, List, TraitError, Unicode, default, validate

from . import port_report  # noqa: F401  (swaps batchspawner's API handler on import)
from .batch_script import BatchScriptValues, render_batch_script
from .options import OptionsError, SessionRequest, validate_user_options
from .profiles import Profile, ProfileError, parse_profiles, profiles_for_groups
from .slurm_client import SlurmClient, SlurmError

TEMPLATES = Path(__file__).parent / "templates"
_html = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined)

JOB_NAME_PREFIX = "academy-nb"
LOG_TAIL_LINES = 20
RUNNING_STATES = {"RUNNING", "COMPLETING"}
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "PREEMPTED"}


class SessionError(web.HTTPError):
    """A session could not start; the message is for the learner, shown as-is by the hub."""

    def __init__(self, message: str, status_code: int = 500):
        # tornado %-formats log_message when shown: escape so a log line's '%' survives.
        super().__init__(status_code, message.replace("%", "%%"))
        self.message = message

    def __str__(self) -> str:
        return self.message


class AcademySlurmSpawner(SlurmSpawner):
    profiles = List(
        Dict(),
        help="Resource profiles: list of mappings validated by spawners.profiles.parse_profile.",
    ).tag(config=True)

    notebook_env = Unicode(
        "/opt/academy/venv-notebook",
        help="Virtual environment (readable, not writable, by learners) the session runs from.",
    ).tag(config=True)

    node_hosts = Dict(
        help="Map of Slurm node name to the address the hub uses to reach it (default: the name).",
    ).tag(config=True)

    hub_instance = Unicode(
        "academy",
        help="Tag written to each job's comment, so the platform's jobs can be told from others.",
    ).tag(config=True)

    slurm_timeout = Float(30.0, help="Seconds before a Slurm command is considered hung.").tag(config=True)

    port_wait_poll = Float(1.0, help="Seconds between job checks while waiting for the port.").tag(config=True)

    req_walltime_s = Integer(0)

    @validate("profiles")
    def _validate_profiles(self, proposal):
        try:
            parse_profiles(proposal["value"])
        except ProfileError as e:
            raise TraitError(str(e)) from None
        return proposal["value"]

    @default("env_keep")
    def _env_keep_default(self):
        # Nothing of the hub's own environment leaks into a session (PATH, PYTHONPATH...).
        return ["LANG", "LC_ALL"]

    @default("cmd")
    def _cmd_default(self):
        return [os.path.join(self.notebook_env, "bin", "jupyterhub-singleuser")]

    @default("batch_script")
    def _batch_script_default(self):
        return (TEMPLATES / "batch_script.sh.j2").read_text()

    @default("options_form")
    def _options_form_default(self):
        return self._render_options_form

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return AcademySlurmSpawner._apply_options

    # -- profiles and options -------------------------------------------------------------

    @property
    def parsed_profiles(self) -> list[Profile]:
        return parse_profiles(self.profiles)

    def user_groups(self) -> list[str]:
        return [g.name for g in getattr(self.user, "groups", [])]

    def allowed_profiles(self) -> list[Profile]:
        return profiles_for_groups(self.parsed_profiles, self.user_groups())

    def _render_options_form(self, spawner=None):
        allowed = self.allowed_profiles()
        previous = self.orm_spawner.user_options if self.orm_spawner is not None else None
        selected = (previous or {}).get("profile") if isinstance(previous, dict) else None
        if selected not in {p.key for p in allowed}:
            selected = allowed[0].key if allowed else None
        return _html.get_template("spawn_form.html.j2").render(
            profiles=[p.as_public_dict() for p in allowed], selected=selected
        )

    def options_from_form(self, formdata):
        # Form fields are lists of strings; validate now so the form shows the error.
        options = {k: v for k, v in formdata.items() if not k.startswith("_")}
        try:
            return validate_user_options(options, self.allowed_profiles()).as_user_options()
        except OptionsError as e:
            raise SessionError(str(e), 400) from None

    @staticmethod
    async def _apply_options(spawner: "AcademySlurmSpawner", user_options) -> None:
        """The only door from user_options to the spawner: a validated SessionRequest."""
        try:
            request = validate_user_options(user_options, spawner.allowed_profiles())
        except OptionsError as e:
            # Keep the last accepted options as the default for a body-less start.
            if spawner.orm_spawner is not None:
                spawner.orm_spawner.user_options = getattr(spawner, "_accepted_options", {})
            raise SessionError(str(e), 400) from None
        spawner.apply_session_request(request)
        spawner._accepted_options = request.as_user_options()
        if spawner.orm_spawner is not None:
            spawner.orm_spawner.user_options = spawner._accepted_options

    def apply_session_request(self, request: SessionRequest) -> None:
        p = request.profile
        self.session_profile = p
        self.req_partition = p.partition
        self.req_gres = p.gres
        self.req_nprocs = str(p.cpus)
        self.req_memory = p.memory
        self.req_reservation = p.reservation
        self.req_runtime = request.walltime
        self.req_walltime_s = request.walltime_s

    # -- the batch script -----------------------------------------------------------------

    def job_name(self) -> str:
        return f"{JOB_NAME_PREFIX}-{self.user.name}" + (f"-{self.name}" if self.name else "")

    def render_batch_script(self) -> str:
        """The sbatch script, from the validated profile and the hub's own settings only."""
        homedir = pwd.getpwnam(self.user.name).pw_dir
        return render_batch_script(
            BatchScriptValues(
                job_name=self.job_name(),
                homedir=homedir,
                comment=f"{self.hub_instance}:{self.user.name}:{self.name or 'default'}",
                notebook_env=self.notebook_env,
                server_argv=[*self.cmd, *self.get_args()],
            ),
            SessionRequest(self.session_profile, self.req_walltime_s),
        )

    def log_path(self) -> str:
        homedir = pwd.getpwnam(self.user.name).pw_dir
        return os.path.join(homedir, ".academy", "logs", f"session-{self.job_id}.log")

    @property
    def slurm(self) -> SlurmClient:
        return SlurmClient(timeout_s=self.slurm_timeout)

    async def _ensure_log_dir(self) -> None:
        # Created by the learner (via sudo), so it is theirs and a symlink planted in
        # their home cannot make the hub write elsewhere.
        homedir = pwd.getpwnam(self.user.name).pw_dir
        await self.slurm.run(
            ["sudo", "-u", self.user.name, "--", "mkdir", "-p", "-m", "700", os.path.join(homedir, ".academy", "logs")],
            env={"PATH": "/usr/bin:/bin"},
        )

    async def submit_batch_script(self):
        script = self.render_batch_script()
        await self._ensure_log_dir()
        self.log.info("Submitting %s for %s (profile %s, walltime %s)", self.job_name(), self.user.name,
                      self.session_profile.key, self.req_runtime)
        self.log.debug("Batch script:\n%s", script)
        env = self.get_env()
        try:
            self.job_id = await self.slurm.submit(script, as_user=self.user.name, env=env)
        except SlurmError as e:
            self.job_id = ""
            raise SessionError(f"Slurm refused the session: {e.stderr or e}", 503) from None
        self.log.info("Submitted job %s for %s", self.job_id, self.user.name)
        return self.job_id

    # -- job state ------------------------------------------------------------------------

    async def query_job_status(self):
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        try:
            info = await self.slurm.job(self.job_id)
        except SlurmError as e:
            # The controller did not answer: keep the job (never forget a live session).
            self.log.warning("squeue failed for job %s: %s", self.job_id, e)
            self.job_status = ""
            return JobStatus.UNKNOWN
        if info is None:
            self.job_status = ""
            return JobStatus.NOTFOUND
        self.job_status = f"{info.state} {info.node}".strip()
        self.job_reason = info.reason
        if info.state in RUNNING_STATES:
            return JobStatus.RUNNING
        if info.state in PENDING_STATES:
            return JobStatus.PENDING
        return JobStatus.NOTFOUND

    def state_gethost(self):
        node = self.job_status.split()[1] if len(self.job_status.split()) > 1 else ""
        return self.node_hosts.get(node, node)

    async def cancel_batch_job(self):
        self.log.info("Cancelling job %s of %s", self.job_id, self.user.name)
        await self.slurm.cancel(self.job_id)

    # -- start ----------------------------------------------------------------------------

    def accept_port_report(self, port: int) -> bool:
        """Called by the port-report handler; True if this spawner was waiting for it."""
        if not getattr(self, "_waiting_for_port", False) or self.port:
            return False
        self.port = port
        return True

    async def start(self):
        if not hasattr(self, "session_profile"):
            # apply_user_options always runs first in the hub; this guards direct callers.
            await self._apply_options(self, self.user_options or {})
        self.port = 0
        if self.server:
            self.server.port = 0
        await self.submit_batch_script()
        try:
            while True:
                status = await self.query_job_status()
                if status == JobStatus.RUNNING:
                    break
                if status == JobStatus.NOTFOUND:
                    raise SessionError(await self._job_failed_message("ended before it started"))
                await asyncio.sleep(self.startup_poll_interval)
            self.ip = self.state_gethost()
            self._waiting_for_port = True
            while not self.port:
                await asyncio.sleep(self.port_wait_poll)
                if self.port:
                    break
                if await self.query_job_status() == JobStatus.NOTFOUND:
                    raise SessionError(await self._job_failed_message("ended before its server reported a port"))
        finally:
            self._waiting_for_port = False
        self.log.info("Session job %s of %s is at %s:%s", self.job_id, self.user.name, self.ip, self.port)
        return self.ip, self.port

    async def _job_failed_message(self, what: str) -> str:
        tail = await self._log_tail()
        message = f"Your session's Slurm job {self.job_id} {what}."
        if tail:
            message += " Last lines of its log:\n" + tail
        return message

    async def _log_tail(self) -> str:
        # Read as the learner: the log lives in their home, where a symlink could point
        # the hub (root) at a file the learner may not read.
        try:
            return (await self.slurm.run(
                ["sudo", "-u", self.user.name, "--", "tail", "-n", str(LOG_TAIL_LINES), self.log_path()],
                env={"PATH": "/usr/bin:/bin"},
            )).rstrip()
        except SlurmError:
            return ""

    async def progress(self):
        while True:
            state = self.job_status.split()[0] if self.job_status else ""
            if state in PENDING_STATES:
                reason = getattr(self, "job_reason", "")
                yield {"message": f"Job {self.job_id} waiting in the Slurm queue ({reason or state})"}
            elif state in RUNNING_STATES:
                yield {"message": f"Job {self.job_id} running on {self.state_gethost()}, starting JupyterLab"}
                return
            else:
                yield {"message": "Submitting to Slurm"}
            await asyncio.sleep(1)


__all__ = ["AcademySlurmSpawner", "Spawner"]
