"""The workshops' records: one row per workshop, one per seat.

A seat is taken by a compare-and-set UPDATE (the free seat with the lowest number, only if it is
still free), so two attendees pressing the link in the same millisecond never share one, on
SQLite as on PostgreSQL. An attendee's browser keeps a random seat key in a signed cookie; the
row keeps only its hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, fields

import sqlalchemy as sa

from hub.hub_db import sqlite_in_wal_mode

from .model import Workshop

meta = sa.MetaData()
workshops = sa.Table(
    "workshops", meta,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("code", sa.String(16), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),       # the rest of the Workshop, as JSON
)
seats = sa.Table(
    "seats", meta,
    sa.Column("workshop", sa.String(32), sa.ForeignKey("workshops.name"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(64)),           # NULL: free
    sa.Column("joined_at", sa.Float),
    sa.Column("warmed_at", sa.Float),               # when its session was started unassigned
    sa.Column("help_from", sa.String(64)),          # the trainer the attendee let into their session
)

_ROW_FIELDS = ("name", "code", "state")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def database_url(cfg: dict) -> str:
    return cfg["workshops"]["database"] or f"sqlite:///{os.path.join(cfg['hub']['state_dir'], 'workshops.sqlite')}"


class Store:
    def __init__(self, url: str):
        if url.startswith("sqlite"):
            sqlite_in_wal_mode()
        self.engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        meta.create_all(self.engine)

    @classmethod
    def from_config(cls, cfg: dict) -> "Store":
        return cls(database_url(cfg))

    _shared: dict[str, "Store"] = {}

    @classmethod
    def shared(cls, url: str) -> "Store":
        """One store (one engine and its pool) per URL in this process: the hub's pages and its
        spawners' profile grants use the same."""
        if url not in cls._shared:
            cls._shared[url] = cls(url)
        return cls._shared[url]

    # -- workshops ----------------------------------------------------------------------

    def add(self, w: Workshop) -> None:
        spec = {k: v for k, v in asdict(w).items() if k not in _ROW_FIELDS}
        with self.engine.begin() as conn:
            conn.execute(workshops.insert().values(name=w.name, code=w.code, state=w.state, spec=json.dumps(spec)))
            if w.join == "code":   # (an empty list would insert one row of NULLs: account seats come at join)
                conn.execute(seats.insert(), [{"workshop": w.name, "number": n, "account": w.account(n)}
                                              for n in range(1, w.seats + 1)])

    @staticmethod
    def _workshop(row) -> Workshop:
        spec = json.loads(row.spec)
        known = {f.name for f in fields(Workshop)}
        return Workshop(name=row.name, code=row.code, state=row.state, **{k: v for k, v in spec.items() if k in known})

    def get(self, name: str) -> Workshop | None:
        with self.engine.connect() as conn:
            row = conn.execute(workshops.select().where(workshops.c.name == name)).first()
        return self._workshop(row) if row else None

    def by_code(self, code: str) -> Workshop | None:
        with self.engine.connect() as conn:
            row = conn.execute(workshops.select().where(workshops.c.code == code)).first()
        return self._workshop(row) if row else None

    def all(self) -> list[Workshop]:
        with self.engine.connect() as conn:
            rows = conn.execute(workshops.select().order_by(workshops.c.name)).all()
        return [self._workshop(r) for r in rows]

    def update(self, w: Workshop) -> None:
        spec = {k: v for k, v in asdict(w).items() if k not in _ROW_FIELDS}
        with self.engine.begin() as conn:
            conn.execute(workshops.update().where(workshops.c.name == w.name)
                         .values(state=w.state, spec=json.dumps(spec)))

    def delete(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(seats.delete().where(seats.c.workshop == name))
            conn.execute(workshops.delete().where(workshops.c.name == name))

    def codes(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(workshops.c.code)).scalars())

    # -- seats --------------------------------------------------------------------------

    def seats(self, name: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(seats.select().where(seats.c.workshop == name).order_by(seats.c.number)).all()
        return [dict(r._mapping) for r in rows]

    def seat_of_key(self, name: str, key: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(seats.select().where(seats.c.workshop == name, seats.c.key_hash == key_hash(key))).first()
        return dict(row._mapping) if row else None

    def seat_of_account(self, name: str, account: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(seats.select().where(seats.c.workshop == name, seats.c.account == account)).first()
        return dict(row._mapping) if row else None

    def take_seat(self, name: str, key: str, now: float | None = None) -> dict | None:
        """A free seat bound to KEY; a warm one first (its session already runs); None when all are taken."""
        now = time.time() if now is None else now
        for _ in range(20):   # another attendee took the seat just read: read the next one
            with self.engine.begin() as conn:
                free = conn.execute(
                    sa.select(seats.c.number).where(seats.c.workshop == name, seats.c.key_hash.is_(None))
                    .order_by(seats.c.warmed_at.is_(None), seats.c.number).limit(1)).scalar()
                if free is None:
                    return None
                taken = conn.execute(seats.update().where(seats.c.workshop == name, seats.c.number == free,
                                                          seats.c.key_hash.is_(None))
                                     .values(key_hash=key_hash(key), joined_at=now)).rowcount
            if taken:
                return self.seat_of_key(name, key)
        return None

    def add_account_seat(self, name: str, account: str, key: str, limit: int, now: float | None = None) -> dict | None:
        """An attendee joining with their own account: their seat (made once), None when the workshop is full."""
        existing = self.seat_of_account(name, account)
        if existing:
            return existing
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(seats).where(seats.c.workshop == name)).scalar()
            if count >= limit:
                return None
            conn.execute(seats.insert().values(workshop=name, number=count + 1, account=account,
                                               key_hash=key_hash(key), joined_at=now))
        return self.seat_of_account(name, account)

    def mark(self, name: str, number: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(seats.update().where(seats.c.workshop == name, seats.c.number == number).values(**values))
