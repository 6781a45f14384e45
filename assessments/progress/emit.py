"""What the assessment side tells the progress service: releases, fetches, submissions, grades, feedback.

Every event goes to an outbox on disk first (the CLI and the exchange service share one spool
directory; the exchange service sends it with its hub token), so grading never waits for the
progress service and nothing is lost while it is down. Ids derive from what the event reports,
so recording the same fact again (a second `collect`, a re-publish) is not counted twice.
"""

from __future__ import annotations

import os
from pathlib import Path

from .outbox import Outbox, stable_id

PROGRESS = "academy-progress"


def spool_dir(cfg: dict) -> Path:
    return Path(cfg["hub"]["state_dir"]) / "progress-outbox" / "assessments"


def events_url(cfg: dict) -> str:
    return f"http://{cfg['hub']['hub_ip']}:{cfg['progress']['port']}/services/{PROGRESS}/api/events"


def outbox_for(cfg: dict) -> Outbox | None:
    try:
        return Outbox(spool_dir(cfg))
    except OSError:  # not root (a trainer's read-only tool): nothing to record
        return None


class ProgressEvents:
    def __init__(self, outbox: Outbox | None):
        self.outbox = outbox

    def _emit(self, kind: str, event_id: str, **fields) -> None:
        if self.outbox is not None:
            self.outbox.emit(kind, event_id=event_id, **fields)

    def released(self, course: str, assignment: str, released_at: float, due_at: float, points: float) -> None:
        self._emit("assignment_released", stable_id("released", course, assignment, released_at, due_at),
                   course=course, assignment=assignment, occurred_at=released_at,
                   payload={"due_at": due_at, "max_score": points})

    def fetched(self, user: str, course: str, assignment: str) -> None:
        self._emit("assignment_fetched", stable_id("fetched", user, course, assignment),
                   user=user, course=course, assignment=assignment)

    def submitted(self, row: dict) -> None:
        self._emit("assignment_submitted", stable_id("submitted", row["id"]), user=row["student"],
                   course=row["course"], assignment=row["assignment"], occurred_at=row["submitted_at"],
                   payload={"submission": row["id"], "late_s": row["late_s"]})

    def graded(self, sub: dict, score: float, max_score: float, key: str, grader: str | None = None) -> None:
        """A submission's score as it now counts (autograded, or after a trainer's hand-grading)."""
        if not max_score:
            return
        kind = "score_recorded" if grader else "assignment_autograded"
        payload = {"score": max(0.0, min(score, max_score)), "max_score": max_score}
        payload.update({"grader": grader} if grader else {"submission": sub["id"]})
        self._emit(kind, stable_id(kind, sub["id"], key), user=sub["student"], course=sub["course"],
                   assignment=sub["assignment"], payload=payload)

    def feedback_released(self, course: str, assignment: str, students: list[str], released_at: float) -> None:
        if self.outbox is not None and students:
            self.outbox.emit_many([{"id": stable_id("feedback", course, assignment, s, released_at),
                                    "type": "feedback_released", "user": s, "course": course,
                                    "assignment": assignment, "occurred_at": released_at, "payload": {}}
                                   for s in students])


def start_sending(cfg: dict) -> None:
    """In the exchange service: send what the CLI and the service spooled, with the service's token."""
    box = outbox_for(cfg)
    if box is not None and os.environ.get("JUPYTERHUB_API_TOKEN"):
        box.start_flusher(events_url(cfg), os.environ["JUPYTERHUB_API_TOKEN"])
