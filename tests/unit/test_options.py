"""Learner options: only a permitted profile key and a bounded walltime get through."""

import pytest

from courses.groups import courses_from_groups
from spawners.options import OptionsError, validate_user_options
from spawners.profiles import parse_profiles

PROFILES = parse_profiles([
    {"key": "cpu-small", "display": "CPU", "partition": "cpu", "cpus": 2, "memory": "4G",
     "walltime_default": "01:00:00", "walltime_max": "04:00:00", "groups": ["learners"]},
    {"key": "gpu-h200-1", "display": "GPU", "partition": "gpu", "gres": "gpu:h200:1", "cpus": 4,
     "memory": "16G", "walltime_default": "01:00:00", "walltime_max": "02:00:00", "groups": ["learners"]},
])


def test_empty_options_take_the_first_profile_and_its_default():
    req = validate_user_options({}, PROFILES)
    assert (req.profile.key, req.walltime) == ("cpu-small", "01:00:00")


def test_form_lists_and_api_values_are_both_accepted():
    assert validate_user_options({"profile": ["gpu-h200-1"], "walltime": ["30"]}, PROFILES).walltime == "00:30:00"
    assert validate_user_options({"profile": "gpu-h200-1", "walltime": 120}, PROFILES).walltime_s == 7200


@pytest.mark.parametrize(
    "options,message",
    [
        ({"profile": "gpu-h200-8"}, "not available to you; choose one of: cpu-small, gpu-h200-1"),
        ({"profile": "gpu-h200-1", "walltime": 121}, "outside 1 to 120 minutes"),
        ({"profile": "gpu-h200-1", "walltime": 0}, "outside 1 to 120 minutes"),
        ({"profile": "gpu-h200-1", "walltime": "30\n#SBATCH --gres=gpu:h200:4"}, "whole number of minutes"),
        ({"profile": "gpu-h200-1", "walltime": "-5"}, "whole number of minutes"),
        ({"profile": "gpu-h200-1", "walltime": 1.5}, "whole number of minutes"),
        ({"profile": "gpu-h200-1", "walltime": True}, "whole number of minutes"),
        ({"profile": "gpu-h200-1\n#SBATCH --gres=gpu:h200:4"}, "not available to you"),
        ({"profile": ["cpu-small", "gpu-h200-1"]}, "exactly one value"),
        ({"profile": {"key": "cpu-small"}}, "not available to you"),
        ({"gres": "gpu:h200:4"}, "Unknown option(s) 'gres'; accepted options: profile, walltime, course"),
        ({"profile": "cpu-small", "req_options": "--exclusive"}, "Unknown option(s) 'req_options'"),
        (["profile", "cpu-small"], "must be an object"),
        ("cpu-small", "must be an object"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(OptionsError) as e:
        validate_user_options(options, PROFILES)
    assert message in str(e.value)


def test_a_profile_outside_the_users_groups_looks_unknown():
    with pytest.raises(OptionsError, match="not available to you; choose one of: cpu-small$"):
        validate_user_options({"profile": "gpu-h200-1"}, PROFILES[:1])


def test_no_profiles_for_the_user():
    with pytest.raises(OptionsError, match="No session profile is available to your groups"):
        validate_user_options({}, [])


def test_normalised_options_are_what_is_stored():
    req = validate_user_options({"profile": ["gpu-h200-1"], "walltime": ["45"]}, PROFILES)
    assert req.as_user_options() == {"profile": "gpu-h200-1", "walltime": 45, "course": ""}


def test_a_course_must_be_one_of_the_users_courses():
    req = validate_user_options({"profile": "cpu-small", "course": ["hpc-101"]}, PROFILES, ["hpc-101", "llm-101"])
    assert req.course == "hpc-101" and req.as_user_options()["course"] == "hpc-101"
    assert validate_user_options({"course": ""}, PROFILES, ["hpc-101"]).course == ""  # own work
    assert validate_user_options({}, PROFILES, ["hpc-101"]).course == ""
    with pytest.raises(OptionsError, match=r"^Course 'llm-201' is not one of your courses; choose one of: "
                                           r"hpc-101, llm-101, or none$"):
        validate_user_options({"course": "llm-201"}, PROFILES, ["llm-101", "hpc-101"])
    with pytest.raises(OptionsError, match=r"choose none \(you are not enrolled in a course\)$"):
        validate_user_options({"course": "hpc-101"}, PROFILES, [])
    with pytest.raises(OptionsError, match="^Course dict is not one of your courses"):
        validate_user_options({"course": {"$ne": ""}}, PROFILES, ["hpc-101"])


def test_courses_come_from_the_course_groups_only():
    assert courses_from_groups(["learners", "hpc-101-learners", "llm-101-trainers", "hpc-101-trainers",
                                "-learners", "workshop-x"]) == ["hpc-101", "llm-101"]
