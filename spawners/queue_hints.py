"""What a learner is told while a session starts: why it waits in the queue and how long, which of
their profiles Slurm would start sooner, and why a start failed (Slurm's refusal, the dead job's log).

The texts are plain functions; the few that ask Slurm or read the learner's files take the spawner
(spawners.slurm_spawner), and a hint that cannot be had is left out rather than ending the start.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from . import session_account
from .batch_script import BatchScriptValues, render_batch_script
from .options import SessionRequest
from .slurm_client import SlurmError

LOG_TAIL_LINES = 20
SUGGEST_AFTER_S = 5  # a start that waits longer than this is worth a sbatch --test-only per smaller profile
PROGRESS_INTERVAL_S = 2

# Slurm's pending reasons, in words a learner understands, with what to try.
REASONS = {
    "Resources": ("all the resources this profile needs are in use", "a smaller profile or a shorter session"),
    "Priority": ("other jobs are ahead of yours in the queue", "waiting a little, or a smaller profile"),
    "Reservation": ("the reservation this profile uses is not active now", "the workshop's time slot"),
    "ReqNodeNotAvail": ("the nodes this profile needs are reserved or down", "another profile, or later"),
    "PartitionDown": ("the partition is closed for maintenance", "later; see the centre's status page"),
    "PartitionNodeLimit": ("the partition cannot fit this request", "a smaller profile"),
    "PartitionTimeLimit": ("the session is longer than the partition allows", "a shorter session"),
    "QOSMaxGRESPerUser": ("you already use as many GPUs as you may", "stopping another session first"),
    "AssocGrpGRES": ("your project's GPU quota is in use", "waiting, or a CPU profile"),
    # A GPU-hour budget (GrpTRESMins): what is left cannot cover the job's whole time limit.
    "AssocGrpGRESMinutes": ("the GPU-hour budget (the course's, or yours in it) cannot cover the whole time "
                            "limit asked for", "a shorter session, a CPU profile, or asking your trainer for more GPU time"),
    "AssocGrpGRESRunMinutes": ("the GPU-hour budget is held by jobs still running",
                               "waiting for them to end, or a shorter session"),
    "AssocMaxGRESMinutesPerJob": ("the job asks for more GPU-hours than one job may use", "a shorter session"),
    "BeginTime": ("the job waits for its start time", "waiting"),
    "Dependency": ("the job waits for another job", "waiting"),
    "JobHeldAdmin": ("an administrator holds the job", "contacting the trainers"),
    "JobHeldUser": ("the job is held", "stopping this request and starting again"),
    "None": ("the scheduler has not looked at the job yet", "waiting a few seconds"),
}


def explain_reason(reason: str) -> tuple[str, str]:
    """(why, what to try) for a Slurm pending reason."""
    key = reason.split(",")[0].strip("()") if reason else "None"
    if key.startswith("QOS") and key not in REASONS:
        key = "QOSMaxGRESPerUser"
    return REASONS.get(key, (f"Slurm says '{reason}'", "a smaller profile, or later"))


def format_start(iso: str, now: datetime | None = None) -> str:
    """'17:42 (in 12 min)' from Slurm's ISO time; '' when unknown."""
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return ""
    now = now or datetime.now()
    minutes = max(0, round((when - now).total_seconds() / 60))
    return f"{when:%H:%M} (in {minutes} min)" if minutes else f"{when:%H:%M} (now)"


def pending_message(job_id: str, reason: str, position: tuple[int, int] | None, start_iso: str,
                    partition: str, suggestion: str = "") -> str:
    why, _ = explain_reason(reason)
    parts = [f"Job {job_id} is waiting in the Slurm queue: {why}."]
    if position:
        parts.append(f"Position {position[0]} of {position[1]} in partition {partition}.")
    start = format_start(start_iso)
    if start:
        parts.append(f"Slurm expects it to start at {start}.")
    if suggestion:
        parts.append(suggestion)
    return " ".join(parts)


