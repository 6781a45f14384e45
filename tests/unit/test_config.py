"""The platform config: layered, validated at start-up, errors name the key."""

import pytest
import yaml

from hub.config import ConfigError, load, merge
from hub.config_schema import SCHEMA


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


def test_hubs_sharing_a_cluster_tag_their_jobs_apart(tmp_path):
    from hub.configurer import platform_tag, update_services, update_spawner
    from traitlets.config import Config

    assert platform_tag(load(write(tmp_path, {}))) == "academy-academy"   # the only hub: as before the key
    cfg = load(write(tmp_path, {"hub": {"instance": "staging", "state_dir": str(tmp_path)}}))
    c = Config()
    update_spawner(c, cfg)
    update_services(c, cfg)
    reaper = next(s["command"] for s in c.JupyterHub.services if s["name"] == "academy-reaper")
    # the spawner's job comments and the reaper's filter are the same tag
    assert c.AcademySlurmSpawner.hub_instance == reaper[reaper.index("--tag") + 1] == "academy-academy-staging"
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, {"hub": {"instance": "Prod:1"}}))
    assert "config key hub.instance: 'Prod:1' does not match" in str(e.value)


def test_behind_a_tls_proxy_the_hub_is_told_its_public_url(tmp_path):
    from traitlets.config import Config

    from hub.configurer import update_network
    c = Config()
    update_network(c, load(write(tmp_path, {"hub": {"public_url": "https://academy.example.eu"}})))
    assert c.JupyterHub.public_url == "https://academy.example.eu/"
    c = Config()
    update_network(c, load(write(tmp_path, {})))
    assert "public_url" not in c.JupyterHub  # the hub works it out from each request, as stock


# --- every key described: each error names the key and what is accepted -------------------------

def _leaves(schema, defaults, path=()):
    """(path, schema) of every key the operator can set, list entries through their first default."""
    for key, sub in schema.get("properties", {}).items():
        here = (*path, key)
        value = defaults.get(key) if isinstance(defaults, dict) else None
        if "properties" in sub:
            yield from _leaves(sub, value, here)
        elif sub.get("type") == "array" and "properties" in sub.get("items", {}):
            yield from _leaves(sub["items"], value[0], (*here, 0))
        else:
            yield here, sub


def _schema_nodes(schema, where="(top)"):
    for key, sub in schema.get("properties", {}).items():
        yield f"{where}.{key}", sub
        yield from _schema_nodes(sub, f"{where}.{key}")
        if isinstance(sub.get("items"), dict):
            yield from _schema_nodes(sub["items"], f"{where}.{key}[]")


def test_every_key_in_the_schema_has_a_description():
    undescribed = [name for name, sub in _schema_nodes(SCHEMA) if not sub.get("description", "").strip()]
    assert undescribed == []


def _defaults():
    from hub.config import DEFAULTS_FILE
    return yaml.safe_load(DEFAULTS_FILE.read_text())


def _name(path):
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


@pytest.mark.parametrize("path,sub", [pytest.param(path, sub, id=_name(path)) for path, sub in _leaves(SCHEMA, _defaults())])
def test_a_wrong_value_for_any_key_names_it_and_what_is_accepted(path, sub):
    from hub.config import validate
    cfg = _defaults()
    *parents, last = path
    target = cfg
    for p in parents:
        target = target[p]
    target[last] = "not a mapping" if sub.get("type") == "object" else {"not": "this"}
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    message = str(e.value)
    if path[0] == "profiles":  # worded by spawners.profiles
        assert "config key profiles[0]" in message and f"key '{last}'" in message
    else:
        assert f"config key {_name(path)}:" in message
    assert f"accepted: {sub['description']}" in message


# --- drop-in directory: config.d/*.yaml beside the config file, in name order ---------------------

def drop_in(tmp_path, name, data):
    (tmp_path / "config.d").mkdir(exist_ok=True)
    path = tmp_path / "config.d" / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_drop_ins_layer_over_the_config_file_in_name_order(tmp_path):
    main = write(tmp_path, {"hub": {"port": 9000, "admin_users": ["ops-a", "ops-b"]}})
    drop_in(tmp_path, "20-site.yaml", {"hub": {"port": 9200}})
    drop_in(tmp_path, "10-secrets.yaml", {"hub": {"port": 9100, "db_url": "postgresql://academy:s3cret@db/hub",
                                                  "admin_users": ["ops-c"]}})
    drop_in(tmp_path, "30-ignored.yaml.disabled", {"hub": {"port": 9300}})
    cfg = load(main)
    assert cfg["hub"]["port"] == 9200                             # 20-site after 10-secrets after config.yaml
    assert cfg["hub"]["db_url"] == "postgresql://academy:s3cret@db/hub"
    assert cfg["hub"]["admin_users"] == ["ops-c"]                  # lists replace, as in the main file
    assert cfg["hub"]["hub_port"] == 8081                          # the rest stays the default


def test_drop_ins_apply_without_a_config_file(tmp_path, monkeypatch):
    import hub.config
    monkeypatch.delenv("ACADEMY_CONFIG", raising=False)
    monkeypatch.setattr(hub.config, "SYSTEM_CONFIG", tmp_path / "config.yaml")  # absent
    drop_in(tmp_path, "50-port.yaml", {"hub": {"port": 9400}})
    assert hub.config.load()["hub"]["port"] == 9400


