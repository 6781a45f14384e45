"""What an operator watches, scraped by a real Prometheus (Debian's) from a real hub and its
services, with the token of the academy-metrics service and the configuration
`academy metrics prometheus-config` prints; and nobody else reads the metrics."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from hub.configurer import metrics_token_path, prometheus_config

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "academy-dashboard.json"

from ..support import free_port, wait_for


@pytest.fixture
def prometheus(hub, tmp_path):
    """Prometheus scraping HUB every second, as the operator's guide configures it."""
    port = free_port()
    config = prometheus_config(hub.cfg).replace("scrape_interval: 15s", "scrape_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def query(expr: str) -> dict:
        """{frozenset of labels: value} of an instant query."""
        r = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert r["status"] == "success", r
        return {frozenset((k, v) for k, v in s["metric"].items() if k not in ("instance", "job")): float(s["value"][1])
                for s in r["data"]["result"]}
    query.targets = lambda: [(t["labels"]["job"], t["health"], t["lastError"]) for t in
                             requests.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]]
    try:
        wait_for(lambda: _answers(url), 30, what="Prometheus to answer")
        yield query
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def value(series: dict, **labels) -> float | None:
    want = set(labels.items())
    found = [v for k, v in series.items() if want <= set(k)]
    return sum(found) if found else None


def test_prometheus_scrapes_sessions_slurm_and_the_services(hub, learner, prometheus):
    """A learner's CPU session starts and stops; Prometheus sees the start, its queue wait and
    time to ready, the running session, Slurm's commands, the end, and the services' requests."""
    def all_up():
        targets = prometheus.targets()
        return len(targets) == 3 and all(health == "up" for _, health, _ in targets)
    try:
        wait_for(all_up, 30, what="Prometheus to scrape the hub, the exchange and the progress service")
    except AssertionError as e:
        raise AssertionError(f"{e}; targets (job, health, last error): {prometheus.targets()}") from None
    before = value(prometheus("academy_session_starts_total"), profile="cpu-small", outcome="ready") or 0
    r = learner.submit_spawn_form(profile="cpu-small", walltime="10")
    assert r.status_code == 302, r.text[:500]
    learner.wait_ready(120)
    assert requests.get(f"{hub.url}/services/academy-exchange/api/assignments",
                        headers={"Authorization": f"token {learner.token}"}, timeout=30).status_code == 200

    running = wait_for(lambda: value(prometheus("academy_sessions_running"), profile="cpu-small"), 20,
                       what="the running session in academy_sessions_running")
    assert running >= 1
    assert value(prometheus("academy_session_starts_total"), profile="cpu-small", outcome="ready") == before + 1
    assert value(prometheus("academy_session_ready_seconds_count"), profile="cpu-small") >= 1
    assert value(prometheus("academy_session_queue_wait_seconds_count"), profile="cpu-small") >= 1
    assert value(prometheus("academy_slurm_commands_total"), command="sbatch", outcome="ok") >= 1
    assert value(prometheus("academy_slurm_commands_total"), command="squeue", outcome="ok") >= 1
    wait_for(lambda: value(prometheus("academy_service_request_seconds_count"), service="academy-exchange",
                           handler="AssignmentsHandler", code="200"), 20,
             what="the exchange's request in academy_service_request_seconds")
    assert prometheus("jupyterhub_running_servers")   # JupyterHub's own series come along
    # the hub's garbage-collection pauses: at least the full pass before its start-up heap was frozen
    assert value(prometheus("academy_hub_gc_pause_seconds_count"), generation="2") >= 1

    learner.stop_server()
    wait_for(lambda: value(prometheus("academy_session_ends_total"), profile="cpu-small", reason="stopped-by-hub"),
             20, what="the stopped session in academy_session_ends_total")
    wait_for(lambda: not value(prometheus("academy_sessions_running"), profile="cpu-small"), 20,
             what="no running session left in academy_sessions_running")
    # the progress service answers its database's series (GPU-hours per course; this one used none)
    assert wait_for(lambda: prometheus('up{job="academy-progress"}'), 10)
    assert prometheus("academy_gpu_hours") is not None

    # The Grafana dashboard shipped for operators: every panel's query is valid PromQL to this
    # Prometheus (query() asserts "success"), and those over what this test did return series.
    dashboard = json.loads(DASHBOARD.read_text())
    answered = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            answered[target["expr"]] = prometheus(target["expr"])
    assert len(answered) >= 12
    for expr in ("sum by (reason) (rate(academy_session_ends_total[1h])) * 3600",
                 "sum by (command, outcome) (rate(academy_slurm_commands_total[5m])) * 60",
                 "sum by (outcome) (rate(academy_session_starts_total[5m])) * 60"):
        assert answered[expr], f"no series for the dashboard's {expr}"


@pytest.mark.parametrize("path", ["/hub/metrics", "/services/academy-exchange/metrics",
                                  "/services/academy-progress/metrics"])
def test_only_the_metrics_token_reads_the_metrics(hub, learner, path):
    token = open(metrics_token_path(hub.cfg)).read().strip()
    ok = requests.get(f"{hub.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/plain")
    assert "academy_" in ok.text or "jupyterhub_" in ok.text
    # A learner's token, and no token at all: refused, and nothing of the metrics in the answer.
    for headers in ({"Authorization": f"token {learner.token}"}, {}):
        r = requests.get(f"{hub.url}{path}", headers=headers, timeout=30, allow_redirects=False)
        assert r.status_code in (302, 401, 403), (headers.keys(), r.status_code)
        assert "academy_" not in r.text and "_total" not in r.text
    assert oct(os.stat(metrics_token_path(hub.cfg)).st_mode & 0o777) == "0o600"
    time.sleep(0)
