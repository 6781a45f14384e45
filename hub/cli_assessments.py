"""Trainer commands of the `academy` CLI: publish, enrol, grade, release feedback, export grades."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from assessments.exchange import feedback
from assessments.gradebook import export, roster
from assessments.grading import batch as autograde
from assessments.exchange.store import Store, StoreError
from assessments.gradebook.enrolment import EnrolmentError
from courses.catalogue import CatalogueError, load_catalogue
from spawners.profiles import parse_profile
from spawners.slurm_client import SlurmClient, SlurmError


def add_parsers(sub) -> None:
    p = sub.add_parser("publish", help="build and publish assignments (learners can fetch them)")
    p.add_argument("course")
    p.add_argument("assignments", nargs="*", help="assignment ids (default: all of the course)")
    p = sub.add_parser("enrol", help="add users to a course")
    p.add_argument("course")
    p.add_argument("users", nargs="+")
    p.add_argument("--trainer", action="store_true", help="as trainers (default: learners)")
    p = sub.add_parser("unenrol", help="remove users from a course (their access ends at once)")
    p.add_argument("course")
    p.add_argument("users", nargs="+")
    p = sub.add_parser("roster", help="enrol from a CSV file (columns: username[,role])")
    p.add_argument("course")
    p.add_argument("csv_file")
    p = sub.add_parser("members", help="who is in a course")
    p.add_argument("course")
    p = sub.add_parser("grade", help="autograde the latest submissions as a Slurm job array, with progress")
    p.add_argument("course")
    p.add_argument("assignment")
    p.add_argument("--regrade", action="store_true", help="grade submissions that already have a result again")
    p = sub.add_parser("feedback", help="release feedback for an assignment (hidden tests removed)")
    p.add_argument("course")
    p.add_argument("assignment")
    p = sub.add_parser("gradebook", help="export the gradebook as CSV (and per-assignment statistics)")
    p.add_argument("course")
    p.add_argument("--out", help="write the CSV here (default: standard output)")
    p.add_argument("--stats", action="store_true", help="print per-assignment statistics as JSON instead")


COMMANDS = ("publish", "enrol", "unenrol", "roster", "members", "grade", "feedback", "gradebook")


def run(args, cfg: dict) -> int:
    try:
        catalogue = load_catalogue(profiles={p["key"] for p in cfg["profiles"]})
        if args.course not in catalogue:
            raise StoreError(f"no course {args.course!r}; the catalogue has: {', '.join(catalogue)}")
        course = catalogue[args.course]
        store = Store.from_config(cfg)
        return HANDLERS[args.command](args, cfg, store, course)
    except (StoreError, EnrolmentError, CatalogueError, SlurmError) as e:
        print(f"academy: {e}", file=sys.stderr)
        return 1


def _assignment(course, assignment_id: str):
    for a in course.assignments:
        if a.id == assignment_id:
            return a
    raise StoreError(f"course {course.id} has no assignment {assignment_id!r}; it has: "
                     f"{', '.join(a.id for a in course.assignments)}")


def cmd_publish(args, cfg, store, course) -> int:
    for a in [_assignment(course, x) for x in args.assignments] or list(course.assignments):
        pub = store.publish(a)
        due = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(pub["due_at"]))
        print(f"published {course.id}/{a.id} ({a.points:g} points), due {due}")
    return 0


def cmd_enrol(args, cfg, store, course) -> int:
    role = "trainer" if args.trainer else "learner"
    for user in args.users:
        changed = store.enrolment.add(course.id, user, role)
        print(f"{user}: {'enrolled as ' + role if changed else 'already a ' + role} in {course.id}")
    return 0


def cmd_unenrol(args, cfg, store, course) -> int:
    for user in args.users:
        print(f"{user}: {'removed from' if store.enrolment.remove(course.id, user) else 'was not in'} {course.id}")
    return 0


def cmd_roster(args, cfg, store, course) -> int:
    try:
        text = Path(args.csv_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"cannot read the roster {args.csv_file}: {e}")
    report = roster.import_roster(store, course.id, text)
    print("\n".join(report.lines()))
    return 1 if report.rejected else 0


def cmd_members(args, cfg, store, course) -> int:
    for role in ("trainer", "learner"):
        print(f"{role}s: {', '.join(store.enrolment.find_members(course.id, role)) or '-'}")
    return 0


def cmd_grade(args, cfg, store, course) -> int:
    a = _assignment(course, args.assignment)
    profiles = {p["key"]: p for p in cfg["profiles"]}
    profile = parse_profile(profiles[a.profile])
    slurm = SlurmClient(bin_dir=cfg["slurm"]["bin_dir"])

    async def go() -> int:
        batch = await autograde.start(store, cfg, a, profile, slurm, regrade=args.regrade)
        if batch is None:
            print(f"nothing to grade: every submission of {course.id}/{a.id} has a result (--regrade to redo them)")
            return 0
        print(f"grading {len(batch.submissions)} submission(s) of {course.id}/{a.id}: Slurm job {batch.job_id}",
              flush=True)
        last = ""
        while True:
            progress = await autograde.progress(batch, slurm)
            if progress.line() != last:
                last = progress.line()
                print(last, flush=True)
            if progress.done:
                break
            await asyncio.sleep(1)
        for r in autograde.collect(store, batch):
            verdict = f"error: {r['error'].strip().splitlines()[-1]}" if r["error"] else f"{r['score']:g}/{r['max_score']:g}"
            print(f"  {r['student']:<12} {verdict}")
        return 0

    return asyncio.run(go())


def cmd_feedback(args, cfg, store, course) -> int:
    a = _assignment(course, args.assignment)
    n = feedback.release(store, course.id, a.id, a.title)
    print(f"feedback for {course.id}/{a.id} released to {n} learner(s)")
    return 0


def cmd_gradebook(args, cfg, store, course) -> int:
    if args.stats:
        print(json.dumps(export.statistics_by_assignment(store, course.id), indent=2))
        return 0
    text = export.gradebook_csv(store, course.id)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


HANDLERS = {"publish": cmd_publish, "enrol": cmd_enrol, "unenrol": cmd_unenrol, "roster": cmd_roster,
            "members": cmd_members, "grade": cmd_grade, "feedback": cmd_feedback, "gradebook": cmd_gradebook}
