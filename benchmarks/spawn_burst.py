"""A burst: 30 learners press start at once, on stock batchspawner (ANCHOR) and the academy hub (OURS).

For each hub: 30 benchmark users (bench01..bench30, real Unix users, hub group `bench`) are
logged in; then all 30 POST /hub/api/users/<u>/server at the same instant. Each one then follows
the hub's progress stream, GET /hub/api/users/<u>/server/progress (server-sent events, what the
spawn-pending page's EventSource reads), until it says ready (or failed), then makes one GET
through the proxy to /user/<u>/api/status. Measured: how many became ready,
the time until all were ready, and the hub API's latency during the burst (a separate client
GETs /hub/api/users/<u> every 100 ms; p50/p95/max).

The CPU floor: 30 bare `jupyter server` processes started at once from the same session
environment, without hub or Slurm, as the same 30 users; the time until all answer
/api/status. Measured for both session environments (ours: venv-notebook; stock: venv-anchor).

Both hubs get the same timeouts (start_timeout 300, http_timeout 120 unless given). Sessions
ask for 1 CPU and 1 GB each (stock: 1 CPU with Slurm's DefMemPerCPU=1000 MB; ours: the
benchmark profile `bench-1cpu` defined in the override) so 30 fit the node's 64 declared CPUs.

    /opt/academy/venv-hub/bin/python benchmarks/spawn_burst.py [--users 30] [--runs 5] [--skip-floor]

Writes benchmarks/results/spawn_burst.json.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
import traceback

import common
from common import AnchorHub, Learner, OursHub, log

from tests.support import LogMark  # noqa: E402 - common puts this checkout on sys.path

RECONNECT_S = 1.0  # a dropped stream is reopened after 1 s (a browser's EventSource waits about 3 s)


class ApiProbe(threading.Thread):
    """GET /hub/api/users/<u> every `interval` s; latencies in ms (a failure counts as its time)."""

    def __init__(self, learner: Learner, interval: float):
        super().__init__(daemon=True)
        self.learner, self.interval = learner, interval
        self.samples: list[float] = []
        self.times: list[float] = []  # monotonic time each request was sent
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                r = self.learner.api("GET", f"/users/{self.learner.name}", timeout=60)
                ok = r.status_code == 200
            except Exception:  # noqa: BLE001
                ok = False
            self.samples.append((time.monotonic() - t) * 1000)
            self.times.append(t)
            self.errors += 0 if ok else 1
            next_at = max(next_at + self.interval, time.monotonic())
            self.halt.wait(max(0.0, next_at - time.monotonic()))

    def summary(self) -> dict:
        s = self.samples
        return {"requests": len(s), "errors": self.errors,
                "p50_ms": _r(common.percentile(s, 50)), "p95_ms": _r(common.percentile(s, 95)),
                "max_ms": _r(max(s) if s else None)}


def _r(x: float | None, nd: int = 1) -> float | None:
    return round(x, nd) if x is not None else None


def one_learner(learner: Learner, body: dict, barrier: threading.Barrier, t0_box: list, deadline_s: float,
                out: dict) -> None:
    try:
        barrier.wait()
        t0 = t0_box[0]
        r = learner.start(body)
        out["post_status"] = r.status_code
        out["post_s"] = round(time.monotonic() - t0, 3)
        if r.status_code not in (201, 202):
            out["error"] = f"start refused: {r.status_code} {r.text[:200]}"
            out["done_s"] = round(time.monotonic() - t0, 3)
            return
        # The learner waits on the spawn-pending page, whose EventSource follows the hub's
        # progress stream; a dropped stream is reopened, as the browser's EventSource does.
        while time.monotonic() - t0 < deadline_s:
            try:
                ready, message = learner.spawn_outcome(timeout=deadline_s - (time.monotonic() - t0))
            except Exception as e:  # noqa: BLE001 - the hub may be slow; reconnect
                out["stream_errors"] = out.get("stream_errors", 0) + 1
                out["last_stream_error"] = str(e)[:200]
                time.sleep(RECONNECT_S)
                continue
            if ready:
                out["ready_s"] = round(time.monotonic() - t0, 3)
            else:
                out["error"] = f"the hub gave up on the server: {message[:200]}"
            break
        else:
            out["error"] = f"not ready after {deadline_s} s"
        if "ready_s" in out:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                try:
                    if learner.status_through_proxy(timeout=10).status_code == 200:
                        out["status_ok_s"] = round(time.monotonic() - t0, 3)
                        break
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.2)
        out["done_s"] = round(time.monotonic() - t0, 3)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
        out["done_s"] = round(time.monotonic() - t0_box[0], 3) if t0_box else None


def burst(hub, creds: dict, users: list[str], body: dict, args) -> dict:
    learners = common.login_all(hub, creds, users)
    probe = ApiProbe(Learner(hub, users[0], creds[users[0]]), args.api_interval)
    mark = LogMark(hub.log_path)
    barrier = threading.Barrier(len(users) + 1)
    t0_box: list[float] = []
    outs = {u: {} for u in users}
    deadline = args.start_timeout + args.http_timeout + 60
    threads = [threading.Thread(target=one_learner, args=(learners[u], body, barrier, t0_box, deadline, outs[u]),
                                daemon=True) for u in users]
    load_before = common.loadavg()
    cpu_before = hub.cpu_seconds()
    for t in threads:
        t.start()
    probe.start()
    time.sleep(1.0)  # a second of quiet API latency first
    quiet = list(probe.samples)
    t0_box.append(time.monotonic())
    barrier.wait()
    for t in threads:
        t.join()
    t_end = time.monotonic()
    cpu_after = hub.cpu_seconds()
    probe.halt.set()
    probe.join()
    burst_samples = probe.samples[len(quiet):]
    # the probe over time: [seconds after the burst began, latency ms]
    timeline = [[round(t - t0_box[0], 2), round(ms)] for t, ms in zip(probe.times, probe.samples)
                if t >= t0_box[0]]
    ready = [o["ready_s"] for o in outs.values() if "ready_s" in o]
    status_ok = [o for o in outs.values() if "status_ok_s" in o]
    hub_text = mark.new_text()
    errors = [line[:300] for line in hub_text.splitlines() if line.startswith("[E ")]
    probe.samples = burst_samples
    result = {
        "ready": len(ready),
        "status_ok": len(status_ok),
        "failed": len(users) - len(ready),
        "all_ready_s": round(max(ready), 2) if len(ready) == len(users) else None,
        "last_ready_s": round(max(ready), 2) if ready else None,
        "median_ready_s": common.median(ready),
        "first_ready_s": round(min(ready), 2) if ready else None,
        "api": probe.summary(),
        "api_quiet_p50_ms": _r(common.percentile(quiet, 50)),
        "hub_error_lines": len(errors),
        "hub_error_examples": errors[:5],
        "hub_timeouts": len(re.findall(r"(?i)timeout|timed out", "\n".join(errors))),
        "loadavg_before": load_before,
        "hub_cpu_s_during_burst": ({k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
                                   if cpu_before and cpu_after else None),
        "burst_wall_s": round(t_end - t0_box[0], 2),
        "api_timeline": timeline,
        "per_user": outs,
    }
    return result


def run_hub(kind: str, root, creds: dict, users: list[str], args) -> dict:
    if kind == "anchor":
        hub = AnchorHub(root, users, start_timeout=args.start_timeout, http_timeout=args.http_timeout)
        body = {}
    else:
        profiles = common.academy_config.load()["profiles"] + [common.BENCH_PROFILE]
        hub = OursHub(root, {u: ["bench"] for u in users}, profiles=profiles,
                      start_timeout=args.start_timeout, http_timeout=args.http_timeout)
        body = {"profile": common.BENCH_PROFILE["key"]}
    try:
        hub.start()
        return burst(hub, creds, users, body, args)
    finally:
        try:
            hub.stop()
        finally:
            common.cancel_user_jobs(users)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5,
                        help="rounds of (floor ours, floor stock, burst stock, burst ours); medians; default 5")
    parser.add_argument("--start-timeout", type=int, default=300)
    parser.add_argument("--http-timeout", type=int, default=120)
    parser.add_argument("--api-interval", type=float, default=0.1, help="hub API probe interval, s")
    parser.add_argument("--skip-floor", action="store_true", help="do not measure the bare-server floor")
    args = parser.parse_args()
    started = time.monotonic()
    creds, users, root = common.prepare_run(args.users, "burst")
    floor: dict[str, list[dict]] = {"anchor": [], "ours": []}
    runs: dict[str, list[dict]] = {"anchor": [], "ours": []}
    failures: dict[str, list[str]] = {"anchor": [], "ours": []}
    try:
        for i in range(args.runs):
            for kind, env in (("ours", common.NOTEBOOK_ENV), ("anchor", common.ANCHOR_ENV)):
                if args.skip_floor:
                    break
                log(f"floor: {args.users} bare `jupyter server` from {env} at once (run {i + 1}/{args.runs}) ...")
                load = common.loadavg()
                f = common.bare_server_floor(env, users)
                f["loadavg_before"] = load
                floor[kind].append(f)
                log(f"floor {kind}: all answered after {f['all_answered_s']} s")
                time.sleep(5)
            for kind in ("anchor", "ours"):
                log(f"{kind}: {args.users} learners press start at once (run {i + 1}/{args.runs}) ...")
                try:
                    r = run_hub(kind, root / f"{i:02d}-{kind}", creds, users, args)
                except Exception as e:  # noqa: BLE001
                    failures[kind].append(str(e))
                    log(f"{kind}: FAILED: {e}")
                    traceback.print_exc()
                    continue
                r["round"] = i
                runs[kind].append(r)
                log(f"{kind}: ready {r['ready']}/{args.users}, all ready after {r['all_ready_s']} s "
                    f"(last ready {r['last_ready_s']} s), hub API p95 {r['api']['p95_ms']} ms, "
                    f"hub error lines {r['hub_error_lines']}")
                time.sleep(5)
    except KeyboardInterrupt:
        log("interrupted: hubs stopped and jobs cancelled; writing what was measured")
    finally:
        common.cancel_user_jobs(users)

    def pick(kind: str, key: str, sub: str | None = None):
        vals = [(r[key][sub] if sub else r[key]) for r in runs[kind]]
        vals = [v for v in vals if v is not None]
        return common.median(vals) if vals else None

    summary = {}
    for kind in ("anchor", "ours"):
        summary[kind] = {
            "ready": pick(kind, "ready"), "all_ready_s": pick(kind, "all_ready_s"),
            "last_ready_s": pick(kind, "last_ready_s"), "api_p95_ms": pick(kind, "api", "p95_ms"),
            "floor_s": common.median([f["all_answered_s"] for f in floor[kind] if f["all_answered_s"] is not None]),
            "hub_cpu_s": common.median([r["hub_cpu_s_during_burst"]["hub_s"] + r["hub_cpu_s_during_burst"]["children_s"]
                                        for r in runs[kind] if r.get("hub_cpu_s_during_burst")]),
        }
    a, o = summary["anchor"], summary["ours"]
    # When stock does not get everyone ready, compare the time until the last one that did.
    a_time = a["all_ready_s"] if a["all_ready_s"] is not None else None
    ratio = round(o["all_ready_s"] / a_time, 3) if a_time and o["all_ready_s"] else None
    # All ready against the CPU floor: the medians' ratio, and round by round (each burst against
    # the floor measured just before it, in the same round; a failed burst has no entry).
    floor_ratio = {k: (round(summary[k]["all_ready_s"] / summary[k]["floor_s"], 3)
                       if summary[k]["all_ready_s"] and summary[k]["floor_s"] else None) for k in summary}
    floor_ratio_per_run = {k: [round(r["all_ready_s"] / floor[k][r["round"]]["all_answered_s"], 3)
                               if r["all_ready_s"] and r["round"] < len(floor[k])
                               and floor[k][r["round"]]["all_answered_s"] else None
                               for r in runs[k]] for k in summary}
    data = {
        "benchmark": "spawn_burst",
        "date": common.now_iso(),
        "machine": common.machine(),
        "metric": f"{args.users} learners POST start at the same instant; seconds until all are ready "
                  "(hub says ready and /user/<u>/api/status answered through the proxy)",
        "anchor": a["all_ready_s"],
        "ours": o["all_ready_s"],
        "ratio": ratio,
        "ratio_definition": "ours / anchor, time until all ready (null if the anchor never got all ready)",
        "runs": min(len(runs["anchor"]), len(runs["ours"])),
        "users": args.users,
        "ready": {"anchor": a["ready"], "ours": o["ready"]},
        "all_ready_s": {"anchor": a["all_ready_s"], "ours": o["all_ready_s"]},
        "last_ready_s": {"anchor": a["last_ready_s"], "ours": o["last_ready_s"]},
        "floor_s": {"anchor": a["floor_s"], "ours": o["floor_s"]},
        "per_run": {k: {"ready": [r["ready"] for r in runs[k]], "all_ready_s": [r["all_ready_s"] for r in runs[k]],
                        "api_p95_ms": [r["api"]["p95_ms"] for r in runs[k]],
                        "floor_s": [f["all_answered_s"] for f in floor[k]]} for k in ("anchor", "ours")},
        "floor_ratio": floor_ratio,
        "floor_ratio_per_run": floor_ratio_per_run,
        "floor_ratio_definition": "median all_ready_s / median floor_s of the same session environment",
        "api_p95_ms": {"anchor": a["api_p95_ms"], "ours": o["api_p95_ms"]},
        "target": "30 of 30 ready, all ready within 1.2 x the floor, hub API p95 under 250 ms",
        "target_met": {"ready": o["ready"] == args.users,
                       "floor": bool(floor_ratio["ours"] and floor_ratio["ours"] <= 1.2),
                       "api_p95": bool(o["api_p95_ms"] is not None and o["api_p95_ms"] < 250)},
        "hub_cpu_s": {"anchor": a["hub_cpu_s"], "ours": o["hub_cpu_s"]},
        "hub_cpu_note": "CPU seconds used by the hub process and the commands it ran (sudo, sbatch, squeue...) "
                        "from the burst's start until all were done",
        "floor_detail": floor,
        "anchor_runs": runs["anchor"],
        "ours_runs": runs["ours"],
        "failures": failures,
        "setup": {
            "timeouts": {"start_timeout": args.start_timeout, "http_timeout": args.http_timeout},
            "anchor": "stock batchspawner SlurmSpawner defaults (benchmarks/anchor_jupyterhub_config.py), partition cpu, "
                      "1 CPU + DefMemPerCPU 1000 MB, env /opt/academy/venv-anchor",
            "ours": "academy hub, profile bench-1cpu (cpu, 1 CPU, 1G) added in the override for group `bench`, "
                    "env /opt/academy/venv-notebook, slurm.cluster_name=bench (job tag only)",
            "readiness": "each learner follows GET /hub/api/users/<u>/server/progress (server-sent events) "
                         "until ready or failed, as the spawn-pending page's EventSource does",
            "api_probe": f"GET /hub/api/users/<u> every {args.api_interval} s",
            "floor": "bare `jupyter server` per user (as that user, HOME = their home), no hub, no Slurm; "
                     "time until all answer GET /api/status",
        },
        "duration_s": round(time.monotonic() - started),
    }
    path = common.write_result("spawn_burst", data)
    print(f"\nburst of {args.users}: ready anchor {a['ready']} / ours {o['ready']}; all ready anchor {a['all_ready_s']} s, "
          f"ours {o['all_ready_s']} s, ratio ours/anchor {ratio}; floor anchor {a['floor_s']} s / ours {o['floor_s']} s; "
          f"hub API p95 anchor {a['api_p95_ms']} ms / ours {o['api_p95_ms']} ms; "
          f"hub CPU anchor {a['hub_cpu_s']} s / ours {o['hub_cpu_s']} s")
    print(f"all ready / floor: anchor {floor_ratio['anchor']}, ours {floor_ratio['ours']} "
          f"(rounds: {floor_ratio_per_run['ours']}); targets met: {data['target_met']}")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
