"""``academy workshop create|list|show|end|delete``: a trainer's or operator's workshop commands (root).

``create`` makes everything a workshop needs, or nothing: the pooled accounts, their enrolment
in the course, the reservation, the records. A step that fails undoes the ones before it.
"""

from __future__ import annotations

import re
import sys
import time

from assessments.exchange.store import Store as CourseStore
from assessments.exchange.store import StoreError

from ..hub_process import public_url
from . import accounts, reservation
from .model import Workshop, WorkshopError, check_new, new_code
from .store import Store

DURATION_RE = re.compile(r"^(?:(\d{1,2})h)?(?:(\d{1,4})m)?$")


def add_parser(sub) -> None:
    ws = sub.add_parser("workshop", help="workshops: join codes, pooled accounts, pre-warmed GPU sessions")
    act = ws.add_subparsers(dest="action", required=True)
    c = act.add_parser("create", help="create a workshop (accounts, enrolment, reservation); prints its code and link")
    c.add_argument("name", help="2 to 20 lower-case letters, digits and '-' (its accounts are ws-<name>-NN)")
    c.add_argument("--title", required=True)
    c.add_argument("--course", required=True, help="the course whose assignment attendees open")
    c.add_argument("--assignment", required=True, help="a published assignment of the course")
    c.add_argument("--notebook", help="the notebook to open, a path in the assignment (default: its first)")
    c.add_argument("--profile", required=True, help="the session profile (one of workshops.profiles)")
    c.add_argument("--seats", type=int, required=True)
    c.add_argument("--start", default="now", help="'now' or a local time YYYY-MM-DDTHH:MM (default: now)")
    c.add_argument("--end", help="a local time YYYY-MM-DDTHH:MM")
    c.add_argument("--duration", help="instead of --end: e.g. 3h, 90m, 1h30m")
    c.add_argument("--reservation", default="", help="'auto' for the platform's own (embedded cluster), or the name "
                                                     "of the site's reservation; default: none")
    c.add_argument("--join", default="code", choices=["code", "account"],
                   help="code: attendees get pooled accounts; account: they log in with their own")
    c.add_argument("--files", default="export", choices=["export", "purge"],
                   help="at the end: export the attendees' files to the trainer as an archive, or purge them")
    c.add_argument("--trainer", action="append", default=[], help="a trainer who sees the workshop's page "
                                                                  "(repeat for more; admins always do)")
    act.add_parser("list", help="the workshops, their windows and seats")
    s = act.add_parser("show", help="one workshop: code, link, seats")
    s.add_argument("name")
    e = act.add_parser("end", help="end a workshop now (sessions stop, accounts locked, files exported or purged)")
    e.add_argument("name")
    d = act.add_parser("delete", help="delete an ended workshop's records and pooled accounts")
    d.add_argument("name")


def parse_time(text: str, now: float) -> float:
    if text == "now":
        return now
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            continue
    raise WorkshopError(f"time {text!r} is not accepted: 'now' or a local time such as 2026-12-09T09:00")


def parse_duration(text: str) -> float:
    m = DURATION_RE.match(text or "")
    if not text or not m or not (m.group(1) or m.group(2)):
        raise WorkshopError(f"duration {text!r} is not accepted: hours and/or minutes such as 3h, 90m or 1h30m")
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60


def join_link(cfg: dict, w: Workshop) -> str:
    return f"{public_url(cfg)}hub/workshop/join/{w.code}"


def _workshop_from_args(args, cfg: dict, course_store: CourseStore, now: float) -> Workshop:
    starts = parse_time(args.start, now)
    if bool(args.end) == bool(args.duration):
        raise WorkshopError("give the window's end: --end TIME or --duration LENGTH (one of them)")
    ends = parse_time(args.end, now) if args.end else starts + parse_duration(args.duration)
    try:
        files = course_store.release_files(args.course, args.assignment)
    except (StoreError, OSError, KeyError):
        files = {}
    notebooks = sorted(n for n in files if n.endswith(".ipynb"))
    if not notebooks:
        published = [p["assignment"] for p in course_store.publications(args.course)]
        raise WorkshopError(f"course {args.course!r} has no published assignment {args.assignment!r}; published: "
                            f"{', '.join(published) or 'none'} (academy publish {args.course} ASSIGNMENT)")
    notebook = args.notebook or notebooks[0]
    if notebook not in notebooks:
        raise WorkshopError(f"assignment {args.assignment!r} has no notebook {notebook!r}; it has: {', '.join(notebooks)}")
    w = Workshop(name=args.name, title=args.title, course=args.course, assignment=args.assignment, notebook=notebook,
                 profile=args.profile, seats=args.seats, starts_at=starts, ends_at=ends, join=args.join,
                 files=args.files, trainers=list(args.trainer), created_at=now)
    check_new(w, cfg, now)
    return w


