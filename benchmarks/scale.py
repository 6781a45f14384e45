"""Hundreds of sessions held over the namespace nodes while learners use the hub: ours against stock.

OURS: the academy hub on the multi-host try-out cluster (`academy up --nodes 2`: each compute
node a network namespace with its own address and slurmd), sessions started in steps (default
100, then 500); at each step, after the starts, LEARNERS of them (default 50) use the hub's API
(GET their user model, as JupyterLab and the home page do) and the exchange (GET their
assignments) for WINDOW seconds, WINDOWS times. Measured per window: the latency of every
request (p50, p95), squeue calls by the hub (counting wrappers), the proxy's routes and how long
it takes to list them (what the hub's route check asks), the hub's resident memory and CPU.
ANCHOR: stock batchspawner 1.3.0 where it can run, on the one-node layout (it names a session's
host by the node's name, which on the namespace nodes resolves nowhere without site DNS), at its
own step (default 100 sessions), with the same learners' hub API load (it has no exchange).

Both hubs' jobs run benchmarks/standin_server.py instead of JupyterLab (500 JupyterLabs do not
fit a 2-core machine); everything on the hub's side is the real code. The embedded cluster is
re-laid out for the run (more declared cores and memory; two nodes for ours) and put back to the
configuration's layout at the end, whatever happens.

    /opt/academy/venv-hub/bin/python benchmarks/scale.py [--steps 100,500] [--anchor-steps 100]
        [--learners 50] [--window 60] [--windows 3]

Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
import requests
from common import AnchorHub, OursHub, log
from scheduler_load import count_ready, start_sessions

from hub import cluster_network, slurm_cluster  # noqa: E402 - common puts the checkout on sys.path
from hub.config import merge, validate

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cluster_config(base: dict, nodes: int, sessions: int) -> dict:
    """The embedded cluster with room for SESSIONS one-core, 1 GB sessions over NODES nodes (declared:
    Slurm checks the declaration, not the hardware)."""
    cpus = math.ceil(sessions / nodes) + 16
    return validate(merge(base, {"slurm": {"nodes": nodes, "node_cpus": cpus, "node_memory_mb": cpus * 1100},
                                 "profiles": [*base["profiles"], common.BENCH_PROFILE]}))


def proc_figures(pid: int | None) -> dict:
    """(cpu seconds so far, resident MB) of a process; empty if it is gone."""
    if not pid:
        return {}
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"cpu_s": (int(stat[11]) + int(stat[12])) / CLK_TCK, "rss_mb": round(rss_kb / 1024, 1)}


def proxy_routes(state: Path, api_port: int) -> tuple[int | None, float | None]:
    """(routes in configurable-http-proxy, seconds to list them), with the proxy's own token."""
    try:
        pid = int((state / "jupyterhub-proxy.pid").read_text())
        env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        t0 = time.monotonic()
        r = requests.get(f"http://127.0.0.1:{api_port}/api/routes", timeout=30,
                         headers={"Authorization": f"token {env['CONFIGPROXY_AUTH_TOKEN']}"})
        return len(r.json()), round(time.monotonic() - t0, 3)
    except (OSError, ValueError, KeyError, requests.RequestException):
        return None, None


def load_window(hub, learners: list, seconds: float, exchange: bool) -> dict[str, list[float]]:
    """LEARNERS each asking the hub API (and the exchange) in a loop for SECONDS: latencies in ms."""
    lat: dict[str, list[float]] = {"hub_api": [], "exchange": [], "errors": []}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def one(learner) -> None:
        while time.monotonic() < stop_at:
            for kind in ("hub_api", "exchange") if exchange else ("hub_api",):
                t0 = time.monotonic()
                try:
                    if kind == "hub_api":
                        r = learner.api("GET", f"/users/{learner.name}", timeout=60)
                    else:
                        r = requests.get(f"{hub.url}/services/academy-exchange/api/assignments", timeout=60,
                                         headers={"Authorization": f"token {learner.token}"})
                    ok = r.status_code == 200
                except requests.RequestException:
                    ok = False
                ms = (time.monotonic() - t0) * 1000
                with lock:
                    lat[kind if ok else "errors"].append(ms)
            time.sleep(0.5)   # a person's pace: one click every half second, at most

    with ThreadPoolExecutor(len(learners)) as pool:
        list(pool.map(one, learners))
    return lat


