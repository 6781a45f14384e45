"""Spawn latency of one learner: stock batchspawner (ANCHOR) against the academy hub (OURS).

One run: POST /hub/api/users/<u>/server, poll GET /hub/api/users/<u> every 50 ms until
servers[""].ready, then one successful GET through the proxy to /user/<u>/api/status.
The time from the POST to that 200 is the run's latency. Runs alternate anchor/ours, each
run on a freshly started hub (the two hubs never run at the same time); one unrecorded
warm-up run per hub comes first. For each run the hub's and Slurm's logs give where the
time went (submit, sbatch returned, Slurm allocation, slurmd launch, port reported, ready).

    /opt/academy/venv-hub/bin/python benchmarks/spawn_latency.py [--runs 10] [--warmup 1]

Writes benchmarks/results/spawn_latency.json.
"""

from __future__ import annotations

import argparse
import re
import time
import traceback

import common
from common import AnchorHub, Learner, OursHub, log

from tests.support import LogMark  # noqa: E402 - common puts this checkout on sys.path

USER = "bench01"
OURS_PROFILE = "cpu-small"  # the project's CPU profile (2 cores, 4 GB); the anchor asks for stock defaults

PATTERNS = {
    "ours": {
        "hub_submit": r"Submitting academy-nb-{u}\b",
        "sbatch_returned": r"Submitted job \d+ for {u}\b",
        "port_reported": r"\d{{3}} POST /hub/api/academy/port",
        "start_returned": r"Session job \d+ of {u} is at",
        "hub_ready": r"User {u} took [\d.]+ seconds to start",
    },
    "anchor": {
        "hub_submit": r"Spawner submitting command:",
        "sbatch_returned": r"Job submitted\. output:",
        "port_reported": r"\d{{3}} POST /hub/api/batchspawner",
        "start_returned": r"Notebook server job \d+ started at",
        "hub_ready": r"User {u} took [\d.]+ seconds to start",
    },
}
JOB_ID = {"ours": r"Submitted job (\d+) for {u}\b", "anchor": r"Job submitted\. output: (\d+)"}
ORDER = ["hub_submit", "slurm_submit_rpc", "sbatch_returned", "slurm_allocated", "slurmd_launch", "port_reported",
         "start_returned", "hub_ready", "client_ready", "status_ok"]


def timed_spawn(learner: Learner, body: dict, poll_s: float, timeout_s: float) -> dict:
    t0_wall, t0 = time.time(), time.monotonic()
    r = learner.start(body)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"start refused: {r.status_code} {r.text[:300]}")
    ready_at = None
    while time.monotonic() - t0 < timeout_s:
        server = learner.server()
        if server and server.get("ready"):
            ready_at = time.monotonic()
            break
        if server is None:
            raise RuntimeError("the server stopped while starting (spawn failed)")
        time.sleep(poll_s)
    if ready_at is None:
        raise RuntimeError(f"not ready after {timeout_s} s")
    status_at = None
    while time.monotonic() - ready_at < 30:
        try:
            if learner.status_through_proxy(timeout=10).status_code == 200:
                status_at = time.monotonic()
                break
        except Exception:  # noqa: BLE001 - retried
            pass
        time.sleep(poll_s)
    if status_at is None:
        raise RuntimeError("ready, but /user/<u>/api/status did not answer 200 through the proxy within 30 s")
    return {"t0_wall": t0_wall, "post_s": None, "ready_s": ready_at - t0, "total_s": status_at - t0}


def breakdown(kind: str, hub_text: str, ctld: str, slurmd: str, t0_wall: float, run: dict) -> dict:
    events: dict[str, float | None] = {}
    for name, pattern in PATTERNS[kind].items():
        events[name] = common.first_time(hub_text, pattern.format(u=USER))
    m = re.search(JOB_ID[kind].format(u=USER), hub_text)
    job_id = m.group(1) if m else ""
    if job_id:
        events.update(common.slurm_job_events(ctld, slurmd, job_id))
    out = {k: (round(v - t0_wall, 3) if v else None) for k, v in events.items()}
    out["client_ready"] = round(run["ready_s"], 3)
    out["status_ok"] = round(run["total_s"], 3)
    return {"job_id": job_id, "events_s": {k: out.get(k) for k in ORDER}}


