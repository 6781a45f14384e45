"""Turn the validated platform config into JupyterHub traits: one ``update_<area>`` per area.

Each function only *sets* traits on ``c``; reading files, creating users and starting
daemons belong to the installer and the CLI.
"""

from __future__ import annotations

import json
import os
import secrets
import sys

EXCHANGE = "academy-exchange"
PROGRESS, HUB_EVENTS = "academy-progress", "academy-hub-events"
WORKSHOPS = "academy-workshops"
PROGRESS_INGEST = "custom:academy-progress:ingest"

# Lax: of the requests another site starts, a browser sends these cookies only with a top-level
# GET, and no GET starts a session (AcademySlurmSpawner.options_from_query).
COOKIE_OPTIONS = {"samesite": "Lax"}

# What each service process is handed of the config (ACADEMY_SERVICE_CONFIG): only what its code
# reads, section -> keys (None: the whole value), so that no service holds another's database URL
# or the hub's. The reaper and the idle culler get their settings as arguments and no config.
SERVICE_CONFIG = {
    EXCHANGE: {
        "hub": ("state_dir", "hub_ip"),        # its progress outbox; where the progress service listens
        "progress": ("port",),
        "assessments": None,                   # its own section (the store, grading, submission limits)
        "slurm": ("bin_dir", "command_timeout", "accounts"),   # grading jobs, course associations
        "notebook_env": None,
        "profiles": None,
    },
    PROGRESS: {
        "hub": ("state_dir", "public_url"),   # its SQLite and key beside the hub's; certificate links
        "progress": ("database", "auth_cache_s", "accounting_interval"),
        "slurm": ("bin_dir",),                 # sacct: GPU-hours from Slurm's accounting
        # The gradebook's enrolment decides who sees what, read on every request as the exchange does
        # (gradebook.db.url_from_config reads these two).
        "assessments": ("root", "database"),
    },
    # The workshops' clock: their records, Slurm (reservations), the pooled accounts' homes.
    WORKSHOPS: {
        "hub": ("state_dir", "ip", "port"),   # the proxy's address: it warms each seat's session through it
        "workshops": None,
        "slurm": ("bin_dir",),
    },
}


def service_config(cfg: dict, service: str) -> dict:
    """The part of `cfg` that `service` is handed (SERVICE_CONFIG); hub.public_url as users know it."""
    from .hub_process import public_url

    handed = {section: cfg[section] if keys is None else {k: cfg[section][k] for k in keys}
              for section, keys in SERVICE_CONFIG[service].items()}
    if "public_url" in handed.get("hub", {}):
        handed["hub"]["public_url"] = public_url(cfg)
    return handed


def db_url(cfg: dict) -> str:
    return cfg["hub"]["db_url"] or f"sqlite:///{os.path.join(cfg['hub']['state_dir'], 'jupyterhub.sqlite')}"


def update_network(c, cfg: dict) -> None:
    hub = cfg["hub"]
    c.JupyterHub.ip = hub["ip"]
    c.JupyterHub.port = hub["port"]
    if hub.get("public_url"):
        # Behind a TLS proxy the hub cannot tell https from the request; links and OAuth need it.
        c.JupyterHub.public_url = hub["public_url"].rstrip("/") + "/"  # JupyterHub wants the trailing slash
    c.JupyterHub.hub_ip = hub["hub_ip"]
    c.JupyterHub.hub_port = hub["hub_port"]
    c.JupyterHub.hub_connect_url = hub["hub_connect_url"]
    c.JupyterHub.proxy_class = "hub.proxy.PrioritisedProxy"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub['proxy_api_port']}"


