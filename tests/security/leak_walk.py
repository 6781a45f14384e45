"""Find files that hold a course's solution or hidden-test regions, by walking a file system.

Standard library only, and one file: the tests run it as root (the control), as a learner
(``runuser``, its source on stdin) and inside a grading sandbox (as a notebook cell), so it must
not need this repository. It never carries the regions' text: it gets a CRC-32 of each distinctive
line (``fingerprints``), so the walker itself, a cell's source or a process's arguments give
nothing away, and it matches a file's lines against them (a notebook's JSON lines unescaped first).

A file counts as holding a notebook's regions when it has at least a fifth of that notebook's
distinctive region lines (at least 3): a shared idiom or two is not a leak, a copy of the
notebook, of its solutions or of its hidden tests is.
"""

from __future__ import annotations

import json
import os
import re
import sys
import zlib

MIN_LINE = 16             # shorter lines are too common to tell anything
MAX_FILE = 8 << 20        # course notebooks are far smaller; bigger files are libraries and data
SKIP = ("/proc", "/sys", "/dev")
BEGIN = re.compile(r"#+\s*BEGIN (SOLUTION|HIDDEN TESTS)")
END = re.compile(r"#+\s*END (SOLUTION|HIDDEN TESTS)")


def region_lines(notebook: dict) -> set[str]:
    """The lines inside a source notebook's solution and hidden-test regions that appear nowhere
    else in it (so a learner's release, which keeps the rest, has none of them)."""
    inside, outside = set(), set()
    for cell in notebook.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        in_region = False
        for line in source.splitlines():
            text = line.strip()
            if BEGIN.match(text):
                in_region = True
            elif END.match(text):
                in_region = False
            else:
                (inside if in_region else outside).add(text)
    return {t for t in inside - outside if len(t.encode()) >= MIN_LINE}


def fingerprint(line: str | bytes) -> int:
    return zlib.crc32(line.encode() if isinstance(line, str) else line)


def fingerprints(notebooks: dict[str, dict]) -> dict[str, list[int]]:
    """{name: CRC-32s of its distinctive region lines} for {name: notebook JSON}."""
    return {name: sorted({fingerprint(t) for t in region_lines(nb)}) for name, nb in notebooks.items()}


def _lines(data: bytes):
    for raw in data.split(b"\n"):
        line = raw.strip()
        if len(line) < MIN_LINE:
            continue
        if line[:1] == b'"':  # a line of a notebook's JSON: "    return a + b\n",
            try:
                text = json.loads(line.rstrip(b","))
            except ValueError:
                text = None
            if isinstance(text, str):
                for part in text.split("\n"):
                    yield part.strip().encode(errors="replace")
                continue
        yield line


def _check(path: str, owner: dict[int, str], need: dict[str, int], prints: dict[str, list[int]]) -> tuple[int, list]:
    """(1 if the file was read else 0, its findings)."""
    try:
        st = os.lstat(path)
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > MAX_FILE:
            return 0, []
        with open(path, "rb") as f:
            data = f.read()
    except OSError:  # not readable by this user: exactly what should be the case
        return 0, []
    if b"\0" in data[:8192]:
        return 0, []
    hits: dict[str, set[int]] = {}
    for line in _lines(data):
        h = zlib.crc32(line)
        if h in owner:
            hits.setdefault(owner[h], set()).add(h)
    return 1, [{"path": path, "notebook": nb, "lines": len(found), "of": len(prints[nb])}
               for nb, found in hits.items() if len(found) >= need[nb]]


def _index(prints: dict[str, list[int]]) -> tuple[dict[int, str], dict[str, int]]:
    return ({h: name for name, hs in prints.items() for h in hs},
            {name: max(3, len(hs) // 5) for name, hs in prints.items()})


def scan(roots: list[str], prints: dict[str, list[int]], skip=SKIP) -> dict:
    """Every readable regular file under ROOTS: how many were read, and those holding a notebook's regions."""
    owner, need = _index(prints)
    scanned, findings = 0, []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
            for name in files:
                read, found = _check(os.path.join(folder, name), owner, need, prints)
                scanned += read
                findings += found
    return {"scanned": scanned, "findings": findings}


def _split(roots: list[str], depth: int, skip=SKIP) -> tuple[list[str], list[str]]:
    """The folders DEPTH levels below ROOTS (pieces of work for the cores), and the files above them."""
    folders, files = list(roots), []
    for _ in range(depth):
        below = []
        for folder in folders:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    if e.path not in skip:
                        below.append(e.path)
                else:
                    files.append(e.path)
        folders = below
    return folders, files


def scan_parallel(roots: list[str], prints: dict[str, list[int]], workers: int) -> dict:
    """``scan`` on every core: the same files read, the same findings (the walk of a whole machine
    is the slowest security test; one core would leave the others idle)."""
    import functools
    import multiprocessing

    folders, files = _split(roots, 2)
    owner, need = _index(prints)
    checked = [_check(path, owner, need, prints) for path in files]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(functools.partial(scan, prints=prints), [[f] for f in folders], chunksize=1)
    return {"scanned": sum(r for r, _ in checked) + sum(p["scanned"] for p in parts),
            "findings": [f for _, fs in checked for f in fs] + [f for p in parts for f in p["findings"]]}


if __name__ == "__main__":  # python3 - ROOT... < this file, fingerprints as JSON in $LEAK_FINGERPRINTS
    roots, prints = sys.argv[1:] or ["/"], json.loads(os.environ["LEAK_FINGERPRINTS"])
    workers = len(os.sched_getaffinity(0))
    print(json.dumps(scan_parallel(roots, prints, workers) if workers > 1 else scan(roots, prints)))
