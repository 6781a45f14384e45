"""The event schema: every kind of bad input is refused with the field named and what is accepted."""

from __future__ import annotations

import pytest

from assessments.progress.events import EventError, MAX_BATCH, validate, validate_batch

NOW = 1_767_225_600.0
GOOD = {"id": "3f6c1a2e-2a8b-4d1c-9a57-0c3f1f0e4b10", "type": "assignment_autograded", "user": "learner1",
        "course": "llm-101", "assignment": "tokenization", "occurred_at": NOW - 60,
        "payload": {"score": 7.5, "max_score": 10, "submission": "20260101T000000-1a2b3c4d"}}


def test_a_good_event_is_accepted_with_its_id_made_canonical():
    event = validate({**GOOD, "id": GOOD["id"].upper()}, now=NOW)
    assert (event.id, event.type, event.user, event.payload["score"]) == (GOOD["id"], "assignment_autograded",
                                                                          "learner1", 7.5)


def _without(key):
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize("event, field, says", [
    ("not an object", "event", "must be a JSON object"),
    ({**GOOD, "student": "x"}, "event.student", "unknown field; accepted:"),
    (_without("id"), "event.id", "is required"),
    ({**GOOD, "id": "1234"}, "event.id", "is not a UUID"),
    ({**GOOD, "type": "assignment_hacked"}, "event.type", "accepted: session_started, session_stopped"),
    ({**GOOD, "occurred_at": "yesterday"}, "event.occurred_at", "expected epoch seconds"),
    ({**GOOD, "occurred_at": NOW + 3 * 86400}, "event.occurred_at", "up to a day from now"),
    ({**GOOD, "occurred_at": 1_700_000_000_000}, "event.occurred_at", "expected epoch seconds"),   # milliseconds
    (_without("user"), "event.user", "is required for assignment_autograded events"),
    ({**GOOD, "user": "Robert'); DROP TABLE events;--"}, "event.user", "expected a Unix user name"),
    ({**GOOD, "course": "LLM 101"}, "event.course", "lower-case letters, digits and '-'"),
    ({**GOOD, "type": "track_completed", "payload": {"track": "llm-engineering"}}, "event.course",
     "is not part of track_completed events"),
    ({**GOOD, "payload": []}, "event.payload", "must be a JSON object"),
    ({**GOOD, "payload": {"max_score": 10}}, "event.payload.score", "is required for assignment_autograded"),
    ({**GOOD, "payload": {"score": 11, "max_score": 10}}, "event.payload.score", "is more than max_score 10"),
    ({**GOOD, "payload": {"score": -1, "max_score": 10}}, "event.payload.score", "expected a number from 0"),
    ({**GOOD, "payload": {"score": True, "max_score": 10}}, "event.payload.score", "expected a number"),
    ({**GOOD, "payload": {"score": 1, "max_score": 10, "note": "x" * 5000}}, "event.payload",
     "at most 4096 are accepted"),
    ({**GOOD, "payload": {"score": 1, "max_score": 10, "submission": "../../etc"}}, "event.payload.submission",
     "expected letters, digits"),
    ({"id": GOOD["id"], "type": "session_stopped", "user": "learner1", "occurred_at": NOW,
      "payload": {"session": "slurm-17", "profile": "gpu-h200-1", "gpus": "two", "duration_s": 60}},
     "event.payload.gpus", "expected an integer from 0 to 1024"),
    ({"id": GOOD["id"], "type": "session_stopped", "user": "learner1", "occurred_at": NOW,
      "payload": {"session": "slurm-17", "profile": "gpu-h200-1", "gpus": 1}},
     "event.payload.duration_s", "is required for session_stopped events"),
    ({"id": GOOD["id"], "type": "assignment_released", "course": "llm-101", "assignment": "x1", "occurred_at": NOW,
      "payload": {"due_at": float("nan"), "max_score": 10}}, "event.payload", "no NaN"),
])
def test_a_bad_event_is_refused_naming_the_field(event, field, says):
    with pytest.raises(EventError) as caught:
        validate(event, now=NOW)
    assert caught.value.field == field
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_a_batch_reports_every_bad_event_by_index():
    good, bad = validate_batch([GOOD, {**GOOD, "type": "nope"}, GOOD, {**GOOD, "user": None}], now=NOW)
    assert len(good) == 2
    assert [(b["index"], b["field"]) for b in bad] == [(1, "events[1].type"), (3, "events[3].user")]
    with pytest.raises(EventError, match=f"at most {MAX_BATCH} are accepted"):
        validate_batch([GOOD] * (MAX_BATCH + 1), now=NOW)
    with pytest.raises(EventError, match="must be a JSON list"):
        validate_batch({"events": []}, now=NOW)
