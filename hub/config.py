"""The platform's configuration: defaults -> operator file -> drop-ins, validated once at start-up.

Layers, later ones winning (mappings merge key by key, lists replace):
1. hub/defaults.yaml (the embedded default: one-node Slurm, SQLite, demo users);
2. the operator's file: $ACADEMY_CONFIG, else /etc/academy/config.yaml if it exists;
3. every ``*.yaml`` in ``config.d/`` beside that file (/etc/academy/config.d/ when there is
   none), in name order: secrets and site parts that another tool or person owns.
The merged result is checked against SCHEMA and every profile by spawners.profiles; the
first problem found is reported with the key's path, what is accepted, and the file that set it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jsonschema
import yaml

from spawners.profiles import ProfileError, parse_profiles

from . import cluster_network
from .config_schema import OIDC, SCHEMA

OIDC_HINTS = {key: OIDC["properties"][key]["description"] for key in ("issuer", "client_id")}

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
SYSTEM_CONFIG = Path("/etc/academy/config.yaml")
DROP_IN_DIR = "config.d"
LOOPBACK = ("127.0.0.1", "localhost")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is accepted."""

    def __init__(self, message: str, path: tuple = ()):
        super().__init__(message)
        self.path = tuple(path)  # where in the merged config, for naming the file that set it


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base``."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def config_path() -> Path | None:
    explicit = os.environ.get("ACADEMY_CONFIG")
    if explicit:
        return Path(explicit)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def drop_in_files(path: Path | None) -> list[Path]:
    """The drop-ins that layer over ``path`` (the operator's file, or None), in name order."""
    directory = (path.parent if path is not None else SYSTEM_CONFIG.parent) / DROP_IN_DIR
    return sorted(directory.glob("*.yaml")) if directory.is_dir() else []


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def _path_of(path: tuple) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _inside_a_profile(path) -> bool:
    return len(path) > 1 and path[0] == "profiles"


def _schema_error(cfg: dict) -> ConfigError | None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    # Inside a profile, spawners.profiles words the problem (profile key, field, accepted values).
    errors = [e for e in validator.iter_errors(cfg) if not _inside_a_profile(e.absolute_path)]
    if not errors:
        return None
    e = min(errors, key=lambda e: [str(p) for p in e.absolute_path])
    path = tuple(e.absolute_path)
    if e.validator == "additionalProperties":
        allowed = ", ".join(sorted(e.schema.get("properties", {})))
        unexpected = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        # The path of the unexpected key itself, so that the file holding it is named.
        return ConfigError(f"config key {_path_of(path)}: {e.message}; accepted keys: {allowed}",
                           path + tuple(unexpected[:1]))
    hint = e.schema.get("description", "")
    return ConfigError(f"config key {_path_of(path)}: {e.message}" + (f"; accepted: {hint}" if hint else ""), path)


def validate(cfg: dict) -> dict:
    """Validate a merged configuration; return it, or raise ConfigError."""
    error = _schema_error(cfg)
    if error:
        raise error
    try:
        profiles = parse_profiles(cfg["profiles"])
    except ProfileError as e:
        raise ConfigError(f"config key {e}", ("profiles",)) from None
    if cfg["auth"]["type"] == "oidc":
        oidc = cfg["auth"]["oidc"]
        for key in ("issuer", "client_id"):
            if not oidc[key]:
                raise ConfigError(f"config key auth.oidc.{key}: required when auth.type is oidc; accepted: "
                                  f"{OIDC_HINTS[key]}", ("auth", "oidc", key))
    partitions = {p["name"] for p in cfg["slurm"]["partitions"]}
    if cfg["slurm"]["manage"]:
        for i, p in enumerate(profiles):
            if p.partition not in partitions:
                raise ConfigError(
                    f"config key profiles[{i}] ({p.key}): partition '{p.partition}' is not one of the embedded "
                    f"cluster's partitions: {', '.join(sorted(partitions))}", ("profiles",)
                )
    if cluster_network.multi_host(cfg):
        _derive_multi_host(cfg)
    return cfg


def _derive_multi_host(cfg: dict) -> None:
    """A multi-host try-out cluster: the hub is reached on the service address (sessions run in the
    nodes' namespaces, where 127.0.0.1 is the node itself) and servers on their node's address;
    what the operator set explicitly stays."""
    try:
        service = cluster_network.service_address(cfg)
    except ValueError as e:
        raise ConfigError(f"config key slurm.network: {e}; accepted: a network address with its prefix, "
                          "e.g. 10.77.0.0/24", ("slurm", "network")) from None
    hub, slurm = cfg["hub"], cfg["slurm"]
    if hub["hub_ip"] in LOOPBACK:
        hub["hub_ip"] = service
    url = urlsplit(hub["hub_connect_url"])
    if url.hostname in LOOPBACK:
        hub["hub_connect_url"] = urlunsplit(url._replace(netloc=f"{service}:{url.port or hub['hub_port']}"))
    if slurm["server_ip"] in LOOPBACK:
        slurm["server_ip"] = "0.0.0.0"   # inside the node's namespace: its own address (and its loopback)
    slurm["node_hosts"] = slurm["node_hosts"] or cluster_network.node_hosts(cfg)


def write_drop_in(name: str, data: dict) -> Path:
    """Write one drop-in beside the config file (atomically); the file's path."""
    path = config_path()
    target = (path.parent if path is not None else SYSTEM_CONFIG.parent) / DROP_IN_DIR / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("# Written by `academy`; edit the config file instead of this one.\n" + yaml.safe_dump(data))
    os.replace(tmp, target)
    return target


def _origin(layers: list[tuple[Path, dict]], path: tuple) -> Path | None:
    """The last file that set the value at ``path`` (a list is set whole by one file)."""
    for source, data in reversed(layers):
        value: Any = data
        for key in path:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
            if not isinstance(value, dict):
                return source
        else:
            return source
    return None


def load(path: Path | None = None) -> dict:
    """Read the layers and validate them."""
    cfg = _read_yaml(DEFAULTS_FILE)
    path = path if path is not None else config_path()
    layers = [(f, _read_yaml(f)) for f in ([path] if path is not None else []) + drop_in_files(path)]
    for _, data in layers:
        cfg = merge(cfg, data)
    try:
        return validate(cfg)
    except ConfigError as e:
        source = _origin(layers, e.path) if e.path else None
        if source is None:
            raise
        raise ConfigError(f"{source}: {e}", e.path) from None