def measure(kind: str, hub, learners: list, calls: Path, args, exchange: bool, hub_pid, state: Path,
            proxy_api_port: int) -> dict:
    windows = []
    for _ in range(args.windows):
        before, t_from = proc_figures(hub_pid()), time.time()
        lat = load_window(hub, learners[:args.learners], args.window, exchange)
        t_to, after = time.time(), proc_figures(hub_pid())
        routes, routes_s = proxy_routes(state, proxy_api_port)
        minutes = (t_to - t_from) / 60
        windows.append({
            "window_s": round(t_to - t_from, 1),
            "api_p50_ms": common.percentile(lat["hub_api"], 50), "api_p95_ms": common.percentile(lat["hub_api"], 95),
            "exchange_p95_ms": common.percentile(lat["exchange"], 95), "requests": len(lat["hub_api"]) + len(lat["exchange"]),
            "errors": len(lat["errors"]),
            "squeue_per_minute": round(common.count_calls(calls, "squeue", t_from, t_to) / minutes, 2),
            "hub_cpu_percent": round(100 * (after["cpu_s"] - before["cpu_s"]) / (t_to - t_from), 1)
            if before and after else None,
            "hub_rss_mb": after.get("rss_mb"), "proxy_routes": routes, "proxy_list_routes_s": routes_s,
        })
        log(f"{kind}: window: API p95 {windows[-1]['api_p95_ms']:.0f} ms, exchange p95 "
            f"{windows[-1]['exchange_p95_ms'] or 0:.0f} ms, {windows[-1]['squeue_per_minute']} squeue/min, "
            f"hub {windows[-1]['hub_cpu_percent']}% CPU, {windows[-1]['hub_rss_mb']} MB, {routes} routes")
    return {"windows": windows, **{k: common.median([w[k] for w in windows if w[k] is not None])
                                   for k in ("api_p50_ms", "api_p95_ms", "exchange_p95_ms", "squeue_per_minute",
                                             "hub_cpu_percent", "hub_rss_mb", "proxy_routes", "errors")}}


