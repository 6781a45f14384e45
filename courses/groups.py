"""How course enrolment shows on the hub: groups ``<course>-learners`` and ``<course>-trainers``.

The gradebook's enrolment is the authority; the hub's groups follow it (assessments.gradebook.
hub_groups) for what the hub decides by group: the spawn form's courses and profiles, roles,
other services.
"""

from __future__ import annotations

from typing import Iterable

GROUP_SUFFIXES = {"learner": "-learners", "trainer": "-trainers"}


def group_name(course: str, role: str) -> str:
    """The hub group of `course`'s members in `role` ("learner" or "trainer")."""
    return course + GROUP_SUFFIXES[role]


def course_of_group(group: str) -> str | None:
    """The course a group name belongs to, or None for any other group."""
    for suffix in GROUP_SUFFIXES.values():
        if group.endswith(suffix) and len(group) > len(suffix):
            return group[: -len(suffix)]
    return None


def courses_from_groups(groups: Iterable[str]) -> list[str]:
    """The courses a user is enrolled in (as learner or trainer), from their hub group names."""
    return sorted({course for course in map(course_of_group, groups) if course})
