"""Ingestion on SQLite and PostgreSQL: idempotent, order-independent, all-or-nothing, fast enough."""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa

from assessments.progress import db, models, queries
from assessments.progress.events import EventError, ingest, rebuild

from .eventgen import T0, event_id, random_events
from .recompute import assert_consistent, snapshot


def ingest_all(engine, evs, batch):
    accepted = duplicates = 0
    for i in range(0, len(evs), batch):
        with db.write_transaction(engine) as conn:
            a, d = ingest(conn, evs[i:i + batch], source="test")
        accepted, duplicates = accepted + a, duplicates + d
    return accepted, duplicates


def test_replaying_1000_events_twice_counts_them_once(engine):
    evs = random_events(1000, seed="replay")
    assert ingest_all(engine, evs, 250) == (1000, 0)
    with engine.connect() as conn:
        first = snapshot(conn)
        assert sum(r.submissions for r in conn.execute(sa.select(models.learner_assignments))) > 100
    # A flusher that lost the service's answers sends everything again, in other batches.
    assert ingest_all(engine, evs, 333) == (0, 1000)
    with engine.connect() as conn:
        assert snapshot(conn) == first
        assert conn.execute(sa.select(sa.func.count()).select_from(models.events)).scalar() == 1000
        assert_consistent(conn)


def test_an_event_twice_in_one_batch_counts_once(engine):
    evs = random_events(10, seed="twice")
    with db.write_transaction(engine) as conn:
        assert ingest(conn, evs + evs[:4]) == (10, 4)
        assert_consistent(conn)


def test_arrival_order_and_batching_do_not_change_the_result(engine):
    evs = random_events(600, seed="order")
    random.Random(3).shuffle(evs)
    ingest_all(engine, evs, 7)
    with engine.connect() as conn:
        assert_consistent(conn)
        arrived = snapshot(conn)
    with db.write_transaction(engine) as conn:      # all again, in id order, one big batch
        assert rebuild(conn) == 600
    with engine.connect() as conn:
        assert snapshot(conn) == arrived


def test_a_bad_event_in_a_batch_writes_nothing(engine):
    evs = random_events(5, seed="bad")
    evs[3] = {**evs[3], "type": "assignment_hacked"}
    with pytest.raises(EventError, match=r"^events\[3\]\.type: "):
        with db.write_transaction(engine) as conn:
            ingest(conn, evs)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(models.events)).scalar() == 0


def test_two_writers_at_once_lose_nothing(engine):
    evs = random_events(800, seed="writers")
    errors = []

    def writer(part):
        try:
            ingest_all(engine, part, 40)
        except Exception as e:    # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(evs[:500],)), threading.Thread(target=writer, args=(evs[300:],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert assert_consistent(conn) == 800


def ev(kind, t, **fields):
    return {"id": event_id("path", kind, t, fields.get("user"), fields.get("assignment")), "type": kind,
            "occurred_at": T0 + t, **fields}


def test_a_learners_path_shows_in_their_records_and_the_cohort(engine):
    day, a = 86400, {"course": "llm-101"}
    item = {**a, "assignment": "tokenization"}
    stopped = {"session": "slurm-41", "profile": "gpu-h200-2", "gpus": 2, "duration_s": 1800.0}
    evs = [
        ev("assignment_released", 0, **item, payload={"due_at": T0 + 7 * day, "max_score": 10}),
        ev("assignment_released", 1, **a, assignment="attention", payload={"due_at": T0 + 30 * day, "max_score": 20}),
        ev("assignment_fetched", 100, user="learner1", **item),
        ev("assignment_submitted", 200, user="learner1", **item),
        ev("assignment_autograded", 300, user="learner1", **item, payload={"score": 6, "max_score": 10}),
        ev("assignment_submitted", 400, user="learner1", **item),
        ev("assignment_fetched", 500, user="learner3", **item),
        ev("session_stopped", 600, user="learner1", **a, payload=stopped),
        # The spawner reported the same session's end twice (two ids): it counts once.
        ev("session_stopped", 601, user="learner1", **a, payload=stopped),
        ev("session_stopped", 602, user="learner1", payload={**stopped, "session": "slurm-42", "gpus": 1}),
    ]
    with db.write_transaction(engine) as conn:
        ingest(conn, evs)
    now = T0 + 10 * day
    with engine.connect() as conn:
        me = queries.learner_records(conn, "learner1", {"llm-101": "learner"}, now)
    course = me["courses"][0]
    tok = {x["assignment"]: x for x in course["assignments"]}["tokenization"]
    assert (tok["status"], tok["score"], tok["submissions"], tok["late"]) == ("submitted", 6, 2, False)
    assert (course["gpu_hours"], me["gpu_hours"], me["gpu_hours_outside_courses"]) == (1.0, 1.5, 0.5)

    with db.write_transaction(engine) as conn:
        ingest(conn, [ev("score_recorded", 700, user="learner1", **item, payload={"score": 8, "max_score": 10}),
                      ev("feedback_released", 800, user="learner1", **item)])
    with engine.connect() as conn:
        me = queries.learner_records(conn, "learner1", {"llm-101": "learner"}, now)
        cohort = queries.cohort(conn, "llm-101", ["learner1", "learner2", "learner3"], now)
    tok = {x["assignment"]: x for x in me["courses"][0]["assignments"]}["tokenization"]
    assert (tok["status"], tok["score"], tok["max_score"]) == ("feedback", 8, 10)
    rows = {r["user"]: r for r in cohort["learners"]}
    assert cohort["counts"] == {"learners": 3, "not_started": 1, "behind": 2, "completed": 0}
    assert (rows["learner2"]["started"], rows["learner2"]["behind"]) == (False, 1)
    assert rows["learner3"]["assignments"]["tokenization"]["status"] == "fetched"
    assert rows["learner3"]["behind"] == 1 and rows["learner1"]["behind"] == 0
    assert rows["learner1"]["assignments"]["attention"]["status"] == "not_started"
    stats = {s["assignment"]: s for s in cohort["assignments"]}
    assert (stats["tokenization"]["fetched"], stats["tokenization"]["submitted"], stats["tokenization"]["mean_score"]) \
        == (2, 1, 8.0)
    with engine.connect() as conn:
        behind = queries.cohort(conn, "llm-101", ["learner1", "learner2", "learner3"], now, only="behind", limit=1)
    assert (behind["total"], [r["user"] for r in behind["learners"]]) == (2, ["learner2"])


def test_sqlite_ingests_at_least_2000_events_per_second(tmp_path):
    url = f"sqlite:///{tmp_path / 'rate.sqlite'}"
    db.upgrade(url)
    engine = db.engine_for(url)
    evs = random_events(10_000, seed="rate", users=2000, sessions=3000)
    start = time.perf_counter()
    assert ingest_all(engine, evs, 500) == (10_000, 0)
    rate = len(evs) / (time.perf_counter() - start)
    print(f"SQLite ingestion: {rate:.0f} events/s (batches of 500, synchronous=FULL)")
    assert rate >= 2000
    engine.dispose()
