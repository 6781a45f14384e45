"""Seconds from a session's end until the hub shows its server stopped: stock batchspawner (ANCHOR)
against ours, for the ways a session ends behind the hub's back.

- scancel: `scancel` of the running sessions' jobs (a learner in a terminal, an operator);
- walltime: sessions started with a one-minute walltime, which Slurm ends;
- preemption: an operator's job in the `urgent` partition takes the GPUs the sessions hold;
- sigkill (reported apart): SIGKILL of the session's server; no signal reaches anything, so no
  end report: both hubs learn it from squeue.

Each end is timed from the event (the scancel call, the job's end in sacct for the walltime, the
urgent job's submission) to the first moment the hub's API, polled every POLL_S by each
learner, shows no server. Sessions run benchmarks/standin_server.py (both hubs), which for ours
sends the end report on SIGTERM with the project's own client, as the real entry point does.
Ours runs with the platform's defaults (monitor every 30 s); stock with its own (JupyterHub's
poll every 30 s, one squeue per session).

    /opt/academy/venv-hub/bin/python benchmarks/session_end.py [--per-kind 10]

Writes benchmarks/results/session_end.json with `anchor` and `ours` as p95 seconds per kind.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
import traceback

import common
from common import AnchorHub, OursHub, log

POLL_S = 0.5
KINDS = ("scancel", "walltime", "preemption", "sigkill")


def watch_stops(learners: list, timeout: float) -> dict[str, float]:
    """{learner: epoch time their server was first seen gone}, each polled every POLL_S."""
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def one(learner) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if learner.server() is None:
                    with lock:
                        seen[learner.name] = time.time()
                    return
            except Exception:  # noqa: BLE001 - a slow answer is retried
                pass
            time.sleep(POLL_S)

    common.in_threads(one, learners)
    return seen


def start_all(learners: list, body: dict, timeout: float) -> list:
    """Start every learner's session at once; those whose server became ready."""
    ready = []
    lock = threading.Lock()

    def one(learner) -> None:
        try:
            r = learner.start(body)
            if r.status_code in (201, 202) and learner.spawn_outcome(timeout)[0]:
                with lock:
                    ready.append(learner)
        except Exception as e:  # noqa: BLE001
            log(f"{learner.name}: start failed: {e}")

    common.in_threads(one, learners)
    return ready


def jobs_of(users: list[str]) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-o", "%u %i %T", f"--user={','.join(users)}"], capture_output=True,
                         text=True).stdout
    return {u: j for u, j, state in (line.split() for line in out.splitlines()) if state == "RUNNING"}


def sacct_end(job: str) -> float | None:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job, "-o", "End"], capture_output=True, text=True).stdout
    try:
        return time.mktime(time.strptime(out.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def one_round(kind: str, learners: list, body: dict, detect_timeout: float) -> list[float]:
    """Start these sessions, end them the `kind` way, return each one's seconds to the hub seeing it."""
    ready = start_all(learners, body, 300)
    jobs = jobs_of([lr.name for lr in ready])
    ready = [lr for lr in ready if lr.name in jobs]
    if not ready:
        return []
    events: dict[str, float] = {}
    urgent = ""
    if kind == "scancel":
        t = time.time()
        subprocess.run(["scancel", *jobs.values()], check=True)
        events = {lr.name: t for lr in ready}
    elif kind == "preemption":
        t = time.time()
        urgent = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--gres=gpu:h200:4", "--time=2",
                                 "--output=/dev/null", "--wrap=sleep 30"], capture_output=True, text=True,
                                check=True, cwd="/tmp").stdout.strip()
        events = {lr.name: t for lr in ready}
    elif kind == "sigkill":
        t = time.time()
        for lr in ready:
            subprocess.run(["pkill", "-KILL", "-u", lr.name, "-f", "standin|academy-singleuser"], check=False)
        events = {lr.name: t for lr in ready}
    stopped = watch_stops(ready, detect_timeout)
    if urgent:
        subprocess.run(["scancel", urgent], check=False)
    if kind == "walltime":
        events = {lr.name: sacct_end(jobs[lr.name]) for lr in ready}
    out = []
    for lr in ready:
        if lr.name in stopped and events.get(lr.name):
            out.append(round(stopped[lr.name] - events[lr.name], 2))
        else:
            log(f"{kind}: {lr.name}: no stop seen in {detect_timeout} s")
    return out


