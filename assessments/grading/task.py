"""One grading job (or one task of a grading array): grade its share of a batch's submissions.

    python -m assessments.grading.task BATCH_DIR

Runs as root on a Slurm node, in the notebook environment. The batch directory (root only)
holds manifest.json, written by the hub side; this writes results/<submission>.json and
graded/<submission>/<notebook>.ipynb, each by atomic rename, so a result is there whole or not
at all. The tasks of an array claim submissions one at a time (claims/<submission>, created
with O_EXCL), so none idles while another still has a queue.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

import nbformat

from . import sandbox
from .execute import run_notebook_sync
from .notebook_merge import grade_id, merge
from .scoring import score

MAX_NOTEBOOK_BYTES = 20 << 20
MAX_EXTRA_FILES_BYTES = 50 << 20


def read_submitted(path: Path) -> nbformat.NotebookNode:
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"the notebook is {path.stat().st_size >> 20} MiB, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit")
    nb = nbformat.reads(path.read_text(encoding="utf-8", errors="replace"), as_version=4)
    nbformat.validate(nb)
    return nb


def shadows_a_module(name: str) -> bool:
    """A learner's numpy.py (or ipykernel_launcher.py) would replace the real module in the kernel."""
    stem = name.split("/", 1)[0].removesuffix(".py")
    if not (name.endswith(".py") or "/" in name) or not stem.isidentifier():
        return False
    return stem in sys.stdlib_module_names or importlib.util.find_spec(stem) is not None


def workdir_files(submission: Path, release: Path, notes: list[str] | None = None) -> dict[str, bytes]:
    """The learner's own files (not notebooks), then the release's files over them."""
    files, used = {}, 0
    for base, trusted in ((submission, False), (release, True)):
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.is_symlink() or path.suffix == ".ipynb" or ".ipynb_checkpoints" in path.parts:
                continue
            rel = str(path.relative_to(base))
            if not trusted and shadows_a_module(rel):
                if notes is not None:
                    notes.append(f"the submitted file {rel} has the name of an installed module and was left out")
                continue
            data = path.read_bytes()
            used += len(data)
            if not trusted and used > MAX_EXTRA_FILES_BYTES:
                continue
            files[rel] = data
    return files


def grade_submission(manifest: dict, sub: dict, slot: int, job_id: int) -> dict:
    source_dir, release_dir = Path(manifest["source_dir"]), Path(manifest["release_dir"])
    submission_dir = Path(sub["dir"])
    limits = sandbox.Limits(**manifest.get("limits", {}))
    uid = sandbox.sandbox_uid(job_id, slot)
    result = {"submission": sub["id"], "student": sub["student"], "notebooks": [], "notes": [],
              "score": 0.0, "max_score": 0.0}
    files = workdir_files(submission_dir, release_dir, result["notes"])
    workdir = sandbox.make_workdir(Path(manifest["work_root"]), uid, files)
    cgroup = sandbox.Cgroup(f"academy-sandbox-{uid}")
    cgroup.create(limits)
    try:
        for name in manifest["notebooks"]:
            oom_before = cgroup.oom_kills()
            source = nbformat.read(source_dir / name, as_version=4)
            release = nbformat.read(release_dir / name, as_version=4)
            try:
                submitted = read_submitted(submission_dir / name)
            except FileNotFoundError:
                submitted, problem = release, f"{name} was not submitted: the released notebook was graded"
                result["notes"].append(problem)
            except Exception as e:  # anything unreadable is the learner's, reported, never fatal
                submitted = release
                result["notes"].append(f"{name} could not be read ({type(e).__name__}: {str(e)[:200]}): "
                                       "the released notebook was graded")
            merged = merge(source, release, submitted)
            tests = {g.grade_id for g in merged.graded if g.kind == "test"}
            probe_before = {i for i, c in enumerate(merged.notebook.cells) if grade_id(c) in tests}
            run = run_notebook_sync(
                merged.notebook, wrapper=sandbox.wrapper_argv(uid, limits, workdir, cgroup), uid=uid,
                env=sandbox.kernel_env(workdir, sub["student"], int(manifest.get("cpus", 1))), workdir=workdir,
                cell_timeout=int(manifest["cell_timeout"]), total_timeout=float(manifest["total_timeout"]),
                probe_before=probe_before, processes=lambda: len(sandbox.lingering_of(uid)))
            sandbox.kill_everything_of(uid)  # a backstop: the namespace's end has taken them all
            scored = score(name, merged, run)
            if run.left_running:
                scored["notes"].append(f"{run.left_running} process(es) the notebook started were still running "
                                       "and were killed")
            if cgroup.oom_kills() > oom_before:
                scored["notes"].append(f"the notebook went over its memory ({_gib(limits.memory_bytes)} GiB and what "
                                       "its files in /tmp hold) and was stopped")
            result["notebooks"].append(scored)
            result["score"] += scored["score"]
            result["max_score"] += scored["max_score"]
            _write_atomic(Path(manifest["batch_dir"]) / "graded" / sub["id"] / name,
                          nbformat.writes(run.notebook))
    finally:
        sandbox.kill_everything_of(uid)
        cgroup.remove()
        sandbox.remove_workdir(workdir)
    return result


def _gib(n: int) -> str:
    return f"{n / (1 << 30):g}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _claim(path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    batch = Path((argv or sys.argv[1:])[0])
    manifest = json.loads((batch / "manifest.json").read_text())
    task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    job_id = int(os.environ.get("SLURM_JOB_ID", str(os.getpid())))
    sandbox.check_tools()
    subs = manifest["submissions"]
    order = subs[task % max(1, len(subs)):] + subs[:task % max(1, len(subs))]
    slot = 0
    for sub in order:
        out = batch / "results" / f"{sub['id']}.json"
        if out.exists() or not _claim(batch / "claims" / sub["id"]):
            continue  # graded, or another task has it
        slot += 1
        t0 = time.monotonic()
        try:
            result = grade_submission(manifest, sub, slot, job_id)
        except Exception:  # the grader's own failure: recorded as such, never as a score
            result = {"submission": sub["id"], "student": sub["student"], "error": traceback.format_exc()[-2000:]}
        result["seconds"] = round(time.monotonic() - t0, 2)
        result["graded_at"] = time.time()
        _write_atomic(out, json.dumps(result))
        print(f"graded {sub['id']} ({sub['student']}) in {result['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
