"""The course catalogue: one YAML file per course in this folder, validated against SCHEMA.

A course file names its track, level, prerequisites, default resource profile, and its ordered
assignments (points, relative deadline, profile, runtime budget, data files). The notebooks live in
``notebooks/<course>/<assignment>/``; data files several assignments read (a corpus) live once in
``data/``, and an assignment's ``data`` list puts them beside its notebook in the release.
Errors name the file and the key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

COURSES_DIR = Path(__file__).resolve().parent
NOTEBOOKS_DIR = COURSES_DIR / "notebooks"
DATA_DIR = COURSES_DIR / "data"
log = logging.getLogger("academy.catalogue")

_id = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{1,39}$",
       "description": "lower-case letters, digits and '-', 2 to 40 characters"}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "title", "summary", "track", "level", "prerequisites", "profile", "assignments"],
    "properties": {
        "id": _id,
        "title": {"type": "string", "minLength": 3, "maxLength": 120},
        "summary": {"type": "string", "minLength": 10, "maxLength": 1000},
        "track": {"type": "string", "enum": ["hpc-engineering", "llm-engineering"],
                  "description": "hpc-engineering or llm-engineering"},
        "level": {"type": "string", "enum": ["introductory", "intermediate", "advanced"],
                  "description": "introductory, intermediate or advanced"},
        "prerequisites": {"type": "array", "items": _id, "uniqueItems": True},
        "profile": {**_id, "description": "a resource profile key from the platform config"},
        "gpu_budget": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "description": "course_gpu_hours (the whole course) and/or learner_gpu_hours (each learner), numbers > 0",
            "properties": {
                "course_gpu_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000000},
                "learner_gpu_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
            },
        },
        "assignments": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "title", "notebook", "points", "due_days", "profile", "runtime_budget_s"],
                "properties": {
                    "id": _id,
                    "title": {"type": "string", "minLength": 3, "maxLength": 120},
                    "notebook": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*\.ipynb$",
                                 "description": "a file name like tiny-gpt.ipynb"},
                    "points": {"type": "number", "exclusiveMinimum": 0},
                    "due_days": {"type": "integer", "minimum": 1, "maximum": 365,
                                 "description": "days after the course starts"},
                    "profile": {**_id, "description": "a resource profile key from the platform config"},
                    "runtime_budget_s": {"type": "integer", "minimum": 5, "maximum": 3600},
                    "data": {"type": "array", "uniqueItems": True,
                             "items": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                       "description": "a file name in courses/data/, like corpus.txt"}},
                },
            },
        },
    },
}


class CatalogueError(ValueError):
    """A course file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    notebook: str
    points: float
    due_days: int
    profile: str
    runtime_budget_s: int
    course_id: str
    data: tuple[str, ...] = ()  # file names in DATA_DIR the release puts beside the notebook

    @property
    def folder(self) -> Path:
        return NOTEBOOKS_DIR / self.course_id / self.id

    @property
    def path(self) -> Path:
        return self.folder / self.notebook

    @property
    def data_files(self) -> tuple[Path, ...]:
        return tuple(DATA_DIR / name for name in self.data)


@dataclass(frozen=True)
class GpuBudget:
    """GPU-hours a course may use in all, and each of its learners (None: no limit). Slurm holds
    them as GrpTRESMins on the course's account and on each learner's association with it."""
    course_gpu_hours: float | None = None
    learner_gpu_hours: float | None = None

    @staticmethod
    def minutes(hours: float | None) -> int | None:
        return None if hours is None else max(1, round(hours * 60))


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    summary: str
    track: str
    level: str
    prerequisites: tuple[str, ...]
    profile: str
    assignments: tuple[Assignment, ...]
    source: Path
    gpu_budget: GpuBudget = GpuBudget()


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def load_course(path: Path) -> Course:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CatalogueError(f"{path.name}: cannot read the course file: {e}") from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        hint = e.schema.get("description", "")
        raise CatalogueError(f"{path.name}: key {_key_path(e)}: {e.message}" + (f" (accepted: {hint})" if hint else ""))
    if data["id"] != path.stem:
        raise CatalogueError(f"{path.name}: key id: '{data['id']}' must match the file name '{path.stem}'")
    budget = GpuBudget(**data.get("gpu_budget", {}))
    if None not in (budget.course_gpu_hours, budget.learner_gpu_hours) and \
            budget.learner_gpu_hours > budget.course_gpu_hours:
        raise CatalogueError(f"{path.name}: key gpu_budget.learner_gpu_hours: {budget.learner_gpu_hours:g} is more "
                             f"than the whole course's {budget.course_gpu_hours:g} (accepted: at most course_gpu_hours)")
    seen = set()
    for i, a in enumerate(data["assignments"]):
        if a["id"] in seen:
            raise CatalogueError(f"{path.name}: key assignments[{i}].id: '{a['id']}' repeats an earlier assignment")
        seen.add(a["id"])
    assignments = tuple(Assignment(course_id=data["id"], **{**a, "data": tuple(a.get("data", ()))})
                        for a in data["assignments"])
    return Course(id=data["id"], title=data["title"], summary=data["summary"], track=data["track"],
                  level=data["level"], prerequisites=tuple(data["prerequisites"]), profile=data["profile"],
                  assignments=assignments, source=path, gpu_budget=budget)


