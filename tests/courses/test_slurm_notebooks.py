"""The notebooks that use Slurm, run as a learner runs them in a session: as learner1 (not root),
with the embedded cluster reachable, every cell, the real jobs included.

The course-material check grades them as a grading job does, in the grader's sandbox, where no
Slurm can be reached and their Slurm parts are skipped; this is where those parts run."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from courses.catalogue import load_catalogue
from hub.config import load

CFG = load()
PYTHON = os.path.join(CFG["notebook_env"], "bin", "python")
CATALOGUE = load_catalogue(profiles={p["key"] for p in CFG["profiles"]})
USES_SLURM = [a for c in CATALOGUE.values() for a in c.assignments
              if "sbatch" in (a.folder / a.notebook).read_text()]
RUN = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
finally:
    nbformat.write(nb, sys.argv[3])
"""


def test_the_slurm_notebooks_are_found():
    assert {f"{a.course_id}/{a.id}" for a in USES_SLURM} >= {"hpc-101/slurm-basics", "hpc-301/multi-process-training"}


@pytest.mark.parametrize("assignment", USES_SLURM, ids=[f"{a.course_id}/{a.id}" for a in USES_SLURM])
def test_the_solution_runs_as_a_learner_with_slurm(assignment, slurm_cluster_up, demo_credentials):
    learner = pwd.getpwnam("learner1")
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    # A folder only learner1 can enter (the solution is in it), removed after.
    folder = Path(tempfile.mkdtemp(prefix="academy-slurm-notebook-"))
    try:
        shutil.copy(assignment.folder / assignment.notebook, folder / assignment.notebook)
        for data in assignment.data_files:
            shutil.copy(data, folder / data.name)
        for path in [folder, *folder.iterdir()]:
            os.chown(path, learner.pw_uid, learner.pw_gid)
        os.chmod(folder, 0o700)
        env = {"PATH": f"{os.path.dirname(PYTHON)}:/usr/bin:/bin", "HOME": learner.pw_dir, "USER": "learner1",
               "LOGNAME": "learner1", "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "PYTHONNOUSERSITE": "1"}
        executed = folder / "executed.ipynb"
        proc = subprocess.run([shutil.which("runuser") or "/usr/sbin/runuser", "-u", "learner1", "--", PYTHON, "-c", RUN, str(folder / assignment.notebook),
                               str(folder), str(executed)], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
        nb = nbformat.read(executed, as_version=4)
        text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert "Slurm not available" not in text and "NOT available" not in text, "the Slurm parts must have run"
        # what it asks for fits the platform's policy for a learner (the QOS of their profiles)
        assert "refused by the scheduler" not in text, text[text.find("refused by the scheduler"):][:500]
        # its jobs ran on the cluster, as learner1, and none is left queued
        ran = subprocess.run(["sacct", "-n", "-X", "-u", "learner1", "-S", started, "-o", "JobName%40,State"],
                             capture_output=True, text=True, timeout=30).stdout.split("\n")
        assert any(line.split()[:2] in (["hpc101-slurm-basics", "COMPLETED"], ["hpc301-mpt", "COMPLETED"])
                   for line in ran if line.strip()), ran
        left = subprocess.run(["squeue", "-h", "-u", "learner1", "-o", "%j"], capture_output=True, text=True,
                              timeout=30).stdout.split()
        assert not any(name.startswith(("hpc101-", "hpc301-")) for name in left), left
    finally:
        shutil.rmtree(folder, ignore_errors=True)
