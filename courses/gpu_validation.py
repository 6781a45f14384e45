"""Run every course notebook's solution (hidden tests included) on this machine's GPU and record
what it measured: a GPU validation without nbgrader, for machines that have only PyTorch.

    python3 -m courses.gpu_validation OUT.json [COURSE/ASSIGNMENT ...]

Each notebook runs in a fresh process, in a scratch copy of its folder, cell by cell through
IPython (magics such as %%writefile work); a test cell passes when IPython reports no error. The
lines a notebook prints with a throughput figure (TFLOP/s, GB/s, tokens/s, MFU, speed-up) are kept,
so the course docs can quote the GPU figures with the command that produced them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
FIGURE = re.compile(r"TFLOP|GFLOP|GB/s|tokens/s|tok/s|MFU|speed-?up|device:|x faster", re.I)
# slurm-basics submits Slurm jobs: there is no Slurm on a bare GPU machine.
SKIP = {"hpc-101/slurm-basics"}


def run_one(folder: Path) -> dict:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from IPython.core.interactiveshell import InteractiveShell

    notebook = json.loads(next(folder.glob("*.ipynb")).read_text())
    work = Path(tempfile.mkdtemp(prefix="gpu-validation-"))
    shutil.copytree(folder, work, dirs_exist_ok=True)
    os.chdir(work)
    sys.path.insert(0, str(work))
    shell = InteractiveShell.instance()
    cells, figures, t0 = [], [], time.perf_counter()
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        out = io.StringIO()
        c0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            result = shell.run_cell(source, store_history=True)
        text = out.getvalue()
        figures += [line.strip() for line in text.splitlines() if FIGURE.search(line)]
        cells.append({"grade_id": meta.get("grade_id"), "test": bool(meta.get("grade") and not meta.get("solution")),
                      "ok": bool(result.success), "seconds": round(time.perf_counter() - c0, 2),
                      "error": "" if result.success else repr(result.error_in_exec or result.error_before_exec)[:300]})
    return {"seconds": round(time.perf_counter() - t0, 1), "tests": sum(c["test"] for c in cells),
            "tests_passed": sum(c["test"] and c["ok"] for c in cells),
            "failed_cells": [c for c in cells if not c["ok"]], "figures": figures}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(run_one(Path(argv[1]))))
        return 0
    out, wanted = Path(argv[0]), argv[1:]
    import torch

    report = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "notebooks": {}}
    for folder in sorted(p for p in NOTEBOOKS.glob("*/*") if p.is_dir() and any(p.glob("*.ipynb"))):
        key = f"{folder.parent.name}/{folder.name}"
        if key in SKIP or (wanted and key not in wanted):
            continue
        proc = subprocess.run([sys.executable, "-m", "courses.gpu_validation", "--one", str(folder)],
                              capture_output=True, text=True, timeout=900,
                              cwd=Path(__file__).resolve().parent.parent)
        try:
            report["notebooks"][key] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            report["notebooks"][key] = {"error": (proc.stderr or proc.stdout)[-2000:]}
        print(key, json.dumps(report["notebooks"][key])[:400], flush=True)
        out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
