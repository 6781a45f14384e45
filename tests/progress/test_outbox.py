"""The emitters' outbox: events on disk first, deleted only once the service has them."""

from __future__ import annotations

import json
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assessments.progress.outbox import Outbox, stable_id

from ..support import free_port


class StubService:
    """Answers POSTs like the progress service would, or as told: [(status, body), ...] first."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"auth": self.headers["Authorization"], "events": body["events"]})
                status, answer = stub.answers.pop(0) if stub.answers else \
                    (200, {"accepted": len(body["events"]), "duplicates": 0})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/academy-progress/api/events"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def stub():
    s = StubService()
    yield s
    s.server.shutdown()


def test_an_emitted_event_is_on_disk_whole_and_private(tmp_path):
    box = Outbox(tmp_path / "spool")
    event_id = box.emit("assignment_fetched", user="learner1", course="llm-101", assignment="tokenization")
    [path] = box.pending_files()
    [event] = json.loads(path.read_text())
    assert (event["id"], event["type"], event["user"], event["payload"]) == (event_id, "assignment_fetched",
                                                                               "learner1", {})
    assert "course" in event and "occurred_at" in event
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(box.dir.stat().st_mode) == 0o700
    assert [p.name for p in box.dir.iterdir()] == [path.name]         # no temporary file left behind
    # The same fact reported twice (a retried request) carries the same id, so it counts once.
    again = [box.emit("assignment_submitted", user="learner1", course="llm-101", assignment="tokenization",
                      event_id=stable_id("submitted", "20260101T000000-1a2b3c4d")) for _ in range(2)]
    assert again[0] == again[1] != stable_id("submitted", "20260101T000000-ffffffff")


def test_nothing_is_lost_while_the_service_is_down_or_failing(tmp_path, stub):
    box = Outbox(tmp_path / "spool")
    for user in ("learner1", "learner2"):
        box.emit("course_completed", user=user, course="llm-101")
    down = box.flush(f"http://127.0.0.1:{free_port()}/api/events", "tok")
    assert "unreachable" in down.error and down.pending == 2
    stub.answers = [(503, {"message": "starting"})]
    failing = box.flush(stub.url, "tok")
    assert (failing.error, failing.pending) == ("HTTP 503: starting", 2)
    done = box.flush(stub.url, "tok")
    assert (done.sent, done.pending, done.error) == (2, 0, "")
    # Each attempt sent both events together, with the emitter's token; the same ids every time.
    assert [len(r["events"]) for r in stub.requests] == [2, 2]
    assert stub.requests[0]["events"] == stub.requests[1]["events"] and stub.requests[0]["auth"] == "token tok"


def test_an_event_the_service_refuses_is_set_aside_and_the_rest_go_through(tmp_path, stub):
    box = Outbox(tmp_path / "spool")
    box.emit_many([{"type": "course_completed", "user": "learner1", "course": "llm-101"},
                   {"type": "course_completed", "user": "Bad Name", "course": "llm-101"},
                   {"type": "course_completed", "user": "learner2", "course": "llm-101"}])
    stub.answers = [(400, {"message": "events[1].user: ...", "rejected": [
        {"index": 1, "field": "events[1].user", "error": "events[1].user: \"Bad Name\" is not accepted"}]})]
    result = box.flush(stub.url, "tok")
    assert (result.rejected, result.sent, result.pending, result.error) == (1, 2, 0, "")
    assert [e["user"] for e in stub.requests[1]["events"]] == ["learner1", "learner2"]
    [kept] = (box.dir / "rejected").glob("*.json")
    assert [e["user"] for e in json.loads(kept.read_text())] == ["Bad Name"]
    assert "is not accepted" in kept.with_name(kept.name + ".error").read_text()


def test_a_file_half_written_by_a_crash_is_never_sent(tmp_path, stub):
    box = Outbox(tmp_path / "spool")
    (box.dir / ".tmp-00000000000000000001-abc.json").write_text('[{"id": "trunc')
    box.emit("course_completed", user="learner1", course="llm-101")
    assert box.flush(stub.url, "tok").sent == 1
    assert [len(r["events"]) for r in stub.requests] == [1]


def test_many_events_go_in_batches_of_at_most_500(tmp_path, stub):
    box = Outbox(tmp_path / "spool")
    box.emit_many([{"type": "course_completed", "user": f"learner{i}", "course": "llm-101"} for i in range(1200)])
    for i in range(3):
        box.emit("course_completed", user=f"late{i}", course="llm-101")
    assert len(box.pending_files()) == 6
    result = box.flush(stub.url, "tok")
    assert (result.sent, result.pending) == (1203, 0)
    assert [len(r["events"]) for r in stub.requests] == [500, 500, 203]


def test_the_background_flusher_sends_soon_after_an_emit(tmp_path, stub):
    box = Outbox(tmp_path / "spool")
    box.start_flusher(stub.url, "tok", interval=30)
    try:
        box.emit("course_completed", user="learner1", course="llm-101")
        deadline = time.monotonic() + 10
        while box.pending_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box.pending_files() == [] and len(stub.requests) == 1
    finally:
        box.stop_flusher()
