"""Join tickets: the attendee's browser enters their warm session without the OAuth round trips.

A server's page normally lets a browser in only after JupyterHub's OAuth dance: the server
redirects to the hub's authorize page, the hub redirects back with a code, the server trades the
code for a token (checking its client secret, 16384 rounds of SHA-512) and asks who the token is.
For a room of attendees joining in the same second that is three hops and two of the hub's
costliest handlers each, on the path to the first notebook.

At join, the hub already knows who the attendee is (it just logged them in) and which server they
enter, so it makes the very token the OAuth exchange would have made: the server's OAuth client's,
with the scopes the authorize page would have granted, tied to the browser's hub session (a hub
logout revokes it). The token stays in the hub; the browser gets a one-time ticket, as an
HttpOnly cookie confined to that server's path (never in a URL, so never in a log). The server's
``academy/open`` trades the ticket for the token, authenticated by the server's own API token,
and sets its usual OAuth cookie. A ticket is good once, for one account, for TTL_S; a lost or late
one costs nothing but the ordinary OAuth redirect.
"""

from __future__ import annotations

import secrets
import time

from spawners.session_timer import TICKET_COOKIE as COOKIE   # the session's academy/open reads it

__all__ = ["COOKIE", "TICKETS", "TTL_S", "Tickets"]

TTL_S = 120
MAX_OPEN = 5000   # tickets not yet traded; a flood of joins must not grow this without end


class Tickets:
    def __init__(self, ttl_s: float = TTL_S):
        self.ttl_s = ttl_s
        self._open: dict[str, tuple[str, str, float]] = {}   # ticket -> (account, token, expires)

    def issue(self, account: str, token: str, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        self._drop_expired(now)
        if len(self._open) >= MAX_OPEN:
            self._open.pop(next(iter(self._open)))
        ticket = secrets.token_urlsafe(32)
        self._open[ticket] = (account, token, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str, account: str, now: float | None = None) -> str | None:
        """The token for `account`'s ticket, once; None for an unknown, used, expired or other's ticket."""
        now = time.monotonic() if now is None else now
        held = self._open.get(ticket)
        if held is None or held[0] != account:
            return None   # another account's ticket stays usable by its own server
        del self._open[ticket]
        return held[1] if held[2] > now else None

    def _drop_expired(self, now: float) -> None:
        for ticket in [t for t, (_, _, expires) in self._open.items() if expires <= now]:
            del self._open[ticket]


# One per hub process: JupyterHub deep-copies its tornado settings, so the handlers share this
# module's instance rather than one held in the settings.
TICKETS = Tickets()
