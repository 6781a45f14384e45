"""JSON schema of /etc/academy/config.yaml: the one source of validation and of the keys' docs.

Every key carries a ``description``: it is the "accepted:" hint of a validation error and the
text of docs/configuration.md (hub/config_reference.py). Defaults live in hub/defaults.yaml.
Profiles are checked structurally by spawners.profiles.PROFILE_SCHEMA (embedded here) and
semantically by spawners.profiles.parse_profiles.
"""

from spawners.profiles import PROFILE_SCHEMA, WALLTIME_PATTERN


def _(base: dict, what: str) -> dict:
    """A shared value type with what this key is for in front of what it accepts."""
    return {**base, "description": f"{what}; {base['description']}"}


def _within(kind: str, low: float, high: float, what: str) -> dict:
    """A number or integer from low to high, the range written once: in the bounds and, from them, in the text."""
    return {"type": kind, "minimum": low, "maximum": high, "description": f"{what}, {low:g} to {high:g}"}


def _section(description: str, properties: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "description": description, "properties": properties}


_name = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
         "description": "letters, digits, '_', '.' and '-'"}
_port = {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port, 1 to 65535"}
_walltime = {"type": "string", "pattern": WALLTIME_PATTERN, "description": "HH:MM:SS or D-HH:MM:SS"}
_abs_path = {"type": "string", "pattern": r"^/[^\n\0]*$", "description": "an absolute path"}
_user = {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$", "description": "a Unix user name"}
_users = {"type": "array", "items": _user, "description": "a list of Unix user names"}
_size = {"type": "string", "pattern": r"^[1-9][0-9]*[MGT]$", "description": "a size such as 512M or 3G"}

HUB = _section("the hub, its proxy and its database", {
    "ip": {"type": "string", "description": "address the public proxy listens on"},
    "port": _(_port, "port the public proxy listens on"),
    "public_url": {"type": "string", "pattern": r"^(https?://[^\s/]+/?)?$",
                   "description": "http(s) URL users open (the TLS reverse proxy's); empty: http://ip:port/"},
    "hub_ip": {"type": "string", "description": "address the hub's API listens on"},
    "hub_port": _(_port, "port the hub's API listens on"),
    "proxy_api_port": _(_port, "configurable-http-proxy's REST API port, on loopback"),
    "hub_connect_url": {"type": "string", "pattern": r"^https?://[^\s]+$",
                        "description": "http(s) URL the compute nodes use to reach the hub"},
    "state_dir": _(_abs_path, "the hub's state: SQLite database, cookie secret, tokens"),
    "log_dir": _(_abs_path, "where the hub and its services write their logs"),
    "db_url": {"type": "string", "description": "SQLAlchemy URL; empty for SQLite in state_dir"},
    "admin_users": _(_users, "hub administrators"),
    "start_timeout": {"type": "integer", "minimum": 10, "maximum": 86400,
                      "description": "seconds a session may take to start, queue time included, 10 to 86400"},
    "http_timeout": {"type": "integer", "minimum": 5, "maximum": 3600,
                     "description": "seconds for a started server to answer, 5 to 3600"},
    "poll_interval": {"type": "integer", "minimum": 1, "maximum": 3600,
                      "description": "seconds between the hub's checks of each session, 1 to 3600"},
    "instance": {"type": "string", "pattern": r"^([a-z0-9][a-z0-9_.-]{0,31})?$",
                 "description": "this hub's name among hubs that share one Slurm cluster (staging and production, "
                                "say): its jobs carry it, and its reaper and `academy down` end only jobs that do; "
                                "empty for the only hub (lower-case letters, digits, '_', '.', '-'; at most 32)"},
})

_groups = {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "a list of group names"}
_hub_group = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$",
              "description": "a hub group name (lower-case letters, digits, '_', '.', '-')"}

OIDC = _section("login through the centre's OpenID Connect provider (auth.type: oidc)", {
    "issuer": {"type": "string", "pattern": r"^(https?://[^\s]+)?$",
               "description": "the provider's issuer URL; its endpoints come from <issuer>/.well-known/"
                              "openid-configuration when the hub starts"},
    "client_id": {"type": "string", "description": "the hub's client id at the provider"},
    "client_secret_file": _(_abs_path, "a root-only file holding the hub's client secret"),
    "scopes": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z0-9_:.-]+$"},
               "description": "scopes the hub asks for (openid first)"},
    "username_claim": {"type": "string", "minLength": 1,
                       "description": "the claim that holds the user's Unix account name (e.g. preferred_username, "
                                      "uid)"},
    "groups_claim": {"type": "string", "minLength": 1, "description": "the claim that lists the user's groups"},
    "login_service": {"type": "string", "description": "what the login button says ('Sign in with ...')"},
    "allowed_groups": _(_groups, "provider groups whose members may log in; empty: anyone the provider "
                                 "authenticates (and who has a Unix account)"),
    "admin_groups": _(_groups, "provider groups whose members are hub administrators"),
    "group_map": {"type": "object", "additionalProperties": {"type": "array", "items": _hub_group},
                  "description": "provider group: the hub groups its members join (the groups profiles are "
                                 "offered to, e.g. learners, trainers)"},
    "course_roles": {"type": "object", "additionalProperties": {
        "type": "object", "additionalProperties": False, "required": ["course", "role"],
        "properties": {"course": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{0,63}$",
                                  "description": "a course id"},
                       "role": {"type": "string", "enum": ["learner", "trainer"],
                                "description": "'learner' or 'trainer'"}}},
        "description": "provider group: the course its members are enrolled in at login, and as what"},
    "unix_accounts": {"type": "string", "enum": ["existing", "create"],
                      "description": "'existing': the site provides every user's Unix account (a login without "
                                     "one is refused); 'create': made on first login (useradd)"},
    "refresh_s": _within("integer", 0, 86400, "seconds after which the hub checks the user's tokens with the "
                         "provider again (an expired login must sign in again); 0 never"),
})

