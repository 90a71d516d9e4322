"""The bad-input suite of tests/test_bad_inputs.py as a markdown table: every case, run as the test
runs it, with the exit status and the one line it gets (the world's folder shown as ``W``).

    python scripts/bad_inputs_table.py > table.md   # the table of docs/reliability.md
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_bad_inputs import CASES, build_world, run_case  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # the world's own commands report on stdout
            world = build_world(Path(tmp) / "world")
        print("| # | what is tried | exit | what it gets |\n| --- | --- | --- | --- |")
        for i, case in enumerate(CASES, 1):
            w = Path(tmp) / f"case-{i}"
            code, err, before, after = run_case(case, world, w)
            line = err.replace(str(w), "W").replace("|", "\\|")
            mark = "" if (code == case.code and after == before and case.needle in err) else " **(fails)**"
            print(f"| {i} | {case.id} | {code} | `` {line} ``{mark} |")


if __name__ == "__main__":
    main()
