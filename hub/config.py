"""The platform's configuration: defaults -> operator file, validated once at start-up.

Layers, later ones winning (mappings merge key by key, lists replace):
1. hub/defaults.yaml (the embedded default: one-node Slurm, SQLite, demo users);
2. the operator's file: $ACADEMY_CONFIG, else /etc/academy/config.yaml if it exists.
The merged result is checked against SCHEMA and every profile by spawners.profiles; the
first problem found is reported with the key's path and what is accepted.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from spawners.profiles import ProfileError, parse_profiles

from .config_schema import SCHEMA

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
SYSTEM_CONFIG = Path("/etc/academy/config.yaml")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is accepted."""


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


def _path_of(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def validate(cfg: dict) -> dict:
    """Validate a merged configuration; return it, or raise ConfigError."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        hint = e.schema.get("description", "")
        if e.validator == "additionalProperties":
            allowed = ", ".join(sorted(e.schema.get("properties", {})))
            raise ConfigError(f"config key {_path_of(e)}: {e.message}; accepted keys: {allowed}")
        raise ConfigError(f"config key {_path_of(e)}: {e.message}" + (f"; accepted: {hint}" if hint else ""))
    try:
        profiles = parse_profiles(cfg["profiles"])
    except ProfileError as e:
        raise ConfigError(f"config key {e}") from None
    partitions = {p["name"] for p in cfg["slurm"]["partitions"]}
    if cfg["slurm"]["manage"]:
        for i, p in enumerate(profiles):
            if p.partition not in partitions:
                raise ConfigError(
                    f"config key profiles[{i}] ({p.key}): partition '{p.partition}' is not one of the embedded "
                    f"cluster's partitions: {', '.join(sorted(partitions))}"
                )
    return cfg


def load(path: Path | None = None) -> dict:
    """Read the layers and validate them."""
    cfg = _read_yaml(DEFAULTS_FILE)
    path = path if path is not None else config_path()
    if path is not None:
        cfg = merge(cfg, _read_yaml(path))
    return validate(cfg)