AUTH = _section("how users log in", {
    "type": {"type": "string", "enum": ["pam", "oidc"],
             "description": "the authenticator: 'pam' (the hub machine's Unix accounts) or 'oidc' (the centre's "
                            "OpenID Connect provider, auth.oidc)"},
    "oidc": OIDC,
})

SESSIONS = _section("learners' sessions (Slurm jobs)", {
    "pending_timeout": {"type": "integer", "minimum": 0, "maximum": 86400,
                        "description": "seconds in the queue before a start is cancelled; 0 for automatic "
                                       "(start_timeout - 30), at most 86400"},
    "monitor_interval": _within("number", 0.5, 600, "seconds between batched squeue calls"),
    "cluster_view_interval": _within("number", 0.5, 3600, "seconds the spawn form's view of the cluster (free GPUs, "
                                     "starts now, queue) is reused"),
    "monitor_max_interval": _within("number", 0.5, 3600, "longest wait between squeue calls while Slurm does not "
                                    "answer (the wait doubles from monitor_interval)"),
    "cancel_attempts": _within("integer", 1, 20, "scancel attempts when a session stops before its job is left "
                               "to the reaper"),
    "cancel_backoff": _within("number", 0, 600, "seconds between the first two scancel attempts, each later wait "
                              "twice the one before"),
    "token_expiry_margin": _within("integer", 0, 86400, "seconds a session's hub token outlives its job's walltime "
                                   "(it is revoked as soon as the job ends)"),
    "idle_timeout": {"type": "integer", "minimum": 0, "description": "seconds; 0 disables idle culling"},
    "reaper_interval": _within("number", 1, 3600, "seconds between reaper rounds (jobs without a hub record are "
                               "cancelled)"),
    "reaper_grace": _within("number", 0, 86400, "seconds a job may go unrecorded (a start in progress)"),
})

PARTITION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "max_time", "default_time"],
    "description": "one partition of the embedded cluster",
    "properties": {
        "name": _(_name, "the partition's name"),
        "max_time": _(_walltime, "the longest job"),
        "default_time": _(_walltime, "a job's walltime when it asks for none"),
        "default": {"type": "boolean", "default": False,
                    "description": "true for the partition jobs get when they name none"},
        "priority_tier": {"type": "integer", "minimum": 1, "maximum": 65533,
                          "default": 1, "description": "higher tiers preempt (cancel) lower ones, 1 to 65533"},
        "hidden": {"type": "boolean", "default": False,
                   "description": "true for Slurm's Hidden=YES (sinfo and squeue list it only with --all)"},
        "operators_only": {"type": "boolean", "default": False,
                           "description": "true to admit only root and members of slurm.operators_group "
                                          "(Slurm's AllowGroups)"},
    },
}

