"""Everything that talks to Slurm: the session spawner, the session's entry point, and an async Slurm client.

Kept import-light on purpose: ``spawners.singleuser`` and ``spawners.launcher`` run inside Slurm
jobs from the notebook environment, where the hub's packages are not installed. Import the spawner from
``spawners.slurm_spawner``.
"""