def timeout_message(job_id: str, waited_s: float, reason: str, suggestion: str = "") -> str:
    why, try_ = explain_reason(reason)
    waited = f"{waited_s / 60:.0f} min" if waited_s >= 120 else f"{waited_s:.0f} s"
    message = (f"Your session waited {waited} in the queue without starting, so job {job_id} "
               f"was cancelled (nothing is left running). Why: {why}. Try {try_}.")
    return f"{message} {suggestion}" if suggestion else message


def submit_failure_message(error: SlurmError) -> str:
    text = error.stderr or str(error)
    if "Unable to contact slurm controller" in text or "timed out" in text:
        return ("The scheduler (Slurm's controller) is not answering, so no session can start right now. "
                "Sessions already running are not affected. Try again in a few minutes.")
    return f"Slurm refused the session: {text}"


async def job_failed_message(spawner, what: str) -> str:
    """'Your session's Slurm job N <what>.', with the last lines of the job's log when it has one."""
    message = f"Your session's Slurm job {spawner.job_id} {what}."
    try:
        # Read as the learner: the log is theirs, and a symlink in their home must not make root read elsewhere.
        tail = (await spawner.run_as_user("tail", "-n", str(LOG_TAIL_LINES), spawner.log_path())).rstrip()
    except SlurmError:
        tail = ""
    return message + (" Last lines of its log:\n" + tail if tail else "")


async def smaller_profile_suggestion(spawner) -> str:
    """Name a profile of this learner that Slurm would start sooner, if there is one."""
    try:
        return await _smaller_profile_suggestion(spawner)
    except Exception:  # a hint must never end the progress stream or hide the real message
        spawner.log.exception("Looking for a smaller profile for %s failed", spawner.user.name)
        return ""


async def _smaller_profile_suggestion(spawner) -> str:
    current = spawner.session_request.profile if spawner.session_request else None
    if current is None:
        return ""
    for p in spawner.allowed_profiles():
        if p.key == current.key or (p.gpus, p.cpus) >= (current.gpus, current.cpus):
            continue
        request = SessionRequest(p, p.walltime_default_s, spawner.session_request.course)
        # charged as the real start would be: the smaller profile's QOS, the same course's account
        account, qos = session_account.charge(spawner.policy, request) if spawner.policy else ("", "")
        script = render_batch_script(
            BatchScriptValues(job_name=spawner.job_name(), homedir=spawner.homedir(), comment="test-only",
                              notebook_env=spawner.notebook_env, server_argv=[], account=account, qos=qos),
            request,
        )
        try:
            start = await spawner.slurm.test_only(script, as_user=spawner.user.name, env={"PATH": "/usr/bin:/bin"})
        except OSError:
            return ""
        when = format_start(start)
        spawner.log.info("Profile %s would start at %s (%s) for %s", p.key, start or "unknown", when,
                         spawner.user.name)
        if when.endswith("(now)"):
            return f"The profile '{p.display}' could start now: stop this request and choose it on the spawn form."
    return ""


async def progress(spawner):
    """The start page's messages: submitting, waiting in the queue (why, where, until when), running."""
    suggestion, asked = "", False
    while True:
        if spawner.state_ispending() and spawner.job_id:
            partition = spawner.session_request.profile.partition if spawner.session_request else ""
            try:
                position = await spawner.slurm.queue_position(spawner.job_id, partition)
                start = await spawner.slurm.expected_start(spawner.job_id)
            except SlurmError:
                position, start = None, ""
            if not asked and time.monotonic() - spawner.submitted_at > SUGGEST_AFTER_S:
                asked, suggestion = True, await smaller_profile_suggestion(spawner)
            yield {"message": pending_message(spawner.job_id, spawner.job_reason, position, start, partition,
                                              suggestion)}
        elif spawner.state_isrunning():
            yield {"message": f"Job {spawner.job_id} is running on {spawner.state_gethost()}: starting JupyterLab"}
            return
        else:
            yield {"message": "Submitting your session to Slurm"}
        await asyncio.sleep(PROGRESS_INTERVAL_S)
