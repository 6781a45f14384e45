"""Progress service at scale: event ingestion rate, and the cohort page's p95 for 10,000 learners.

    /opt/academy/venv-hub/bin/python benchmarks/progress.py [--runs 3] [--learners 10000] [--requests 200]

Each run starts from an empty SQLite database (WAL, synchronous=FULL, as deployed) and a service
process of its own: the real tornado application (assessments.progress.service.make_app) with
its pages, behind a stand-in for the hub's /hub/api/user (the service's HubOAuth asks it over
HTTP, and keeps the answer as deployed). Then:

1. **Ingestion**: a synthetic cohort (LEARNERS learners x 30 assignments of one course, in a
   one-course track so completions and certificates happen as they would) is POSTed to
   api/events in batches of 500, one request at a time, as an emitter's outbox sends them:
   released, fetched, submitted and autograded events, about 71 per learner. The rate is events
   over the wall time of all the POSTs (validation, the folds, completion, certificates included).
2. **Cohort page**: REQUESTS GETs of /courses/<course> as its trainer: pages 1..100 at random,
   filter all / behind / not_started in turn; the time is the client's, to the last byte. Then
   the same while grades keep arriving (one event between requests), so the plots are redrawn.
3. **Cohort API**: the same for api/courses/<course>/cohort (100 learners a page).

The figures are the median over runs of each run's p95 (and of the ingestion rate).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

import common  # noqa: E402 - benchmarks/ is on sys.path when run as a script

from assessments.gradebook import tables as gb  # noqa: E402
from assessments.gradebook.db import open_gradebook  # noqa: E402

COURSE, TRACK = "bench-101", "bench-track"
ASSIGNMENTS = [f"a{i:02d}" for i in range(30)]
T0 = 1_767_225_600.0               # 2026-01-01
BATCH = 500
PREFIX = "/services/academy-progress/"
TOKEN, ADMIN_TOKEN = "bench-trainer-token", "bench-exchange-token"
NS = uuid.UUID("5b0f6a71-2c4e-4d7a-9c1e-7e2b3a4c5d6e")


def events_for(learners: int, seed: int = 1) -> list[dict]:
    """The cohort's events, learner by learner (as the exchange and grader would report them)."""
    rng = random.Random(seed)
    eid = lambda *p: str(uuid.uuid5(NS, "/".join(map(str, p))))  # noqa: E731
    out = [{"id": eid("rel", a), "type": "assignment_released", "course": COURSE, "assignment": a,
            "occurred_at": T0 + i * 86400, "payload": {"due_at": T0 + (i + 7) * 86400, "max_score": 10.0}}
           for i, a in enumerate(ASSIGNMENTS)]
    for u in range(learners):
        user, skill = f"l{u:05d}", rng.random()
        reach = len(ASSIGNMENTS) if skill > 0.3 else rng.randrange(len(ASSIGNMENTS) + 1)
        for i, a in enumerate(ASSIGNMENTS[:reach]):
            t = T0 + i * 86400 + rng.uniform(0, 6 * 86400)
            item = {"user": user, "course": COURSE, "assignment": a}
            out.append({"id": eid(user, a, "f"), "type": "assignment_fetched", **item, "occurred_at": t})
            if rng.random() < 0.9:
                out.append({"id": eid(user, a, "s"), "type": "assignment_submitted", **item, "occurred_at": t + 3600})
                score = round(min(10.0, max(0.0, rng.gauss(skill * 10, 2))), 1)
                out.append({"id": eid(user, a, "g"), "type": "assignment_autograded", **item, "occurred_at": t + 7200,
                            "payload": {"score": score, "max_score": 10.0}})
    return out


# --- the service, in a process of its own ----------------------------------------------------

