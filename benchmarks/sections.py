"""Sections of benchmarks/RESULTS.md that a benchmark owns, between ``<!-- bench_NAME.py: begin -->`` and
``<!-- bench_NAME.py: end -->``: the benchmark rewrites its own, ``run_all.py`` keeps them all.

    BEGIN, END = markers("bench_fetch.py")
    write_section("benchmarks/RESULTS.md", text, BEGIN, END)   # text starts with BEGIN and ends with END
"""
from __future__ import annotations

import os
import re

_SECTION = re.compile(r"<!-- (bench_\w+\.py): begin -->.*?<!-- \1: end -->", re.S)


def markers(script: str) -> tuple[str, str]:
    return f"<!-- {script}: begin -->", f"<!-- {script}: end -->"


def write_section(path: str, text: str, begin: str, end: str) -> None:
    """Replace the section between the markers (or append it)."""
    old = open(path).read() if os.path.exists(path) else ""
    if begin in old and end in old:
        new = old[:old.index(begin)] + text.rstrip("\n") + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def owned_sections(text: str) -> list[str]:
    """Every benchmark-owned section of a RESULTS.md text, in order."""
    return [m.group(0) for m in _SECTION.finditer(text)]
