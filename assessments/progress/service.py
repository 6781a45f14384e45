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

from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.ioloop import IOLoop

import sqlalchemy as sa

from ..service import metrics
from ..service.base import SLUG, USER, ServiceHandler, make_application, refusal, serve, service_config
from ..service.security import OAuthCallback
from . import certificates, completion, db, events as ev, models, queries, slurm_usage

log = logging.getLogger("academy.progress")
NAME = "academy-progress"
INGEST_SCOPE = "custom:academy-progress:ingest"
MAX_BODY = 8 << 20
# A course the caller does not teach gets the answer a course that does not exist gets (404, this
# message), so that no one learns from the service which courses exist.
NOT_TRAINER = "no such course, or you are not one of its trainers"


def database_url(cfg: dict) -> str:
    """progress.database, or SQLite beside the hub's own state."""
    url = cfg.get("progress", {}).get("database")
    return url or f"sqlite:///{Path(cfg['hub']['state_dir']) / 'progress.sqlite'}"


class ApiHandler(ServiceHandler):
    """The progress API's base: JSON refusals, an API never redirects to a login page."""

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
        """fn(conn, *args, **kwargs) on a connection of its own, in the pool (the event loop stays free)."""
        def run():
            with self.settings["engine"].connect() as conn:
                return fn(conn, *args, **kwargs)
        return await self.in_thread(run)

    async def members(self, method: str, *args):
        """The gradebook's enrolment (Enrolment.<method>(*args)), asked in the pool."""
        return await self.in_thread(getattr(self.settings["members"], method), *args)


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
        roles = await self.members("find_courses", user)
        self.write(await self.read(queries.learner_records, user, roles, time.time()))


class UserHandler(ApiHandler):
    async def get(self, user):
        me = self.user_name()
        roles = await self.members("find_courses", user)
        if self.is_admin() or me == user:
            only = None
        else:
            # A trainer sees this learner in the courses they teach, nothing else.
            teaches = {c for c, r in (await self.members("find_courses", me)).items() if r == "trainer"}
            only = teaches & {c for c, r in roles.items() if r == "learner"}
            if not only:
                raise refusal(403, f"{me} may not see {user}'s records: only an admin, {user}, or a trainer "
                                         f"of one of {user}'s courses may")
        self.write(await self.read(queries.learner_records, user, roles, time.time(), only))


class CohortHandler(ApiHandler):
    async def get(self, course):
        me = self.user_name()
        if not self.is_admin() and await self.members("find_role", course, me) != "trainer":
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
        learners = await self.members("find_members", course, "learner")
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
    """The service's application; `members` is the gradebook's enrolment (assessments.gradebook.enrolment.Enrolment),
    `programme` is what completion is measured against (default: the course catalogue), `signer` signs
    certificates (None: none are issued), `groups` reads hub groups for the cohort filter (groups.HubGroups),
    `public_url` is the hub's address as users know it (printed on certificates, for verification)."""
    from . import pages      # pages build on the handlers above

    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{NAME}/")
    if programme is None:
        from courses.catalogue import LiveCatalogue
        programme = completion.LiveProgramme(LiveCatalogue())
    routes = [
        (r"api/events", EventsHandler),
        (r"api/me", MeHandler),
        (rf"api/users/({USER})", UserHandler),
        (rf"api/courses/({SLUG})/cohort", CohortHandler),
        (r"oauth_callback", OAuthCallback),
        *[(pattern.format(user=USER, slug=SLUG), handler) for pattern, handler in pages.ROUTES],
    ]
    return make_application(
        prefix, routes, pages.NotFoundPage, pool_size=4,
        engine=engine, members=members, hub_auth=hub_auth, programme=programme, signer=signer,
        groups=groups, verify_prefix=public_url.rstrip("/") + prefix,
        # One writer: SQLite has one anyway, and PostgreSQL ingestion is serialized by a lock.
        writer=ThreadPoolExecutor(1, thread_name_prefix="progress-write"),
    )


def gpu_seconds_by_course(engine) -> list[tuple[str, float]]:
    with engine.connect() as conn:
        gu = models.gpu_usage.c
        return [tuple(r) for r in conn.execute(sa.select(gu.course, sa.func.sum(gu.gpu_seconds)).group_by(gu.course)
                                              .order_by(gu.course))]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    from ..gradebook import db as gradebook_db
    from ..gradebook.enrolment import Enrolment
    from .groups import HubGroups

    cfg = service_config()
    url = database_url(cfg)
    db.upgrade(url)
    engine = db.engine_for(url)
    # The hub's answer about a token is kept this long; a revoked token is refused at most this late.
    hub_auth = HubOAuth.instance(cache_max_age=int(cfg.get("progress", {}).get("auth_cache_s", 60)))
    # The certificate signing key: root only, beside the hub's state, never in the database.
    signer = certificates.Signer.load_or_create(Path(cfg["hub"]["state_dir"]) / certificates.KEY_FILE)
    enrolment = Enrolment(gradebook_db.open_gradebook(gradebook_db.url_from_config(cfg)))
    app = make_app(engine, enrolment, hub_auth, signer=signer, groups=HubGroups(), public_url=cfg["hub"]["public_url"])
    issue_certificates(app.settings)        # any completion recorded while no certificate could be issued
    metrics.register(lambda: metrics.gpu_hours_family(gpu_seconds_by_course(engine)))
    # What start-up made (modules, matplotlib, the catalogue) lives as long as the process: out of
    # the collector's way, so a full collection during a page takes milliseconds, not a hundred.
    gc.freeze()
    serve(app, MAX_BODY, log, "progress")
    log.info("progress database %s", sa.engine.make_url(db.normalize_url(url)).render_as_string())
    interval, bin_dir = cfg["progress"].get("accounting_interval", 0), cfg.get("slurm", {}).get("bin_dir", "")
    if interval:  # GPU-hours from Slurm's accounting (slurm_usage.py)
        IOLoop.current().add_callback(slurm_usage.keep_reconciling, engine, interval,
                                      f"{bin_dir.rstrip('/')}/sacct" if bin_dir else "")
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
