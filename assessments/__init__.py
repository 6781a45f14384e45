"""Grading and learner progress, one concern per room:

- ``service/``     what the hub-managed services share: the handler base (hub auth without blocking,
                   JSON refusals, a thread pool), app and server set-up, security headers, log redaction
- ``exchange/``    the exchange service: learners fetch and submit (learner.py), trainers grade
                   (trainer.py); the course store on disk (store.py); the client in learners' JupyterLab
- ``grading/``     autograding: the Slurm batch (batch.py) and what runs inside it (task, sandbox,
                   kernel execution, scoring, feedback rendering)
- ``gradebook/``   the gradebook database (tables, Alembic migrations, enrolment), CSV export, roster
                   import, the hub's course groups kept in step with enrolment
- ``progress/``    the progress service (events, completion, certificates, pages) and its emitter
- ``courseware/``  course checks, release builds, the nbgrader extension for learners' JupyterLab
"""