def one_run(kind: str, root, creds: dict, args) -> dict:
    if kind == "anchor":
        hub = AnchorHub(root, [USER], start_timeout=args.start_timeout, http_timeout=args.http_timeout)
        body = {}
    else:
        hub = OursHub(root, {USER: ["learners"]}, start_timeout=args.start_timeout, http_timeout=args.http_timeout)
        body = {"profile": OURS_PROFILE}
    try:
        hub.start()
        learner = Learner(hub, USER, creds[USER])
        marks = (LogMark(hub.log_path), LogMark(common.daemon_log("slurmctld", common.SLURMCTLD_LOG)),
                 LogMark(common.daemon_log("slurmd", common.SLURMD_LOG)))
        load = common.loadavg()
        run = timed_spawn(learner, body, args.poll, args.start_timeout + args.http_timeout + 30)
        time.sleep(0.5)  # let the last log lines reach the files
        texts = [m.new_text() for m in marks]
        run["breakdown"] = breakdown(kind, *texts, run["t0_wall"], run)
        run["loadavg_before"] = load
        learner.stop()
        return run
    finally:
        try:
            hub.stop()
        finally:
            common.cancel_user_jobs([USER])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="recorded runs per hub (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded runs per hub first (default 1)")
    parser.add_argument("--poll", type=float, default=0.05, help="readiness poll interval, s (default 0.05)")
    parser.add_argument("--start-timeout", type=int, default=300)
    parser.add_argument("--http-timeout", type=int, default=120)
    args = parser.parse_args()
    common.require_root()
    common.install_signal_handlers()

    started = time.monotonic()
    creds = common.ensure_users(1)
    common.cancel_user_jobs([USER])
    root = common.make_root("latency")
    log(f"state and logs under {root}")
    results: dict[str, list[dict]] = {"anchor": [], "ours": []}
    failures: dict[str, list[str]] = {"anchor": [], "ours": []}
    plan = [(k, True) for _ in range(args.warmup) for k in ("anchor", "ours")]
    plan += [(k, False) for _ in range(args.runs) for k in ("anchor", "ours")]
    try:
        for i, (kind, warmup) in enumerate(plan):
            label = "warm-up" if warmup else f"run {len(results[kind]) + 1}/{args.runs}"
            try:
                run = one_run(kind, root / f"{i:02d}-{kind}", creds, args)
            except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
                failures[kind].append(f"{label}: {e}")
                log(f"{kind:6s} {label}: FAILED: {e}")
                traceback.print_exc()
                continue
            ev = run["breakdown"]["events_s"]
            log(f"{kind:6s} {label}: {run['total_s']:.2f} s  (ready seen {run['ready_s']:.2f} s; "
                + ", ".join(f"{k} {v}" for k, v in ev.items() if v is not None) + ")")
            if not warmup:
                results[kind].append(run)
    except KeyboardInterrupt:
        log("interrupted: hubs stopped and jobs cancelled; writing what was measured")
    finally:
        common.cancel_user_jobs([USER])

    def summary(kind: str) -> dict:
        runs = results[kind]
        events = {k: common.median([r["breakdown"]["events_s"][k] for r in runs
                                    if r["breakdown"]["events_s"].get(k) is not None]) for k in ORDER}
        return {"median_s": common.median([r["total_s"] for r in runs]),
                "runs_s": [round(r["total_s"], 3) for r in runs],
                "ready_median_s": common.median([r["ready_s"] for r in runs]),
                "breakdown_median_s": events,
                "breakdown_runs": [r["breakdown"] for r in runs],
                "loadavg_before_runs": [r["loadavg_before"] for r in runs],
                "failures": failures[kind]}

    anchor, ours = summary("anchor"), summary("ours")
    ratio = round(ours["median_s"] / anchor["median_s"], 3) if anchor["median_s"] and ours["median_s"] else None
    data = {
        "benchmark": "spawn_latency",
        "date": common.now_iso(),
        "machine": common.machine(),
        "metric": "seconds from POST /hub/api/users/<u>/server to the first 200 of GET /user/<u>/api/status "
                  "through the proxy (readiness polled every %d ms); median of runs" % round(args.poll * 1000),
        "anchor": anchor["median_s"],
        "ours": ours["median_s"],
        "ratio": ratio,
        "ratio_definition": "ours / anchor (lower is better)",
        "target": "ours <= 0.4 x anchor",
        "target_met": ratio is not None and ratio <= 0.4,
        "runs": min(len(results["anchor"]), len(results["ours"])),
        "warmup_runs": args.warmup,
        "anchor_detail": anchor,
        "ours_detail": ours,
        "setup": {
            "anchor": "stock batchspawner 1.3.0 SlurmSpawner, default settings (benchmarks/anchor_jupyterhub_config.py), "
                      "partition cpu, session env /opt/academy/venv-anchor (stock packages incl. rfc3987-syntax), "
                      "`srun batchspawner-singleuser jupyterhub-singleuser`, 1 CPU / DefMemPerCPU",
            "ours": f"academy hub (hub/jupyterhub_config.py) with profile {OURS_PROFILE}, session env "
                    "/opt/academy/venv-notebook; override: ports, state dir, users, timeouts, slurm.cluster_name=bench "
                    "(job tag only)",
            "user": USER, "start_timeout": args.start_timeout, "http_timeout": args.http_timeout,
            "order": "alternating anchor/ours, a freshly started hub per run",
            "breakdown": "seconds after the POST, from the hub log, slurmctld.log and slurmd.log (ms timestamps)",
        },
        "duration_s": round(time.monotonic() - started),
    }
    path = common.write_result("spawn_latency", data)
    print(f"\nspawn latency (median of {data['runs']}): anchor {data['anchor']} s, ours {data['ours']} s, "
          f"ratio ours/anchor {ratio} (target <= 0.4: {'met' if data['target_met'] else 'NOT met'})")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
