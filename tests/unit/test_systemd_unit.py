"""`academy systemd-unit`: a unit that systemd accepts as it is, starting what `academy up` starts."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from hub.config import load
from hub.hub_process import CONFIG_FILE, HUB_NICE
from hub.systemd_unit import UNIT_NAME, render_unit


def unit_for(tmp_path, **hub) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"hub": {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "log"),
                                              **hub}}))
    (tmp_path / "state").mkdir()
    (tmp_path / "log").mkdir()
    return render_unit(load(config), str(config))


def test_the_unit_starts_the_hub_as_academy_up_does(tmp_path):
    lines = unit_for(tmp_path).splitlines()
    assert f"ExecStart={sys.prefix}/bin/jupyterhub -f {CONFIG_FILE}" in lines
    assert f"Environment=ACADEMY_CONFIG={tmp_path / 'config.yaml'}" in lines
    assert f"WorkingDirectory={tmp_path / 'state'}" in lines
    assert f"StandardOutput=append:{tmp_path / 'log' / 'jupyterhub.log'}" in lines
    assert f"Nice={HUB_NICE}" in lines and "UMask=0027" in lines and "Restart=on-failure" in lines


def test_systemd_accepts_the_unit_without_a_warning(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    unit = tmp_path / UNIT_NAME
    unit.write_text(unit_for(tmp_path))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # and it is a live check: a unit with a mistake in it is not accepted silently
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "restart specifier" in proc.stdout + proc.stderr


def test_the_cli_prints_it():
    out = subprocess.run([sys.executable, "-m", "hub.cli", "systemd-unit"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "[Service]" in out.stdout and "ExecStart=" in out.stdout, out.stderr