ACCOUNTS = _section("the Slurm accounts and QOS the platform charges and limits jobs with", {
    "parent": _(_name, "the platform's account, parent of the others"),
    "own_work": _(_name, "the account of sessions for no course, every user's default account"),
    "course_prefix": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{0,24}$",
                      "description": "a course's account is this prefix and the course id; "
                                     "letters, digits, '_', '.' and '-', up to 24"},
    "qos_prefix": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{0,24}$",
                   "description": "a profile's QOS is this prefix and the profile key; "
                                  "letters, digits, '_', '.' and '-', up to 24"},
    "max_submit_per_user": _within("integer", 1, 100000, "jobs one user may have queued or running in one "
                                   "profile's QOS"),
})

SLURM = _section("the Slurm cluster sessions and grading run on", {
    "manage": {"type": "boolean", "description": "true to run the embedded one-node cluster"},
    "command_timeout": {"type": "number", "minimum": 1, "maximum": 600,
                        "description": "seconds before a Slurm command counts as hung, 1 to 600"},
    "bin_dir": {"type": "string", "pattern": r"^(/[^\n\0]*)?$",
                "description": "'' or the absolute directory of sbatch, squeue and scancel"},
    "cluster_name": _(_name, "the embedded cluster's name, also in each job's comment"),
    "conf_dir": _(_abs_path, "where the embedded cluster's slurm.conf is written"),
    "state_dir": _(_abs_path, "the embedded cluster's state"),
    "log_dir": _(_abs_path, "the embedded cluster's logs"),
    "ctld_port": _(_port, "slurmctld's port"),
    "slurmd_port": _(_port, "slurmd's port"),
    "dbd_port": _(_port, "slurmdbd's port (the embedded cluster's accounting)"),
    "db_port": _(_port, "the embedded cluster's accounting database (MariaDB), on loopback"),
    "operators_group": _(_name, "the Unix group whose members may use operators-only partitions"),
    "end_notices_dir": {"type": "string", "pattern": r"^(/[^\n\0]*)?$",
                        "description": "'' or the absolute directory where EpilogSlurmctld notes ended jobs "
                                       "for the hub (on the hub's host)"},
    "accounts": ACCOUNTS,
    "node_cpus": {"type": "integer", "minimum": 1, "maximum": 4096,
                  "description": "the embedded node's CPU cores, 1 to 4096"},
    "node_memory_mb": {"type": "integer", "minimum": 256,
                       "description": "the embedded node's memory in MB, at least 256"},
    "gpu_type": _(_name, "the embedded node's GPU type, as in gres gpu:<type>:<n>"),
    "gpus": {"type": "integer", "minimum": 0, "maximum": 64,
             "description": "the embedded node's GPUs, 0 to 64"},
    "nodes": {"type": "integer", "minimum": 1, "maximum": 8,
              "description": "the embedded cluster's compute nodes, 1 to 8; above 1 each in its own network "
                             "namespace with its own address (a try-out of a site's layout)"},
    "network": {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}/(1[6-9]|2[0-4])$",
                "description": "the try-out cluster's private network, e.g. 10.77.0.0/24 (a /16 to /24): the "
                               "service node is .1, node N is .(10+N)"},
    "node_gpu_types": {"type": "array", "items": _(_name, "a GPU type"),
                       "description": "GPU types of nodes 2, 3, ... of the try-out cluster (node 1 has gpu_type; "
                                      "a node past the list's end too)"},
    "server_ip": {"type": "string", "description": "address session servers bind to"},
    "node_hosts": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Slurm node name -> address the hub connects to"},
    "partitions": {"type": "array", "minItems": 1, "items": PARTITION,
                   "description": "the embedded cluster's partitions, a non-empty list"},
})