def cmd_create(args, cfg: dict, store: Store) -> int:
    now = time.time()
    course_store = CourseStore.from_config(cfg)
    w = _workshop_from_args(args, cfg, course_store, now)
    old = store.get(w.name)
    if old is not None:
        raise WorkshopError(f"a workshop named {w.name!r} exists ({old.state}); end and delete it first, or choose "
                            "another name")
    taken = store.codes()
    while not w.code or w.code in taken:
        w.code = new_code()
    made, enrolled, reserved, associated = [], [], "", []
    try:
        made = accounts.prepare(w.accounts, cfg["workshops"]["home_root"])
        for account in w.accounts:
            if course_store.enrolment.add(w.course, account, "learner"):
                enrolled.append(account)
        associated = w.accounts
        reservation.ensure_associations(cfg, w, w.accounts)
        if args.reservation == "auto":
            if not cfg["slurm"]["manage"]:
                raise WorkshopError("--reservation auto makes one on the embedded cluster only; with slurm.manage "
                                    "false, name the site's reservation")
            reserved = reservation.create(cfg, w, w.accounts, cfg["workshops"]["prewarm_minutes"] * 60)
            w.reservation, w.reservation_owned = reserved, True
        elif args.reservation:
            reservation.check_existing(cfg["slurm"]["bin_dir"], args.reservation, w)
            w.reservation = args.reservation
        store.add(w)
    except BaseException:
        if reserved:
            reservation.delete(cfg["slurm"]["bin_dir"], reserved)
        for account in enrolled:
            course_store.enrolment.remove(w.course, account)
        reservation.remove_associations(cfg, w, associated)
        accounts.remove(made)
        raise
    print(f"workshop {w.name} created: {w.title}")
    _print_summary(cfg, w, store)
    return 0


def _print_summary(cfg: dict, w: Workshop, store: Store) -> None:
    seats = store.seats(w.name)
    taken = sum(1 for s in seats if s["key_hash"])
    print(f"  window:      {_local(w.starts_at)} to {_local(w.ends_at)} ({w.state})")
    print(f"  opens:       {w.course}/{w.notebook_path.split('/', 1)[1]} with profile {w.profile}")
    print(f"  seats:       {taken} of {w.seats} taken" + (f" (accounts {w.account(1)} ...)" if w.accounts else ""))
    print(f"  reservation: {w.reservation or 'none'}")
    print(f"  code:        {w.code}")
    print(f"  join link:   {join_link(cfg, w)}")
    print(f"  trainer page: {public_url(cfg)}hub/workshops/{w.name}")


def _local(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def cmd_list(args, cfg: dict, store: Store) -> int:
    rows = store.all()
    if not rows:
        print("no workshops")
    for w in rows:
        taken = sum(1 for s in store.seats(w.name) if s["key_hash"])
        print(f"{w.name:22} {w.state:10} {_local(w.starts_at)} to {_local(w.ends_at)}  {taken}/{w.seats} seats  "
              f"code {w.code}")
    return 0


def _find(store: Store, name: str) -> Workshop:
    w = store.get(name)
    if w is None:
        known = ", ".join(x.name for x in store.all())
        raise WorkshopError(f"no workshop named {name!r}; there are: {known or 'none'}")
    return w


def cmd_show(args, cfg: dict, store: Store) -> int:
    w = _find(store, args.name)
    print(f"workshop {w.name}: {w.title}")
    _print_summary(cfg, w, store)
    return 0


def cmd_end(args, cfg: dict, store: Store) -> int:
    w = _find(store, args.name)
    if w.state == "ended":
        print(f"workshop {w.name} has already ended")
        return 0
    w.ends_at = min(w.ends_at, time.time())
    store.update(w)
    print(f"workshop {w.name} ends now: the workshop service stops its sessions and cleans up within "
          f"{cfg['workshops']['interval']:g} s (while the hub runs)")
    return 0


def cmd_delete(args, cfg: dict, store: Store) -> int:
    w = _find(store, args.name)
    if w.state != "ended":
        raise WorkshopError(f"workshop {w.name} has not ended; `academy workshop end {w.name}` first")
    course_store = CourseStore.from_config(cfg)
    for account in w.accounts:
        course_store.enrolment.remove(w.course, account)
    reservation.remove_associations(cfg, w, w.accounts)
    accounts.remove(w.accounts)
    store.delete(w.name)
    print(f"workshop {w.name} deleted (its pooled accounts removed; progress records are kept)")
    return 0


def run(args, cfg: dict) -> int:
    handler = {"create": cmd_create, "list": cmd_list, "show": cmd_show, "end": cmd_end, "delete": cmd_delete}
    try:
        return handler[args.action](args, cfg, Store.from_config(cfg))
    except (WorkshopError, StoreError) as e:
        print(f"academy: {e}", file=sys.stderr)
        return 1
