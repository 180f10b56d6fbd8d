"""benchmarks/profile_top.py: a py-spy raw profile summed by each function's own samples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_top.py"

SITE = "/v/lib/python3.11/site-packages"
RAW = "\n".join(
    [
        "thread (1): MainThread;<module> (app.py:3);"
        "_find_and_load (<frozen importlib._bootstrap>:1176);x (lib.py:2) 7",
        f"thread (2): read-trades_0;run ({SITE}/velostream/a.py:10);"
        "drop (/v/src/velostream/b.py:5) 4",
        f"thread (2): read-trades_0;run ({SITE}/velostream/a.py:10);"
        "drop (/v/src/velostream/b.py:9) 3",
        f"thread (3): job-x;run ({SITE}/velostream/a.py:12) 5",
    ]
)


def _top(tmp_path: Path, *args: str) -> list[str]:
    profile = tmp_path / "p.txt"
    profile.write_text(RAW)
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(profile), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.splitlines()


def test_own_samples_per_function_lines_summed_imports_as_one(tmp_path: Path) -> None:
    lines = _top(tmp_path)
    assert lines[0] == "19 samples"
    rows = [line.split(None, 2) for line in lines[2:]]
    assert rows == [  # a tie in the order first seen
        ["7", "36.8%", "(imports)"],
        ["7", "36.8%", "drop (velostream/b.py)"],
        ["5", "26.3%", "run (velostream/a.py)"],
    ]


def test_a_thread_and_a_top(tmp_path: Path) -> None:
    lines = _top(tmp_path, "--thread", "read-", "--top", "1")
    assert lines == [
        "7 samples",
        "   own  share  function",
        "     7 100.0%  drop (velostream/b.py)",
    ]