ASSESSMENTS = _section("assignments, submissions and grading", {
    "root": _(_abs_path, "published assignments, submissions and grading batches (root only)"),
    "database": {"type": "string", "description": "SQLAlchemy URL of the gradebook; empty for SQLite in root"},
    "work_root": _(_abs_path, "on each grading node, the sandboxes' scratch space"),
    "exchange_port": _(_port, "the exchange service's port, on the hub's address"),
    "max_parallel": {"type": "integer", "minimum": 0, "maximum": 100000,
                     "description": "grading tasks at once; 0 for the node's cores"},
    "cell_timeout": {"type": "integer", "minimum": 1, "maximum": 86400,
                     "description": "seconds one cell may run when graded, 1 to 86400"},
    "sandbox_memory": _(_size, "memory per graded submission (RLIMIT_DATA)"),
    "sandbox_processes": {"type": "integer", "minimum": 8, "maximum": 100000,
                          "description": "processes per graded submission, 8 to 100000"},
    "late_penalty_per_day": {"type": "number", "minimum": 0, "maximum": 1,
                             "description": "fraction of the points lost per started day late, 0 to 1"},
    "late_grace_s": {"type": "number", "minimum": 0,
                     "description": "seconds after the deadline still counted on time, at least 0"},
    "submission_max_size": {"type": "string", "pattern": r"^[1-9][0-9]*[MG]$",
                            "description": "the most one submission may hold, a size such as 20M or 1G"},
    "submissions_per_hour": {"type": "integer", "minimum": 1, "maximum": 3600,
                             "description": "submissions a learner may store per assignment in any hour, 1 to 3600"},
    "learner_quota": {"type": "string", "pattern": r"^[1-9][0-9]*[MGT]$",
                      "description": "what one learner's submissions may take in the store, all "
                                     "courses together, a size such as 500M or 2G"},
    "keep_submissions": {"type": "integer", "minimum": 1, "maximum": 1000,
                         "description": "the latest submissions kept per learner and assignment (graded "
                                        "ones are kept besides), 1 to 1000"},
    "demo_enrolment": _section("demo only: who is enrolled in every catalogue course at start-up", {
        "learners": _(_users, "enrolled as learners in each course"),
        "trainers": _(_users, "enrolled as trainers in each course"),
    }),
})

PROGRESS = _section("the progress service (learner and trainer dashboards)", {
    "database": {"type": "string", "description": "SQLAlchemy URL; empty for SQLite in hub.state_dir"},
    "port": _(_port, "its port, on the hub's address"),
    "auth_cache_s": {"type": "number", "minimum": 0, "maximum": 3600,
                     "description": "seconds the hub's answer about a token is reused, 0 to 3600"},
    "accounting_interval": _within("number", 0, 86400, "seconds between the batched sacct calls that close ended "
                                   "sessions with Slurm's figures (GPU-hours); 0 for never"),
})

WORKSHOPS = _section("workshops: join codes, pooled accounts, pre-warmed sessions (academy workshop ...)", {
    "database": {"type": "string", "description": "SQLAlchemy URL of the workshops' records; empty for SQLite in "
                                                  "hub.state_dir"},
    "profiles": {"type": "array", "items": _name,
                 "description": "the profile keys a workshop may give its attendees (a list of profile keys)"},
    "max_seats": _within("integer", 1, 999, "seats one workshop may have"),
    "prewarm_minutes": _within("integer", 0, 240, "minutes before a workshop's start that its seats' sessions are "
                               "started, unassigned (and its reservation begins); 0 for no pre-warming"),
    "keep_warm_minutes": _within("integer", 0, 1440, "minutes after the start that warm sessions nobody took are "
                                 "cancelled (a later attendee starts cold)"),
    "join_failures_per_minute": _within("integer", 1, 1000, "wrong join codes one address may try per minute "
                                        "before it must wait"),
    "interval": _within("number", 0.5, 600, "seconds between the workshop service's rounds (pre-warm, release, "
                        "end of window)"),
    "export_dir": _(_abs_path, "where a workshop's attendees' files are archived at its end (root only; the "
                    "trainer downloads them from the workshop's page)"),
    "home_root": _(_abs_path, "parent of the pooled accounts' home directories"),
})

DEMO = _section("demo accounts: real Unix users with generated passwords; disable in production", {
    "enabled": {"type": "boolean", "description": "true to create the demo users and courses"},
    "credentials_file": _(_abs_path, "where the generated passwords are kept (root only)"),
    "users": {"type": "object", "propertyNames": _user,
              "additionalProperties": {"type": "array", "items": _name},
              "description": "user name -> list of hub groups"},
})

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["hub", "auth", "notebook_env", "sessions", "slurm", "profiles", "demo"],
    "properties": {
        "hub": HUB,
        "auth": AUTH,
        "notebook_env": _(_abs_path, "the session's virtual environment, readable by learners"),
        "sessions": SESSIONS,
        "slurm": SLURM,
        "profiles": {"type": "array", "minItems": 1, "items": PROFILE_SCHEMA,
                     "description": "resource profiles a learner chooses from, a non-empty list"},
        "assessments": ASSESSMENTS,
        "progress": PROGRESS,
        "workshops": WORKSHOPS,
        "demo": DEMO,
    },
}
