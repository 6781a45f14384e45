"""Config declared once: code defaults that repeat a config key equal hub/defaults.yaml, and
docs/configuration.md is what hub/config_reference.py prints from the schema today."""

from pathlib import Path

import yaml
from traitlets.config import Config

from hub.config import load
from hub.config_reference import reference
from hub.configurer import update_services, update_spawner

ROOT = Path(__file__).resolve().parents[2]

# Traits update_spawner sets from something other than one config key's value.
DERIVED = {
    "profiles",            # the whole validated list; an unconfigured spawner offers none
    "hub_instance",        # academy-<slurm.cluster_name>[-<hub.instance>], not a key of its own
    "session_event_hook",  # an object the hub builds
    "slurm_accounts",      # the whole slurm.accounts section; an unconfigured spawner charges no account
    "slurm_manage_qos",    # slurm.manage: only the embedded cluster's QOS are the platform's to keep
    "end_notices_dir",     # slurm.end_notices_dir, else the embedded cluster's own (slurm.manage)
}


def defaults_only(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"hub": {"state_dir": str(tmp_path)}}))
    return load(tmp_path / "config.yaml")


def test_spawner_trait_defaults_equal_the_config_defaults(tmp_path):
    from spawners.slurm_spawner import AcademySlurmSpawner
    c = Config()
    update_spawner(c, defaults_only(tmp_path))
    configured = {name: value for name, value in c.AcademySlurmSpawner.items() if name not in DERIVED}
    assert {"monitor_interval", "monitor_max_interval", "pending_timeout", "cancel_attempts", "cancel_backoff",
            "token_expiry_margin", "slurm_timeout", "slurm_bin_dir", "notebook_env"} <= set(configured)
    traits = AcademySlurmSpawner.class_traits()
    drift = {name: (traits[name].default(), value) for name, value in configured.items()
             if traits[name].default() != value}
    assert drift == {}, "trait default != hub/defaults.yaml (trait, config)"


def test_reaper_option_defaults_equal_the_config_defaults(tmp_path):
    from spawners.reaper import arg_parser
    c = Config()
    update_services(c, defaults_only(tmp_path))
    (reaper,) = [s for s in c.JupyterHub.services if s["name"] == "academy-reaper"]
    configured = vars(arg_parser().parse_args(reaper["command"][3:]))  # after python -m spawners.reaper
    defaults = vars(arg_parser().parse_args(["--tag", configured["tag"]]))
    assert configured == defaults


def test_the_configuration_reference_is_current():
    checked_in = (ROOT / "docs" / "configuration.md").read_text()
    assert checked_in == reference(), "run: python -m hub.config_reference > docs/configuration.md"


def test_the_reference_lists_every_key_with_its_default():
    doc = reference()
    assert "| `sessions.monitor_interval` | number | `30` | seconds between batched squeue calls" in doc
    assert '| `auth.type` | "pam" or "oidc" | `"pam"` |' in doc
    assert '| `auth.oidc.username_claim` | string | `"preferred_username"` |' in doc
    assert "| `profiles[].walltime_max` | string | (required) |" in doc
    assert "| `profiles[].gres` | string | `\"\"` |" in doc
