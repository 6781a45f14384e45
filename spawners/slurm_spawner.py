"""AcademySlurmSpawner: batchspawner's SlurmSpawner with validated profiles and no trust in learners.

What changes against stock batchspawner 1.3.0, and why:
- ``user_options`` is reduced to a profile key and a walltime (options.py) before anything is
  submitted; the batch script is rendered from the profile alone. Stock merges the raw
  options into the template, so a learner could ask for more GPUs or inject ``#SBATCH`` lines.
- Slurm commands run as argument lists through SlurmClient, never through a shell; status
  polls run squeue as the hub (no sudo per poll), one batched call for all sessions (job_monitor.py).
- The port comes through port_report.py, only while this spawner waits for it.
- A job that dies before reporting its port fails the spawn at once, with its log's tail.
- The session's hub token expires with the walltime and is revoked as soon as the job ends,
  however it ends (session_token.py).

The contract with batchspawner's template method, as this class keeps it:
- Hooks it implements: ``submit_batch_script`` (sbatch as the learner, script from
  templates/batch_script.sh.j2), ``query_job_status``, ``state_ispending``, ``state_isrunning`` and
  ``state_gethost`` (from the shared JobMonitor), ``cancel_batch_job`` (scancel, retried with backoff;
  start, poll and stop all cancel through it).
- Methods it replaces outright, because stock's cannot keep the promises above: ``start`` (waits for
  the port report, fails early, cancels the job on any failure), ``poll`` (only Slurm's positive
  evidence ends a session; a requeued one is ended), ``stop`` and ``progress`` (queue_hints.py).
- Kept as stock: ``job_id`` and ``job_status`` in the hub's state, ``startup_poll_interval``,
  ``start_timeout``, ``ip``. JupyterHub's option hooks (the form, ``apply_user_options``) come
  from SpawnOptions (spawn_options.py).
- batchspawner's settings for the parts replaced (``batch_*_cmd``, ``exec_prefix``,
  ``batch_script``, ``req_*``, ``state_*_re``) are never read: a site that sets one gets an error
  when the spawner is built, naming what to set instead (IGNORED_SETTINGS), rather than a setting
  that silently does nothing.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time

from batchspawner import SlurmSpawner
from batchspawner.batchspawner import JobStatus
from jupyterhub.spawner import Spawner
from traitlets import Any, Bool, Dict, Float, Integer, TraitError, Unicode, default, validate

from . import end_notices, gpu_budget, metrics, port_report, queue_hints, session_account, session_end, session_token
from .batch_script import BatchScriptValues, render_batch_script
from .cluster_view import ClusterView
from .job_monitor import PENDING_STATES, RUNNING_STATES, JobMonitor
from .slurm_accounts import AccountingError, SlurmAccounts
from .slurm_client import JobInfo, SlurmClient, SlurmError
from .slurm_policy import Policy
from .spawn_options import QUERY_SPAWN_REFUSED, SessionError, SpawnOptions

port_report.install_handlers()  # the hub's port endpoint instead of batchspawner's (idempotent)
session_end.install_handlers()  # and the one a session reports its end on

JOB_NAME_PREFIX = "academy-nb"
STOP_CONFIRM_S = 15  # how long stop() waits to see a cancelled job leave the running states

# batchspawner settings this spawner never reads: why, and what to set instead.
_COMMANDS = ("it runs sbatch, squeue and scancel itself, without a shell; set slurm.bin_dir (where they are) and "
             "slurm.command_timeout in the platform's config (/etc/academy/config.yaml) instead")
_SCRIPT = ("its batch script is spawners/templates/batch_script.sh.j2, rendered from the chosen profile only; set "
           "the profiles in the platform's config (partition, gres, cpus, memory, reservation) instead")
_STATES = "job states come from one batched squeue for all sessions (spawners/job_monitor.py); nothing replaces it"
IGNORED_SETTINGS = {
    **dict.fromkeys(["batch_submit_cmd", "batch_query_cmd", "batch_cancel_cmd", "exec_prefix"], _COMMANDS),
    **dict.fromkeys(["batch_script", "batchspawner_singleuser_cmd"], _SCRIPT),
    **dict.fromkeys(sorted(n for n in SlurmSpawner.class_trait_names(config=True) if n.startswith("req_")), _SCRIPT),
    **dict.fromkeys(sorted(n for n in SlurmSpawner.class_trait_names(config=True) if n.startswith("state_")), _STATES),
}


class AcademySlurmSpawner(SpawnOptions, SlurmSpawner):
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

    cancel_attempts = Integer(4, help="scancel attempts before leaving a job to the reaper.").tag(config=True)

    cancel_backoff = Float(1.0, help="Seconds between the first two scancel attempts; each later wait is twice "
                           "the one before.").tag(config=True)

    token_expiry_margin = Float(300.0, help="Seconds a session's hub token outlives its job's walltime (Slurm's "
                                "kill grace, clock skew); it is revoked as soon as the job ends.").tag(config=True)

    slurm_accounts = Dict(
        help="The slurm.accounts section (parent, own_work, course_prefix, qos_prefix, max_submit_per_user): "
             "sessions are charged to their course's account with their profile's QOS. Empty: no --account "
             "or --qos (a cluster without accounting).",
    ).tag(config=True)

    slurm_manage_qos = Bool(True, help="Create and update each profile's Slurm QOS (the embedded cluster); false on a "
                            "site's cluster, whose QOS its administrators keep.").tag(config=True)

    end_notices_dir = Unicode("", help="Directory where slurmctld's EpilogSlurmctld notes each ended job (an empty "
                              "file named by its id); '' for none. The hub reads it once a second and confirms "
                              "a noted end with Slurm: sessions killed without a signal end in seconds too.",
                              ).tag(config=True)
    cluster_view_interval = Float(15.0, help="Seconds the spawn form's view of the cluster (free GPUs, queue) is "
                                  "reused: one sinfo and one squeue per interval, however many open the form.",
                                  ).tag(config=True)

    session_event_hook = Any(
        None, allow_none=True,
        help="Called as hook(spawner, kind, fields) when a session starts ('session_started') and stops "
             "('session_stopped'); the hub wires it to the progress service's outbox. Must not block.",
    ).tag(config=True)

    @validate(*IGNORED_SETTINGS)
    def _refuse_ignored_setting(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        if value != proposal["trait"].default():
            raise TraitError(f"{type(self).__name__}.{name} is set to {value!r}, but this spawner does not use "
                             f"batchspawner's {name}: {IGNORED_SETTINGS[name]}. Remove the setting.")
        return value

    @default("env_keep")
    def _env_keep_default(self):
        # Nothing of the hub's own environment leaks into a session (PATH, PYTHONPATH...).
        return ["LANG", "LC_ALL"]

    @default("cmd")
    def _cmd_default(self):
        return [os.path.join(self.notebook_env, "bin", "academy-singleuser")]  # spawners/singleuser.py

    # -- the batch script -----------------------------------------------------------------

    def job_name(self) -> str:
        return f"{JOB_NAME_PREFIX}-{self.user.name}" + (f"-{self.name}" if self.name else "")

    def homedir(self) -> str:
        return pwd.getpwnam(self.user.name).pw_dir

    @property
    def policy(self) -> Policy | None:
        return Policy.from_config({"slurm": {"accounts": self.slurm_accounts}}) if self.slurm_accounts else None

    def render_batch_script(self) -> str:
        """The sbatch script, from the validated profile and the hub's own settings only."""
        account, qos = session_account.charge(self.policy, self.session_request) if self.policy else ("", "")
        return render_batch_script(
            BatchScriptValues(
                job_name=self.job_name(),
                homedir=self.homedir(),
                comment=f"{self.hub_instance}:{self.user.name}:{self.name or 'default'}",
                notebook_env=self.notebook_env,
                server_argv=[*self.cmd, *self.get_args()],
                account=account,
                qos=qos,
            ),
            self.session_request,
        )

    def log_path(self) -> str:
        return os.path.join(self.homedir(), ".academy", "logs", f"session-{self.job_id}.log")

    async def cluster_views(self, profiles) -> dict[str, dict]:
        views = await ClusterView.shared(self.slurm, self.cluster_view_interval).views(profiles)
        return {key: view.as_dict() for key, view in views.items()}

    def _accounts_of(self, courses: list[str]) -> dict[str, str]:
        """{Slurm account: course ('' for own work)} of these courses and own work."""
        policy = self.policy
        return {policy.account_for(c): c for c in [*courses, ""]} if policy else {}

    async def account_state(self, courses: list[str]) -> dict:
        accounts = self._accounts_of(courses)
        if not accounts:
            return await super().account_state(courses)
        state = await ClusterView.shared(self.slurm, self.cluster_view_interval).account_state(self.user.name, accounts)
        state["held"] = [(job, name, queue_hints.explain_reason(reason)[0]) for job, name, reason in state["held"]]
        return state

    async def budget_refusal(self, request) -> str | None:
        # Asked of slurmctld at each start (one call), not from the form's cache: what a session
        # that just ended used counts at once. Slurm refuses or holds the job anyway (the
        # second lock), so an answer it cannot give here lets the start go on.
        if not self.policy or not request.profile.gpus:
            return None
        account = self.policy.account_for(request.course)
        try:
            text = await self.slurm.assoc_mgr(users=[self.user.name], accounts=[account])
        except (SlurmError, OSError) as e:     # slurmctld away, scontrol missing
            self.log.warning("GPU budget of %s on %s not known (%s); Slurm checks it at submission",
                             self.user.name, account, e)
            return None
        budget = gpu_budget.Budget.of(gpu_budget.parse_assoc_mgr(text), self.user.name, account, request.course)
        return budget.refusal(request.profile, request.walltime_s) if budget else None

    @property
    def slurm(self) -> SlurmClient:
        return SlurmClient(timeout_s=self.slurm_timeout, bin_dir=self.slurm_bin_dir)

    @property
    def monitor(self) -> JobMonitor:
        return JobMonitor.shared(self.slurm, interval=self.monitor_interval, max_interval=self.monitor_max_interval)

    async def run_as_user(self, *argv: str) -> str:
        """Run a command in the learner's name: what they own stays theirs, and a symlink planted
        in their home cannot make the hub (root) read or write elsewhere."""
        return await self.slurm.run(["sudo", "-u", self.user.name, "--", *argv], env={"PATH": "/usr/bin:/bin"})

    async def submit_batch_script(self):
        script = self.render_batch_script()
        await self.run_as_user("mkdir", "-p", "-m", "700", os.path.join(self.homedir(), ".academy", "logs"))
        self.log.info("Submitting %s for %s (profile %s, walltime %s)", self.job_name(), self.user.name,
                      self.session_request.profile.key, self.session_request.walltime)
        self.log.debug("Batch script:\n%s", script)
        try:
            try:
                self.job_id = await self.slurm.submit(script, as_user=self.user.name, env=self.get_env())
            except SlurmError as e:
                if not (self.policy and session_account.refused_for_association(str(e))):
                    raise
                self.log.info("%s has no Slurm association for this session yet (%s); making it", self.user.name,
                              str(e).strip().splitlines()[-1])
                await self._ensure_association()
                self.job_id = await self.slurm.submit(script, as_user=self.user.name, env=self.get_env())
        except SlurmError as e:
            self.job_id = ""
            raise SessionError(queue_hints.submit_failure_message(e), 503) from None
        self.log.info("Submitted job %s for %s", self.job_id, self.user.name)
        self.monitor.watch(self.job_id)
        self._follow_end_notices()
        return self.job_id

    def _follow_end_notices(self) -> None:
        if self.end_notices_dir and self.job_id:
            end_notices.EndNotices.shared(self.end_notices_dir).follow(self.job_id, self)

    def _forget_job(self, job: str = "") -> None:
        job = job or self.job_id
        self.monitor.forget(job)
        if self.end_notices_dir:
            end_notices.EndNotices.shared(self.end_notices_dir).forget(job)

    async def _ensure_association(self) -> None:
        try:
            await session_account.ensure_association(
                SlurmAccounts(self.slurm_bin_dir, self.slurm_timeout), self.policy, self.user.name,
                self.session_request, self.allowed_profiles(), self.parsed_profiles, manage_qos=self.slurm_manage_qos)
        except AccountingError as e:
            self.log.error("%s", e)
            raise SessionError("The cluster's accounting could not be reached to set up your Slurm account; "
                               "try again in a minute, and tell the operators if it goes on.", 503) from None

    # -- job state ------------------------------------------------------------------------

    job_reason = ""  # Slurm's reason for the job's state, as last seen

    async def _job(self, max_age: float | None = None) -> JobInfo | None:
        """Newest known state of this session's job; None while Slurm does not answer."""
        info = await self.monitor.state(self.job_id, max_age=max_age)
        if info is not None:
            self.job_status = f"{info.state} {info.node}".strip()
            self.job_reason = info.reason
        return info

    # job_status reads "STATE NODE" (NODE once it runs), as stock's squeue output does.
    def state_ispending(self) -> bool:
        return (self.job_status.split() or [""])[0] in PENDING_STATES

    def state_isrunning(self) -> bool:
        return (self.job_status.split() or [""])[0] in RUNNING_STATES

    def state_gethost(self):
        node = self.job_status.split()[1] if len(self.job_status.split()) > 1 else ""
        return self.node_hosts.get(node, node)

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
        return JobStatus.PENDING if info.state in PENDING_STATES else JobStatus.NOTFOUND

    async def poll(self):
        """None while the session lives; 1 once its job has ended (never on a Slurm hiccup)."""
        if not self.job_id:
            return 1
        self._follow_end_notices()   # idempotent; after a hub restart, the first poll starts it
        info = await self._job()
        if info is None:
            return None  # Slurm is not answering: keep the session, the monitor backs off
        if info.state in RUNNING_STATES or info.state == "SUSPENDED":
            return None  # a suspended session resumes where it was
        if info.state in PENDING_STATES and self.session_started:
            # A running session that went back to the queue (requeued by an admin or a node
            # failure) has lost its server: end it cleanly rather than leave a job nobody waits for.
            self.log.warning("Job %s of %s was requeued (%s); cancelling it", self.job_id, self.user.name, info.state)
            await self.cancel_batch_job()
            self.end_reason = "requeued"
        elif info.state in PENDING_STATES:
            return None
        else:
            self.end_reason = info.state.lower()
            self.log.info("Job %s of %s ended: %s", self.job_id, self.user.name, info.state)
        self._record_stop()
        self._forget_job()
        session_token.revoke(self)  # before clear_state, which forgets the token
        self.clear_state()
        return 1

    # -- start ----------------------------------------------------------------------------

    session_started = False  # True once the server ran: a later PENDING state means requeued

    submitted_at = 0.0  # monotonic time of this start's sbatch
    session_started_at = 0.0  # epoch seconds the server came up (for the session's duration)
    session_profile_key = ""
    session_gpus = 0
    session_course_key = ""
    session_token_id = 0  # the hub's row id of this session's API token (session_token.py)

    def load_state(self, state):
        super().load_state(state)
        metrics.track(self)   # a session found after a hub restart counts as running again
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

    def _record_stop(self) -> None:
        """The session's end for the progress records and the metrics, once, however it ended."""
        if self.session_started_at:
            metrics.SESSION_ENDS.labels(self.session_profile_key or "unknown",
                                        (self.end_reason or "stopped").replace("_", "-")).inc()
            self._session_event("session_stopped", duration_s=round(max(0.0, time.time() - self.session_started_at), 1),
                                reason=(self.end_reason or "stopped").replace("_", "-"))
            self.session_started_at = 0.0

    _following_end: asyncio.Future | None = None
    end_reason = ""  # how the last session ended: a Slurm state in lower case, "requeued", or "stopped-by-hub"

    def accept_end_report(self, source: str = "its server") -> bool:
        """Called when the session's server reports its end (the end-report handler) or Slurm's
        epilog notes it (end_notices): follow the job's end closely; False if there is nothing to
        follow (not running, or already followed)."""
        if not (self.session_started and self.job_id) or (self._following_end and not self._following_end.done()):
            return False
        if self._stop_pending:
            # The hub is stopping this session itself, and its stop records the end. Following
            # it too would run the poll callbacks: a second User.stop, racing the first, whose
            # late clean-up then removed the learner's *next* server while it started.
            return False
        self.log.info("Session of %s: end reported by %s (job %s); confirming with Slurm", self.user.name, source,
                      self.job_id)
        self._following_end = asyncio.ensure_future(session_end.follow(self))
        return True

    def accept_port_report(self, port: int) -> bool:
        """Called by the port-report handler; True if this spawner was waiting for it."""
        event = getattr(self, "_port_event", None)
        if event is None or event.is_set() or self.port:
            return False
        self.port = port
        event.set()
        return True

    async def start(self):
        if self.session_request is None:
            # apply_user_options always runs first in the hub; this guards direct callers.
            await self._apply_options(self, self.user_options or {})
        request = self.session_request
        self.port = 0
        if self.server:
            self.server.port = 0
        self.end_reason = ""
        self._port_event = asyncio.Event()
        self.submitted_at = time.monotonic()
        metrics.track(self)
        profile = request.profile.key
        # The token lives no longer than the job can: queue time and walltime, then walltime from its start.
        session_token.expire_in(self, self.effective_pending_timeout() + request.walltime_s)
        try:
            await self.submit_batch_script()
        except SessionError:
            metrics.SESSION_STARTS.labels(profile, "failed").inc()
            raise
        try:
            await self._wait_running()
            metrics.QUEUE_WAIT.labels(profile).observe(time.monotonic() - self.submitted_at)
            session_token.expire_in(self, request.walltime_s)
            self.ip = self.state_gethost()
            await self._wait_port()
        except BaseException as e:
            # Whatever stops the start (an error, the hub's timeout, a cancel): no orphan job.
            metrics.SESSION_STARTS.labels(profile, start_outcome(e)).inc()
            if self.job_id:
                await self.cancel_batch_job()
            raise
        finally:
            self._port_event = None
        metrics.SESSION_STARTS.labels(profile, "ready").inc()
        metrics.READY.labels(profile).observe(time.monotonic() - self.submitted_at)
        self.log.info("Session job %s of %s is at %s:%s", self.job_id, self.user.name, self.ip, self.port)
        self.session_started = True
        self.session_started_at = time.time()
        self.session_profile_key, self.session_gpus = request.profile.key, request.profile.gpus
        self.session_course_key = request.course
        self._session_event("session_started")
        return self.ip, self.port

    async def _wait_running(self) -> None:
        deadline = self.submitted_at + self.effective_pending_timeout()
        while True:
            info = await self._job(max_age=self.startup_poll_interval)
            state = info.state if info else ""
            if state in RUNNING_STATES:
                return
            if info is not None and state not in PENDING_STATES:
                raise SessionError(await queue_hints.job_failed_message(self, f"ended ({state.lower()}) before it started"))
            if time.monotonic() > deadline:
                suggestion = await queue_hints.smaller_profile_suggestion(self)
                error = SessionError(queue_hints.timeout_message(self.job_id, time.monotonic() - self.submitted_at,
                                                                 self.job_reason, suggestion), 503)
                error.outcome = "timeout"
                raise error
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
                raise SessionError(await queue_hints.job_failed_message(
                    self, f"ended ({info.state.lower()}) before its server reported a port"))

    def effective_pending_timeout(self) -> float:
        # Leave the hub's own start_timeout room for the server to come up after scheduling.
        return self.pending_timeout or max(10.0, self.start_timeout - 30)

    async def progress(self):
        async for event in queue_hints.progress(self):
            yield event

    # -- stop -----------------------------------------------------------------------------

    async def cancel_batch_job(self) -> bool:
        """scancel with retries (cancel_attempts, cancel_backoff); True once Slurm took it. A job left
        behind keeps its platform tag, so the reaper (spawners.reaper) cancels it later."""
        if await self.slurm.cancel_with_retries(self.job_id, self.cancel_attempts, self.cancel_backoff, self.log):
            return True
        self.log.error("Job %s of %s could not be cancelled now; the reaper will retry", self.job_id, self.user.name)
        return False

    async def stop(self, now=False):
        session_token.revoke(self)
        if not self.job_id:
            return
        self.end_reason = self.end_reason or "stopped-by-hub"
        self._record_stop()
        self.log.info("Stopping job %s of %s", self.job_id, self.user.name)
        job = self.job_id  # by its id from here: nothing else may clear it meanwhile, but a stop must not spin on ""
        cancelled = await self.cancel_batch_job()
        if cancelled and not now:
            deadline = time.monotonic() + STOP_CONFIRM_S
            while time.monotonic() < deadline:
                info = await self.monitor.state(job, max_age=0.5)
                if info is not None and info.state not in RUNNING_STATES and info.state not in PENDING_STATES:
                    break
                await asyncio.sleep(0.5)
        self._forget_job(job)


def start_outcome(error: BaseException) -> str:
    """How a start that did not reach its server ended, for academy_session_starts_total."""
    if isinstance(error, SessionError):
        return getattr(error, "outcome", "failed")
    return "cancelled"     # the hub's own start_timeout, or the user stopped the pending start


__all__ = ["AcademySlurmSpawner", "QUERY_SPAWN_REFUSED", "SessionError", "Spawner"]
