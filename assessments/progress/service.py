"""The progress service: a hub-managed API over the progress database (HubOAuth).

    POST api/events                 hub services holding scope custom:academy-progress:ingest only
    GET  api/me                     the caller's own courses, assignments, scores, deadlines, GPU hours
    GET  api/users/<user>           an admin, the user themself, or a trainer (their courses only)
    GET  api/courses/<c>/cohort     a trainer of c or an admin: one row per enrolled learner
    the pages (pages.py)            the learner's, a course's cohort (plots, CSV), certificates

A grade that passes a learner's course, and a course that completes their programme track, are
recorded with the batch that carried it (completion.py); the track's certificate is issued and
signed right after (certificates.py).

Who teaches or learns what is the gradebook's enrolment (assessments.exchange.store), read on every
request like the exchange does, so a change there applies at once; admins are the hub's. A
learner cannot send events: they would be grading themselves. Every refusal is a 403 with a
JSON message, except a course the caller does not teach: a 404 like a course that does not
exist (NOT_TRAINER), so no one learns which courses exist; no valid hub token (missing, forged,
expired) is a 403 too, not a redirect.

    python -m assessments.progress.service          (started by the hub; config in ACADEMY_SERVICE_CONFIG)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthenticated, UserNotAllowed
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

import sqlalchemy as sa

from ..service.security import OAuthCallback, SecurityHeaders, redact_tornado_logs
from . import certificates, completion, db, events as ev, queries

log = logging.getLogger("academy.progress")
NAME = "academy-progress"
INGEST_SCOPE = "custom:academy-progress:ingest"
SLUG = r"[a-z0-9][a-z0-9-]{0,63}"
USER = r"[a-z_][a-z0-9_-]{0,31}"
MAX_BODY = 8 << 20
# A course the caller does not teach gets the answer a course that does not exist gets (404, this
# message), so that no one learns from the service which courses exist.
NOT_TRAINER = "no such course, or you are not one of its trainers"


def database_url(cfg: dict) -> str:
    """progress.database, or SQLite beside the hub's own state."""
    url = cfg.get("progress", {}).get("database")
    return url or f"sqlite:///{Path(cfg['hub']['state_dir']) / 'progress.sqlite'}"


def refusal(status: int, message: str, **extra) -> web.HTTPError:
    """An HTTP error whose message reaches the client as JSON (and the log verbatim, '%' included)."""
    error = web.HTTPError(status, "%s", message)
    error.extra = extra
    return error


