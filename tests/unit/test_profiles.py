"""Profile validation: every bad field is refused with the profile and the key named."""

import copy

import pytest

from hub.config import DEFAULTS_FILE
from spawners.profiles import ProfileError, format_walltime, parse_profiles, parse_walltime, profiles_for_groups

import yaml

GOOD = {
    "key": "gpu-h200-1",
    "display": "One H200",
    "partition": "gpu",
    "gres": "gpu:h200:1",
    "cpus": 4,
    "memory": "16G",
    "walltime_default": "01:00:00",
    "walltime_max": "02:00:00",
    "groups": ["learners"],
}


def with_(**changes):
    p = copy.deepcopy(GOOD)
    for k, v in changes.items():
        if v is None:
            p.pop(k)
        else:
            p[k] = v
    return p


def test_shipped_profiles_are_valid():
    profiles = parse_profiles(yaml.safe_load(DEFAULTS_FILE.read_text())["profiles"])
    assert [p.key for p in profiles] == ["cpu-small", "gpu-h200-1", "gpu-h200-2"]
    assert profiles[1].gpus == 1 and profiles[2].gpus == 2 and profiles[0].gpus == 0


def test_good_profile_parses_to_seconds():
    (p,) = parse_profiles([GOOD])
    assert (p.walltime_default_s, p.walltime_max_s) == (3600, 7200)
    assert p.as_public_dict()["walltime_max_min"] == 120


@pytest.mark.parametrize(
    "field,value",
    [
        ("key", "GPU big"),
        ("partition", "gpu\n#SBATCH --gres=gpu:8"),
        ("gres", "gpu:h200:1 --exclusive"),
        ("gres", "gpu:h200:0"),
        ("cpus", 0),
        ("cpus", "4"),
        ("cpus", True),
        ("memory", "16 G"),
        ("walltime_max", "2h"),
        ("walltime_default", "01:61:00"),
        ("reservation", "ws;rm -rf /"),
        ("groups", []),
        ("groups", ["learners", "bad group"]),
        ("display", "two\nlines"),
    ],
)
def test_bad_field_is_named(field, value):
    with pytest.raises(ProfileError) as e:
        parse_profiles([with_(**{field: value})])
    assert f"key '{field}'" in str(e.value)
    assert "profiles[0] (" in str(e.value)
    assert "accepted" in str(e.value) or "must" in str(e.value)


def test_mig_slice_gres_is_accepted():
    (p,) = parse_profiles([with_(gres="gpu:1g.18gb:1")])
    assert p.gres == "gpu:1g.18gb:1"


def test_missing_and_unknown_keys():
    with pytest.raises(ProfileError, match="missing key.*partition"):
        parse_profiles([with_(partition=None)])
    with pytest.raises(ProfileError, match="unknown key.*gpus_please"):
        parse_profiles([with_(gpus_please=8)])


def test_default_walltime_above_max():
    with pytest.raises(ProfileError, match="walltime_default.*exceeds"):
        parse_profiles([with_(walltime_default="03:00:00")])


def test_duplicate_keys():
    with pytest.raises(ProfileError, match=r"profiles\[1\] \(gpu-h200-1\).*unique"):
        parse_profiles([GOOD, GOOD])


def test_empty_list():
    with pytest.raises(ProfileError, match="non-empty list"):
        parse_profiles([])


def test_groups_filter():
    a = with_(key="a", groups=["learners"])
    b = with_(key="b", groups=["trainers"])
    profiles = parse_profiles([a, b])
    assert [p.key for p in profiles_for_groups(profiles, ["learners"])] == ["a"]
    assert [p.key for p in profiles_for_groups(profiles, ["trainers", "learners"])] == ["a", "b"]
    assert profiles_for_groups(profiles, []) == []


@pytest.mark.parametrize("text,seconds", [("00:01:00", 60), ("1-00:00:00", 86400), ("2:30:15", 9015)])
def test_walltime_round_trip(text, seconds):
    assert parse_walltime(text) == seconds
    assert parse_walltime(format_walltime(seconds)) == seconds


def test_the_config_schema_checks_profiles_with_the_one_profile_schema():
    from hub.config_schema import SCHEMA
    from spawners.profiles import PROFILE_SCHEMA, WALLTIME_PATTERN
    assert SCHEMA["properties"]["profiles"]["items"] is PROFILE_SCHEMA
    partition = SCHEMA["properties"]["slurm"]["properties"]["partitions"]["items"]["properties"]
    walltimes = [PROFILE_SCHEMA["properties"]["walltime_default"], PROFILE_SCHEMA["properties"]["walltime_max"],
                 partition["max_time"], partition["default_time"]]
    assert {w["pattern"] for w in walltimes} == {WALLTIME_PATTERN}


@pytest.mark.parametrize("field,value", [("partition", "gpu\n"), ("display", "One H200\n"), ("key", "gpu-h200-1\n")])
def test_a_trailing_newline_cannot_end_an_sbatch_line_early(field, value):
    # Python's `$` matches before a final newline; the schema's patterns alone would let it through.
    with pytest.raises(ProfileError, match=f"key '{field}' has invalid value"):
        parse_profiles([with_(**{field: value})])


def test_optional_fields_take_the_schema_defaults():
    (p,) = parse_profiles([with_(gres=None)])
    assert (p.gres, p.reservation, p.max_age_s, p.gpus) == ("", "", 0, 0)


@pytest.mark.parametrize("walltime", ["00:00:30", "00:00:00"])
def test_a_walltime_under_a_minute_is_refused(walltime):
    with pytest.raises(ProfileError, match="key 'walltime_default' must be at least one minute"):
        parse_profiles([with_(walltime_default=walltime)])
