"""The reaper: a hub-managed service that leaves no platform job without a hub record.

Every session job carries the tag ``<hub_instance>:<user>:<server>`` in its Slurm comment.
Each round, the reaper lists the platform's live jobs and the hub's servers (with their
``job_id`` from the spawner state) and cancels any tagged job the hub does not know: the
job of a start the hub gave up on, a scancel that failed, a job submitted by a hub that
crashed before recording it. Jobs younger than a grace period and servers still starting are
left alone. It also ends sessions past their profile's maximum age.

    python -m spawners.reaper --tag academy-academy [--interval 60] [--grace 120] [--max-age KEY=SECONDS ...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

from .hub_api import HubAPI
from .slurm_client import SlurmClient, SlurmError

log = logging.getLogger("academy.reaper")
LIVE_STATES = ("PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING")
TAGGED_JOB_FORMAT = "%i|%T|%k|%V|%l"  # id, state, comment (the tag), submit time, time limit


@dataclass(frozen=True)
class TaggedJob:
    job_id: str
    state: str
    user: str
    server: str
    submitted: datetime | None
    time_limit: str


async def tagged_jobs(slurm: SlurmClient, tag: str) -> list[TaggedJob]:
    """Live jobs of all users whose comment carries this platform's tag."""
    jobs = []
    for parts in await slurm.list_jobs(LIVE_STATES, TAGGED_JOB_FORMAT):
        if len(parts) != 5 or not parts[2].startswith(tag + ":"):
            continue
        job_id, state, comment, submitted, limit = parts
        _, user, server = (comment.split(":", 2) + ["", ""])[:3]
        try:
            when = datetime.fromisoformat(submitted)
        except ValueError:
            when = None
        jobs.append(TaggedJob(job_id, state, user, "" if server == "default" else server, when, limit))
    return jobs


async def cancel_all(slurm: SlurmClient, tag: str) -> list[str]:
    """Cancel every live job of this platform (``academy down``)."""
    cancelled = []
    for job in await tagged_jobs(slurm, tag):
        try:
            await slurm.cancel(job.job_id)
            cancelled.append(job.job_id)
        except SlurmError as e:
            log.error("could not cancel job %s: %s", job.job_id, e)
    return cancelled


def hub_records(users: list[dict]) -> tuple[set[str], set[tuple[str, str]]]:
    """(job ids the hub records, (user, server) pairs still starting)."""
    known, starting = set(), set()
    for user in users:
        for name, server in (user.get("servers") or {}).items():
            job_id = (server.get("state") or {}).get("job_id")
            if job_id:
                known.add(str(job_id))
            if server.get("pending") == "spawn":
                starting.add((user["name"], name))
    return known, starting


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def reap_once(slurm: SlurmClient, hub: HubAPI, tag: str, grace_s: float,
                    max_age: dict[str, int], now: datetime | None = None) -> dict[str, list[str]]:
    """One round; returns what it did, for logs and tests."""
    now_local = now or datetime.now()
    done: dict[str, list[str]] = {"cancelled": [], "expired": []}
    users = await hub.users()
    known, starting = hub_records(users)
    for job in await tagged_jobs(slurm, tag):
        if job.job_id in known or (job.user, job.server) in starting:
            continue
        if job.submitted is not None and (now_local - job.submitted).total_seconds() < grace_s:
            continue
        log.warning("job %s (%s, user %s) has no hub record: cancelling", job.job_id, job.state, job.user)
        try:
            await slurm.cancel(job.job_id)
            done["cancelled"].append(job.job_id)
        except SlurmError as e:
            log.error("could not cancel job %s, will retry: %s", job.job_id, e)
    now_utc = datetime.now(timezone.utc)
    for user in users:
        for name, server in (user.get("servers") or {}).items():
            limit = max_age.get((server.get("user_options") or {}).get("profile", ""), 0)
            started = _parse_time(server.get("started"))
            if limit and started and server.get("ready") and (now_utc - started).total_seconds() > limit:
                log.info("session %s/%s is older than its profile's %d s: stopping", user["name"], name, limit)
                await hub.stop_server(user["name"], name)
                done["expired"].append(f"{user['name']}/{name}")
    return done


async def run(args: argparse.Namespace) -> None:
    slurm = SlurmClient(bin_dir=args.slurm_bin_dir)
    hub = HubAPI.from_env()
    max_age = dict(item.split("=", 1) for item in args.max_age)
    max_age = {k: int(v) for k, v in max_age.items()}
    while True:
        try:
            done = await reap_once(slurm, hub, args.tag, args.grace, max_age)
            if any(done.values()):
                log.info("reaper round: %s", done)
        except (SlurmError, OSError) as e:
            # Slurm or the hub not answering is no reason to stop: try again next round.
            log.warning("reaper round skipped: %s", e)
        await asyncio.sleep(args.interval)


def arg_parser() -> argparse.ArgumentParser:
    """The reaper's command line; its defaults equal sessions.* in hub/defaults.yaml (a unit test checks)."""
    parser = argparse.ArgumentParser(prog="academy-reaper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help="the hub_instance tag in job comments")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    parser.add_argument("--grace", type=float, default=120.0, help="seconds a new job may go unrecorded")
    parser.add_argument("--slurm-bin-dir", default="", help="directory of squeue/scancel")
    parser.add_argument("--max-age", action="append", default=[], metavar="PROFILE=SECONDS",
                        help="end sessions of this profile older than SECONDS (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s academy-reaper] %(message)s")
    # The hub stops its services with SIGTERM: end quietly, between rounds or in one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(run(args))
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
