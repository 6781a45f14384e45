"""nbgrader's learner-side server extensions (the Assignments tab and Validate), loaded on first use.

nbgrader's own ``assignment_list`` and ``validate_assignment`` extensions import all of nbgrader
(its applications, nbconvert, SQLAlchemy, alembic) while the server starts: about a quarter of a
second of every session start on a 2-core node, spent before the learner's JupyterLab can open
and again for every learner of a workshop starting at once. This extension registers the same
URLs with handlers that import nbgrader's handler module on the first request and then let
nbgrader's own handler class serve it, so nothing of nbgrader's behaviour changes: only when
its import is paid.

Enabled instead of nbgrader's two extensions by
``docker/notebook/jupyter_server_config.d/zz-academy-learner-tools.json``. Import-light like the
rest of ``spawners``: jupyter_server and tornado are imported only when the extension loads.
"""

from __future__ import annotations

import importlib

ASSIGNMENT_LIST = "nbgrader.server_extensions.assignment_list.handlers"
VALIDATE = "nbgrader.server_extensions.validate_assignment.handlers"

# (pattern, nbgrader module, handler class), as nbgrader's two extensions register them.
ROUTES = [
    (r"/assignments", ASSIGNMENT_LIST, "AssignmentListHandler"),
    (r"/assignments/(?P<action>fetch|submit|fetch_feedback)", ASSIGNMENT_LIST, "AssignmentActionHandler"),
    (r"/courses", ASSIGNMENT_LIST, "CourseListHandler"),
    (r"/nbgrader_version", ASSIGNMENT_LIST, "NbGraderVersionHandler"),
    (r"/assignments/validate", VALIDATE, "ValidateAssignmentHandler"),
]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "assessments.courseware.nbgrader_lazy"}]


def nbgrader_handler(settings: dict, module_name: str, class_name: str) -> type:
    """nbgrader's handler class, its module imported and set up as nbgrader's loader would."""
    module = importlib.import_module(module_name)
    if module_name == ASSIGNMENT_LIST and "assignment_list_manager" not in settings:
        serverapp = settings["serverapp"]
        manager = module.AssignmentList(parent=serverapp)
        manager.root_dir = serverapp.root_dir
        settings["assignment_list_manager"] = manager
    return getattr(module, class_name)


def _make_handlers() -> list[tuple[str, type]]:
    from jupyter_server.base.handlers import JupyterHandler
    from tornado import web

    class LazyNbgraderHandler(JupyterHandler):
        """Authenticates like nbgrader's handlers, then becomes the nbgrader handler for the URL."""

        target: tuple[str, str] = ("", "")

        def _become_nbgrader(self):
            # nbgrader's handlers derive from JupyterHandler too and add no state of their own,
            # so the request (already authenticated, XSRF-checked and prepared) carries on as one.
            self.__class__ = nbgrader_handler(self.settings, *self.target)

        @web.authenticated
        def get(self, *args, **kwargs):
            self._become_nbgrader()
            return self.get(*args, **kwargs)

        @web.authenticated
        def post(self, *args, **kwargs):
            self._become_nbgrader()
            return self.post(*args, **kwargs)

    return [(pattern, type(f"Lazy{name}", (LazyNbgraderHandler,), {"target": (module, name)}))
            for pattern, module, name in ROUTES]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    web_app = serverapp.web_app
    web_app.settings["root_dir"] = serverapp.root_dir  # what nbgrader's validate handler reads
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base_url, pattern), handler) for pattern, handler in _make_handlers()])
    serverapp.log.info("academy: nbgrader's assignment list and validation load on first use")


load_jupyter_server_extension = _load_jupyter_server_extension
