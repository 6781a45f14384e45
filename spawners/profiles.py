"""Resource profiles: what a session may ask Slurm for, declared once and validated at start-up.

A profile is the only source of the values that reach the batch script: the learner picks a
profile *key* and a walltime inside the profile's bound, nothing else (see options.py).
Every field is checked against a strict pattern (PROFILE_SCHEMA) because it lands in an
``#SBATCH`` line; this module keeps only what a JSON schema cannot say (default <= max,
unique keys). hub/config_schema.py embeds PROFILE_SCHEMA, so the reference doc shows it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import jsonschema

# One definition of Slurm's walltime: the schemas (profiles and partitions) and parse_walltime use it.
WALLTIME_PATTERN = r"^(?:(\d{1,2})-)?(\d{1,2}):([0-5]\d):([0-5]\d)$"
WALLTIME_RE = re.compile(WALLTIME_PATTERN)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _text(pattern: str, description: str) -> dict:
    return {"type": "string", "pattern": pattern, "description": description}


PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "display", "partition", "cpus", "memory", "walltime_default", "walltime_max", "groups"],
    "properties": {
        "key": _text(r"^[a-z0-9][a-z0-9-]{0,39}$",
                     "short id, lower-case letters, digits and '-' (e.g. gpu-h200-1)"),
        "display": {"type": "string", "maxLength": 200, "pattern": r"^[^\r\n]*\S[^\r\n]*$",
                    "description": "one line of text shown on the spawn form"},
        "partition": _text(_NAME, "a Slurm partition name"),
        # gpu:<n> or gpu:<type>:<n>; a type can be a MIG slice such as 1g.18gb or h200_1g.18gb.
        "gres": {**_text(r"^(?:gpu(?::[A-Za-z0-9][A-Za-z0-9_.]{0,31})?:[1-9][0-9]?)?$",
                         "'' or gpu:<count> or gpu:<type>:<count>, e.g. gpu:h200:1 or gpu:1g.18gb:1"), "default": ""},
        "cpus": {"type": "integer", "minimum": 1, "maximum": 256,
                 "description": "a whole number of CPU cores, 1 to 256"},
        "memory": _text(r"^[1-9][0-9]{0,6}[KMGT]?$", "Slurm memory, e.g. 4G or 16000M"),
        "walltime_default": _text(WALLTIME_PATTERN, "HH:MM:SS or D-HH:MM:SS, at least one minute, "
                                                    "at most walltime_max"),
        "walltime_max": _text(WALLTIME_PATTERN, "HH:MM:SS or D-HH:MM:SS, at least one minute"),
        "reservation": {**_text(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$", "'' or a Slurm reservation name"),
                        "default": ""},
        "groups": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": _NAME},
                   "description": "a non-empty list of hub group names allowed to use the profile"},
        "max_age": {"type": "integer", "minimum": 0, "default": 0,
                    "description": "0 (no limit) or seconds after which an idle-or-not session is culled"},
        "max_jobs_per_user": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 4,
                              "description": "jobs one user may run at once with this profile's Slurm QOS "
                                             "(sessions and their own sbatch jobs together), 1 to 1000"},
    },
}
FIELDS = list(PROFILE_SCHEMA["properties"])
REQUIRED = tuple(PROFILE_SCHEMA["required"])
_VALIDATOR = jsonschema.Draft202012Validator(PROFILE_SCHEMA)


class ProfileError(ValueError):
    """A profile in the configuration is invalid; the message names the profile and the key."""


def parse_walltime(text: str) -> int:
    """Slurm walltime ``[D-]HH:MM:SS`` to seconds; ValueError if malformed."""
    m = WALLTIME_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a walltime of the form HH:MM:SS or D-HH:MM:SS")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
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
    max_jobs_per_user: int = 4

    @property
    def memory_mb(self) -> int:
        """The memory in MB, as Slurm reads it (no suffix: MB)."""
        unit = self.memory[-1] if self.memory[-1].isalpha() else "M"
        number = int(self.memory.rstrip("KMGT"))
        return max(1, {"K": number // 1024, "M": number, "G": number * 1024, "T": number * 1024 * 1024}[unit])

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


def _default(field: str) -> Any:
    return PROFILE_SCHEMA["properties"][field]["default"]


def _fail(where: str, field: str, value: Any) -> ProfileError:
    accepted = PROFILE_SCHEMA["properties"][field]["description"]
    return ProfileError(f"{where}: key '{field}' has invalid value {value!r}; accepted: {accepted}")


def _schema_error(where: str, raw: dict) -> ProfileError | None:
    """The first of PROFILE_SCHEMA's complaints, worded with the profile and the key."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        return ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted keys: {', '.join(FIELDS)}")
    missing = [f for f in REQUIRED if f not in raw]
    if missing:
        return ProfileError(f"{where}: missing key(s) {', '.join(missing)}")
    bad = {e.absolute_path[0] for e in _VALIDATOR.iter_errors(raw) if e.absolute_path}
    # Python's `$` also matches before a final newline, which would end an #SBATCH line early.
    bad |= {f for f, v in raw.items() if isinstance(v, str) and v.endswith("\n")}
    for field in FIELDS:
        if field in bad:
            return _fail(where, field, raw[field])
    return None


def parse_profile(raw: Any, index: int = 0) -> Profile:
    """Validate one profile mapping from the configuration."""
    where = f"profiles[{index}]"
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: expected a mapping with keys {', '.join(REQUIRED)}, got {type(raw).__name__}")
    if isinstance(raw.get("key"), str):
        where = f"profiles[{index}] ({raw['key']})"
    error = _schema_error(where, raw)
    if error:
        raise error
    # What the schema cannot say: walltimes as durations.
    walltimes = {field: parse_walltime(raw[field]) for field in ("walltime_default", "walltime_max")}
    for field, seconds in walltimes.items():
        if seconds < 60:
            raise ProfileError(f"{where}: key '{field}' must be at least one minute, got {raw[field]!r}")
    if walltimes["walltime_default"] > walltimes["walltime_max"]:
        raise ProfileError(
            f"{where}: key 'walltime_default' ({raw['walltime_default']}) exceeds 'walltime_max' ({raw['walltime_max']})"
        )
    return Profile(
        key=raw["key"],
        display=raw["display"],
        partition=raw["partition"],
        cpus=raw["cpus"],
        memory=raw["memory"],
        walltime_default_s=walltimes["walltime_default"],
        walltime_max_s=walltimes["walltime_max"],
        groups=tuple(raw["groups"]),
        gres=raw.get("gres", _default("gres")),
        reservation=raw.get("reservation", _default("reservation")),
        max_age_s=raw.get("max_age", _default("max_age")),
        max_jobs_per_user=raw.get("max_jobs_per_user", _default("max_jobs_per_user")),
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
