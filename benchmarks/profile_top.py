"""The top functions of a py-spy profile, by their own samples: a profile's summary.

    py-spy record -r 200 -f raw -o case3.txt -- \\
        python benchmarks/profile_case.py --case 3 --rows 5000000 --batch 200000 --runs 3
    python benchmarks/profile_top.py case3.txt [--top 10] [--thread NAME]

A function's own samples are those in which it was the innermost frame, summed over its
lines; `--thread` keeps only the threads whose name contains NAME (py-spy's
`--threads`). Frames of the import machinery count as one entry, `(imports)`.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# A raw frame: "function (path/to/file.py:123)"; the path may hold spaces.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::\d+)?\)$")


def function_of(frame: str) -> str:
    """`function (package/module.py)` of a frame, its line left out."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["path"]
    short = path.split("site-packages/")[-1].split("/src/")[-1]
    return f"{match['function']} ({short})"


def summarise(lines: list[str], thread: str | None = None) -> tuple[Counter[str], int]:
    """Own samples per function, and the samples counted."""
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[0].startswith("thread ") or frames[0].startswith("process "):
            if thread is not None and thread not in frames[0]:
                continue
            frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        elif thread is not None:
            continue
        if not frames:
            continue
        n = int(count)
        total += n
        if any("importlib._bootstrap" in f for f in frames):
            own["(imports)"] += n
        else:
            own[function_of(frames[-1])] += n
    return own, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy's raw output (-f raw)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--thread", help="only threads whose name contains this")
    args = parser.parse_args(argv)
    own, total = summarise(args.profile.read_text().splitlines(), args.thread)
    print(f"{total:,} samples")
    print(f"{'own':>6} {'share':>6}  function")
    for name, n in own.most_common(args.top):
        print(f"{n:6,} {n / max(total, 1):6.1%}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
