"""The platform config: layered, validated at start-up, errors name the key."""

import pytest
import yaml

from hub.config import ConfigError, load, merge


def write(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_load(tmp_path):
    cfg = load(write(tmp_path, {}))
    assert cfg["hub"]["port"] == 8000 and cfg["slurm"]["manage"] is True


def test_operator_file_overrides_one_key_and_keeps_the_rest(tmp_path):
    cfg = load(write(tmp_path, {"hub": {"port": 9000}}))
    assert cfg["hub"]["port"] == 9000 and cfg["hub"]["hub_port"] == 8081


def test_merge_replaces_lists_and_merges_mappings():
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


@pytest.mark.parametrize("override,message", [
    ({"hub": {"port": 70000}}, "config key hub.port: 70000 is greater than the maximum of 65535"),
    ({"hub": {"prot": 80}}, "config key hub: Additional properties are not allowed ('prot' was unexpected); accepted keys:"),
    ({"slurm": {"manage": "yes"}}, "config key slurm.manage: 'yes' is not of type 'boolean'"),
    ({"profiles": [{"key": "x"}]}, "config key profiles[0] (x): missing key(s) display, partition"),
    ({"profiles": [{"key": "gpu", "display": "g", "partition": "nope", "cpus": 1, "memory": "1G",
                    "walltime_default": "00:10:00", "walltime_max": "00:20:00", "groups": ["learners"]}]},
     "partition 'nope' is not one of the embedded cluster's partitions: cpu, gpu"),
    ({"demo": {"users": {"Bad User": ["learners"]}}}, "config key demo.users"),
    ({"hub": {"public_url": "academy.example.eu"}}, "config key hub.public_url: 'academy.example.eu' does not match"),
    ({"hub": {"public_url": "https://academy.example.eu/hub/"}}, "config key hub.public_url"),
])
def test_bad_config_names_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, override))
    assert message in str(e.value)


def test_the_public_url_is_what_users_are_shown(tmp_path):
    from hub.hub_process import local_url, public_url
    cfg = load(write(tmp_path, {"hub": {"public_url": "https://academy.example.eu"}}))
    assert public_url(cfg) == "https://academy.example.eu/" and local_url(cfg) == "http://127.0.0.1:8000/"
    assert public_url(load(write(tmp_path, {}))) == "http://127.0.0.1:8000/"


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_behind_a_tls_proxy_the_hub_is_told_its_public_url(tmp_path):
    from traitlets.config import Config

    from hub.configurer import update_network
    c = Config()
    update_network(c, load(write(tmp_path, {"hub": {"public_url": "https://academy.example.eu"}})))
    assert c.JupyterHub.public_url == "https://academy.example.eu/"
    c = Config()
    update_network(c, load(write(tmp_path, {})))
    assert "public_url" not in c.JupyterHub  # the hub works it out from each request, as stock
