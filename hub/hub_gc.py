"""The hub's startup heap, frozen out of the garbage collector's full passes once the hub runs.

CPython's full collection walks every tracked object the process holds. In the hub that is
everything JupyterHub, SQLAlchemy, tornado and the platform imported and built at start-up: a
full pass took 125-170 ms (measured with gc.callbacks in the workshop benchmark's hub), on the
hub's one event loop, and one landing in a room of attendees joining at once delayed every
request behind it. ``gc.freeze()`` moves what exists now to a permanent generation that no
collection walks: startup objects live as long as the hub anyway. Objects made later are
collected as before, so cycles among users, spawners and requests are still freed.
Every collection's pause is in /hub/metrics (``GcPauses``).
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import time

_task = None   # asyncio keeps only a weak reference to a task
_pauses = None
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """``academy_hub_gc_pause_seconds{generation}``: how long each of the hub's garbage collections
    held its event loop, so an operator sees the pauses that slowed a room (and that the freeze
    keeps full passes short).

    A ``gc.callbacks`` entry that only adds to plain lists: a collection may start inside any
    allocation, one made under prometheus_client's metric lock included, so the callback takes no
    lock and the histogram is built from the lists at scrape time (a prometheus_client collector)."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.counts = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(3)]   # per generation, per bucket
        self.sums = [0.0, 0.0, 0.0]
        self._began: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = self.clock()
        elif self._began is not None:
            took, self._began = self.clock() - self._began, None
            generation = min(info.get("generation", 2), 2)
            self.counts[generation][bisect.bisect_left(PAUSE_BUCKETS, took)] += 1
            self.sums[generation] += took

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily("academy_hub_gc_pause_seconds",
                                       "The hub's garbage collections: how long each held the event loop",
                                       labels=["generation"])
        for generation, counts in enumerate(self.counts):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, PAUSE_BUCKETS), "+Inf"), counts):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([str(generation)], buckets, self.sums[generation])
        yield family


def watch_pauses(registry=None) -> GcPauses:
    """Time every collection of this process from now on, in REGISTRY (the hub's /hub/metrics)."""
    from prometheus_client import REGISTRY

    pauses = GcPauses()
    gc.callbacks.append(pauses)
    (registry or REGISTRY).register(pauses)
    return pauses


async def _freeze_when_started(app) -> None:
    started = getattr(app, "_start_future", None)   # set by JupyterHub.start() at its end
    if started is not None:
        await started
    gc.collect()   # what startup left unreachable goes now, not into the permanent generation
    gc.freeze()
    app.log.info("academy: %d objects from the hub's start-up frozen out of full garbage collections",
                 gc.get_freeze_count())


def freeze_after_start() -> None:
    """From the hub's config file, which JupyterHub loads inside its running event loop; elsewhere
    (a config check, `jupyterhub --generate-config`) nothing is done."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    from jupyterhub.app import JupyterHub

    global _task, _pauses
    if JupyterHub.initialized():
        _pauses = _pauses or watch_pauses()   # once: a second registration would be refused
        _task = loop.create_task(_freeze_when_started(JupyterHub.instance()))