class ApiHandler(SecurityHeaders, HubOAuthenticated, web.RequestHandler):
    def initialize(self):
        if self.settings.get("hub_auth") is not None:
            self.hub_auth = self.settings["hub_auth"]

    async def prepare(self):
        # Ask the hub who this is without blocking the event loop (HubAuthenticated's own
        # get_current_user would wait for the hub's answer in a thread, holding every request).
        model = await self.hub_auth.get_user(self, sync=False)
        self._not_allowed = None
        try:
            self._hub_auth_user_cache = self.check_hub_user(model) if model else None
        except UserNotAllowed:      # known to the hub, but without access to this service
            self._hub_auth_user_cache, self._not_allowed = None, model

    def caller(self) -> dict:
        model = self.get_current_user()
        if not model and self._not_allowed:
            raise refusal(403, f"{self._not_allowed.get('kind', 'user')} {self._not_allowed['name']} may not "
                                     f"use {NAME}: the hub grants no access:services!service={NAME}")
        if not model:
            raise refusal(403, "a valid hub token is required (none was sent, or it is unknown or expired)")
        return model

    def user_name(self) -> str:
        model = self.caller()
        if model.get("kind", "user") != "user":
            raise refusal(403, f"{model.get('kind')} {model['name']} has no learner records of its own")
        return model["name"]

    def is_admin(self) -> bool:
        model = self.caller()
        return model.get("kind", "user") == "user" and model.get("admin") is True

    def get_login_url(self):
        raise refusal(403, "a valid hub token is required")  # an API answers, never redirects

    async def read(self, fn, *args, **kwargs):
        """Run a read in the thread pool, on its own connection (the event loop stays free)."""
        def run():
            with self.settings["engine"].connect() as conn:
                return fn(conn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.settings["readers"], run)

    async def members(self, method: str, *args):
        store = self.settings["members"]
        return await asyncio.get_running_loop().run_in_executor(self.settings["readers"],
                                                                lambda: getattr(store, method)(*args))

    def write_error(self, status_code, **kwargs):
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message % exc.args if exc.args else exc.log_message
        body = {"status": status_code, "message": reason}
        body.update(getattr(exc, "extra", {}))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class EventsHandler(ApiHandler):
    async def post(self):
        model = self.caller()
        if model.get("kind") != "service" or INGEST_SCOPE not in model.get("scopes", ()):
            raise refusal(403, f"only hub services with scope {INGEST_SCOPE} may send events; "
                                     f"{model.get('kind', 'user')} {model['name']} may not")
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise refusal(400, 'the body must be JSON: {"events": [...]}')
        if not isinstance(body, dict) or set(body) != {"events"}:
            raise refusal(400, 'the body must be {"events": [...]}')
        try:
            good, bad = ev.validate_batch(body["events"])
        except ev.EventError as e:
            raise refusal(400, str(e))
        if bad:
            log.warning("%d of %d events from %s rejected, first: %s", len(bad), len(body["events"]),
                        model["name"], bad[0]["error"])
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise refusal(400, bad[0]["error"] + more + "; nothing was recorded", rejected=bad)

        def write():
            with db.write_transaction(self.settings["engine"]) as conn:
                counts = ev.ingest(conn, good, source=model["name"])
                earned = completion.record(conn, self.settings["programme"], good, time.time())
            if earned:
                try:
                    issue_certificates(self.settings)
                except Exception:  # noqa: BLE001 - the events are recorded; issuing is tried again at start
                    log.exception("certificates for %s not issued yet", earned)
            return counts
        accepted, duplicates = await asyncio.get_running_loop().run_in_executor(self.settings["writer"], write)
        self.write({"accepted": accepted, "duplicates": duplicates})


class MeHandler(ApiHandler):
    async def get(self):
        user = self.user_name()
        roles = await self.members("courses_of", user)
        self.write(await self.read(queries.learner_records, user, roles, time.time()))


class UserHandler(ApiHandler):
    async def get(self, user):
        me = self.user_name()
        roles = await self.members("courses_of", user)
        if self.is_admin() or me == user:
            only = None
        else:
            # A trainer sees this learner in the courses they teach, nothing else.
            teaches = {c for c, r in (await self.members("courses_of", me)).items() if r == "trainer"}
            only = teaches & {c for c, r in roles.items() if r == "learner"}
            if not only:
                raise refusal(403, f"{me} may not see {user}'s records: only an admin, {user}, or a trainer "
                                         f"of one of {user}'s courses may")
        self.write(await self.read(queries.learner_records, user, roles, time.time(), only))


class CohortHandler(ApiHandler):
    async def get(self, course):
        me = self.user_name()
        if not self.is_admin() and await self.members("role_of", course, me) != "trainer":
            raise refusal(404, NOT_TRAINER)
        try:
            limit = int(self.get_argument("limit", "100"))
            offset = int(self.get_argument("offset", "0"))
        except ValueError:
            raise refusal(400, "limit and offset must be whole numbers")
        if not 1 <= limit <= 1000 or offset < 0:
            raise refusal(400, "limit must be from 1 to 1000 and offset 0 or more")
        only = self.get_argument("filter", "all")
        if only not in queries.FILTERS:
            raise refusal(400, f"filter {only!r} is not one of: {', '.join(queries.FILTERS)}")
        learners = await self.members("members", course, "learner")
        self.write(await self.read(queries.cohort, course, learners, time.time(), limit=limit, offset=offset,
                                   only=only))


