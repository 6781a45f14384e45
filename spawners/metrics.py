"""What an operator watches of sessions and Slurm, in Prometheus form.

The series live in prometheus_client's default registry, which JupyterHub serves at
``/hub/metrics`` (to a token with the ``read:metrics`` scope), beside its own
``jupyterhub_*`` series. Labels are bounded: a profile key, an outcome, a Slurm command name,
never a user or a job id.

- ``academy_session_starts_total{profile,outcome}``: every start, ended as ``ready``, ``refused``
  (the options or the GPU budget), ``timeout`` (pending too long), ``failed`` (the job ended or
  Slurm refused it) or ``cancelled`` (the hub gave up or the user stopped it).
- ``academy_session_queue_wait_seconds{profile}``: sbatch until Slurm runs the job.
- ``academy_session_ready_seconds{profile}``: sbatch until the server reported its port.
- ``academy_sessions_running{profile}``: sessions whose server runs now (read at scrape time from
  the spawners, so a hub restart counts the sessions it finds again).
- ``academy_session_ends_total{profile,reason}``: how sessions ended (``completed``, ``timeout``,
  ``cancelled``, ``preempted``, ``requeued``, ``stopped-by-hub``...).
- ``academy_slurm_commands_total{command,outcome}`` and ``academy_slurm_command_seconds{command}``:
  every sbatch, squeue, scancel, scontrol, sacctmgr the hub runs, ``ok``, ``error`` or ``timeout``.
"""

from __future__ import annotations

import os
import weakref

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

# Seconds: a warm start is a second or two, a queue wait may be many minutes.
WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

SESSION_STARTS = Counter("academy_session_starts", "Session starts, by profile and how the start ended",
                         ["profile", "outcome"])
QUEUE_WAIT = Histogram("academy_session_queue_wait_seconds", "From sbatch until Slurm runs the session's job",
                       ["profile"], buckets=WAIT_BUCKETS)
READY = Histogram("academy_session_ready_seconds", "From sbatch until the session's server reported its port",
                  ["profile"], buckets=WAIT_BUCKETS)
SESSION_ENDS = Counter("academy_session_ends", "Sessions that ended, by profile and how", ["profile", "reason"])
SLURM_COMMANDS = Counter("academy_slurm_commands", "Slurm commands the hub ran, by command and outcome",
                         ["command", "outcome"])
SLURM_SECONDS = Histogram("academy_slurm_command_seconds", "How long the hub's Slurm commands took", ["command"],
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

_live: "weakref.WeakSet" = weakref.WeakSet()


def command_name(argv: list[str]) -> str:
    """The Slurm command of an argv (after any ``sudo ... --``), for a label."""
    args = list(argv)
    if "--" in args and os.path.basename(args[0]) == "sudo":
        args = args[args.index("--") + 1:]
    return os.path.basename(args[0]) if args else "?"


def track(spawner) -> None:
    """Count this spawner in academy_sessions_running while its session runs."""
    _live.add(spawner)


class RunningSessions:
    """academy_sessions_running, read from the live spawners when Prometheus scrapes."""

    def collect(self):
        family = GaugeMetricFamily("academy_sessions_running", "Sessions whose server runs now, by profile",
                                   labels=["profile"])
        counts: dict[str, int] = {}
        for spawner in list(_live):
            if getattr(spawner, "session_started", False) and getattr(spawner, "job_id", ""):
                key = spawner.session_profile_key or "unknown"
                counts[key] = counts.get(key, 0) + 1
        for profile, n in sorted(counts.items()):
            family.add_metric([profile], n)
        yield family


_collector = RunningSessions()
try:
    REGISTRY.register(_collector)
except ValueError:   # imported twice under another name (tests): registered already
    pass