def serve(root: Path, port: int, hub_port: int) -> None:
    """(--serve) The service's application with its pages, and a stand-in hub answering for two tokens."""
    from jupyterhub.services.auth import HubOAuth
    from tornado import web
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    from assessments.progress import certificates, db, service
    from assessments.progress.completion import Programme
    from assessments.gradebook.enrolment import Enrolment

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    access = "access:services!service=academy-progress"
    models = {TOKEN: {"kind": "user", "name": "trainer1", "admin": False, "groups": [], "scopes": [access]},
              ADMIN_TOKEN: {"kind": "service", "name": "academy-exchange",
                            "scopes": [access, service.INGEST_SCOPE]}}

    class WhoAmI(web.RequestHandler):
        def get(self):
            model = models.get(self.request.headers.get("Authorization", "").removeprefix("token "))
            if model is None:
                raise web.HTTPError(403)
            self.write(json.dumps(model))

    url = f"sqlite:///{root / 'progress.sqlite'}"
    db.upgrade(url)
    enrolment = Enrolment(open_gradebook(f"sqlite:///{root / 'gradebook.sqlite'}"))
    programme = Programme(courses={COURSE: tuple(ASSIGNMENTS)}, tracks={TRACK: (COURSE,)},
                          course_titles={COURSE: "Benchmark course"}, track_titles={TRACK: "Benchmark track"})
    auth = HubOAuth(api_url=f"http://127.0.0.1:{hub_port}/hub/api/", api_token="bench", cache_max_age=60,
                    oauth_client_id="service-academy-progress", access_scopes={access})
    HTTPServer(web.Application([(r"/hub/api/user", WhoAmI)])).listen(hub_port, "127.0.0.1")
    app = service.make_app(db.engine_for(url), enrolment, auth, PREFIX, programme=programme,
                           signer=certificates.Signer.load_or_create(root / certificates.KEY_FILE))
    HTTPServer(app, max_body_size=service.MAX_BODY).listen(port, "127.0.0.1")
    gc.freeze()                             # as service.main does
    IOLoop.current().start()


