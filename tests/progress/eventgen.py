"""Events as the platform's parts would send them: a cohort working through a course."""

from __future__ import annotations

import random
import uuid

NAMESPACE = uuid.UUID("6f1c2d1e-9a55-4c1b-8a57-2c3f1f0e4b10")
T0 = 1_767_225_600.0            # 2026-01-01
COURSES = ("llm-101", "hpc-101")
ASSIGNMENTS = ("tokenization", "attention", "sampling", "mpi-hello", "roofline")


def event_id(*parts) -> str:
    """A stable id, so a test knows which events a batch holds without reading them back."""
    return str(uuid.uuid5(NAMESPACE, "/".join(map(str, parts))))


def random_events(n: int, seed, users: int = 40, sessions: int = 30) -> list[dict]:
    """n valid events of every type, overlapping on learners, assignments and sessions."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user, course = f"learner{rng.randrange(users)}", rng.choice(COURSES)
        assignment, t = rng.choice(ASSIGNMENTS), T0 + rng.uniform(0, 30 * 86400)
        kind = rng.choices(
            ["assignment_released", "assignment_fetched", "assignment_submitted", "assignment_autograded",
             "score_recorded", "feedback_released", "session_started", "session_stopped", "course_completed",
             "track_completed"], weights=[2, 20, 20, 15, 4, 8, 8, 8, 2, 1])[0]
        e = {"id": event_id(seed, i), "type": kind, "occurred_at": round(t, 3)}
        if kind == "assignment_released":
            e.update(course=course, assignment=assignment,
                     payload={"due_at": T0 + rng.randrange(5, 40) * 86400, "max_score": float(rng.choice([10, 20]))})
        elif kind in ("assignment_autograded", "score_recorded"):
            top = float(rng.choice([10, 20]))
            e.update(user=user, course=course, assignment=assignment,
                     payload={"score": round(rng.uniform(0, top), 2), "max_score": top})
        elif kind.startswith("assignment_") or kind == "feedback_released":
            e.update(user=user, course=course, assignment=assignment)
        elif kind.startswith("session_"):
            session = f"slurm-{rng.randrange(sessions)}"
            # A session belongs to one learner; course and length as the spawner reports them.
            srng = random.Random(session)
            e.update(user=f"learner{srng.randrange(users)}", payload={
                "session": session, "profile": "gpu-h200-1", "gpus": srng.choice([0, 1, 2])})
            if srng.random() < 0.7:
                e["course"] = srng.choice(COURSES)
            if kind == "session_stopped":
                e["payload"]["duration_s"] = float(rng.randrange(60, 7200))
        elif kind == "course_completed":
            e.update(user=user, course=course)
        else:
            e.update(user=user, payload={"track": rng.choice(["llm-engineering", "hpc-engineering"])})
        out.append(e)
    return out
