"""Slurm load from the hub's polling with N running sessions: stock batchspawner (ANCHOR) against ours.

Each hub is pointed at wrapper scripts that log every call and exec the real /usr/bin command:
ours through `slurm.bin_dir` (sbatch/squeue/scancel; the reaper service uses it too), stock
through `c.SlurmSpawner.batch_query_cmd = "<wrapper>/squeue -h -j {job_id} -o '%T %B'"`
(stock's default arguments). Sessions are started in steps (default 10, then 50); after each
step has settled, `squeue` invocations are counted over a fixed window (default 120 s) and
Slurm's RPC counters (sdiag, before/after difference; no reset) are recorded.

So that 50 sessions fit a 2-core machine, the job runs a lightweight stand-in server
(benchmarks/standin_server.py) instead of JupyterLab, for both hubs; everything on the hub
side (submission, start-up polling, the hub's periodic poll, ours' batched monitor and
reaper) is the real code. Stock runs it through `srun batchspawner-singleuser` from
/opt/academy/venv-anchor; ours runs it as the batch script runs the project's entry point
(`python -I academy-singleuser --academy-report-port`), with /opt/academy/venv-notebook's
Python, and the stand-in reports its port as the entry point does.

    /opt/academy/venv-hub/bin/python benchmarks/scheduler_load.py [--steps 10,50] [--window 120] [--settle 30]

Writes benchmarks/results/scheduler_load.json.
"""

from __future__ import annotations

import argparse
import threading
import time
import traceback

import common
import yaml
from common import AnchorHub, OursHub, log

from hub.config import DEFAULTS_FILE  # noqa: E402 - common puts this checkout on sys.path

DEFAULTS = yaml.safe_load(DEFAULTS_FILE.read_text())  # what ours runs with: the platform's defaults


