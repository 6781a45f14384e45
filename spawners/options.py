"""Learner input to a spawn: a profile key, a walltime and the course the session is for.

``user_options`` comes from the spawn form *or* straight from the REST API body, so it is
untrusted data of any shape. It is reduced here to a :class:`SessionRequest` built only from
the configured profile; the raw dict never reaches the batch-script template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .profiles import Profile, format_walltime

ACCEPTED_KEYS = ("profile", "walltime", "course")
MINUTES_RE = re.compile(r"^[0-9]{1,5}$")


class OptionsError(ValueError):
    """The learner's options were refused; the message says what was wrong and what is accepted."""


@dataclass(frozen=True)
class SessionRequest:
    profile: Profile
    walltime_s: int
    course: str = ""  # "" = own work, outside any course; otherwise one of the user's courses

    @property
    def walltime(self) -> str:
        return format_walltime(self.walltime_s)

    def as_user_options(self) -> dict[str, Any]:
        """The normalised options, as they are stored for the next start."""
        return {"profile": self.profile.key, "walltime": self.walltime_s // 60, "course": self.course}


def _single(value: Any, name: str) -> Any:
    # Form posts arrive as lists of strings; exactly one value is meaningful.
    if isinstance(value, list):
        if len(value) != 1:
            raise OptionsError(f"'{name}' must have exactly one value, got {len(value)}")
        return value[0]
    return value


def validate_user_options(raw: Any, allowed: Iterable[Profile], courses: Iterable[str] = ()) -> SessionRequest:
    """Turn untrusted ``user_options`` into a request within the profiles this user may use.

    ``allowed`` must already be filtered by the user's groups: a key outside it is refused
    exactly like an unknown key, so a learner cannot probe for other groups' profiles.
    ``courses`` are the courses the user is enrolled in (from their hub groups); the session's
    GPU time is counted for the course chosen, so a course outside them is refused.
    """
    allowed = list(allowed)
    if not allowed:
        raise OptionsError("No session profile is available to your groups; ask a trainer to enrol you in a course.")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise OptionsError(f"Options must be an object with the keys {', '.join(ACCEPTED_KEYS)}")
    unknown = sorted(str(k) for k in raw if k not in ACCEPTED_KEYS)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise OptionsError(f"Unknown option(s) {shown}; accepted options: {', '.join(ACCEPTED_KEYS)}")

    by_key = {p.key: p for p in allowed}
    key = _single(raw.get("profile", allowed[0].key), "profile")
    if not isinstance(key, str) or key not in by_key:
        shown = repr(key[:40]) if isinstance(key, str) else type(key).__name__
        raise OptionsError(f"Profile {shown} is not available to you; choose one of: {', '.join(by_key)}")
    profile = by_key[key]

    course = _course(_single(raw.get("course", ""), "course"), sorted(set(courses)))
    max_min = profile.walltime_max_s // 60
    walltime = _single(raw.get("walltime", None), "walltime")
    if walltime is None or walltime == "":
        return SessionRequest(profile, profile.walltime_default_s, course)
    if isinstance(walltime, str) and MINUTES_RE.match(walltime):
        minutes = int(walltime)
    elif isinstance(walltime, int) and not isinstance(walltime, bool):
        minutes = walltime
    else:
        raise OptionsError(f"Walltime must be a whole number of minutes from 1 to {max_min} for profile '{key}'")
    if not 1 <= minutes <= max_min:
        raise OptionsError(f"Walltime {minutes} min is outside 1 to {max_min} minutes allowed for profile '{key}'")
    return SessionRequest(profile, minutes * 60, course)


def _course(value: Any, courses: list[str]) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str) and value in courses:
        return value
    shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
    choices = f"one of: {', '.join(courses)}, or none" if courses else "none (you are not enrolled in a course)"
    raise OptionsError(f"Course {shown} is not one of your courses; choose {choices}")
