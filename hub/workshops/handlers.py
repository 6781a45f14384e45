"""The hub's workshop pages (JupyterHub ``extra_handlers``, under /hub/).

- ``/hub/workshop/join/<code>``: the join link. A pooled seat (or the attendee's own account),
  the login, and the seat's session (warm, else started), ending in JupyterLab on the notebook.
- ``/hub/workshop``: a box to type a code in.
- ``/hub/workshop/help``: the attendee lets a trainer into their session (JupyterHub sharing), or stops it.
- ``/hub/workshops`` and ``/hub/workshops/<name>``: the trainer's view: who joined, who runs,
  who is stuck, links into sessions shared with them; end now; the files' archive after the end.
- ``/hub/open?course=C&assignment=A&notebook=N``: "open in a session" for any enrolled learner.

Codes are guessed only slowly: past ``join_failures_per_minute`` wrong codes from one address,
every try is answered 429 until the minute has passed, and each refusal is logged.

A seat is taken by a browser opening the link (its navigation headers, ``Sec-Fetch-Dest:
document`` and ``Sec-Fetch-Mode: navigate``), or by the Join button of the page anything else is
shown: a chat's link preview, a mail scanner's check of every link, a script. Those would
otherwise take a seat each, and with it the seat's login, for nobody.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from jupyterhub import orm, roles, scopes
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import get_browser_protocol, url_path_join
from tornado import web

from . import accounts, tickets
from .model import CODE_RE, Workshop, is_pooled_account, normalise_code
from .profiles import workshop_of_account
from .store import Store, database_url

STUCK_AFTER_S = 90   # a start still pending this long shows as stuck on the trainer's page


class JoinLimiter:
    """Wrong codes per client address in a sliding minute."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self.failures: dict[str, collections.deque] = {}

    def _recent(self, address: str, now: float) -> collections.deque:
        q = self.failures.setdefault(address, collections.deque())
        while q and q[0] < now - 60:
            q.popleft()
        return q

    def wait_s(self, address: str, now: float | None = None) -> int:
        """Seconds this address must wait before it may try again; 0 when it may."""
        now = time.monotonic() if now is None else now
        q = self._recent(address, now)
        return int(q[0] + 60 - now) + 1 if len(q) >= self.per_minute else 0

    def fail(self, address: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        q = self._recent(address, now)
        q.append(now)
        if len(self.failures) > 10000:   # a scan from many addresses must not grow this without end
            for key in [k for k, v in self.failures.items() if not v][:5000]:
                del self.failures[key]
        return len(q)


class WorkshopContext:
    """What the handlers share, built from the config (tornado_settings['academy_workshops']).

    Plain data until first used: JupyterHub deep-copies its settings, which an engine cannot be."""

    def __init__(self, cfg: dict):
        self.url = database_url(cfg)
        self.limiter = JoinLimiter(cfg["workshops"]["join_failures_per_minute"])   # plain data: copies fine
        self.prewarm_s = cfg["workshops"]["prewarm_minutes"] * 60
        self.export_dir = Path(cfg["workshops"]["export_dir"])
        self.slurm_bin_dir = cfg["slurm"]["bin_dir"]
        self._cfg = cfg
        self._enrolment = None
        self.user_ids: dict[str, int] = {}   # seat account -> hub user id (JoinHandler.seat_user)

    @property
    def store(self) -> Store:
        return Store.shared(self.url)


    @property
    def enrolment(self):
        if self._enrolment is None:
            from assessments.exchange.store import Store as CourseStore
            self._enrolment = CourseStore.from_config(self._cfg).enrolment
        return self._enrolment


def open_url(base: str, user: str, course: str, assignment: str, notebook: str = "") -> str:
    query = urlencode({k: v for k, v in (("course", course), ("assignment", assignment), ("notebook", notebook)) if v})
    return url_path_join(base, "user", user, "academy", "open") + "?" + query


class _Base(BaseHandler):
    @property
    def ws(self) -> WorkshopContext:
        return self.settings["academy_workshops"]

    async def message(self, status: int, title: str, text: str, **extra) -> None:
        self.set_status(status)
        self.finish(await self.render_template("workshop_message.html", title=title, text=text, **extra))

    def join_groups(self, user, names: list[str]) -> None:
        have = {g.name for g in user.orm_user.groups}
        if have.issuperset(names):
            return   # a pooled seat's user was put in them when the workshop was prepared
        for name in names:
            group = orm.Group.find(self.db, name)
            if group is None:
                group = orm.Group(name=name)
                self.db.add(group)
            if group not in user.orm_user.groups:
                user.orm_user.groups.append(group)
        self.db.commit()

    def is_trainer_of(self, w: Workshop) -> bool:
        user = self.current_user
        return bool(user) and (user.admin or user.name in w.trainers)


def _local(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def browser_navigation(headers) -> bool:
    """A browser opening the link itself (Fetch Metadata, sent by every current browser), not a
    program fetching it; a browser without these headers gets the Join button."""
    return headers.get("Sec-Fetch-Dest") == "document" and headers.get("Sec-Fetch-Mode") == "navigate"


class JoinHandler(_Base):
    async def post(self, typed: str):
        """The Join button (an attendee whose visit did not look like a browser's navigation)."""
        return await self.get(typed, pressed=True)

    async def get(self, typed: str, pressed: bool = False):
        address = self.request.remote_ip
        wait = self.ws.limiter.wait_s(address)
        if wait:
            self.log.warning("workshop join: %s tried another code while blocked for %d s", address, wait)
            self.set_header("Retry-After", str(wait))
            return await self.message(429, "Too many wrong codes",
                                      f"Too many wrong workshop codes from your address. Try again in {wait} s; "
                                      "check the code on the trainer's slide.")
        code = normalise_code(typed)
        w = self.ws.store.by_code(code) if CODE_RE.match(code) else None
        if w is None:
            count = self.ws.limiter.fail(address)
            self.log.warning("workshop join: unknown code from %s (%d wrong in the last minute)", address, count)
            return await self.message(404, "No such workshop",
                                      "No workshop has this code. A code is 8 letters and digits, as on the "
                                      "trainer's slide; try again.", form=True)
        now = time.time()
        if not w.is_open(now):
            return await self.message(410, "This workshop has ended",
                                      f"The workshop '{w.title}' ended at {_local(w.ends_at)}; its code no longer "
                                      "works.")
        opens = w.starts_at - self.ws.prewarm_s
        if now < opens or (w.join == "code" and not w.prepared_at):
            return await self.message(403, "Not open yet",
                                      f"The workshop '{w.title}' opens at {_local(max(opens, now))}; "
                                      "reload this page then.")
        if w.join == "account":
            return await self._join_with_account(w)
        return await self._join_pooled(w, pressed or browser_navigation(self.request.headers))

    async def _full(self, w: Workshop):
        return await self.message(409, "This workshop is full",
                                  f"All {w.seats} seats of '{w.title}' are taken. There is no waiting list: "
                                  "ask the trainer for a seat.")

    async def _join_pooled(self, w: Workshop, attendee: bool):
        cookie = f"academy-seat-{w.name}"
        key = (self.get_secure_cookie(cookie, max_age_days=2) or b"").decode() or None
        seat = self.ws.store.seat_of_key(w.name, key) if key else None
        if seat is None and not attendee:
            if all(s["key_hash"] for s in self.ws.store.seats(w.name)):
                return await self._full(w)
            self.log.info("workshop %s: a visit without a browser's navigation (a link preview, a mail scanner?) "
                          "was shown the Join button; no seat taken", w.name)
            return await self.message(200, f"Join '{w.title}'", "Press Join to take your seat and open the "
                                      "workshop's notebook.", join_button=True)
        if seat is None:
            key = secrets.token_urlsafe(24)
            seat = self.ws.store.take_seat(w.name, key)
            if seat is None:
                return await self._full(w)
            self.log.info("workshop %s: seat %d (%s) taken", w.name, seat["number"], seat["account"])
            days = max(1 / 24, (w.ends_at - time.time()) / 86400 + 0.1)
            self.set_secure_cookie(cookie, key, expires_days=days, path=url_path_join(self.hub.base_url, "workshop"),
                                   httponly=True, samesite="Lax")
        user = self.seat_user(seat["account"])
        self.join_groups(user, [w.group, f"{w.course}-learners"])
        self.set_login_cookie(user)
        return await self._to_session(w, user)

    def seat_user(self, account: str):
        """The hub's user for a seat's account, from the hub's user cache by id when it holds it: a
        lookup by name queries the database and reloads the user's roles and groups (a sixth of a
        join's time in the hub). The seat's users are made afresh for each workshop, so the name is
        checked and a stale id falls back to the lookup by name."""
        uid = self.ws.user_ids.get(account)
        if uid is not None and uid in self.users:
            user = self.users[uid]
            if user.name == account:
                return user
        user = self.user_from_username(account)
        self.ws.user_ids[account] = user.id
        return user

    async def _join_with_account(self, w: Workshop):
        user = self.current_user
        if user is None:
            return self.redirect(url_path_join(self.hub.base_url, "login") + "?" + urlencode({"next": self.request.uri}))
        if is_pooled_account(user.name):
            return await self.message(403, "Log in with your own account",
                                      f"'{w.title}' is joined with your own account; log out of {user.name} first.")
        seat = self.ws.store.add_account_seat(w.name, user.name, secrets.token_urlsafe(24), w.seats)
        if seat is None:
            return await self._full(w)
        await asyncio.to_thread(self.ws.enrolment.add, w.course, user.name, "learner")
        self.join_groups(user, [w.group, f"{w.course}-learners"])
        # (the platform's reservation admits the course's account: reservation.create)
        return await self._to_session(w, user)

    async def _to_session(self, w: Workshop, user):
        spawner = user.spawner
        target = open_url(self.base_url, user.name, w.course, w.assignment, w.notebook)
        if spawner.ready:
            self._hand_ticket(w, user)
            return self.redirect(target)
        pending = url_path_join(self.hub.base_url, "spawn-pending", user.escaped_name) + "?" + urlencode({"next": target})
        if not spawner.pending:
            try:
                await self.spawn_single_user(user, options={"profile": w.profile, "course": w.course})
            except web.HTTPError as e:
                return await self.message(e.status_code, "Your session could not start",
                                          f"{e.log_message or e.reason} Reload this page to try again; tell the "
                                          "trainer if it goes on.")
            if spawner.ready:
                return self.redirect(target)
        return self.redirect(pending)


    def _hand_ticket(self, w: Workshop, user) -> None:
        """The session's OAuth token, made now, behind a one-time ticket cookie (see tickets.py)."""
        spawner = user.spawner
        client = self.db.query(orm.OAuthClient).filter_by(identifier=spawner.oauth_client_id).one_or_none()
        if client is None:
            return   # the ordinary OAuth redirect will do
        # What the authorize page would grant this server's client for this user, no more.
        held = roles.roles_to_scopes(roles.get_roles_for(user.orm_user))
        held |= {"inherit", *scopes.identify_scopes(), *scopes.access_scopes(client)}
        granted, _ = scopes._resolve_requested_scopes(set(client.allowed_scopes), held, user=user.orm_user,
                                                       client=client, db=self.db)
        session_id = self.get_session_cookie() or getattr(self, "_session_id", None)
        expires_in = max(60, min(int(w.ends_at - time.time()) + 600,
                                 self.settings.get("oauth_token_expires_in") or 14 * 86400))
        token = orm.APIToken.new(user=user.orm_user, oauth_client=client, scopes=sorted(granted),
                                 session_id=session_id, expires_in=expires_in)
        ticket = tickets.TICKETS.issue(user.name, token)
        # (the server's path: under subdomains the cookie never reaches it, and OAuth does the work)
        self.set_cookie(tickets.COOKIE, ticket, path=user.base_url,
                        httponly=True, samesite="Lax", expires_days=tickets.TTL_S / 86400,
                        secure=get_browser_protocol(self.request) == "https")


class TicketHandler(APIHandler):
    """``POST /hub/api/academy/join-ticket {"ticket": ...}``, from a session with its own API token:
    the OAuth token its attendee's ticket stands for (404 for any ticket not theirs, used or late)."""

    @web.authenticated
    def post(self):
        user, token = self.current_user, self.get_token()
        # JupyterHub notes each server's own token "Server at <its URL>"; no other token will do
        if token is None or token.user is None or not (token.note or "").startswith("Server at "):
            raise web.HTTPError(403, "a session's own API token is needed")
        ticket = self.get_json_body() or {}
        oauth_token = tickets.TICKETS.redeem(str(ticket.get("ticket", "")), user.name)
        if oauth_token is None:
            raise web.HTTPError(404, "no such ticket")
        self.write({"token": oauth_token})


class CodeFormHandler(_Base):
    async def get(self):
        self.finish(await self.render_template("workshop_message.html", title="Join a workshop",
                                               text="Type the code on the trainer's slide.", form=True))

    def post(self):
        code = normalise_code(self.get_body_argument("code", ""))
        self.redirect(url_path_join(self.hub.base_url, "workshop", "join", code or "-"))


class HelpHandler(_Base):
    """The attendee's consent: which trainer may open their session, given and taken back here."""

    def _workshop(self) -> Workshop | None:
        user = self.current_user
        if is_pooled_account(user.name):
            return self.ws.store.get(workshop_of_account(user.name))
        for group in user.groups:
            if group.name.startswith("workshop-"):
                w = self.ws.store.get(group.name[len("workshop-"):])
                if w is not None and w.is_open():
                    return w
        return None

    @web.authenticated
    async def get(self):
        w = self._workshop()
        if w is None or not w.is_open():
            return await self.message(404, "No workshop", "You are not in a workshop that is open now.")
        seat = self.ws.store.seat_of_account(w.name, self.current_user.name)
        self.finish(await self.render_template(
            "workshop_help.html", workshop=w, trainers=w.trainers, helper=(seat or {}).get("help_from") or "",
            minutes_left=max(0, int((w.ends_at - time.time()) // 60)), running=self.current_user.spawner.ready))

    @web.authenticated
    async def post(self):
        w = self._workshop()
        user = self.current_user
        seat = self.ws.store.seat_of_account(w.name, user.name) if w else None
        if w is None or seat is None or not w.is_open():
            return await self.message(404, "No workshop", "You are not in a workshop that is open now.")
        trainer = self.get_body_argument("trainer", "")
        spawner = user.orm_user.orm_spawners.get("")
        if seat.get("help_from"):
            helper = orm.User.find(self.db, seat["help_from"])
            if helper is not None and spawner is not None:
                orm.Share.revoke(self.db, spawner, helper)
            self.ws.store.mark(w.name, seat["number"], help_from=None)
            self.log.info("workshop %s: %s stopped sharing their session with %s", w.name, user.name, seat["help_from"])
        if trainer:
            if trainer not in w.trainers:
                return await self.message(400, "Not a trainer", f"{trainer!r} is not a trainer of this workshop; "
                                          f"its trainers: {', '.join(w.trainers) or 'none'}.")
            helper = orm.User.find(self.db, trainer)
            if helper is None or spawner is None:
                return await self.message(409, "Not now", "Your session or the trainer's account is not there yet; "
                                          "start your session and try again.")
            orm.Share.grant(self.db, spawner, helper)
            self.ws.store.mark(w.name, seat["number"], help_from=trainer)
            self.log.info("workshop %s: %s let %s into their session", w.name, user.name, trainer)
        self.redirect(url_path_join(self.hub.base_url, "workshop", "help"))


def seat_state(user) -> tuple[str, bool]:
    """(what the trainer reads, stuck) for a seat's hub user."""
    if user is None:
        return "no session", False
    spawner = user.spawner
    if spawner.ready:
        return "running", False
    if spawner.pending == "spawn":
        started = getattr(spawner, "submitted_at", 0.0)
        waited = time.monotonic() - started if started else 0
        job = getattr(spawner, "job_status", "") or "submitting"
        return f"starting ({job.lower()}, {int(waited)} s)", waited > STUCK_AFTER_S
    future = getattr(spawner, "_spawn_future", None)
    if future is not None and future.done() and future.exception() is not None:
        return f"failed: {str(future.exception())[:200]}", True
    return "no session", False


class TrainerListHandler(_Base):
    @web.authenticated
    async def get(self):
        mine = [w for w in self.ws.store.all() if self.is_trainer_of(w)]
        self.finish(await self.render_template("workshop_list.html", workshops=mine, local=_local))


class TrainerHandler(_Base):
    def _mine(self, name: str) -> Workshop:
        w = self.ws.store.get(name)
        if w is None or not self.is_trainer_of(w):
            raise web.HTTPError(404, f"You have no workshop named {name}")
        return w

    @web.authenticated
    async def get(self, name: str):
        w = self._mine(name)
        rows = []
        for seat in self.ws.store.seats(w.name):
            user = self.find_user(seat["account"])
            state, stuck = seat_state(user)
            joined = bool(seat["key_hash"])
            rows.append({"number": seat["number"], "account": seat["account"], "joined": joined,
                         "joined_at": _local(seat["joined_at"]) if seat["joined_at"] else "",
                         "state": state if (joined or state != "running") else "warm, waiting for an attendee",
                         "stuck": stuck, "help": seat["help_from"] == self.current_user.name,
                         "session_url": url_path_join(self.base_url, "user", seat["account"], "lab")})
        archive = accounts.archive_path(self.ws.export_dir, w.name)
        self.finish(await self.render_template(
            "workshop_trainer.html", workshop=w, seats=rows, joined=sum(r["joined"] for r in rows),
            running=sum(r["state"] == "running" for r in rows), stuck=sum(r["stuck"] for r in rows),
            window=f"{_local(w.starts_at)} to {_local(w.ends_at)}", export=archive.exists(),
            link=url_path_join(self.hub.base_url, "workshop", "join", w.code)))

    @web.authenticated
    async def post(self, name: str):
        w = self._mine(name)
        if self.get_body_argument("action", "") != "end":
            raise web.HTTPError(400, "the only action is 'end'")
        if w.state != "ended" and w.ends_at > time.time():
            w.ends_at = time.time()
            self.ws.store.update(w)
            self.log.info("workshop %s ended early by %s", w.name, self.current_user.name)
        self.redirect(url_path_join(self.hub.base_url, "workshops", w.name))


class ExportHandler(TrainerHandler):
    @web.authenticated
    async def get(self, name: str):
        w = self._mine(name)
        archive = accounts.archive_path(self.ws.export_dir, w.name)
        if not archive.exists():
            raise web.HTTPError(404, "The attendees' files are archived when the workshop ends (files: export).")
        self.set_header("Content-Type", "application/gzip")
        self.set_header("Content-Disposition", f'attachment; filename="workshop-{w.name}-files.tar.gz"')
        with open(archive, "rb") as f:
            while chunk := f.read(1 << 20):
                self.write(chunk)
                await self.flush()
        self.finish()


class OpenHandler(_Base):
    """``/hub/open?course=&assignment=&notebook=``: the progress page's "open in a session" link.
    A running session opens the notebook at once; otherwise the spawn form, then the notebook
    (a link never starts a session by itself)."""

    @web.authenticated
    def get(self):
        user = self.current_user
        args = {k: self.get_argument(k, "") for k in ("course", "assignment", "notebook")}
        target = open_url(self.base_url, user.name, **args)
        if user.spawner.ready:
            return self.redirect(target)
        self.redirect(url_path_join(self.hub.base_url, "spawn", user.escaped_name) + "?" + urlencode({"next": target}))


def handlers() -> list[tuple]:
    return [
        (r"/workshop/join/([^/]{1,64})", JoinHandler),
        (r"/workshop/?", CodeFormHandler),
        (r"/workshop/help", HelpHandler),
        (r"/workshops/?", TrainerListHandler),
        (r"/workshops/([a-z][a-z0-9-]{1,19})", TrainerHandler),
        (r"/workshops/([a-z][a-z0-9-]{1,19})/export", ExportHandler),
        (r"/open", OpenHandler),
        (r"/api/academy/join-ticket", TicketHandler),
    ]


TEMPLATES = str(Path(__file__).with_name("templates"))
