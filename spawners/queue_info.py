"""What a learner waiting in the Slurm queue is told: why, how long, and what would start sooner."""

from __future__ import annotations

from datetime import datetime

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
