"""Turn the validated platform config into JupyterHub traits: one ``update_<area>`` per area.

Each function only *sets* traits on ``c``; reading files, creating users and starting
daemons belong to the installer and the CLI.
"""

from __future__ import annotations

import os


def db_url(cfg: dict) -> str:
    return cfg["hub"]["db_url"] or f"sqlite:///{os.path.join(cfg['hub']['state_dir'], 'jupyterhub.sqlite')}"


def update_network(c, cfg: dict) -> None:
    hub = cfg["hub"]
    c.JupyterHub.ip = hub["ip"]
    c.JupyterHub.port = hub["port"]
    c.JupyterHub.hub_ip = hub["hub_ip"]
    c.JupyterHub.hub_port = hub["hub_port"]
    c.JupyterHub.hub_connect_url = hub["hub_connect_url"]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub['proxy_api_port']}"


def update_state(c, cfg: dict) -> None:
    state = cfg["hub"]["state_dir"]
    c.JupyterHub.db_url = db_url(cfg)
    c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = os.path.join(state, "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "jupyterhub-proxy.pid")


def update_auth(c, cfg: dict) -> None:
    c.JupyterHub.authenticator_class = "pam"
    # Sessions are Slurm jobs on compute nodes; a PAM session on the hub would be meaningless
    # and fails in containers.
    c.PAMAuthenticator.open_sessions = False
    c.Authenticator.admin_users = set(cfg["hub"]["admin_users"])
    if cfg["demo"]["enabled"]:
        c.Authenticator.allowed_users = set(cfg["demo"]["users"])
    else:
        # Production: anyone PAM accepts who is in a hub group; groups come from enrolment.
        c.Authenticator.allow_existing_users = True


def update_groups(c, cfg: dict) -> None:
    groups: dict[str, list[str]] = {}
    if cfg["demo"]["enabled"]:
        for user, user_groups in cfg["demo"]["users"].items():
            for group in user_groups:
                groups.setdefault(group, []).append(user)
    for profile in cfg["profiles"]:
        for group in profile["groups"]:
            groups.setdefault(group, [])
    c.JupyterHub.load_groups = {name: {"users": sorted(users)} for name, users in groups.items()}


def update_spawner(c, cfg: dict) -> None:
    slurm = cfg["slurm"]
    c.JupyterHub.spawner_class = "spawners.slurm_spawner.AcademySlurmSpawner"
    c.AcademySlurmSpawner.profiles = cfg["profiles"]
    c.AcademySlurmSpawner.notebook_env = cfg["notebook_env"]
    c.AcademySlurmSpawner.node_hosts = slurm["node_hosts"]
    c.AcademySlurmSpawner.hub_instance = f"academy-{slurm['cluster_name']}"
    c.Spawner.ip = slurm["server_ip"]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = cfg["hub"]["start_timeout"]
    c.Spawner.http_timeout = cfg["hub"]["http_timeout"]


def apply_config(c, cfg: dict) -> None:
    update_network(c, cfg)
    update_state(c, cfg)
    update_auth(c, cfg)
    update_groups(c, cfg)
    update_spawner(c, cfg)
