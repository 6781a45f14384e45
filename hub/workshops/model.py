"""What a workshop is, and the checks a new one passes before anything of it is made."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field

from spawners.profiles import format_walltime, parse_profiles

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,19}$")
# No 0/O, 1/I/L: a code is read off a slide and typed.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_RE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
JOIN_POLICIES = ("code", "account")
FILE_POLICIES = ("export", "purge")
MAX_WINDOW_S = 24 * 3600


class WorkshopError(ValueError):
    """A workshop request was refused; the message names what was wrong and what is accepted."""


@dataclass
class Workshop:
    name: str
    title: str
    course: str
    assignment: str
    notebook: str             # path inside the assignment, e.g. "tensors.ipynb"
    profile: str              # a profile key (workshops.profiles)
    seats: int
    starts_at: float          # epoch seconds
    ends_at: float
    reservation: str = ""     # Slurm reservation name; "" for none
    reservation_owned: bool = False   # made by the platform (deleted at the end)
    join: str = "code"        # "code": pooled accounts; "account": attendees log in with their own
    files: str = "export"     # at the end: "export" (archive for the trainer, then wipe) or "purge"
    trainers: list[str] = field(default_factory=list)
    code: str = ""
    state: str = "scheduled"  # scheduled -> ended
    created_at: float = 0.0
    prepared_at: float = 0.0  # when the service made the seats' hub users afresh (joining opens then)

    @property
    def group(self) -> str:
        """The hub group of its attendees: the cohort of the progress pages."""
        return f"workshop-{self.name}"

    def account(self, seat: int) -> str:
        return pooled_account(self.name, seat, self.seats)

    @property
    def accounts(self) -> list[str]:
        return [self.account(n) for n in range(1, self.seats + 1)] if self.join == "code" else []

    def is_open(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.state != "ended" and now < self.ends_at

    @property
    def notebook_path(self) -> str:
        """Where the fetched notebook is in the attendee's home (nbgrader's path_includes_course)."""
        return f"{self.course}/{self.assignment}/{self.notebook}"


def pooled_account(workshop: str, seat: int, seats: int) -> str:
    width = max(2, len(str(seats)))
    return f"ws-{workshop}-{seat:0{width}d}"


def is_pooled_account(name: str) -> bool:
    return bool(re.match(r"^ws-[a-z][a-z0-9-]{1,19}-[0-9]{2,3}$", name))


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    """What a person typed, as a code: case and dashes and spaces do not matter."""
    return re.sub(r"[\s-]", "", text or "").upper()[:32]


def check_new(w: Workshop, cfg: dict, now: float | None = None) -> None:
    """Raise WorkshopError for the first thing wrong with a workshop to be created."""
    now = time.time() if now is None else now
    settings = cfg["workshops"]
    if not NAME_RE.match(w.name or ""):
        raise WorkshopError(f"workshop name {w.name!r} is not accepted: 2 to 20 characters, lower-case letters, digits "
                            "and '-', starting with a letter (it becomes part of the pooled accounts' names)")
    if not w.title.strip() or len(w.title) > 120:
        raise WorkshopError("the title must be 1 to 120 characters")
    if w.join not in JOIN_POLICIES:
        raise WorkshopError(f"join policy {w.join!r} is not accepted; choose one of: {', '.join(JOIN_POLICIES)}")
    if w.files not in FILE_POLICIES:
        raise WorkshopError(f"files policy {w.files!r} is not accepted; choose one of: {', '.join(FILE_POLICIES)}")
    if not 1 <= w.seats <= settings["max_seats"]:
        raise WorkshopError(f"{w.seats} seats is not accepted: 1 to {settings['max_seats']} (workshops.max_seats)")
    if w.ends_at <= now:
        raise WorkshopError(f"the window ends in the past ({_when(w.ends_at)}); give an end after now ({_when(now)})")
    if w.ends_at <= w.starts_at:
        raise WorkshopError("the window ends before it starts; give --end after --start")
    if w.ends_at - w.starts_at > MAX_WINDOW_S:
        raise WorkshopError("the window is longer than 24 hours; make one workshop per day")
    if w.profile not in settings["profiles"]:
        raise WorkshopError(f"profile {w.profile!r} may not be used by a workshop; accepted: "
                            f"{', '.join(settings['profiles']) or 'none'} (workshops.profiles in the config)")
    profiles = {p.key: p for p in parse_profiles(cfg["profiles"])}
    if w.profile not in profiles:
        raise WorkshopError(f"profile {w.profile!r} is in workshops.profiles but not among the profiles; accepted: "
                            f"{', '.join(profiles)}")
    window = w.ends_at - max(now, w.starts_at)
    if profiles[w.profile].walltime_max_s < window:
        raise WorkshopError(f"profile {w.profile!r} allows sessions of at most {format_walltime(profiles[w.profile].walltime_max_s)}, "
                            f"shorter than the workshop's window ({_duration(window)}); choose a profile that covers "
                            "it or a shorter window")
    for user in w.trainers:
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", user) or is_pooled_account(user):
            raise WorkshopError(f"trainer {user!r} is not a user name")
    if not re.match(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_. -]+)*\.ipynb$", w.notebook) or ".." in w.notebook:
        raise WorkshopError(f"notebook {w.notebook!r} is not accepted: a path inside the assignment ending in .ipynb")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"