def update_state(c, cfg: dict) -> None:
    state = cfg["hub"]["state_dir"]
    c.JupyterHub.db_url = db_url(cfg)
    c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = os.path.join(state, "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "jupyterhub-proxy.pid")


def update_auth(c, cfg: dict) -> None:
    kind = cfg["auth"]["type"]
    c.Authenticator.admin_users = set(cfg["hub"]["admin_users"])
    if kind == "oidc":
        from assessments.gradebook.db import url_from_config

        from .hub_process import public_url
        from .oidc_auth import configure

        key = _service_token(os.path.join(cfg["hub"]["state_dir"], "auth-state.key"))
        configure(c, cfg, public_url(cfg), url_from_config(cfg), bytes.fromhex(key))
        return
    # auth.type is a JupyterHub authenticator entry-point name; the schema's enum says which we support.
    c.JupyterHub.authenticator_class = kind
    if kind == "pam":
        # Sessions are Slurm jobs on compute nodes; a PAM session on the hub would be meaningless
        # and fails in containers.
        c.PAMAuthenticator.open_sessions = False
    if cfg["demo"]["enabled"]:
        c.Authenticator.allowed_users = set(cfg["demo"]["users"])
    else:
        # Production: anyone PAM accepts who is in a hub group; groups come from enrolment.
        c.Authenticator.allow_existing_users = True


def update_groups(c, cfg: dict) -> None:
    if cfg["auth"]["type"] == "oidc":
        return   # the authenticator manages groups (oidc_auth.py), and JupyterHub then loads none
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
    from .slurm_cluster import end_notices_dir

    slurm = cfg["slurm"]
    c.JupyterHub.spawner_class = "spawners.slurm_spawner.AcademySlurmSpawner"
    c.AcademySlurmSpawner.profiles = cfg["profiles"]
    c.AcademySlurmSpawner.notebook_env = cfg["notebook_env"]
    c.AcademySlurmSpawner.node_hosts = slurm["node_hosts"]
    c.AcademySlurmSpawner.hub_instance = platform_tag(cfg)
    c.AcademySlurmSpawner.slurm_bin_dir = slurm["bin_dir"]
    c.AcademySlurmSpawner.slurm_timeout = float(slurm["command_timeout"])
    c.AcademySlurmSpawner.slurm_accounts = slurm["accounts"]
    c.AcademySlurmSpawner.slurm_manage_qos = slurm["manage"]
    c.AcademySlurmSpawner.end_notices_dir = end_notices_dir(cfg)
    sessions = cfg["sessions"]
    c.AcademySlurmSpawner.pending_timeout = float(sessions["pending_timeout"])
    c.AcademySlurmSpawner.monitor_interval = float(sessions["monitor_interval"])
    c.AcademySlurmSpawner.cluster_view_interval = float(sessions["cluster_view_interval"])
    c.AcademySlurmSpawner.monitor_max_interval = float(sessions["monitor_max_interval"])
    c.AcademySlurmSpawner.cancel_attempts = sessions["cancel_attempts"]
    c.AcademySlurmSpawner.cancel_backoff = float(sessions["cancel_backoff"])
    c.AcademySlurmSpawner.token_expiry_margin = float(sessions["token_expiry_margin"])
    c.Spawner.ip = slurm["server_ip"]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = cfg["hub"]["start_timeout"]
    c.Spawner.http_timeout = cfg["hub"]["http_timeout"]
    # JupyterHub asks each spawner this often; the answer comes from one shared squeue per
    # monitor interval, so a short interval costs Slurm nothing more.
    c.Spawner.poll_interval = cfg["hub"]["poll_interval"]
    # Sessions outlive a hub restart: the hub finds them again from its database.
    c.JupyterHub.cleanup_servers = False


def platform_tag(cfg: dict) -> str:
    """The tag in every session job's comment (see spawners.reaper): the cluster's, and the hub's
    instance name when hubs share the cluster (the reaper reads a tag up to its first ':')."""
    instance = cfg["hub"].get("instance", "")
    return f"academy-{cfg['slurm']['cluster_name']}" + (f"-{instance}" if instance else "")


def update_services(c, cfg: dict) -> None:
    """The reaper (no orphaned jobs, maximum session ages) and jupyterhub-idle-culler."""
    sessions = cfg["sessions"]
    reaper = [sys.executable, "-m", "spawners.reaper", "--tag", platform_tag(cfg),
              "--interval", str(sessions["reaper_interval"]), "--grace", str(sessions["reaper_grace"]),
              "--slurm-bin-dir", cfg["slurm"]["bin_dir"]]
    for profile in cfg["profiles"]:
        if profile.get("max_age"):
            reaper += ["--max-age", f"{profile['key']}={profile['max_age']}"]
    services = [{"name": "academy-reaper", "command": reaper}]
    roles = [{"name": "academy-reaper", "services": ["academy-reaper"],
              "scopes": ["list:users", "read:users", "read:servers", "admin:server_state", "delete:servers"]}]
    # The exchange (assessments.exchange.service): learners and trainers reach it with their own
    # hub token, from the browser or from inside their session.
    exchange_url = f"http://{cfg['hub']['hub_ip']}:{cfg['assessments']['exchange_port']}"
    services.append({"name": EXCHANGE, "url": exchange_url, "oauth_no_confirm": True,
                     "command": [sys.executable, "-m", "assessments.exchange.service"],
                     "environment": {"ACADEMY_SERVICE_CONFIG": json.dumps(service_config(cfg, EXCHANGE)),
                                     "PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    # It keeps the hub's <course>-learners / <course>-trainers groups in step with enrolment.
    roles.append({"name": EXCHANGE, "services": [EXCHANGE],
                  "scopes": ["list:users", "read:users:name", "admin:users", "list:groups", "read:groups",
                             "admin:groups"]})
    access = f"access:services!service={EXCHANGE}"
    roles.append({"name": "user", "scopes": ["self", access, f"access:services!service={PROGRESS}"]})
    c.Spawner.server_token_scopes = ["users:activity!user", access]
    # Sessions reach the exchange directly (compute nodes route to the hub's address, as for the API).
    c.Spawner.environment = {"ACADEMY_EXCHANGE_URL": f"{exchange_url}/services/{EXCHANGE}/"}
    update_progress(c, cfg, services, roles)
    update_metrics(cfg, services, roles)
    update_workshops(c, cfg, services, roles)
    if sessions["idle_timeout"]:
        services.append({"name": "idle-culler",
                         "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                                     f"--timeout={sessions['idle_timeout']}"]})
        roles.append({"name": "idle-culler", "services": ["idle-culler"],
                      "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def update_progress(c, cfg: dict, services: list, roles: list) -> None:
    """The progress service, and who may send it events: the exchange, and the hub itself (sessions)."""
    url = f"http://{cfg['hub']['hub_ip']}:{cfg['progress']['port']}"
    services.append({"name": PROGRESS, "url": url, "oauth_no_confirm": True,
                     "command": [sys.executable, "-m", "assessments.progress.service"],
                     "environment": {"ACADEMY_SERVICE_CONFIG": json.dumps(service_config(cfg, PROGRESS)),
                                     "PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    # The hub process's own identity for session events: a service with a token and no process.
    token = _service_token(os.path.join(cfg["hub"]["state_dir"], "progress-hub-events.token"))
    services.append({"name": HUB_EVENTS, "api_token": token})
    c.JupyterHub.custom_scopes = {PROGRESS_INGEST: {"description": "send learner-progress events"}}
    roles.append({"name": "academy-progress-emitters", "services": [EXCHANGE, HUB_EVENTS],
                  "scopes": [f"access:services!service={PROGRESS}", PROGRESS_INGEST]})
    # The cohort page filters by hub group (a workshop, an intake): the service reads groups.
    roles.append({"name": PROGRESS, "services": [PROGRESS], "scopes": ["list:groups", "read:groups"]})
    from hub.session_events import SessionEvents  # the hub's process only (imports the outbox)

    c.AcademySlurmSpawner.session_event_hook = SessionEvents(
        os.path.join(cfg["hub"]["state_dir"], "progress-outbox"), f"{url}/services/{PROGRESS}/api/events", token,
        cfg["slurm"]["cluster_name"])


def update_workshops(c, cfg: dict, services: list, roles: list) -> None:
    """The workshops' pages in the hub, their profiles in the spawner, and the service that runs
    their clock (pre-warm, release, end of window: hub/workshops/service.py)."""
    from .workshops import handlers, profiles

    context = handlers.WorkshopContext(cfg)
    c.JupyterHub.extra_handlers = handlers.handlers()
    c.JupyterHub.template_paths = [handlers.TEMPLATES]
    settings = c.JupyterHub.tornado_settings if isinstance(c.JupyterHub.tornado_settings, dict) else {}
    c.JupyterHub.tornado_settings = {**settings, "academy_workshops": context}
    c.AcademySlurmSpawner.profile_grants = profiles.ProfileGrants(context.url, cfg["profiles"])
    services.append({"name": WORKSHOPS, "command": [sys.executable, "-m", "hub.workshops.service"],
                     "environment": {"ACADEMY_SERVICE_CONFIG": json.dumps(service_config(cfg, WORKSHOPS)),
                                     "PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    roles.append({"name": WORKSHOPS, "services": [WORKSHOPS],
                  "scopes": ["admin:users", "admin:servers", "admin:groups", "list:users", "read:users",
                             "read:servers", "tokens", "shares", "access:servers"]})


METRICS = "academy-metrics"


def metrics_token_path(cfg: dict) -> str:
    return os.path.join(cfg["hub"]["state_dir"], "metrics.token")


def update_metrics(cfg: dict, services: list, roles: list) -> None:
    """Prometheus's identity: a service with a token (root-only in the hub's state folder) whose
    role reads the hub's /hub/metrics and the services' /metrics, and nothing else."""
    services.append({"name": METRICS, "api_token": _service_token(metrics_token_path(cfg))})
    roles.append({"name": METRICS, "services": [METRICS],
                  "scopes": ["read:metrics", f"access:services!service={EXCHANGE}",
                             f"access:services!service={PROGRESS}"]})


def prometheus_config(cfg: dict, token_file: str | None = None) -> str:
    """A prometheus.yml scraping the hub and its services with the academy-metrics token."""
    hub = f"{cfg['hub']['hub_ip']}:{cfg['hub']['hub_port']}"
    targets = [("academy-hub", "/hub/metrics", hub),
               ("academy-exchange", f"/services/{EXCHANGE}/metrics",
                f"{cfg['hub']['hub_ip']}:{cfg['assessments']['exchange_port']}"),
               ("academy-progress", f"/services/{PROGRESS}/metrics", f"{cfg['hub']['hub_ip']}:{cfg['progress']['port']}")]
    token_file = token_file or metrics_token_path(cfg)
    lines = ["# Prometheus scrape configuration for AI Factory Academy (./academy metrics prometheus-config).",
             "# The token file is root-only: run Prometheus as root, or copy it where Prometheus may read it.",
             "global:", "  scrape_interval: 15s", "scrape_configs:"]
    for job, path, target in targets:
        lines += [f"  - job_name: {job}", f"    metrics_path: {path}",
                  "    authorization:", "      type: Bearer", f"      credentials_file: {token_file}",
                  "    static_configs:", f"      - targets: ['{target}']"]
    return "\n".join(lines) + "\n"


def update_cookies(c, cfg: dict) -> None:
    """SameSite on every cookie: the hub's login, session id and _xsrf (tornado's cookie_options),
    the sessions' (JupyterHub hands cookie_options to each spawner) and the managed services'."""
    settings = c.JupyterHub.tornado_settings if isinstance(c.JupyterHub.tornado_settings, dict) else {}
    c.JupyterHub.tornado_settings = {**settings, "cookie_options": COOKIE_OPTIONS}
    # A service takes no cookie_options from its spec, but its HubOAuth reads this variable.
    for service in c.JupyterHub.services:
        if "command" in service and "url" in service:
            service.setdefault("environment", {})["JUPYTERHUB_COOKIE_OPTIONS"] = json.dumps(COOKIE_OPTIONS)


def _service_token(path: str) -> str:
    """A token made once and kept root-only beside the hub's database (the hub hashes what it stores)."""
    try:
        with open(path) as f:
            token = f.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def update_logging(c, cfg: dict) -> None:
    """Every line the hub writes has its URLs' credentials redacted (also inside ?next=, which
    JupyterHub's own scrubbing of its access lines leaves as it is)."""
    c.JupyterHub.logging_config = {
        "filters": {"redact_secrets": {"()": "assessments.service.security.RedactSecrets"}},
        "handlers": {"console": {"filters": ["redact_secrets"]}},
    }


def apply_config(c, cfg: dict) -> None:
    update_logging(c, cfg)
    update_network(c, cfg)
    update_state(c, cfg)
    update_auth(c, cfg)
    update_groups(c, cfg)
    update_spawner(c, cfg)
    update_services(c, cfg)
    update_cookies(c, cfg)
