"""``/metrics`` of the platform's services, in Prometheus form, for a token with ``read:metrics``.

Each service answers its own series (the hub answers the sessions' at ``/hub/metrics``):
- ``academy_service_request_seconds{service,handler,method,code}``: every request's latency;
  labels are the handler's class and the status, never a path or a user;
- what the service's database knows, read when Prometheus scrapes (``DatabaseCollector``): GPU-hours
  per course in the progress service, grading results and grading time per course in the exchange.

The token is Prometheus's: a hub service (``academy-metrics``, hub/configurer.py) whose role grants
``read:metrics`` and access to the services; the hub keeps the token root-only in its state folder.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from tornado import web

log = logging.getLogger("academy.metrics")
SCOPE = "read:metrics"

REQUESTS = Histogram("academy_service_request_seconds", "Requests the platform's services answered",
                     ["service", "handler", "method", "code"],
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def observe(handler: web.RequestHandler) -> None:
    """Called when a request finishes (ServiceHandler.on_finish)."""
    service = handler.settings.get("service_name", "service")
    REQUESTS.labels(service, type(handler).__name__, handler.request.method,
                    str(handler.get_status())).observe(handler.request.request_time())


class DatabaseCollector:
    """Series computed from the service's database at scrape time: ``read()`` yields metric families.
    A failing read is logged and yields nothing: a scrape must never take the service down."""

    def __init__(self, read: Callable[[], Iterable]):
        self.read = read

    def collect(self):
        try:
            yield from list(self.read())
        except Exception:
            log.exception("reading the metrics from the database failed")


def register(read: Callable[[], Iterable]) -> DatabaseCollector:
    collector = DatabaseCollector(read)
    REGISTRY.register(collector)
    return collector


def metrics_handler(base: type) -> type:
    """The ``/metrics`` handler on the service's own handler base (so it authenticates as the rest)."""

    class MetricsHandler(base):
        async def get(self):
            model = self.current_user or getattr(self, "_not_allowed", None)
            if model is None:
                raise web.HTTPError(401, "metrics are for a token with the read:metrics scope")
            if SCOPE not in (model.get("scopes") or []):
                raise web.HTTPError(403, "metrics are for a token with the read:metrics scope")
            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.finish(generate_latest(REGISTRY))

    return MetricsHandler


GRADING_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1800)


def grading_families(rows: list[dict]):
    """academy_grading_results{course,outcome} and academy_grading_seconds{course} from
    gradebook.tables.grading_by_course."""
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

    results = GaugeMetricFamily("academy_grading_results", "Grading results recorded, by course and outcome",
                                labels=["course", "outcome"])
    seconds = HistogramMetricFamily("academy_grading_seconds", "How long grading one submission took",
                                    labels=["course"])
    for row in rows:
        results.add_metric([row["course"], "graded"], row["graded"])
        results.add_metric([row["course"], "failed"], row["failed"])
        buckets = [(str(float(b)), sum(1 for s in row["seconds"] if s <= b)) for b in GRADING_BUCKETS]
        seconds.add_metric([row["course"]], buckets + [("+Inf", len(row["seconds"]))],
                           sum_value=sum(row["seconds"]))
    yield results
    yield seconds


def gpu_hours_family(rows: Iterable[tuple[str, float]]):
    """academy_gpu_hours{course} from (course, GPU-seconds); sessions outside a course are "own-work"."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily("academy_gpu_hours", "GPU-hours of the sessions that ended, by course",
                               labels=["course"])
    for course, gpu_seconds in rows:
        family.add_metric([course or "own-work"], round((gpu_seconds or 0.0) / 3600, 4))
    yield family