class Service:
    def __init__(self, root: Path):
        self.root, self.port, self.hub_port = root, common.free_port(), common.free_port()
        self.log = open(root / "service.log", "wb")
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(self.port),
                                      str(self.hub_port)], stdout=self.log, stderr=subprocess.STDOUT, cwd=common.REPO,
                                     env={**os.environ, "PYTHONPATH": str(common.REPO)})
        self.http = requests.Session()
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get(self.url("api/me"), timeout=5).status_code == 403:
                    return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start: {(root / 'service.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}{path}"

    def get(self, path: str, token: str = TOKEN) -> tuple[float, requests.Response]:
        start = time.perf_counter()
        r = self.http.get(self.url(path), headers={"Authorization": f"token {token}"}, timeout=120)
        _ = r.content
        return (time.perf_counter() - start) * 1000, r

    def post_events(self, events: list[dict]) -> dict:
        r = self.http.post(self.url("api/events"), data=json.dumps({"events": events}),
                           headers={"Authorization": f"token {ADMIN_TOKEN}", "Content-Type": "application/json"},
                           timeout=300)
        if r.status_code != 200:
            raise SystemExit(f"ingestion failed: {r.status_code} {r.text[:500]}")
        return r.json()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def enrol(root: Path, learners: int) -> None:
    engine = open_gradebook(f"sqlite:///{root / 'gradebook.sqlite'}")
    with engine.begin() as conn:
        conn.execute(gb.enrolments.insert(), [{"course": COURSE, "user": f"l{u:05d}", "role": "learner",
                                               "enrolled_at": T0} for u in range(learners)]
                     + [{"course": COURSE, "user": "trainer1", "role": "trainer", "enrolled_at": T0}])
    engine.dispose()


def one_run(i: int, learners: int, n_requests: int, events: list[dict]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="academy-bench-progress-"))
    try:
        enrol(root, learners)
        svc = Service(root)
        try:
            start = time.perf_counter()
            accepted = 0
            for k in range(0, len(events), BATCH):
                accepted += svc.post_events(events[k:k + BATCH])["accepted"]
            ingest_s = time.perf_counter() - start
            rate = len(events) / ingest_s
            common.log(f"run {i}: ingested {len(events):,} events in {ingest_s:.1f} s = {rate:,.0f} events/s")
            rng = random.Random(i)
            pages = max(1, min(100, learners // 100))
            filters = ["all", "behind", "not_started"]

            def page_path(k: int) -> str:
                f = filters[k % 3]
                return f"courses/{COURSE}?page={rng.randint(1, pages) if f == 'all' else 1}" + \
                    (f"&filter={f}" if f != "all" else "")
            svc.get(page_path(0))                                   # the first draw of the plots
            load_before = common.loadavg()
            page_ms = []
            for k in range(n_requests):
                ms, r = svc.get(page_path(k))
                assert r.status_code == 200 and r.text.count("<svg") == 3, (r.status_code, r.text[:300])
                page_ms.append(ms)
            # While grades arrive: one new (re)grade between requests changes what the plots show.
            live_ms = []
            for k in range(n_requests // 2):
                user, a = f"l{rng.randrange(learners):05d}", rng.choice(ASSIGNMENTS)
                svc.post_events([{"id": str(uuid.uuid4()), "type": "score_recorded", "user": user, "course": COURSE,
                                  "assignment": a, "occurred_at": T0 + 40 * 86400 + k,
                                  "payload": {"score": round(rng.uniform(0, 10), 1), "max_score": 10.0}}])
                ms, r = svc.get(page_path(k))
                assert r.status_code == 200
                live_ms.append(ms)
            api_ms = []
            for k in range(n_requests):
                f = filters[k % 3]
                ms, r = svc.get(f"api/courses/{COURSE}/cohort?offset={rng.randrange(learners)}&filter={f}")
                assert r.status_code == 200
                api_ms.append(ms)
            load_after = common.loadavg()
            ms_csv, r = svc.get(f"courses/{COURSE}/cohort.csv")
            csv_rows = r.text.count("\n") - 1
        finally:
            svc.stop()
        with open(root / "service.log", "rb") as f:
            errors = sum(1 for line in f if b"[E " in line)
        result = {"events": len(events), "accepted": accepted, "ingest_s": round(ingest_s, 2),
                  "ingest_events_per_s": round(rate), "cohort_page_p50_ms": round(common.percentile(page_ms, 50), 1),
                  "cohort_page_p95_ms": round(common.percentile(page_ms, 95), 1),
                  "cohort_page_max_ms": round(max(page_ms), 1),
                  "cohort_page_while_ingesting_p95_ms": round(common.percentile(live_ms, 95), 1),
                  "cohort_api_p50_ms": round(common.percentile(api_ms, 50), 1),
                  "cohort_api_p95_ms": round(common.percentile(api_ms, 95), 1),
                  "cohort_csv_ms": round(ms_csv, 1), "cohort_csv_rows": csv_rows, "service_errors": errors,
                  # The machine may be shared: the 1-minute load average around the page requests.
                  "loadavg_1min_before_after": [load_before[0], load_after[0]]}
        result.update(_database_facts(root))
        common.log(f"run {i}: cohort page p95 {result['cohort_page_p95_ms']} ms (while ingesting "
                   f"{result['cohort_page_while_ingesting_p95_ms']} ms), API p95 {result['cohort_api_p95_ms']} ms, "
                   f"CSV of {csv_rows:,} rows {ms_csv / 1000:.1f} s, {result['certificates']:,} certificates")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _database_facts(root: Path) -> dict:
    import sqlalchemy as sa
    engine = sa.create_engine(f"sqlite:///{root / 'progress.sqlite'}")
    with engine.connect() as conn:
        facts = {"learner_assignment_rows": conn.exec_driver_sql("SELECT count(*) FROM learner_assignments").scalar(),
                 "courses_passed": conn.exec_driver_sql(
                     "SELECT count(*) FROM learner_courses WHERE completed_at IS NOT NULL").scalar(),
                 "certificates": conn.exec_driver_sql("SELECT count(*) FROM certificates").scalar(),
                 "database_mb": round(sum(p.stat().st_size for p in root.glob("progress.sqlite*")) / 2**20, 1)}
    engine.dispose()
    return facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--learners", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="cohort page and API requests per run")
    parser.add_argument("--out", default="progress", help="results/<out>.json")
    parser.add_argument("--serve", nargs=3, metavar=("ROOT", "PORT", "HUB_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), int(args.serve[2]))
        return 0
    events = events_for(args.learners)
    common.log(f"{args.learners:,} learners x {len(ASSIGNMENTS)} assignments: {len(events):,} events; "
               f"{args.runs} run(s)")
    runs = [one_run(i + 1, args.learners, args.requests, events) for i in range(args.runs)]

    def med(key):
        return common.median([r[key] for r in runs])
    data = {
        "benchmark": "progress",
        "cohort_p95_ms": med("cohort_page_p95_ms"),
        "cohort_while_ingesting_p95_ms": med("cohort_page_while_ingesting_p95_ms"),
        "cohort_api_p95_ms": med("cohort_api_p95_ms"),
        "ingest_events_per_s": med("ingest_events_per_s"),
        "targets": {"cohort_p95_ms": 300, "ingest_events_per_s": 2000},
        "setup": {"learners": args.learners, "assignments": len(ASSIGNMENTS), "events": len(events),
                  "batch": BATCH, "page_size": 100, "requests_per_run": args.requests,
                  "database": "SQLite (WAL, synchronous=FULL), a fresh file per run",
                  "service": "assessments.progress.service.make_app in its own process, stand-in hub for "
                             "/hub/api/user (answers cached 60 s, as deployed)",
                  "client": "python-requests, one request at a time, time to the last byte"},
        "runs": args.runs,
        "per_run": runs,
        "machine": {k: v for k, v in common.machine().items() if k != "slurm"},
        "date": common.now_iso(),
    }
    path = common.write_result(args.out, data)
    common.log(f"cohort page p95 {data['cohort_p95_ms']} ms (target < 300), ingestion "
               f"{data['ingest_events_per_s']:,} events/s (target >= 2,000); written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