def run_hub(kind: str, root: Path, base: dict, steps: list[int], creds: dict, users: list[str], args) -> dict:
    nodes = 2 if kind == "ours" else 1
    cfg = cluster_config(base, nodes, steps[-1])
    log(f"{kind}: {slurm_cluster.ensure_running(cfg)}")
    standin_env, standin_server = common.make_standin_env(root)
    bindir, calls = common.make_counting_slurm_bin(root)
    if kind == "anchor":
        hub = AnchorHub(root, users, start_timeout=args.start_timeout, http_timeout=args.http_timeout,
                        session_cmd=str(standin_server), squeue=str(bindir / "squeue"))
        body, exchange = {}, False
    else:
        hub = OursHub(root, {u: ["bench"] for u in users}, profiles=cfg["profiles"], start_timeout=args.start_timeout,
                      http_timeout=args.http_timeout,
                      extra={"notebook_env": str(standin_env),
                             "slurm": {"bin_dir": str(bindir), "nodes": nodes, "node_cpus": cfg["slurm"]["node_cpus"],
                                       "node_memory_mb": cfg["slurm"]["node_memory_mb"]}})
        body, exchange = {"profile": common.BENCH_PROFILE["key"]}, True
    out: dict = {"nodes": nodes, "steps": {}, "hub_log": str(hub.log_path)}
    try:
        hub.start()
        with ThreadPoolExecutor(8) as pool:   # PAM logins, a few at a time
            learners = list(pool.map(lambda u: common.Learner(hub, u, creds[u]), users))
        running = 0
        for n in steps:
            log(f"{kind}: starting sessions {running + 1}..{n}")
            t0 = time.monotonic()
            ready, errors = start_sessions(learners[running:n], body, args.start_timeout + args.http_timeout)
            startup_s = round(time.monotonic() - t0, 1)
            running = n
            time.sleep(args.settle)
            alive = count_ready(learners[:n])
            log(f"{kind}: {alive} of {n} sessions ready ({startup_s} s to start this step; "
                f"{len(errors)} errors{': ' + errors[0] if errors else ''})")
            step = measure(kind, hub, learners[:n], calls, args, exchange, hub.pid, hub.state, hub.proxy_api_port)
            step.update(sessions=n, ready=alive, startup_s=startup_s, start_errors=errors[:20],
                        start_error_count=len(errors))
            out["steps"][str(n)] = step
        return out
    finally:
        try:
            hub.stop()
        finally:
            common.cancel_user_jobs(users, wait_s=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="100,500", help="ours: session counts, ascending (default 100,500)")
    parser.add_argument("--anchor-steps", default="100", help="stock: session counts (default 100; '' to skip)")
    parser.add_argument("--learners", type=int, default=50, help="learners using the hub at a time (default 50)")
    parser.add_argument("--window", type=float, default=60, help="one measuring window, s (default 60)")
    parser.add_argument("--windows", type=int, default=3, help="windows per step; figures are medians (default 3)")
    parser.add_argument("--settle", type=float, default=20, help="wait after a step's starts, s (default 20)")
    parser.add_argument("--start-timeout", type=int, default=900)
    parser.add_argument("--http-timeout", type=int, default=300)
    args = parser.parse_args()
    steps = sorted(int(x) for x in args.steps.split(","))
    anchor_steps = sorted(int(x) for x in args.anchor_steps.split(",") if x)
    common.require_root()
    common.install_signal_handlers()
    started = time.monotonic()
    base = common.academy_config.load()
    n_max = max(steps + anchor_steps)
    creds = common.ensure_users(n_max)
    users = common.bench_users(n_max)
    common.cancel_user_jobs(users)
    root = common.make_root("scale")
    log(f"state and logs under {root}")
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    try:
        for kind, kind_steps in (("ours", steps), ("anchor", anchor_steps)):
            if not kind_steps:
                continue
            try:
                results[kind] = run_hub(kind, root / kind, base, kind_steps, creds, users[:kind_steps[-1]], args)
            except Exception as e:  # noqa: BLE001
                failures[kind] = str(e)
                log(f"{kind}: FAILED: {e}")
                traceback.print_exc()
    except KeyboardInterrupt:
        log("interrupted: hubs stopped and jobs cancelled; writing what was measured")
    finally:
        common.cancel_user_jobs(users, wait_s=300)
        log(f"the cluster as configured again: {slurm_cluster.ensure_running(base)}")
        if not cluster_network.multi_host(base):
            cluster_network.remove()

    def at(kind: str, key: str, n: int | None = None):
        s = results.get(kind, {}).get("steps", {})
        step = s.get(str(n)) if n else (s[max(s, key=int)] if s else None)
        return step.get(key) if step else None

    data = {
        "benchmark": "scale",
        "date": common.now_iso(),
        "machine": common.machine(),
        "metric": f"hub API p95 (ms) with N sessions held and {args.learners} learners using the hub at a person's pace "
                  f"(a request each 0.5 s after the last answer), median of {args.windows} windows of "
                  f"{args.window:.0f} s; squeue calls per minute by the hub; hub CPU and memory; proxy routes",
        "sessions": steps[-1],
        "api_p95_ms": at("ours", "api_p95_ms", steps[-1]),
        "anchor": {"sessions": anchor_steps[-1] if anchor_steps else None, "layout": "one node",
                   **{k: at("anchor", k) for k in ("api_p95_ms", "squeue_per_minute", "hub_cpu_percent", "hub_rss_mb",
                                                  "ready")}},
        "ours": {"sessions": steps[-1], "layout": "2 namespace nodes",
                 **{k: at("ours", k, steps[-1]) for k in ("api_p95_ms", "exchange_p95_ms", "squeue_per_minute",
                                                         "hub_cpu_percent", "hub_rss_mb", "proxy_routes", "ready")}},
        "squeue_per_minute_by_sessions": {"ours": {n: at("ours", "squeue_per_minute", int(n)) for n in
                                                   results.get("ours", {}).get("steps", {})},
                                          "anchor": {n: at("anchor", "squeue_per_minute", int(n)) for n in
                                                     results.get("anchor", {}).get("steps", {})}},
        "target": "500 sessions held with hub API p95 under 250 ms, scheduler calls constant in N",
        # met only by a run at 500 sessions or more, all of them held, and p95 under 250 ms
        "target_met": bool(steps[-1] >= 500 and at("ours", "api_p95_ms", steps[-1]) is not None
                           and at("ours", "api_p95_ms", steps[-1]) < 250 and at("ours", "ready", steps[-1]) == steps[-1]),
        "runs": args.windows,
        "stand_in_server": True,
        "detail": results,
        "failures": failures,
        "duration_s": round(time.monotonic() - started),
    }
    path = common.write_result("scale", data)
    print(f"\nours: {data['ours']}\nanchor: {data['anchor']}\ntarget met: {data['target_met']}\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
