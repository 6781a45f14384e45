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


def scan(roots: list[str], prints: dict[str, list[int]], skip=SKIP) -> dict:
    """Every readable regular file under ROOTS: how many were read, and those holding a notebook's regions."""
    owner = {h: name for name, hs in prints.items() for h in hs}
    need = {name: max(3, len(hs) // 5) for name, hs in prints.items()}
    scanned, findings = 0, []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                    if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > MAX_FILE:
                        continue
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:  # not readable by this user: exactly what should be the case
                    continue
                if b"\0" in data[:8192]:
                    continue
                scanned += 1
                hits: dict[str, set[int]] = {}
                for line in _lines(data):
                    h = zlib.crc32(line)
                    if h in owner:
                        hits.setdefault(owner[h], set()).add(h)
                for nb, found in hits.items():
                    if len(found) >= need[nb]:
                        findings.append({"path": path, "notebook": nb, "lines": len(found), "of": len(prints[nb])})
    return {"scanned": scanned, "findings": findings}


if __name__ == "__main__":  # python3 - ROOT... < this file, fingerprints as JSON in $LEAK_FINGERPRINTS
    print(json.dumps(scan(sys.argv[1:] or ["/"], json.loads(os.environ["LEAK_FINGERPRINTS"]))))
