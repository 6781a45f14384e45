"""Learner progress: events from the platform's parts, derived per-learner records, a hub service.

    models.py    the tables (SQLAlchemy Core); migrations/ creates them (Alembic)
    db.py        engines (SQLite in WAL mode, or PostgreSQL) and `upgrade(url)`
    events.py    the event schema, validation, and idempotent ingestion
    queries.py   what the service reads: a learner's records, a course's cohort
    outbox.py    for emitters: a spool directory and a flusher (stdlib only)
    service.py   the hub-managed tornado service (HubOAuth)
"""
