"""Everything that talks to Slurm: the session spawner, the session's entry point, and an async Slurm client;
and the one client of the hub's REST API (``spawners.hub_api``, standard library only), which hub/ and
assessments/ both use.

Kept import-light on purpose: ``spawners.singleuser`` and ``spawners.launcher`` run inside Slurm
jobs from the notebook environment, where the hub's packages are not installed. Import the spawner from
``spawners.slurm_spawner``.
"""