def issue_certificates(settings: dict) -> list[dict]:
    """Certificates for every recorded track completion without one (on the writer thread)."""
    if settings.get("signer") is None:
        return []
    with db.write_transaction(settings["engine"]) as conn:
        issued = certificates.issue_missing(conn, settings["signer"], settings["programme"], settings["verify_prefix"])
    for cert in issued:
        log.info("certificate %s issued to %s for track %s", cert["id"], cert["user"], cert["track"])
    return issued


def make_app(engine: sa.Engine, members, hub_auth=None, prefix: str | None = None,
             programme: completion.Programme | None = None, signer: certificates.Signer | None = None,
             groups=None, public_url: str = "http://127.0.0.1:8000/") -> web.Application:
    """The service's application; `members` answers role_of / courses_of / members (assessments.exchange.store.Store),
    `programme` is what completion is measured against (default: the course catalogue), `signer` signs
    certificates (None: none are issued), `groups` reads hub groups for the cohort filter (groups.HubGroups),
    `public_url` is the hub's address as users know it (printed on certificates, for verification)."""
    from . import pages      # pages build on the handlers above

    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{NAME}/")
    if programme is None:
        from courses.catalogue import load_catalogue
        programme = completion.Programme.from_catalogue(load_catalogue())
    routes = [
        (r"api/events", EventsHandler),
        (r"api/me", MeHandler),
        (rf"api/users/({USER})", UserHandler),
        (rf"api/courses/({SLUG})/cohort", CohortHandler),
        (r"oauth_callback", OAuthCallback),
        *[(pattern.format(user=USER, slug=SLUG), handler) for pattern, handler in pages.ROUTES],
    ]
    redact_tornado_logs()   # no ?token= or OAuth code in the service's log lines
    return web.Application(
        [(url_path_join(prefix, pattern), handler) for pattern, handler in routes],
        default_handler_class=pages.NotFoundPage,
        engine=engine, members=members, hub_auth=hub_auth, prefix=prefix, programme=programme, signer=signer,
        groups=groups, verify_prefix=public_url.rstrip("/") + prefix,
        # One writer: SQLite has one anyway, and PostgreSQL ingestion is serialized by a lock.
        writer=ThreadPoolExecutor(1, thread_name_prefix="progress-write"),
        readers=ThreadPoolExecutor(4, thread_name_prefix="progress-read"),
        cookie_secret=os.urandom(32),
        xsrf_cookie_kwargs={"samesite": "Lax"},
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    from assessments.exchange.store import Store  # the gradebook's enrolment
    from hub import hub_process

    from .groups import HubGroups

    cfg = json.loads(os.environ["ACADEMY_SERVICE_CONFIG"])
    url = database_url(cfg)
    db.upgrade(url)
    engine = db.engine_for(url)
    # The hub's answer about a token is kept this long; a revoked token is refused at most this late.
    hub_auth = HubOAuth.instance(cache_max_age=int(cfg.get("progress", {}).get("auth_cache_s", 60)))
    # The certificate signing key: root only, beside the hub's state, never in the database.
    signer = certificates.Signer.load_or_create(Path(cfg["hub"]["state_dir"]) / certificates.KEY_FILE)
    app = make_app(engine, Store.from_config(cfg), hub_auth, signer=signer, groups=HubGroups(),
                   public_url=hub_process.public_url(cfg))
    issue_certificates(app.settings)        # any completion recorded while no certificate could be issued
    # What start-up made (modules, matplotlib, the catalogue) lives as long as the process: out of
    # the collector's way, so a full collection during a page takes milliseconds, not a hundred.
    gc.freeze()
    service_url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    HTTPServer(app, max_body_size=MAX_BODY).listen(service_url.port, service_url.hostname)
    log.info("progress listening on %s:%d, database %s", service_url.hostname, service_url.port,
             sa.engine.make_url(db.normalize_url(url)).render_as_string())
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