@pytest.mark.parametrize("data,key", [
    ({"hub": {"port": 70000}}, "config key hub.port: 70000 is greater than the maximum"),
    ({"hub": {"prot": 80}}, "'prot' was unexpected"),
    ({"profiles": [{"key": "x"}]}, "config key profiles[0] (x): missing key(s)"),
])
def test_a_bad_drop_in_names_its_file_and_key(tmp_path, data, key):
    main = write(tmp_path, {"hub": {"hub_port": 8090}})
    drop_in(tmp_path, "10-fine.yaml", {"hub": {"ip": "0.0.0.0"}})
    bad = drop_in(tmp_path, "20-bad.yaml", data)
    drop_in(tmp_path, "30-fine.yaml", {"hub": {"http_timeout": 30}})
    with pytest.raises(ConfigError) as e:
        load(main)
    assert str(e.value).startswith(f"{bad}: ") and key in str(e.value)


def test_a_bad_main_file_is_named_not_the_drop_in_beside_it(tmp_path):
    main = write(tmp_path, {"hub": {"port": 70000}})
    drop_in(tmp_path, "10-fine.yaml", {"hub": {"hub_port": 8090}})
    with pytest.raises(ConfigError) as e:
        load(main)
    assert str(e.value).startswith(f"{main}: config key hub.port:")


def test_a_malformed_drop_in_is_named(tmp_path):
    bad = drop_in(tmp_path, "10-bad.yaml", "hub: [unclosed\n")
    with pytest.raises(ConfigError, match=f"config file {bad} is not valid YAML"):
        load(write(tmp_path, {}))


# --- auth -----------------------------------------------------------------------------------------

def test_pam_is_the_embedded_authenticator(tmp_path):
    from traitlets.config import Config

    from hub.configurer import update_auth
    cfg = load(write(tmp_path, {}))
    assert cfg["auth"]["type"] == "pam"
    c = Config()
    update_auth(c, cfg)
    assert c.JupyterHub.authenticator_class == "pam" and c.PAMAuthenticator.open_sessions is False


def test_the_authenticator_comes_from_auth_type_not_from_code(tmp_path):
    from traitlets.config import Config

    from hub.configurer import update_auth
    cfg = load(write(tmp_path, {}))
    cfg["auth"]["type"] = "dummy"  # past validation: what update_auth does with another value
    c = Config()
    update_auth(c, cfg)
    assert c.JupyterHub.authenticator_class == "dummy" and "open_sessions" not in c.PAMAuthenticator


def test_an_authenticator_other_than_pam_or_oidc_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, {"auth": {"type": "github"}}))
    message = str(e.value)
    assert "config key auth.type: 'github' is not one of ['pam', 'oidc']" in message
    assert "accepted: the authenticator: 'pam'" in message


@pytest.mark.parametrize("oidc,message", [
    ({}, "config key auth.oidc.issuer: required when auth.type is oidc; accepted: the provider's issuer URL"),
    ({"issuer": "https://login.example.eu/realms/ai"}, "config key auth.oidc.client_id: required when auth.type is oidc"),
    ({"issuer": "login.example.eu", "client_id": "hub"}, "config key auth.oidc.issuer: 'login.example.eu' does not match"),
    ({"issuer": "https://id.example.eu", "client_id": "hub", "course_roles": {"students": {"course": "llm-101",
                                                                                          "role": "admin"}}},
     "config key auth.oidc.course_roles.students.role: 'admin' is not one of ['learner', 'trainer']"),
    ({"issuer": "https://id.example.eu", "client_id": "hub", "group_map": {"staff": ["Trainers!"]}},
     "config key auth.oidc.group_map.staff[0]"),
    ({"issuer": "https://id.example.eu", "client_id": "hub", "unix_accounts": "ldap"},
     "config key auth.oidc.unix_accounts: 'ldap' is not one of ['existing', 'create']"),
])
def test_oidc_settings_are_checked_at_start_up(tmp_path, oidc, message):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, {"auth": {"type": "oidc", "oidc": oidc}}))
    assert message in str(e.value)


def test_oidc_login_is_configured_from_the_providers_discovery_document(tmp_path, monkeypatch):
    """Endpoints by discovery; the secret from a root-only file (a readable one is refused);
    groups managed by the authenticator; tokens kept and checked again every refresh_s."""
    from traitlets.config import Config

    from hub import oidc_auth
    from hub.configurer import update_auth, update_groups
    issuer = "https://id.example.eu/realms/ai"
    monkeypatch.setattr(oidc_auth, "discover", lambda url: {
        "authorization_endpoint": f"{url}/auth", "token_endpoint": f"{url}/token", "userinfo_endpoint": f"{url}/me"})
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    cfg = load(write(tmp_path, {"hub": {"state_dir": str(tmp_path / "state"), "public_url": "https://academy.example.eu"},
                                "auth": {"type": "oidc", "oidc": {"issuer": issuer, "client_id": "hub",
                                         "client_secret_file": str(secret), "refresh_s": 60,
                                         "group_map": {"staff": ["trainers"]}}}}))
    (tmp_path / "state").mkdir()
    with pytest.raises(oidc_auth.OIDCSetupError, match="may be read by others .* chmod 600"):
        update_auth(Config(), cfg)
    secret.chmod(0o600)
    c = Config()
    update_auth(c, cfg)
    update_groups(c, cfg)
    a = c.AcademyOIDCAuthenticator
    assert c.JupyterHub.authenticator_class is oidc_auth.AcademyOIDCAuthenticator
    assert (a.authorize_url, a.token_url, a.userdata_url) == (f"{issuer}/auth", f"{issuer}/token", f"{issuer}/me")
    assert a.client_secret == "s3cret" and a.oauth_callback_url == "https://academy.example.eu/hub/oauth_callback"
    assert a.manage_groups is True and a.enable_auth_state is True and a.auth_refresh_age == 60
    assert a.group_map == {"staff": ["trainers"]} and "load_groups" not in c.JupyterHub
