"""Build python-docs.txt, the courses' shared text corpus, from the Python 3.11 documentation.

The corpus is prose and code about programming, in English, under the PSF License (see
python-docs.LICENSE), a few MB: large enough that a byte-level BPE, a small GPT and a scaling-law
fit have something to learn, small enough to ship once in the repository. The sources are the
reStructuredText files Debian's python3.11-doc installs; this script removes Sphinx markup
(directives' options, roles, link targets) and keeps the text and code examples. It is kept so
the corpus can be rebuilt and checked, not run by the platform:

    apt-get install python3.11-doc && python3 courses/data/build_corpus.py
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
PARTS = ["tutorial", "faq", "howto", "reference", "using", "extending", "glossary.rst.txt"]
LIBRARY = ["functions", "stdtypes", "exceptions", "constants", "string", "re", "collections", "itertools",
           "functools", "operator", "pathlib", "os", "subprocess", "threading", "multiprocessing",
           "concurrent.futures", "asyncio-task", "queue", "sqlite3", "json", "csv", "datetime", "math",
           "random", "statistics", "decimal", "fractions", "array", "struct", "typing", "dataclasses",
           "contextlib", "logging", "argparse", "unittest", "doctest", "timeit", "profile", "pickle",
           "socket", "select", "signal", "heapq", "bisect", "weakref", "copy", "enum", "abc", "io"]
OUT = Path(__file__).with_name("python-docs.txt")

ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
DIRECTIVE = re.compile(r"^\s*\.\. [a-z][\w:-]*::.*$")
OPTION = re.compile(r"^\s+:[\w-]+:.*$")
TARGET = re.compile(r"^\s*\.\. _[^:]+:.*$|^\s*\.\. \|.*$|^\s*\.\.\s*$")
INDEX = re.compile(r"^\s*(single|pair|triple|see|seealso|module|keyword|statement|builtin|object|operator):.*$")


def clean(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if DIRECTIVE.match(line) or TARGET.match(line) or OPTION.match(line) or INDEX.match(line):
            continue
        line = ROLE.sub(lambda m: m.group(1), line)
        line = line.replace("``", "").replace("**", "")
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def sources() -> list[Path]:
    files: list[Path] = []
    for part in PARTS:
        path = SOURCES / part
        files += sorted(path.rglob("*.rst.txt")) if path.is_dir() else [path]
    files += [SOURCES / "library" / f"{name}.rst.txt" for name in LIBRARY]
    return files


def main() -> None:
    text = "\n\n".join(clean(p.read_text(encoding="utf-8")) for p in sources())
    OUT.write_text(text, encoding="utf-8")
    print(f"{OUT}: {len(text.encode()):,} bytes from {len(sources())} files")


if __name__ == "__main__":
    main()