def start_sessions(learners: list, body: dict, timeout: float) -> tuple[int, list[str]]:
    """Start these learners' servers concurrently; (ready count, errors)."""
    errors: list[str] = []
    ready = [0]
    lock = threading.Lock()

    def one(learner) -> None:
        t0 = time.monotonic()
        try:
            r = learner.start(body)
            while r.status_code == 429 and time.monotonic() - t0 < timeout:
                # JupyterHub's concurrent_spawn_limit (100 pending): try again when it says, as a person would
                time.sleep(float(r.headers.get("Retry-After") or 5))
                r = learner.start(body)
            if r.status_code not in (201, 202):
                raise RuntimeError(f"start refused: {r.status_code} {r.text[:200]}")
            while time.monotonic() - t0 < timeout:
                server = learner.server()
                if server and server.get("ready"):
                    with lock:
                        ready[0] += 1
                    return
                if server is None:
                    raise RuntimeError("spawn failed")
                time.sleep(1.0)
            raise RuntimeError(f"not ready after {timeout} s")
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"{learner.name}: {e}")

    threads = [threading.Thread(target=one, args=(lr,), daemon=True) for lr in learners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ready[0], errors


def count_ready(learners: list) -> int:
    n = 0
    for lr in learners:
        try:
            s = lr.server()
            n += bool(s and s.get("ready"))
        except Exception:  # noqa: BLE001
            pass
    return n


WINDOW_FIGURES = ("squeue_per_minute", "slurm_rpcs_per_minute", "sdiag_job_info_rpcs_per_minute_all_users",
                  "sdiag_rpcs_per_minute_bench_users")


def measure_window(kind: str, calls, seconds: float) -> dict:
    """squeue calls and Slurm RPCs over one window, per minute."""
    before_sdiag = common.sdiag_counts()
    t_from = time.time()
    time.sleep(seconds)
    t_to = time.time()
    after_sdiag = common.sdiag_counts()
    squeue = common.count_calls(calls, "squeue", t_from, t_to)
    minutes = (t_to - t_from) / 60
    diff = common.sdiag_diff(before_sdiag, after_sdiag)
    by_user = diff["by_user"]
    bench_rpcs = sum(v for k, v in by_user.items() if k.startswith(common.USER_PREFIX))
    return {
        "window_s": round(t_to - t_from, 1), "squeue_calls": squeue, "squeue_per_minute": round(squeue / minutes, 2),
        "sdiag_rpc_diff": diff,
        "sdiag_job_info_rpcs_per_minute_all_users": round(
            sum(v for k, v in diff["by_type"].items() if k.startswith("REQUEST_JOB_INFO")) / minutes, 2),
        "sdiag_rpcs_per_minute_bench_users": round(bench_rpcs / minutes, 2),
        # The hub's own RPCs: stock queries as each learner (sudo -u), ours as the hub's user
        # (root; minus the one REQUEST_STATS_INFO of our own sdiag; any other root client on
        # this machine would be counted too).
        "slurm_rpcs_per_minute": round((bench_rpcs if kind == "anchor" else by_user.get("root", 0) - 1) / minutes, 2),
    }


def measure_hub(kind: str, root, standin_env, standin_server, creds: dict, users: list[str], steps: list[int],
                args) -> dict:
    bindir, calls = common.make_counting_slurm_bin(root)
    if kind == "anchor":
        hub = AnchorHub(root, users, start_timeout=args.start_timeout, http_timeout=args.http_timeout,
                        session_cmd=str(standin_server), squeue=str(bindir / "squeue"))
        body = {}
    else:
        profiles = common.academy_config.load()["profiles"] + [common.BENCH_PROFILE]
        hub = OursHub(root, {u: ["bench"] for u in users}, profiles=profiles, start_timeout=args.start_timeout,
                      http_timeout=args.http_timeout,
                      extra={"notebook_env": str(standin_env), "slurm": {"bin_dir": str(bindir)}})
        body = {"profile": common.BENCH_PROFILE["key"]}
    out: dict = {"steps": {}, "calls_log": str(calls), "hub_log": str(hub.log_path)}
    try:
        hub.start()
        learners = list(common.login_all(hub, creds, users).values())
        running = 0
        for n in steps:
            log(f"{kind}: starting sessions {running + 1}..{n}")
            t_start = time.monotonic()
            batch = learners[running:n]
            ready, errors = start_sessions(batch, body, args.start_timeout + args.http_timeout)
            startup_s = round(time.monotonic() - t_start, 1)
            running = n
            log(f"{kind}: {ready}/{len(batch)} new sessions ready in {startup_s} s"
                + (f"; errors: {errors[:3]}" if errors else "") + f"; settling {args.settle} s")
            time.sleep(args.settle)
            load = common.loadavg()
            windows = [measure_window(kind, calls, args.window) for _ in range(args.windows)]
            alive = count_ready(learners[:n])
            step = {
                "sessions": n, "ready_at_end_of_windows": alive, "start_errors": errors, "startup_s": startup_s,
                "loadavg_at_first_window": load, "windows": windows,
                **{key: common.median([w[key] for w in windows]) for key in WINDOW_FIGURES},
            }
            out["steps"][str(n)] = step
            log(f"{kind}: N={n} ({alive} ready at the end): median of {args.windows} windows of {args.window:.0f} s: "
                f"{step['squeue_per_minute']} squeue/min (windows: {[w['squeue_per_minute'] for w in windows]}); "
                f"Slurm RPCs {step['slurm_rpcs_per_minute']}/min")
        out["squeue_calls_total"] = common.count_calls(calls, "squeue", 0, float("inf"))
        return out
    finally:
        try:
            hub.stop()
        finally:
            common.cancel_user_jobs(users)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="10,50", help="session counts to measure at, ascending (default 10,50)")
    parser.add_argument("--window", type=float, default=60, help="length of one counting window, s (default 60)")
    parser.add_argument("--windows", type=int, default=5, help="windows per step; figures are their medians (default 5)")
    parser.add_argument("--settle", type=float, default=30, help="wait after the step's starts, s (default 30)")
    parser.add_argument("--start-timeout", type=int, default=300)
    parser.add_argument("--http-timeout", type=int, default=120)
    args = parser.parse_args()
    steps = sorted(int(x) for x in args.steps.split(","))
    common.require_root()
    common.install_signal_handlers()

    started = time.monotonic()
    n_max = steps[-1]
    creds = common.ensure_users(n_max)
    users = common.bench_users(n_max)
    common.cancel_user_jobs(users)
    root = common.make_root("schedload")
    standin_env, standin_server = common.make_standin_env(root)
    log(f"state and logs under {root}")
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    try:
        for kind in ("anchor", "ours"):
            try:
                results[kind] = measure_hub(kind, root / kind, standin_env, standin_server, creds, users, steps, args)
            except Exception as e:  # noqa: BLE001
                failures[kind] = str(e)
                log(f"{kind}: FAILED: {e}")
                traceback.print_exc()
            time.sleep(5)
    except KeyboardInterrupt:
        log("interrupted: hubs stopped and jobs cancelled; writing what was measured")
    finally:
        common.cancel_user_jobs(users)

    per_minute = {k: {n: s["squeue_per_minute"] for n, s in r["steps"].items()} for k, r in results.items()}
    rpc_per_minute = {k: {n: s["slurm_rpcs_per_minute"] for n, s in r["steps"].items()} for k, r in results.items()}
    top = str(n_max)
    a = per_minute.get("anchor", {}).get(top)
    o = per_minute.get("ours", {}).get(top)
    data = {
        "benchmark": "scheduler_load",
        "date": common.now_iso(),
        "machine": common.machine(),
        "metric": f"squeue invocations per minute by the hub with N running sessions, counted by wrapper scripts: "
                  f"median of {args.windows} consecutive {args.window:.0f} s windows after {args.settle:.0f} s of "
                  "settling",
        "sessions": n_max,
        "anchor": a,
        "ours": o,
        "ratio": round(o / a, 4) if a and o else None,
        "ratio_definition": "ours / anchor (lower is better)",
        "fewer_x": round(a / o, 1) if a and o else None,
        "target": "ours constant in N and >= 25x fewer than stock",
        "target_met": bool(a and o and a / o >= 25),
        "per_minute": per_minute,
        "slurm_rpcs_per_minute": rpc_per_minute,
        "slurm_rpcs_note": "from sdiag's per-user RPC counters: stock's squeue runs as each learner (sudo -u) and "
                           "costs 3 RPCs (FED_INFO, PARTITION_INFO, JOB_INFO_SINGLE); ours runs as root and costs 2 "
                           "(PARTITION_INFO, JOB_INFO for all jobs at once); ours' figure would include any other "
                           "root client of this slurmctld during the window",
        "runs": args.windows,
        "stand_in_server": True,
        "stand_in_note": "the jobs run benchmarks/standin_server.py (a stdlib HTTP server) instead of JupyterLab, "
                         "for both hubs; the hub-side polling, submission and start-up are the real code",
        "detail": results,
        "failures": failures,
        "setup": {
            "anchor": "stock batchspawner SlurmSpawner defaults (JupyterHub poll_interval 30 s, startup_poll_interval "
                      "0.5 s), batch_query_cmd = <wrapper>/squeue -h -j {job_id} -o '%T %B' (stock's arguments), "
                      "`srun batchspawner-singleuser <stand-in>` from /opt/academy/venv-anchor",
            "ours": f"academy hub defaults (monitor_interval {DEFAULTS['sessions']['monitor_interval']} s, poll_interval "
                    f"{DEFAULTS['hub']['poll_interval']} s, reaper every {DEFAULTS['sessions']['reaper_interval']} s), "
                    "slurm.bin_dir "
                    "= wrapper dir, notebook_env = a stand-in env whose python is venv-notebook's and whose "
                    "academy-singleuser is the stand-in, profile bench-1cpu, slurm.cluster_name=bench (job tag only)",
            "sdiag": "differences of slurmctld's cumulative RPC counters over the window; these count every client "
                     "of this slurmctld (other sessions' tests too), so the wrapper counts are the primary figure",
            "steps": steps, "window_s": args.window, "windows": args.windows, "settle_s": args.settle,
        },
        "duration_s": round(time.monotonic() - started),
    }
    path = common.write_result("scheduler_load", data)
    print(f"\nSlurm RPCs per minute (sdiag): anchor {rpc_per_minute.get('anchor')}, ours {rpc_per_minute.get('ours')}")
    print(f"squeue per minute: anchor {per_minute.get('anchor')}, ours {per_minute.get('ours')}; at N={n_max}: "
          f"ours/anchor {data['ratio']} ({data['fewer_x']}x fewer; target >= 25x: "
          f"{'met' if data['target_met'] else 'NOT met'})")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
