"""Resource profiles: what a session may ask Slurm for, declared once and validated at start-up.

A profile is the only source of the values that reach the batch script: the learner picks a
profile *key* and a walltime inside the profile's bound, nothing else (see options.py).
Every field is checked against a strict pattern here because it lands in an ``#SBATCH`` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# gpu:<n> or gpu:<type>:<n>; a type can be a MIG slice such as 1g.18gb or h200_1g.18gb.
GRES_RE = re.compile(r"^gpu(?::[A-Za-z0-9][A-Za-z0-9_.]{0,31})?:[1-9][0-9]?$")
MEMORY_RE = re.compile(r"^[1-9][0-9]{0,6}[KMGT]?$")
WALLTIME_RE = re.compile(r"^(?:(\d{1,2})-)?(\d{1,2}):(\d{2}):(\d{2})$")
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

FIELDS = {
    "key": "short id, lower-case letters, digits and '-' (e.g. gpu-h200-1)",
    "display": "one line of text shown on the spawn form",
    "partition": "a Slurm partition name",
    "gres": "'' or gpu:<count> or gpu:<type>:<count>, e.g. gpu:h200:1 or gpu:1g.18gb:1",
    "cpus": "a whole number of CPU cores, 1 to 256",
    "memory": "Slurm memory, e.g. 4G or 16000M",
    "walltime_default": "HH:MM:SS or D-HH:MM:SS",
    "walltime_max": "HH:MM:SS or D-HH:MM:SS",
    "reservation": "'' or a Slurm reservation name",
    "groups": "a non-empty list of hub group names allowed to use the profile",
    "max_age": "0 (no limit) or seconds after which an idle-or-not session is culled",
}
REQUIRED = ("key", "display", "partition", "cpus", "memory", "walltime_default", "walltime_max", "groups")


class ProfileError(ValueError):
    """A profile in the configuration is invalid; the message names the profile and the key."""


def parse_walltime(text: str) -> int:
    """Slurm walltime ``[D-]HH:MM:SS`` to seconds; ValueError if malformed."""
    m = WALLTIME_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a walltime of the form HH:MM:SS or D-HH:MM:SS")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} has minutes or seconds above 59")
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def format_walltime(seconds: int) -> str:
    """Seconds to the ``[D-]HH:MM:SS`` form sbatch accepts."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


@dataclass(frozen=True)
class Profile:
    key: str
    display: str
    partition: str
    cpus: int
    memory: str
    walltime_default_s: int
    walltime_max_s: int
    groups: tuple[str, ...]
    gres: str = ""
    reservation: str = ""
    max_age_s: int = 0

    @property
    def gpus(self) -> int:
        """Number of GPUs (or GPU slices) the profile requests."""
        return int(self.gres.rsplit(":", 1)[1]) if self.gres else 0

    def allows(self, user_groups: Iterable[str]) -> bool:
        return bool(set(self.groups) & set(user_groups))

    def as_public_dict(self) -> dict[str, Any]:
        """What the spawn form and the API show a learner about this profile."""
        return {
            "key": self.key,
            "display": self.display,
            "partition": self.partition,
            "gres": self.gres,
            "gpus": self.gpus,
            "cpus": self.cpus,
            "memory": self.memory,
            "walltime_default_min": self.walltime_default_s // 60,
            "walltime_max_min": self.walltime_max_s // 60,
            "reservation": self.reservation,
        }


def _fail(where: str, field: str, value: Any) -> ProfileError:
    return ProfileError(f"{where}: key '{field}' has invalid value {value!r}; accepted: {FIELDS[field]}")


def parse_profile(raw: Any, index: int = 0) -> Profile:
    """Validate one profile mapping from the configuration."""
    where = f"profiles[{index}]"
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: expected a mapping with keys {', '.join(REQUIRED)}, got {type(raw).__name__}")
    if isinstance(raw.get("key"), str):
        where = f"profiles[{index}] ({raw['key']})"
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted keys: {', '.join(FIELDS)}")
    missing = [f for f in REQUIRED if f not in raw]
    if missing:
        raise ProfileError(f"{where}: missing key(s) {', '.join(missing)}")

    def text(field: str, pattern: re.Pattern | None, optional: bool = False) -> str:
        value = raw.get(field, "")
        if not isinstance(value, str) or (optional and value == ""):
            if optional and value == "":
                return ""
            raise _fail(where, field, value)
        if pattern is not None and not pattern.match(value):
            raise _fail(where, field, value)
        return value

    key = text("key", KEY_RE)
    display = text("display", None)
    if not display.strip() or "\n" in display or "\r" in display or len(display) > 200:
        raise _fail(where, "display", display)
    cpus = raw["cpus"]
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 256:
        raise _fail(where, "cpus", cpus)
    walltimes = {}
    for field in ("walltime_default", "walltime_max"):
        try:
            walltimes[field] = parse_walltime(raw[field])
        except ValueError:
            raise _fail(where, field, raw[field]) from None
        if walltimes[field] < 60:
            raise ProfileError(f"{where}: key '{field}' must be at least one minute, got {raw[field]!r}")
    if walltimes["walltime_default"] > walltimes["walltime_max"]:
        raise ProfileError(
            f"{where}: key 'walltime_default' ({raw['walltime_default']}) exceeds 'walltime_max' ({raw['walltime_max']})"
        )
    groups = raw["groups"]
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) and GROUP_RE.match(g) for g in groups):
        raise _fail(where, "groups", groups)
    max_age = raw.get("max_age", 0)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise _fail(where, "max_age", max_age)
    return Profile(
        key=key,
        display=display,
        partition=text("partition", NAME_RE),
        cpus=cpus,
        memory=text("memory", MEMORY_RE),
        walltime_default_s=walltimes["walltime_default"],
        walltime_max_s=walltimes["walltime_max"],
        groups=tuple(groups),
        gres=text("gres", GRES_RE, optional=True),
        reservation=text("reservation", NAME_RE, optional=True),
        max_age_s=max_age,
    )


def parse_profiles(raw: Any) -> list[Profile]:
    """Validate the whole profile list: each profile, and unique keys."""
    if not isinstance(raw, list) or not raw:
        raise ProfileError("profiles: expected a non-empty list of profiles")
    profiles = [parse_profile(p, i) for i, p in enumerate(raw)]
    seen: set[str] = set()
    for i, p in enumerate(profiles):
        if p.key in seen:
            raise ProfileError(f"profiles[{i}] ({p.key}): key 'key' repeats an earlier profile; keys must be unique")
        seen.add(p.key)
    return profiles


def profiles_for_groups(profiles: Iterable[Profile], user_groups: Iterable[str]) -> list[Profile]:
    """The profiles a user in these groups may start, in configuration order."""
    groups = set(user_groups)
    return [p for p in profiles if p.allows(groups)]