def measure_hub(hub_kind: str, root, standin_env, standin_server, creds: dict, users: list[str], args) -> dict:
    cpu, gpu = common.BENCH_PROFILE, common.BENCH_GPU_PROFILE
    if hub_kind == "anchor":
        hub = AnchorHub(root, users, session_cmd=str(standin_server))
        bodies = {"cpu": {}, "walltime": {}, "gpu": {}}
    else:
        profiles = common.academy_config.load()["profiles"] + [cpu, gpu]
        hub = OursHub(root, {u: ["bench"] for u in users}, profiles=profiles,
                      extra={"notebook_env": str(standin_env)})
        bodies = {"cpu": {"profile": cpu["key"]}, "walltime": {"profile": cpu["key"], "walltime": 1},
                  "gpu": {"profile": gpu["key"]}}
    out: dict = {k: [] for k in KINDS}
    try:
        for kind in KINDS:
            # stock's profile is its hub-wide settings: one hub per kind of session
            if hub_kind == "anchor":
                hub.env.update(anchor_settings(kind))
            hub.start()
            learners = list(common.login_all(hub, creds, users).values())
            group = 4 if kind == "preemption" else len(learners)   # four GPUs to preempt
            body = bodies["gpu" if kind == "preemption" else "walltime" if kind == "walltime" else "cpu"]
            while len(out[kind]) < args.per_kind:
                need = min(group, args.per_kind - len(out[kind]))
                got = one_round(kind, learners[:max(need, 1)], body, args.detect_timeout)
                log(f"{hub_kind} {kind}: {got}")
                out[kind] += got
                common.cancel_user_jobs(users)
                if not got:
                    break
            hub.stop()
            time.sleep(2)
        return out
    finally:
        hub.stop()
        common.cancel_user_jobs(users)


def anchor_settings(kind: str) -> dict:
    """Stock's request for this kind: the same sizes as ours' bench profiles (BENCH_* read by the anchor config)."""
    if kind == "preemption":
        return {"BENCH_PARTITION": "gpu", "BENCH_RUNTIME": "00:30:00",
                "BENCH_OPTIONS": f"--gres=gpu:h200:1 --qos=academy-{common.BENCH_GPU_PROFILE['key']}"}
    return {"BENCH_PARTITION": "cpu", "BENCH_RUNTIME": "00:01:00" if kind == "walltime" else "00:30:00",
            "BENCH_OPTIONS": f"--qos=academy-{common.BENCH_PROFILE['key']}"}


def summary(samples: list[float]) -> dict:
    return {"p50_s": common.percentile(samples, 50), "p95_s": common.percentile(samples, 95), "n": len(samples),
            "max_s": max(samples) if samples else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-kind", type=int, default=10, help="ended sessions per kind and hub (default 10)")
    parser.add_argument("--detect-timeout", type=float, default=120, help="seconds to wait for the hub to notice")
    args = parser.parse_args()
    started = time.monotonic()
    creds, users, root = common.prepare_run(args.per_kind, "sessionend")
    standin_env, standin_server = common.make_standin_env(root)
    results, failures = {}, {}
    for hub_kind in ("anchor", "ours"):
        try:
            results[hub_kind] = measure_hub(hub_kind, root / hub_kind, standin_env, standin_server, creds, users, args)
        except Exception as e:  # noqa: BLE001
            failures[hub_kind] = str(e)
            log(f"{hub_kind}: FAILED: {e}")
            traceback.print_exc()
    stats = {h: {k: summary(v) for k, v in r.items()} for h, r in results.items()}
    p95 = {h: {k: s["p95_s"] for k, s in st.items()} for h, st in stats.items()}
    met = {k: (p95.get("ours", {}).get(k) or 1e9) <= 5 for k in ("scancel", "walltime", "preemption")}
    data = {
        "benchmark": "session_end",
        "date": common.now_iso(),
        "machine": common.machine(),
        "metric": "seconds from a session's end (scancel call; the job's end in sacct for the walltime, 1 s "
                  "resolution; the urgent job's submission; the SIGKILL) until the hub's API shows no server "
                  f"(polled every {POLL_S} s by each learner)",
        "anchor": p95.get("anchor"),
        "ours": p95.get("ours"),
        "ratio": {k: round(p95["ours"][k] / p95["anchor"][k], 3) for k in KINDS
                  if p95.get("ours", {}).get(k) and p95.get("anchor", {}).get(k)},
        "ratio_definition": "ours p95 / anchor p95 (lower is better)",
        "target": "ours p95 at most 5 s for scancel, walltime and preemption (sigkill reported apart)",
        "target_met": met,
        "runs": args.per_kind,
        "stats": stats,
        "samples": results,
        "failures": failures,
        "setup": {
            "anchor": "stock batchspawner SlurmSpawner, defaults (JupyterHub poll_interval 30 s, one squeue per "
                      "session per poll), `srun batchspawner-singleuser <stand-in>`",
            "ours": "academy hub defaults (monitor_interval 30 s, poll_interval 30 s), the stand-in server reporting "
                    "its end on SIGTERM with spawners.singleuser.report_end",
            "profiles": [common.BENCH_PROFILE, common.BENCH_GPU_PROFILE],
        },
        "duration_s": round(time.monotonic() - started),
    }
    path = common.write_result("session_end", data)
    for k in KINDS:
        a, o = stats.get("anchor", {}).get(k, {}), stats.get("ours", {}).get(k, {})
        print(f"{k:10s} anchor p50 {a.get('p50_s')} p95 {a.get('p95_s')} | ours p50 {o.get('p50_s')} p95 {o.get('p95_s')}")
    print(f"target (ours p95 <= 5 s): {met}; written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
