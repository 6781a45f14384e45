"""Learner progress: events from the platform's parts, derived per-learner records, a hub service.

    models.py    the tables (SQLAlchemy Core); migrations/ creates them (Alembic)
    db.py        engines (SQLite in WAL mode, or PostgreSQL) and `upgrade(url)`
    events.py    the event schema, validation, and idempotent ingestion
    queries.py   what the service reads: a learner's records, a course's cohort
    outbox.py    for emitters: a spool directory and a flusher (stdlib only)
    service.py   the hub-managed tornado service (HubOAuth)
    completion.py  the pass rule; course and track completion recorded from the grades
    certificates.py  signed (Ed25519) PDF certificates, issued once per learner and track; verification
    pages.py     the HTML pages (learner, cohort with plots and CSV, certificate verification); templates/
    plots.py     the cohort plots (matplotlib, Agg, inline SVG)
    groups.py    hub groups (workshops, intakes) as cohort filters
"""
