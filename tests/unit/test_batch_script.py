"""The sbatch script: rendered from a validated request only, and clean under shellcheck."""

import re
import subprocess

import pytest

from spawners.batch_script import BatchScriptValues, render_batch_script
from spawners.options import OptionsError, validate_user_options
from spawners.profiles import parse_profiles

PROFILES = parse_profiles([
    {"key": "gpu-h200-1", "display": "GPU", "partition": "gpu", "gres": "gpu:h200:1", "cpus": 4,
     "memory": "16G", "walltime_default": "01:00:00", "walltime_max": "02:00:00", "groups": ["learners"]},
    {"key": "workshop", "display": "Workshop", "partition": "gpu", "gres": "gpu:1g.18gb:1", "cpus": 2,
     "memory": "8G", "walltime_default": "00:30:00", "walltime_max": "00:45:00", "groups": ["ws"],
     "reservation": "ws-2026-11"},
    {"key": "cpu-small", "display": "CPU", "partition": "cpu", "cpus": 2, "memory": "4G",
     "walltime_default": "01:00:00", "walltime_max": "04:00:00", "groups": ["learners"]},
])
VALUES = BatchScriptValues(
    job_name="academy-nb-learner1",
    homedir="/home/learner1",
    comment="academy-academy:learner1:default",
    notebook_env="/opt/academy/venv-notebook",
    server_argv=["/opt/academy/venv-notebook/bin/jupyterhub-singleuser", "--debug"],
)


def sbatch_lines(script):
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def render(options, profiles=PROFILES):
    return render_batch_script(VALUES, validate_user_options(options, profiles))


def test_gpu_profile_lines():
    lines = sbatch_lines(render({"profile": "gpu-h200-1", "walltime": 30}))
    assert "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --gres=gpu:h200:1" in lines
    assert "#SBATCH --cpus-per-task=4" in lines
    assert "#SBATCH --mem=16G" in lines
    assert "#SBATCH --time=00:30:00" in lines
    assert "#SBATCH --output=/home/learner1/.academy/logs/session-%j.log" in lines
    # ALL = exactly the hub-made environment; a list of names would load the learner's login shell.
    assert "#SBATCH --export=ALL" in lines
    assert not any("--reservation" in line for line in lines)


def test_reservation_and_mig_slice():
    lines = sbatch_lines(render({"profile": "workshop"}, PROFILES[1:2]))
    assert "#SBATCH --reservation=ws-2026-11" in lines
    assert "#SBATCH --gres=gpu:1g.18gb:1" in lines
    assert "#SBATCH --time=00:30:00" in lines


def test_cpu_profile_has_no_gres():
    assert not any("--gres" in line for line in sbatch_lines(render({"profile": "cpu-small"})))


def test_no_token_value_and_no_learner_text_in_script():
    script = render({"profile": "gpu-h200-1", "walltime": "15"})
    # The token's value travels in the environment, never in the script.
    assert "JUPYTERHUB_API_TOKEN" not in script
    options = [line.split("=")[0] for line in sbatch_lines(script)]
    assert options == ["#SBATCH --job-name", "#SBATCH --output", "#SBATCH --chdir", "#SBATCH --export",
                       "#SBATCH --partition", "#SBATCH --time", "#SBATCH --nodes", "#SBATCH --ntasks",
                       "#SBATCH --cpus-per-task", "#SBATCH --mem", "#SBATCH --gres", "#SBATCH --comment"]


@pytest.mark.parametrize("evil", [
    {"profile": "gpu-h200-1", "walltime": "30\n#SBATCH --gres=gpu:h200:4"},
    {"profile": "gpu-h200-1", "gres": "gpu:h200:4"},
    {"profile": "gpu-h200-1\n#SBATCH --gres=gpu:h200:4"},
    {"profile": "gpu-h200-1", "cmd": "touch /tmp/pwned"},
])
def test_injection_attempts_never_render(evil):
    with pytest.raises(OptionsError):
        render(evil)


def test_unsafe_username_cannot_reach_the_script():
    values = BatchScriptValues(**{**VALUES.__dict__, "job_name": "academy-nb-x\n#SBATCH --gres=gpu:8"})
    with pytest.raises(ValueError, match="job name"):
        render_batch_script(values, validate_user_options({}, PROFILES))


def test_launcher_command_is_quoted():
    values = BatchScriptValues(**{**VALUES.__dict__, "server_argv": ["/opt/x/bin/jupyterhub-singleuser", "--notebook-dir=~/my work"]})
    script = render_batch_script(values, validate_user_options({}, PROFILES))
    assert re.search(r"^exec /opt/academy/venv-notebook/bin/python -I -m spawners.launcher -- .*'--notebook-dir=~/my work'$",
                     script, re.M)


def test_the_projects_entry_point_reports_its_own_port_without_a_launcher():
    entry = "/opt/academy/venv-notebook/bin/academy-singleuser"
    values = BatchScriptValues(**{**VALUES.__dict__, "server_argv": [entry, "--debug"]})
    script = render_batch_script(values, validate_user_options({}, PROFILES))
    assert re.search(rf"^exec /opt/academy/venv-notebook/bin/python -I {entry} --academy-report-port --debug$",
                     script, re.M)
    assert "spawners.launcher" not in script
    # The same name from another environment is just another command: it gets the launcher.
    values = BatchScriptValues(**{**VALUES.__dict__, "server_argv": ["/opt/other/bin/academy-singleuser"]})
    assert "-m spawners.launcher -- /opt/other/bin/academy-singleuser" in render_batch_script(
        values, validate_user_options({}, PROFILES))


def test_a_script_without_a_server_command_renders():
    # The smaller-profile check (sbatch --test-only) renders a script that never runs a server.
    values = BatchScriptValues(**{**VALUES.__dict__, "server_argv": []})
    script = render_batch_script(values, validate_user_options({}, PROFILES))
    assert "#SBATCH --partition=gpu" in script


@pytest.mark.parametrize("key", [p.key for p in PROFILES])
def test_rendered_script_passes_shellcheck(key, tmp_path):
    script = render({"profile": key}, [p for p in PROFILES if p.key == key])
    path = tmp_path / "job.sh"
    path.write_text(script)
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", ["academy", ".ci/run"])
def test_project_shell_scripts_pass_shellcheck(script):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / script
    result = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
