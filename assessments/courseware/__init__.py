"""Course material as trainers publish it: checks (check.py, validate.py), release builds, the nbgrader extension."""
