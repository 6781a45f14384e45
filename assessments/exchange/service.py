"""The exchange: a hub-managed service through which learners fetch, submit and read feedback, and
trainers grade (learner.py, trainer.py).

Every request is authenticated by the hub (a learner's session token or cookie); who may do
what comes from the course enrolment, checked on every request. The service also keeps the hub's
course groups in step with enrolment (gradebook/hub_groups.py) and forwards progress events.

    python -m assessments.exchange.service          (started by the hub; config in ACADEMY_SERVICE_CONFIG)
"""

from __future__ import annotations

import argparse
import logging
import os

from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.ioloop import IOLoop

from courses.catalogue import LiveCatalogue
from spawners.slurm_client import SlurmClient

from ..gradebook import hub_groups
from ..gradebook import tables as gb_tables
from ..gradebook.slurm_associations import CourseAssociations
from ..progress import emit as progress_events
from ..service import metrics
from ..service.base import SLUG, make_application, serve, service_config
from ..service.security import OAuthCallback
from .learner import AssignmentsHandler, FeedbackHandler, FilesHandler, NotFound, SubmissionsHandler
from .store import Store
from .trainer import AutogradeHandler, CoursePage, GradebookHandler, StatisticsHandler, SubmissionPage

log = logging.getLogger("academy.exchange")
AUTH_CACHE_S = 2  # seconds the hub's answer about a token is reused (0 would mean forever)
MAX_BODY = 1 << 20   # any request but a submission (forms, small JSON); SubmissionsHandler raises its own


def make_app(cfg: dict, **settings) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/academy-exchange/")
    course = rf"api/courses/({SLUG})"
    item = rf"{course}/assignments/({SLUG})"
    routes = [
        (r"api/assignments", AssignmentsHandler),
        (rf"{item}/files", FilesHandler),
        (rf"{item}/submissions", SubmissionsHandler),
        (rf"{item}/feedback", FeedbackHandler),
        (rf"{item}/autograde", AutogradeHandler),
        (rf"{item}/autograde/([^/]+)", AutogradeHandler),
        (rf"{course}/gradebook\.csv", GradebookHandler),
        (rf"{course}/statistics", StatisticsHandler),
        (rf"courses/({SLUG})", CoursePage),
        (rf"courses/({SLUG})/submissions/([0-9T]{{15}}-[0-9a-f]{{8}})", SubmissionPage),
        (r"oauth_callback", OAuthCallback),
    ]
    return make_application(
        prefix, routes, NotFound, pool_size=8,
        store=Store.from_config(cfg), cfg=cfg, slurm=SlurmClient(bin_dir=cfg["slurm"]["bin_dir"]),
        catalogue=LiveCatalogue(profiles={p["key"] for p in cfg["profiles"]}),   # a course published since start counts
        profiles={p["key"]: p for p in cfg["profiles"]}, **settings)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    cfg = service_config()
    # HubOAuthenticated handlers share this instance: a token the hub revoked (a session that
    # ended) is refused here within AUTH_CACHE_S, not JupyterHub's default 5 minutes.
    HubOAuth.instance(cache_max_age=AUTH_CACHE_S)
    app = make_app(cfg)
    store = app.settings["store"]
    metrics.register(lambda: metrics.grading_families(store.read(gb_tables.grading_by_course)))
    serve(app, MAX_BODY, log, "exchange")
    progress_events.start_sending(cfg)
    budgets = lambda: {c.id: c.gpu_budget for c in app.settings["catalogue"].values()}  # noqa: E731
    IOLoop.current().add_callback(hub_groups.keep_in_sync, app.settings["store"].enrolment,
                                  associations=CourseAssociations.from_config(cfg, budgets))
    IOLoop.current().start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
