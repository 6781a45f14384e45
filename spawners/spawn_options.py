"""SpawnOptions: the Spawner hooks through which a learner asks for a session, each reduced to a
validated SessionRequest (options.py) before the spawner sees it.

The spawn form offers only the profiles the learner's groups allow; the form's POST and the REST
API's body both go through ``validate_user_options``; a link (GET /hub/spawn?...) starts nothing.
AcademySlurmSpawner (slurm_spawner.py) takes its request from ``session_request`` alone.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from tornado import web
from traitlets import Any, Dict, HasTraits, List, TraitError, default, validate

from courses.groups import courses_from_groups

from . import metrics
from .options import OptionsError, SessionRequest, validate_user_options
from .profiles import Profile, ProfileError, parse_profiles, profiles_for_groups

_html = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True,
                    undefined=StrictUndefined)

QUERY_SPAWN_REFUSED = ("A link cannot start a session: nothing was started. To start one, choose a profile and a "
                       "session length below and press Start.")


class SessionError(web.HTTPError):
    """A session could not start; the message is for the learner, shown as-is by the hub."""

    def __init__(self, message: str, status_code: int = 500):
        # tornado %-formats log_message when shown: escape so a log line's '%' survives.
        super().__init__(status_code, message.replace("%", "%%"))
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpawnOptions(HasTraits):
    """Mixin for a JupyterHub Spawner with resource profiles: its form, option parsers and
    ``apply_user_options``."""

    profiles = List(
        Dict(),
        help="Resource profiles: list of mappings validated by spawners.profiles.parse_profile.",
    ).tag(config=True)

    profile_grants = Any(
        None, allow_none=True,
        help="Called as hook(user name, group names) -> None, or (profiles, exclusive, refusal): profiles granted "
             "beyond the groups' (a workshop's, hub/workshops/profiles.py), replacing those of the same key; "
             "exclusive: the user has only these; refusal: why there are none now (shown as the start's error).",
    ).tag(config=True)

    session_request: SessionRequest | None = None  # the validated options of the start in progress

    @validate("profiles")
    def _validate_profiles(self, proposal):
        try:
            parse_profiles(proposal["value"])
        except ProfileError as e:
            raise TraitError(str(e)) from None
        return proposal["value"]

    @default("options_form")
    def _options_form_default(self):
        return self._render_options_form

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return SpawnOptions._apply_options

    @property
    def parsed_profiles(self) -> list[Profile]:
        return parse_profiles(self.profiles)

    def user_groups(self) -> list[str]:
        return [g.name for g in getattr(self.user, "groups", [])]

    def _grants(self):
        return self.profile_grants(self.user.name, self.user_groups()) if self.profile_grants else None

    def allowed_profiles(self) -> list[Profile]:
        grants = self._grants()
        if grants is None:
            return profiles_for_groups(self.parsed_profiles, self.user_groups())
        granted, exclusive, _ = grants
        if exclusive:
            return list(granted)
        keys = {p.key for p in granted}
        return [*granted, *(p for p in profiles_for_groups(self.parsed_profiles, self.user_groups()) if p.key not in keys)]

    def user_courses(self) -> list[str]:
        return courses_from_groups(self.user_groups())

    async def cluster_views(self, profiles: list[Profile]) -> dict[str, dict]:
        """{profile key: free GPUs, starts now, waiting ahead}; none without a scheduler to ask."""
        return {}

    async def account_state(self, courses: list[str]) -> dict:
        """{"budgets": the user's GPU budgets (gpu_budget.Budget) on these courses and own work,
        "held": their jobs the scheduler holds for a limit, as (job id, name, reason in words)}."""
        return {"budgets": [], "held": []}

    async def budget_refusal(self, request: SessionRequest) -> str | None:
        """Why the session's GPU budget cannot cover it, with the numbers; None when it can."""
        return None

    async def _validated(self, options: dict) -> SessionRequest:
        """The request, or SessionError naming what is wrong (an option, or the GPU budget)."""
        grants = self._grants()
        if grants is not None and grants[1] and not grants[0]:
            metrics.SESSION_STARTS.labels("invalid", "refused").inc()
            raise SessionError(grants[2], 403)
        try:
            request = validate_user_options(options, self.allowed_profiles(), self.user_courses())
        except OptionsError as e:
            # not the profile asked for as a label: a learner's string would make a series of its own
            metrics.SESSION_STARTS.labels("invalid", "refused").inc()
            raise SessionError(str(e), 400) from None
        refusal = await self.budget_refusal(request)
        if refusal:
            metrics.SESSION_STARTS.labels(request.profile.key, "refused").inc()
            raise SessionError(f"Not started: {refusal}", 403)
        return request

    async def _render_options_form(self, spawner=None):
        allowed = self.allowed_profiles()
        previous = self.orm_spawner.user_options if self.orm_spawner is not None else None
        previous = previous if isinstance(previous, dict) else {}
        selected = previous.get("profile")
        if selected not in {p.key for p in allowed}:
            selected = allowed[0].key if allowed else None
        courses = self.user_courses()
        # The last course chosen, else the only one: most learners have one course at a time.
        course = previous.get("course") if previous.get("course") in courses else (courses[0] if len(courses) == 1 else "")
        return _html.get_template("spawn_form.html.j2").render(
            profiles=[p.as_public_dict() for p in allowed], selected=selected, courses=courses, course=course,
            views=await self.cluster_views(allowed), account=await self.account_state(courses),
        )

    async def options_from_form(self, formdata):
        # Form fields are lists of strings; validate now so the form shows the error
        # (JupyterHub awaits this when it is a coroutine).
        options = {k: v for k, v in formdata.items() if not k.startswith("_")}
        return (await self._validated(options)).as_user_options()

    def options_from_query(self, query_data):
        # JupyterHub starts a session from GET /hub/spawn?opt-...: a link or an <img> on any
        # page would spend a learner's GPU hours. Only the form's POST (XSRF-checked) and the
        # REST API start one; the hub shows this message above the form instead.
        raise SessionError(QUERY_SPAWN_REFUSED, 400)

    @staticmethod
    async def _apply_options(spawner: "SpawnOptions", user_options) -> None:
        """The only door from user_options to the spawner: a validated SessionRequest."""
        try:
            request = await spawner._validated(user_options)
        except SessionError:
            # Keep the last accepted options as the default for a body-less start.
            if spawner.orm_spawner is not None:
                spawner.orm_spawner.user_options = getattr(spawner, "_accepted_options", {})
            raise
        spawner.session_request = request
        spawner._accepted_options = request.as_user_options()
        if spawner.orm_spawner is not None:
            spawner.orm_spawner.user_options = spawner._accepted_options
