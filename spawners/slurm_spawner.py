"""AcademySlurmSpawner: batchspawner's SlurmSpawner with validated profiles and no trust in learners.

What changes against stock batchspawner 1.3.0, and why:
- ``user_options`` is reduced to a profile key and a walltime (options.py) before anything is
  submitted; the batch script is rendered from the profile alone. Stock merges the raw
  options into the template, so a learner could ask for more GPUs or inject ``#SBATCH`` lines.
- Slurm commands run as argument lists through SlurmClient, never through a shell; status
  polls run squeue as the hub (no sudo per poll).
- The port comes through port_report.py, only while this spawner waits for it.
- A job that dies before reporting its port fails the spawn at once, with its log's tail.
- The session's hub token expires with the walltime and is revoked as soon as the job ends,
  however it ends (session_token.py).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from pathlib import Path

from batchspawner import SlurmSpawner
from batchspawner.batchspawner import JobStatus
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Any, Dict, Float, Integer, List, TraitError, Unicode, default, validate

from . import port_report  # noqa: F401  (swaps batchspawner's API handler on import)
from . import session_token
from .batch_script import BatchScriptValues, render_batch_script
from .job_monitor import JobMonitor
from .options import OptionsError, SessionRequest, courses_from_groups, validate_user_options
from .profiles import Profile, ProfileError, parse_profiles, profiles_for_groups
from .queue_info import format_start, pending_message, timeout_message
from .slurm_client import JobInfo, SlurmClient, SlurmError

TEMPLATES = Path(__file__).parent / "templates"
_html = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined)

JOB_NAME_PREFIX = "academy-nb"
LOG_TAIL_LINES = 20
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
QUERY_SPAWN_REFUSED = ("A link cannot start a session: nothing was started. To start one, choose a profile and a "
                       "session length below and press Start.")


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

    slurm_bin_dir = Unicode("", help="Directory of sbatch/squeue/scancel; empty: found on PATH.").tag(config=True)

    pending_timeout = Float(
        0.0, help="Seconds a session may wait in the queue before it is cancelled with the reason shown; "
                  "0: start_timeout minus 30 s.",
    ).tag(config=True)

    monitor_interval = Float(30.0, help="Seconds between the batched squeue calls.").tag(config=True)

    monitor_max_interval = Float(120.0, help="Longest backoff between squeue calls while Slurm fails.").tag(config=True)

    cancel_attempts = Integer(4, help="scancel attempts (with backoff) before leaving a job to the reaper.").tag(config=True)

    token_expiry_margin = Float(300.0, help="Seconds a session's hub token outlives its job's walltime (Slurm's "
                                "kill grace, clock skew); it is revoked as soon as the job ends.").tag(config=True)

    session_event_hook = Any(
        None, allow_none=True,
        help="Called as hook(spawner, kind, fields) when a session starts ('session_started') and stops "
             "('session_stopped'); the hub wires it to the progress service's outbox. Must not block.",
    ).tag(config=True)
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
        return [os.path.join(self.notebook_env, "bin", "academy-singleuser")]  # spawners/singleuser.py

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

    def user_courses(self) -> list[str]:
        return courses_from_groups(self.user_groups())

    def _render_options_form(self, spawner=None):
        allowed = self.allowed_profiles()
        previous = self.orm_spawner.user_options if self.orm_spawner is not None else None
        previous = previous if isinstance(previous, dict) else {}
        selected = previous.get("profile")
        if selected not in {p.key for p in allowed}:
            selected = allowed[0].key if allowed else None
        courses = self.user_courses()
        # The last course chosen, else the only one: most learners have one course at a time.
        course = previous.get("course") if previous.get("course") in courses else (courses[0] if len(courses) == 1 else "")
        return _html.get_template("spawn_form.html.j2").render(
            profiles=[p.as_public_dict() for p in allowed], selected=selected, courses=courses, course=course,
        )

    def options_from_form(self, formdata):
        # Form fields are lists of strings; validate now so the form shows the error.
        options = {k: v for k, v in formdata.items() if not k.startswith("_")}
        try:
            return validate_user_options(options, self.allowed_profiles(), self.user_courses()).as_user_options()
        except OptionsError as e:
            raise SessionError(str(e), 400) from None

    def options_from_query(self, query_data):
        # JupyterHub starts a session from GET /hub/spawn?opt-...: a link or an <img> on any
        # page would spend a learner's GPU hours. Only the form's POST (XSRF-checked) and the
        # REST API start one; the hub shows this message above the form instead.
        raise SessionError(QUERY_SPAWN_REFUSED, 400)

    @staticmethod
    async def _apply_options(spawner: "AcademySlurmSpawner", user_options) -> None:
        """The only door from user_options to the spawner: a validated SessionRequest."""
        try:
            request = validate_user_options(user_options, spawner.allowed_profiles(), spawner.user_courses())
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
        self.session_course = request.course
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
        return SlurmClient(timeout_s=self.slurm_timeout, bin_dir=self.slurm_bin_dir)

    @property
    def monitor(self) -> JobMonitor:
        return JobMonitor.shared(SlurmClient(timeout_s=self.slurm_timeout, bin_dir=self.slurm_bin_dir),
                                 interval=self.monitor_interval, max_interval=self.monitor_max_interval)

    async def _as_user(self, *argv: str) -> str:
        # Run in the learner's name: what they own stays theirs, and a symlink planted in
        # their home cannot make the hub (root) read or write elsewhere.
        return await self.slurm.run(["sudo", "-u", self.user.name, "--", *argv], env={"PATH": "/usr/bin:/bin"})

    async def submit_batch_script(self):
        script = self.render_batch_script()
        homedir = pwd.getpwnam(self.user.name).pw_dir
        await self._as_user("mkdir", "-p", "-m", "700", os.path.join(homedir, ".academy", "logs"))
        self.log.info("Submitting %s for %s (profile %s, walltime %s)", self.job_name(), self.user.name,
                      self.session_profile.key, self.req_runtime)
        self.log.debug("Batch script:\n%s", script)
        try:
            self.job_id = await self.slurm.submit(script, as_user=self.user.name, env=self.get_env())
        except SlurmError as e:
            self.job_id = ""
            raise SessionError(submit_failure_message(e), 503) from None
        self.log.info("Submitted job %s for %s", self.job_id, self.user.name)
        self.monitor.watch(self.job_id)
        return self.job_id

    # -- job state ------------------------------------------------------------------------

    async def _job(self, max_age: float | None = None) -> JobInfo | None:
        """Newest known state of this session's job; None while Slurm does not answer."""
        info = await self.monitor.state(self.job_id, max_age=max_age)
        if info is not None:
            self.job_status = f"{info.state} {info.node}".strip()
            self.job_reason = info.reason
        return info

    async def query_job_status(self):
        """batchspawner's view of the job, from the shared monitor."""
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        info = await self._job(max_age=self.startup_poll_interval)
        if info is None:
            return JobStatus.UNKNOWN
        if info.state in RUNNING_STATES or info.state == "SUSPENDED":
            return JobStatus.RUNNING
        if info.state in PENDING_STATES:
            return JobStatus.PENDING
        return JobStatus.NOTFOUND

    async def poll(self):
        """None while the session lives; 1 once its job has ended (never on a Slurm hiccup)."""
        if not self.job_id:
            return 1
        info = await self._job()
        if info is None:
            return None  # Slurm is not answering: keep the session, the monitor backs off
        if info.state in RUNNING_STATES or info.state == "SUSPENDED":
            return None  # a suspended session resumes where it was
        if info.state in PENDING_STATES and self.session_started:
            # A running session that went back to the queue (requeued by an admin or a node
            # failure) has lost its server: end it cleanly rather than leave a job nobody waits for.
            self.log.warning("Job %s of %s was requeued (%s); cancelling it", self.job_id, self.user.name, info.state)
            await self._cancel_with_retries()
            self.end_reason = "requeued"
        elif info.state in PENDING_STATES:
            return None
        else:
            self.end_reason = info.state.lower()
            self.log.info("Job %s of %s ended: %s", self.job_id, self.user.name, info.state)
        self.monitor.forget(self.job_id)
        session_token.revoke(self)  # before clear_state, which forgets the token
        self.clear_state()
        return 1

    def state_gethost(self):
        node = self.job_status.split()[1] if len(self.job_status.split()) > 1 else ""
        return self.node_hosts.get(node, node)

    # -- start ----------------------------------------------------------------------------

    session_started = False  # True once the server ran: a later PENDING state means requeued

    session_started_at = 0.0  # epoch seconds the server came up (for the session's duration)
    session_profile_key = ""
    session_gpus = 0
    session_course_key = ""
    session_token_id = 0  # the hub's row id of this session's API token (session_token.py)

    def load_state(self, state):
        super().load_state(state)
        # A session the hub finds in its database after a restart had started.
        self.session_started = bool(self.job_id)
        self.session_started_at = float(state.get("session_started_at", 0.0))
        self.session_profile_key = state.get("session_profile_key", "")
        self.session_gpus = int(state.get("session_gpus", 0))
        self.session_course_key = state.get("session_course_key", "")
        self.session_token_id = int(state.get("session_token_id", 0))

    def get_state(self):
        state = super().get_state()
        if self.session_started_at:
            state.update(session_started_at=self.session_started_at, session_profile_key=self.session_profile_key,
                         session_gpus=self.session_gpus, session_course_key=self.session_course_key)
        if self.session_token_id:
            state["session_token_id"] = self.session_token_id
        return state

    def clear_state(self):
        super().clear_state()
        self.session_started = False
        self.session_started_at = 0.0
        self.session_token_id = 0

    def _session_event(self, kind: str, **fields) -> None:
        if self.session_event_hook is None:
            return
        try:
            self.session_event_hook(self, kind, {"session": self.job_id, "profile": self.session_profile_key,
                                                 "gpus": self.session_gpus, "course": self.session_course_key,
                                                 **fields})
        except Exception:  # progress records must never stop a session starting or stopping
            self.log.exception("recording %s for job %s failed", kind, self.job_id)

    def accept_port_report(self, port: int) -> bool:
        """Called by the port-report handler; True if this spawner was waiting for it."""
        event = getattr(self, "_port_event", None)
        if event is None or event.is_set() or self.port:
            return False
        self.port = port
        event.set()
        return True

    async def start(self):
        if not hasattr(self, "session_profile"):
            # apply_user_options always runs first in the hub; this guards direct callers.
            await self._apply_options(self, self.user_options or {})
        self.port = 0
        if self.server:
            self.server.port = 0
        self._port_event = asyncio.Event()
        self._submitted_at = time.monotonic()
        # The token lives no longer than the job can: queue time and walltime, then walltime from its start.
        session_token.expire_in(self, self.effective_pending_timeout() + self.req_walltime_s)
        await self.submit_batch_script()
        try:
            await self._wait_running()
            session_token.expire_in(self, self.req_walltime_s)
            self.ip = self.state_gethost()
            await self._wait_port()
        except BaseException:
            # Whatever stops the start (an error, the hub's timeout, a cancel): no orphan job.
            if self.job_id:
                await self._cancel_with_retries()
            raise
        finally:
            self._port_event = None
        self.log.info("Session job %s of %s is at %s:%s", self.job_id, self.user.name, self.ip, self.port)
        self.session_started = True
        self.session_started_at = time.time()
        self.session_profile_key, self.session_gpus = self.session_profile.key, self.session_profile.gpus
        self.session_course_key = getattr(self, "session_course", "")
        self._session_event("session_started")
        return self.ip, self.port

    async def _wait_running(self) -> None:
        deadline = self._submitted_at + self.effective_pending_timeout()
        while True:
            info = await self._job(max_age=self.startup_poll_interval)
            state = info.state if info else ""
            if state in RUNNING_STATES:
                return
            if info is not None and state not in PENDING_STATES:
                raise SessionError(await self._job_failed_message(f"ended ({state.lower()}) before it started"))
            if time.monotonic() > deadline:
                suggestion = await self.smaller_profile_suggestion()
                reason = getattr(self, "job_reason", "")
                raise SessionError(timeout_message(self.job_id, time.monotonic() - self._submitted_at, reason,
                                                   suggestion), 503)
            await asyncio.sleep(self.startup_poll_interval)

    async def _wait_port(self) -> None:
        while not self.port:
            try:
                await asyncio.wait_for(self._port_event.wait(), timeout=self.startup_poll_interval * 2)
            except asyncio.TimeoutError:
                pass
            if self.port:
                return
            info = await self._job(max_age=self.startup_poll_interval)
            if info is not None and info.state not in RUNNING_STATES:
                raise SessionError(await self._job_failed_message(
                    f"ended ({info.state.lower()}) before its server reported a port"))

    def effective_pending_timeout(self) -> float:
        # Leave the hub's own start_timeout room for the server to come up after scheduling.
        return self.pending_timeout or max(10.0, self.start_timeout - 30)

    async def _job_failed_message(self, what: str) -> str:
        tail = await self._log_tail()
        message = f"Your session's Slurm job {self.job_id} {what}."
        if tail:
            message += " Last lines of its log:\n" + tail
        return message

    async def _log_tail(self) -> str:
        try:
            return (await self._as_user("tail", "-n", str(LOG_TAIL_LINES), self.log_path())).rstrip()
        except SlurmError:
            return ""

    # -- stop -----------------------------------------------------------------------------

    async def _cancel_with_retries(self) -> bool:
        """scancel, retried with backoff; True once Slurm took it. A job left behind after all
        retries keeps its platform tag, so the reaper (spawners.reaper) cancels it later."""
        delay = 1.0
        for attempt in range(1, self.cancel_attempts + 1):
            try:
                await self.slurm.cancel(self.job_id)
                return True
            except SlurmError as e:
                self.log.warning("scancel %s failed (attempt %d of %d): %s", self.job_id, attempt,
                                 self.cancel_attempts, e)
                if attempt < self.cancel_attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        self.log.error("Job %s of %s could not be cancelled now; the reaper will retry", self.job_id, self.user.name)
        return False

    async def stop(self, now=False):
        session_token.revoke(self)
        if not self.job_id:
            return
        if self.session_started_at:
            self._session_event("session_stopped", duration_s=round(max(0.0, time.time() - self.session_started_at), 1))
            self.session_started_at = 0.0
        self.log.info("Stopping job %s of %s", self.job_id, self.user.name)
        cancelled = await self._cancel_with_retries()
        if cancelled and not now:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                info = await self._job(max_age=0.5)
                if info is not None and info.state not in RUNNING_STATES and info.state not in PENDING_STATES:
                    break
                await asyncio.sleep(0.5)
        self.monitor.forget(self.job_id)

    # -- waiting in the queue -------------------------------------------------------------

    async def smaller_profile_suggestion(self) -> str:
        """Name a profile of this learner that Slurm would start sooner, if there is one."""
        try:
            return await self._smaller_profile_suggestion()
        except Exception:  # a hint must never end the progress stream or hide the real message
            self.log.exception("Looking for a smaller profile for %s failed", self.user.name)
            return ""

    async def _smaller_profile_suggestion(self) -> str:
        current = getattr(self, "session_profile", None)
        if current is None:
            return ""
        homedir = pwd.getpwnam(self.user.name).pw_dir
        for p in self.allowed_profiles():
            if p.key == current.key or (p.gpus, p.cpus) >= (current.gpus, current.cpus):
                continue
            script = render_batch_script(
                BatchScriptValues(job_name=self.job_name(), homedir=homedir, comment="test-only",
                                  notebook_env=self.notebook_env, server_argv=[]),
                SessionRequest(p, p.walltime_default_s),
            )
            try:
                start = await self.slurm.test_only(script, as_user=self.user.name, env={"PATH": "/usr/bin:/bin"})
            except OSError:
                return ""
            when = format_start(start)
            self.log.info("Profile %s would start at %s (%s) for %s", p.key, start or "unknown", when, self.user.name)
            if when.endswith("(now)"):
                return f"The profile '{p.display}' could start now: stop this request and choose it on the spawn form."
        return ""

    async def progress(self):
        suggestion, asked = "", False
        while True:
            state = self.job_status.split()[0] if self.job_status else ""
            if state in PENDING_STATES and self.job_id:
                try:
                    position = await self.slurm.queue_position(self.job_id, self.req_partition)
                    start = await self.slurm.expected_start(self.job_id)
                except SlurmError:
                    position, start = None, ""
                if not asked and time.monotonic() - getattr(self, "_submitted_at", 0) > 5:
                    asked, suggestion = True, await self.smaller_profile_suggestion()
                yield {"message": pending_message(self.job_id, getattr(self, "job_reason", ""), position, start,
                                                  self.req_partition, suggestion)}
            elif state in RUNNING_STATES:
                yield {"message": f"Job {self.job_id} is running on {self.state_gethost()}: starting JupyterLab"}
                return
            else:
                yield {"message": "Submitting your session to Slurm"}
            await asyncio.sleep(2)


def submit_failure_message(error: SlurmError) -> str:
    text = error.stderr or str(error)
    if "Unable to contact slurm controller" in text or "timed out" in text:
        return ("The scheduler (Slurm's controller) is not answering, so no session can start right now. "
                "Sessions already running are not affected. Try again in a few minutes.")
    return f"Slurm refused the session: {text}"


__all__ = ["AcademySlurmSpawner", "Spawner"]
