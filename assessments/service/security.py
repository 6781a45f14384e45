"""What every answer of the platform's web services carries, and what none of their log lines keeps.

Headers (SecurityHeaders, a mixin for the services' base handlers): a Content-Security-Policy that
lets our pages do what they do (server-rendered HTML, a <style> block, inline SVG plots whose
elements carry style attributes) and nothing else: no script at all, no plugin, forms post only
back to us, and no other site may frame a page (the hand-grading form would be clickjackable).
nosniff keeps a browser from running a CSV or JSON answer as HTML. tornado calls
set_default_headers for every response and again before an error page, so errors carry them too.

Logs: a URL may carry a credential in its query (?token=, OAuth's ?code= and ?state=, ?_xsrf=),
also percent-encoded inside another parameter (the hub's login?next=...%3Ftoken%3D...).
RedactSecrets rewrites a log record before it is written: the services put it on tornado's
loggers (every access line, every HTTPError warning and traceback header is logged there), the hub
on its console handler (hub/configurer.py, JupyterHub.logging_config).
"""

from __future__ import annotations

import logging
import re

from jupyterhub.services.auth import HubOAuthCallbackHandler

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'none'",                    # no page of ours runs script
    # The pages' <style> block and matplotlib's SVG (a <style> and style="" on each element):
    # inline styles, and only styles, are allowed inline.
    "style-src 'self' 'unsafe-inline'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}


class SecurityHeaders:
    """Mixin, listed before tornado's RequestHandler: every response carries SECURITY_HEADERS."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)


class OAuthCallback(SecurityHeaders, HubOAuthCallbackHandler):
    """The hub's OAuth callback (it answers with a redirect, or an error page), with our headers."""


# A query parameter whose name contains one of these holds a credential (JupyterHub scrubs the same
# names from the hub's access lines, jupyterhub.log.SCRUB_PARAM_KEYS, but not inside ?next=).
SECRET_PARAMS = ("token", "auth", "key", "code", "state", "xsrf", "secret", "password")
_ENCODED = r"%(?:25)*"      # one character percent-encoded once or more: a URL inside a URL
_SECRET_IN_QUERY = re.compile(
    rf"((?:[?&;]|{_ENCODED}(?:3F|26))"                          # the start of a parameter: ? & or %3F %26
    rf"[\w.~-]*?(?:{'|'.join(SECRET_PARAMS)})[\w.~-]*"          # its name
    rf"(?:=|{_ENCODED}3D))"                                     # = or %3D
    rf"(?:(?!{_ENCODED}26)[^&;#\s\"'<>])+",                     # its value, up to the next parameter
    re.IGNORECASE)


# A workshop's join code is in its link's path (hub/workshops/handlers.py): whoever reads the log
# must not be able to join with it.
_JOIN_CODE_IN_PATH = re.compile(r"(/workshop/join/)[^/?#\s\"'<>]+")


def redact(text: str) -> str:
    """`text` with the value of every credential-bearing query parameter, and any workshop join code
    in a path, replaced by [secret]."""
    return _JOIN_CODE_IN_PATH.sub(r"\1[secret]", _SECRET_IN_QUERY.sub(r"\1[secret]", text))


class RedactSecrets(logging.Filter):
    """A log filter that writes each record's message with its URLs' credentials redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


TORNADO_LOGGERS = ("tornado.access", "tornado.application", "tornado.general")


def redact_tornado_logs() -> None:
    """Put RedactSecrets on tornado's loggers (what a service's requests log goes through); idempotent."""
    for name in TORNADO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
