"""Roster import: a CSV of who is in a course, with a report of every row that could not be taken.

    username,role
    learner1,learner
    trainer1,trainer

``role`` is optional (learner by default). Rows are checked before anything is written; the
good rows are enrolled, the others are listed with their line number and the reason.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from ..exchange.store import Store, StoreError
from .enrolment import EnrolmentError, check_user

ROLES = ("learner", "trainer")


@dataclass
class RosterReport:
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)   # "line N: why"

    def lines(self) -> list[str]:
        out = [f"enrolled {len(self.added)}, already enrolled {len(self.unchanged)}, rejected {len(self.rejected)}"]
        out += [f"  rejected {r}" for r in self.rejected]
        return out


def parse(text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(line, user, role) rows that look right, and the rejections."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "username" not in header:
        raise StoreError(f"the roster needs a header row with a 'username' column (and optionally 'role'); "
                         f"found: {', '.join(header) or 'nothing'}")
    reader.fieldnames = header
    rows, rejected, seen = [], [], set()
    for record in reader:
        line = reader.line_num
        user = (record.get("username") or "").strip()
        role = (record.get("role") or "").strip().lower() or "learner"
        if role not in ROLES:
            rejected.append(f"line {line}: role {role!r} is not one of: {', '.join(ROLES)}")
            continue
        try:
            check_user(user)
        except EnrolmentError as e:
            rejected.append(f"line {line}: {e}")
            continue
        if user in seen:
            rejected.append(f"line {line}: {user} appears twice; the first row counts")
            continue
        seen.add(user)
        rows.append((line, user, role))
    return rows, rejected


def import_roster(store: Store, course: str, text: str) -> RosterReport:
    rows, rejected = parse(text)
    report = RosterReport(rejected=rejected)
    for _line, user, role in rows:
        (report.added if store.enrolment.add(course, user, role) else report.unchanged).append(user)
    return report
