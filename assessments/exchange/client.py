"""nbgrader's exchange, spoken over HTTP to the platform's exchange service.

Installed into the session environment and selected by its nbgrader_config.py, so JupyterLab's
Assignments tab (nbgrader's own extension) lists, fetches, submits and fetches feedback through
assessments.exchange.service with the session's hub token. No shared directory: nbgrader's
default exchange needs one that every learner can write to (jupyter/nbgrader#1225).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from nbgrader.exchange.abc import (
    Exchange as ABCExchange,
    ExchangeFetchAssignment as ABCFetchAssignment,
    ExchangeFetchFeedback as ABCFetchFeedback,
    ExchangeList as ABCList,
    ExchangeSubmit as ABCSubmit,
)
from nbgrader.exchange.abc.exchange import ExchangeError

MAX_UPLOAD = 50 << 20
SKIP_DIRS = {".ipynb_checkpoints", "feedback", "__pycache__"}


def request(method: str, path: str, body: dict | None = None) -> dict:
    """One authenticated JSON call to the exchange service; ExchangeError with its message."""
    base = os.environ.get("ACADEMY_EXCHANGE_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise ExchangeError("this session has no exchange (ACADEMY_EXCHANGE_URL or its hub token is missing)")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base.rstrip('/')}/api/{path}", data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message", "")
        except ValueError:
            message = ""
        raise ExchangeError(message or f"the exchange answered {e.code}") from None
    except OSError as e:
        raise ExchangeError(f"the exchange cannot be reached: {e}") from None


def fetch_into(local: Path, course: str, assignment: str) -> list[str]:
    """The assignment's released files into LOCAL, never over a file already there (the learner's
    work); the names written."""
    files = request("GET", f"courses/{course}/assignments/{assignment}/files")["files"]
    local.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        target = local / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        written.append(name)
    return written


class Exchange(ABCExchange):
    """The shared part: one authenticated JSON call to the service."""

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            return request(method, path, body)
        except ExchangeError as e:
            self.fail(str(e))

    def local_dir(self, course: str, assignment: str) -> Path:
        return Path(self.assignment_dir, course, assignment)

    # nbgrader's Exchange.start() calls these; an HTTP exchange has nothing to prepare.
    def init_src(self):
        pass

    def init_dest(self):
        pass


def _stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


class ExchangeList(ABCList, Exchange):
    def copy_files(self):
        pass

    def start(self):
        if self.remove:
            self.fail("removing assignments from the exchange is not offered here")
        self.set_timestamp()
        course = self.coursedir.course_id or None
        items = [a for a in self.api("GET", "assignments")["assignments"]
                 if a["role"] == "learner" and (course is None or a["course"] == course)]
        return self._submitted(items) if (self.cached or self.inbound) else self._released(items)

    def _released(self, items):
        out = []
        for a in items:
            local = self.local_dir(a["course"], a["assignment"])
            fetched = local.is_dir()
            out.append({
                "course_id": a["course"], "assignment_id": a["assignment"],
                "status": "fetched" if fetched else "released",
                "path": str(local.resolve()) if fetched else f"{a['course']}/{a['assignment']}",
                "notebooks": [{"notebook_id": Path(n).stem, "path": str((local / n).resolve())}
                              for n in (sorted(p.name for p in local.glob("*.ipynb")) if fetched else a["notebooks"])],
                "due_at": _stamp(a["due_at"]),
            })
        return out

    def _submitted(self, items):
        out = []
        for a in items:
            if not a.get("submissions"):
                continue
            local = self.local_dir(a["course"], a["assignment"])
            subs = []
            for s in a["submissions"]:
                stamp = _stamp(s["submitted_at"])
                feedback_dir = local / "feedback" / stamp
                notebooks = []
                for n in a["notebooks"]:
                    path = feedback_dir / f"{Path(n).stem}.html"
                    notebooks.append({"notebook_id": Path(n).stem, "path": str(local / n),
                                      "has_local_feedback": path.is_file(),
                                      "has_exchange_feedback": a["feedback_released"] and s is a["submissions"][-1],
                                      "local_feedback_path": str(path) if path.is_file() else None,
                                      "feedback_updated": False})
                has_local = bool(notebooks) and all(n["has_local_feedback"] for n in notebooks)
                subs.append({"course_id": a["course"], "student_id": self.coursedir.student_id or "",
                             "assignment_id": a["assignment"], "timestamp": stamp, "status": "submitted",
                             "path": str(local), "notebooks": notebooks, "late_s": s["late_s"],
                             "has_local_feedback": has_local,
                             "has_exchange_feedback": all(n["has_exchange_feedback"] for n in notebooks),
                             "feedback_updated": False,
                             "local_feedback_path": str(feedback_dir) if has_local else None})
            out.append({"course_id": a["course"], "student_id": subs[0]["student_id"],
                        "assignment_id": a["assignment"], "status": "submitted", "submissions": subs})
        return out


class ExchangeFetchAssignment(ABCFetchAssignment, Exchange):
    def copy_files(self):
        course, assignment = self.coursedir.course_id, self.coursedir.assignment_id
        local = self.local_dir(course, assignment)
        if local.exists() and not self.replace_missing_files:
            self.fail(f"you already have {course}/{assignment} in {local}; rename it to fetch a fresh copy")
        try:
            fetch_into(local, course, assignment)
        except ExchangeError as e:
            self.fail(str(e))
        self.log.info("fetched %s/%s into %s", course, assignment, local)


class ExchangeSubmit(ABCSubmit, Exchange):
    def copy_files(self):
        course, assignment = self.coursedir.course_id, self.coursedir.assignment_id
        local = self.local_dir(course, assignment)
        if not local.is_dir():
            self.fail(f"there is no {local} to submit: fetch the assignment first")
        files, size = {}, 0
        for path in sorted(local.iterdir()):
            if path.name in SKIP_DIRS or path.name.startswith(".") or not path.is_file():
                continue
            data = path.read_bytes()
            size += len(data)
            if size > MAX_UPLOAD:
                self.fail(f"the assignment folder holds more than {MAX_UPLOAD >> 20} MiB; remove large files")
            files[path.name] = base64.b64encode(data).decode()
        # No student id is sent: the service stores the submission under the token's owner.
        row = self.api("POST", f"courses/{course}/assignments/{assignment}/submissions", {"files": files})
        late = f", {row['late_s'] / 3600:.1f} h after the deadline" if row["late_s"] > 0 else ""
        self.log.info("submitted %s/%s at %s%s", course, assignment, _stamp(row["submitted_at"]), late)


class ExchangeFetchFeedback(ABCFetchFeedback, Exchange):
    def copy_files(self):
        course, assignment = self.coursedir.course_id, self.coursedir.assignment_id
        subs = self.api("GET", f"courses/{course}/assignments/{assignment}/submissions")["submissions"]
        if not subs:
            self.fail(f"you have not submitted {course}/{assignment}")
        files = self.api("GET", f"courses/{course}/assignments/{assignment}/feedback")["files"]
        target = self.local_dir(course, assignment) / "feedback" / _stamp(subs[-1]["submitted_at"])
        target.mkdir(parents=True, exist_ok=True)
        for name, html in files.items():
            (target / name).write_text(html)
        self.log.info("feedback for %s/%s is in %s", course, assignment, target)


__all__ = ["ExchangeError", "Exchange", "ExchangeList", "ExchangeFetchAssignment", "ExchangeSubmit",
           "ExchangeFetchFeedback"]
