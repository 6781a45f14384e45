"""The course catalogue (one YAML file per course) and the nbgrader source notebooks."""
