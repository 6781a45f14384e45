"""Everything that talks to Slurm: the session spawner, its launcher, and an async Slurm client.

Kept import-light on purpose: ``spawners.launcher`` runs inside Slurm jobs from the notebook
environment, where the hub's packages are not installed. Import the spawner from
``spawners.slurm_spawner``.
"""
