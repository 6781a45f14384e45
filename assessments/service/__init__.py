"""The services' shared base (base.py), their security headers and log redaction (security.py)."""