def load_catalogue(directory: Path = COURSES_DIR, profiles: set[str] | None = None) -> dict[str, Course]:
    """All courses, checked together: prerequisites exist, profiles exist, notebooks exist."""
    courses = {}
    for path in sorted(directory.glob("*.yaml")):
        course = load_course(path)
        courses[course.id] = course
    for course in courses.values():
        name = course.source.name
        for i, pre in enumerate(course.prerequisites):
            if pre not in courses:
                raise CatalogueError(f"{name}: key prerequisites[{i}]: no course '{pre}' in the catalogue")
        for key, profile in [("profile", course.profile)] + [
            (f"assignments[{i}].profile", a.profile) for i, a in enumerate(course.assignments)
        ]:
            if profiles is not None and profile not in profiles:
                raise CatalogueError(f"{name}: key {key}: no resource profile '{profile}'; "
                                     f"configured: {', '.join(sorted(profiles))}")
        for i, a in enumerate(course.assignments):
            if not a.path.exists():
                raise CatalogueError(f"{name}: key assignments[{i}].notebook: {a.path} does not exist")
            for j, path in enumerate(a.data_files):
                key = f"{name}: key assignments[{i}].data[{j}]"
                if not path.is_file():
                    there = sorted(p.name for p in DATA_DIR.iterdir() if p.is_file()) if DATA_DIR.is_dir() else []
                    raise CatalogueError(f"{key}: no file {path.name} in {DATA_DIR} "
                                         f"(there: {', '.join(there) or 'nothing'})")
                if (a.folder / path.name).exists():
                    raise CatalogueError(f"{key}: {a.folder} has its own {path.name}; keep the one in {DATA_DIR}")
    return courses


def find_assignment(course_id: str, assignment_id: str, directory: Path = COURSES_DIR) -> Assignment | None:
    """The catalogue's assignment COURSE_ID/ASSIGNMENT_ID; None if there is no such course or assignment."""
    path = directory / f"{course_id}.yaml"
    if not re.fullmatch(_id["pattern"], course_id) or not path.is_file():
        return None
    return next((a for a in load_course(path).assignments if a.id == assignment_id), None)


class LiveCatalogue(Mapping):
    """The catalogue as the course files say now, for long-running services (the exchange, the
    progress service): re-read when a course file is added, changed or removed, checked at most
    every CHECK_S, so `academy course publish` of a new course or assignment is live at once,
    without a restart. A file that no longer loads leaves the last good catalogue in place (the
    error is logged once per change: `academy course validate` names it for the trainer)."""

    CHECK_S = 1.0

    def __init__(self, directory: Path = COURSES_DIR, profiles: set[str] | None = None):
        self.directory, self.profiles = directory, profiles
        self.version = 0        # bumped at each reload: what is derived from it can be cached by it
        self._stamp: tuple = ()
        self._checked = 0.0
        self._courses: dict[str, Course] = {}
        self._refresh(force=True)

    def _files_stamp(self) -> tuple:
        stamp = []
        for path in sorted(self.directory.glob("*.yaml")):
            try:
                st = path.stat()
            except FileNotFoundError:       # removed while we looked
                continue
            stamp.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.CHECK_S:
            return
        self._checked = now
        stamp = self._files_stamp()
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        try:
            courses = load_catalogue(self.directory, self.profiles)
        except CatalogueError as e:
            if force:
                raise
            log.error("the course catalogue did not reload, the last good one stays: %s", e)
            return
        if courses.keys() != self._courses.keys() or not self.version:
            log.info("course catalogue: %s", ", ".join(sorted(courses)))
        self._courses, self.version = courses, self.version + 1

    def current(self) -> dict[str, Course]:
        self._refresh()
        return self._courses

    def __getitem__(self, course_id: str) -> Course:
        return self.current()[course_id]

    def __iter__(self):
        return iter(self.current())

    def __len__(self) -> int:
        return len(self.current())
