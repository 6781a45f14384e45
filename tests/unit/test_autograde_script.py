"""The grading job's batch script: what Slurm is asked for, from the assignment's profile."""

import subprocess

from assessments.grading.batch import batch_script
from hub.config import load
from spawners.profiles import parse_profile


def profile(cfg, key):
    return parse_profile(next(p for p in cfg["profiles"] if p["key"] == key))


def test_a_gpu_assignment_is_graded_on_a_gpu_and_a_cpu_one_is_not(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    cfg = load(tmp_path / "config.yaml")  # the defaults
    gpu = batch_script(tmp_path, 3, profile(cfg, "gpu-h200-1"), cfg, 900, "academy-grading:hpc-201:x:b")
    assert "#SBATCH --gres=gpu:h200:1" in gpu and "#SBATCH --partition=gpu" in gpu
    assert "#SBATCH --cpus-per-task=4" in gpu and "#SBATCH --array=0-2" in gpu
    cpu = batch_script(tmp_path, 1, profile(cfg, "cpu-small"), cfg, 900, "academy-grading:hpc-101:x:b")
    assert "--gres" not in cpu and "#SBATCH --partition=cpu" in cpu and "#SBATCH --cpus-per-task=1" in cpu
    # Nothing of the submitting shell reaches the job; the driver runs isolated from the notebook env.
    assert "#SBATCH --export=NONE" in cpu and "#SBATCH --time=00:15:00" in cpu
    assert cpu.rstrip().endswith(f"-I -m assessments.grading.task {tmp_path}")
    assert "#SBATCH --mem=4096M" in cpu  # the sandbox's 3G, plus the driver's own


def test_the_grading_script_passes_shellcheck(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    cfg = load(tmp_path / "config.yaml")
    for key in ("gpu-h200-1", "cpu-small"):
        path = tmp_path / f"{key}.sbatch"
        path.write_text(batch_script(tmp_path / "batch", 2, profile(cfg, key), cfg, 900, "academy-grading:c:a:b"))
        # shellcheck is installed by ./academy prepare (and .ci/run): a missing one fails here, never skips.
        result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
