"""Workshops: a room of attendees from a link to a GPU notebook in a second, and gone cleanly after.

A workshop (``academy workshop create``) is a time window, a course's assignment notebook to
open, one profile, a number of seats and, optionally, a Slurm reservation. Each seat is a pooled
Unix account ``ws-<workshop>-NN`` made before the start; its hub user is made fresh for the
workshop (no token, group or cookie of an earlier use survives).

    model.py        what a workshop is, checked (names, window, seats, profile, join policy, codes)
    store.py        its records: workshops and seats (SQLAlchemy; SQLite by default)
    accounts.py     the pooled Unix accounts: made, recycled, locked; their files exported or wiped
    reservation.py  the Slurm reservation: made on the embedded cluster, checked on a site's
    profiles.py     the spawner's view: a workshop's profile, in its reservation, to the window's end
    handlers.py     the hub's pages: join by code, the attendee's help consent, the trainer's page
    service.py      the hub-managed service: pre-warm seats, release unused ones, end the window
    cli.py          ``academy workshop create|list|show|end|delete``

A seat's session is its pooled account's own server: pre-warming starts it before anyone
joins, and joining logs the attendee in as that account, so the server already runs as them
with their own token, and no session is ever shared between two people.
"""
