"""Session starts and stops, recorded for the progress service (GPU-hours per learner and course).

The spawner calls the hook; this writes the event to the hub's outbox (on disk before the hook
returns) and a background thread of the hub sends it, so a progress service that is down or
slow never delays a session. Event ids derive from the Slurm job, so a retry is not a second
session.
"""

from __future__ import annotations

from dataclasses import dataclass

from assessments.progress.outbox import Outbox, stable_id

# One outbox (and one sending thread) per spool directory in this process. The hook itself holds
# only strings: traitlets copies config values, and a thread or a lock cannot be copied.
_OUTBOXES: dict[str, Outbox] = {}


@dataclass(frozen=True)
class SessionEvents:
    spool_dir: str
    url: str
    token: str
    cluster: str

    def outbox(self) -> Outbox:
        box = _OUTBOXES.get(self.spool_dir)
        if box is None:
            box = _OUTBOXES[self.spool_dir] = Outbox(self.spool_dir)
            box.start_flusher(self.url, self.token)
        return box

    def __call__(self, spawner, kind: str, fields: dict) -> None:
        fields = dict(fields)
        course = fields.pop("course", "") or None  # GPU-hours are counted for this course
        session = f"{self.cluster}-{fields['session']}"
        self.outbox().emit(kind, user=spawner.user.name, course=course, payload={**fields, "session": session},
                           event_id=stable_id(kind, session))
