"""The hub's garbage-collection pauses, as /hub/metrics serves them (hub/hub_gc.py)."""

import gc

from prometheus_client import CollectorRegistry, generate_latest

from hub.hub_gc import GcPauses, watch_pauses


def test_each_collection_is_timed_by_generation_into_a_histogram():
    ticks = iter([10.0, 10.003, 20.0, 20.2, 30.0])
    pauses = GcPauses(clock=lambda: next(ticks))
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0, "collected": 0, "uncollectable": 0})     # 3 ms
    pauses("start", {"generation": 2})
    pauses("stop", {"generation": 2, "collected": 5, "uncollectable": 0})     # 200 ms
    pauses("stop", {"generation": 1})                                          # no start seen: not counted
    registry = CollectorRegistry()
    registry.register(pauses)
    text = generate_latest(registry).decode()
    for line in ('academy_hub_gc_pause_seconds_bucket{generation="0",le="0.0025"} 0.0',
                 'academy_hub_gc_pause_seconds_bucket{generation="0",le="0.005"} 1.0',
                 'academy_hub_gc_pause_seconds_bucket{generation="2",le="0.1"} 0.0',
                 'academy_hub_gc_pause_seconds_bucket{generation="2",le="0.25"} 1.0',
                 'academy_hub_gc_pause_seconds_bucket{generation="2",le="+Inf"} 1.0',
                 'academy_hub_gc_pause_seconds_count{generation="1"} 0.0',
                 'academy_hub_gc_pause_seconds_count{generation="2"} 1.0'):
        assert line in text, text
    total = {g: registry.get_sample_value("academy_hub_gc_pause_seconds_sum", {"generation": g}) for g in "012"}
    assert abs(total["0"] - 0.003) < 1e-9 and total["1"] == 0 and abs(total["2"] - 0.2) < 1e-9


def test_a_real_full_collection_is_counted():
    registry = CollectorRegistry()
    pauses = watch_pauses(registry)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(pauses)
    assert registry.get_sample_value("academy_hub_gc_pause_seconds_count", {"generation": "2"}) >= 1
    assert registry.get_sample_value("academy_hub_gc_pause_seconds_sum", {"generation": "2"}) > 0
