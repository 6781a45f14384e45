"""JSON schema of /etc/academy/config.yaml: the one source of validation and of the keys' docs.

Profiles are checked structurally here and semantically by spawners.profiles.
"""

_name = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
         "description": "letters, digits, '_', '.' and '-'"}
_port = {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port, 1 to 65535"}
_walltime = {"type": "string", "pattern": r"^(\d{1,2}-)?\d{1,2}:\d{2}:\d{2}$",
             "description": "HH:MM:SS or D-HH:MM:SS"}
_abs_path = {"type": "string", "pattern": r"^/[^\n\0]*$", "description": "an absolute path"}
_user = {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$", "description": "a Unix user name"}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["hub", "notebook_env", "sessions", "slurm", "profiles", "demo"],
    "properties": {
        "hub": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ip": {"type": "string", "description": "address the public proxy listens on"},
                "port": _port,
                "public_url": {"type": "string", "pattern": r"^(https?://[^\s/]+/?)?$",
                               "description": "http(s) URL users open (the TLS reverse proxy's); empty: http://ip:port/"},
                "hub_ip": {"type": "string", "description": "address the hub's API listens on"},
                "hub_port": _port,
                "proxy_api_port": _port,
                "hub_connect_url": {"type": "string", "pattern": r"^https?://[^\s]+$",
                                    "description": "http(s) URL the compute nodes use to reach the hub"},
                "state_dir": _abs_path,
                "log_dir": _abs_path,
                "db_url": {"type": "string", "description": "SQLAlchemy URL; empty for SQLite in state_dir"},
                "admin_users": {"type": "array", "items": _user},
                "start_timeout": {"type": "integer", "minimum": 10, "maximum": 86400,
                                  "description": "seconds a session may take to start, queue time included"},
                "http_timeout": {"type": "integer", "minimum": 5, "maximum": 3600,
                                 "description": "seconds for a started server to answer"},
                "poll_interval": {"type": "integer", "minimum": 1, "maximum": 3600,
                                  "description": "seconds between the hub's checks of each session"},
            },
        },
        "notebook_env": {**_abs_path, "description": "the session's virtual environment, readable by learners"},
        "sessions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "pending_timeout": {"type": "integer", "minimum": 0, "maximum": 86400,
                                    "description": "seconds in the queue before a start is cancelled; 0 for automatic"},
                "monitor_interval": {"type": "number", "minimum": 0.5, "maximum": 600,
                                     "description": "seconds between batched squeue calls"},
                "idle_timeout": {"type": "integer", "minimum": 0, "description": "seconds; 0 disables idle culling"},
                "reaper_interval": {"type": "number", "minimum": 1, "maximum": 3600},
                "reaper_grace": {"type": "number", "minimum": 0, "maximum": 86400},
            },
        },
        "slurm": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "manage": {"type": "boolean", "description": "true to run the embedded one-node cluster"},
                "command_timeout": {"type": "number", "minimum": 1, "maximum": 600,
                                    "description": "seconds before a Slurm command counts as hung"},
                "bin_dir": {"type": "string", "pattern": r"^(/[^\n\0]*)?$",
                            "description": "'' or the absolute directory of sbatch, squeue and scancel"},
                "cluster_name": _name,
                "conf_dir": _abs_path,
                "state_dir": _abs_path,
                "log_dir": _abs_path,
                "ctld_port": _port,
                "slurmd_port": _port,
                "node_cpus": {"type": "integer", "minimum": 1, "maximum": 4096},
                "node_memory_mb": {"type": "integer", "minimum": 256},
                "gpu_type": _name,
                "gpus": {"type": "integer", "minimum": 0, "maximum": 64},
                "server_ip": {"type": "string", "description": "address session servers bind to"},
                "node_hosts": {"type": "object", "additionalProperties": {"type": "string"},
                               "description": "Slurm node name -> address the hub connects to"},
                "partitions": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "max_time", "default_time"],
                        "properties": {
                            "name": _name,
                            "max_time": _walltime,
                            "default_time": _walltime,
                            "default": {"type": "boolean"},
                            "priority_tier": {"type": "integer", "minimum": 1, "maximum": 65533,
                                              "description": "higher tiers preempt (cancel) lower ones"},
                            "hidden": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "profiles": {"type": "array", "minItems": 1, "items": {"type": "object"},
                     "description": "resource profiles, see spawners/profiles.py"},
        "assessments": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "root": _abs_path,
                "database": {"type": "string", "description": "SQLAlchemy URL; empty for SQLite in root"},
                "work_root": _abs_path,
                "exchange_port": _port,
                "max_parallel": {"type": "integer", "minimum": 0, "maximum": 100000,
                                 "description": "grading tasks at once; 0 for the node's cores"},
                "cell_timeout": {"type": "integer", "minimum": 1, "maximum": 86400},
                "sandbox_memory": {"type": "string", "pattern": r"^[1-9][0-9]*[MGT]$",
                                   "description": "a size such as 512M or 3G"},
                "sandbox_processes": {"type": "integer", "minimum": 8, "maximum": 100000},
                "late_penalty_per_day": {"type": "number", "minimum": 0, "maximum": 1},
                "late_grace_s": {"type": "number", "minimum": 0},
                "submission_max_size": {"type": "string", "pattern": r"^[1-9][0-9]*[MG]$",
                                        "description": "the most one submission may hold, a size such as 20M or 1G"},
                "submissions_per_hour": {"type": "integer", "minimum": 1, "maximum": 3600,
                                         "description": "submissions a learner may store per assignment in any hour, "
                                                        "1 to 3600"},
                "learner_quota": {"type": "string", "pattern": r"^[1-9][0-9]*[MGT]$",
                                  "description": "what one learner's submissions may take in the store, all "
                                                 "courses together, a size such as 500M or 2G"},
                "keep_submissions": {"type": "integer", "minimum": 1, "maximum": 1000,
                                     "description": "the latest submissions kept per learner and assignment (graded "
                                                    "ones are kept besides), 1 to 1000"},
                "demo_enrolment": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"learners": {"type": "array", "items": _user},
                                   "trainers": {"type": "array", "items": _user}},
                },
            },
        },
        "progress": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "database": {"type": "string", "description": "SQLAlchemy URL; empty for SQLite in hub.state_dir"},
                "port": _port,
                "auth_cache_s": {"type": "number", "minimum": 0, "maximum": 3600},
            },
        },
        "demo": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "credentials_file": _abs_path,
                "users": {"type": "object", "propertyNames": _user,
                          "additionalProperties": {"type": "array", "items": _name},
                          "description": "user name -> list of hub groups"},
            },
        },
    },
}
