"""The gradebook: tables and queries (tables.py), migrations (db.py), enrolment, export, roster, hub groups."""
