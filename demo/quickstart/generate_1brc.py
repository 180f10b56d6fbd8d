"""Write a 1BRC-style input: a `station;temperature` header, then N rows.

About 400 stations, each with its own mean temperature; values have one decimal.
Usage: python generate_1brc.py ROWS OUTPUT [--seed N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

STATIONS = 400
CHUNK = 1_000_000


def station_names(count: int, rng: np.random.Generator) -> list[str]:
    syllables = ["ka", "lo", "mi", "ra", "to", "su", "ne", "vi", "da", "po", "shi", "an", "el"]
    names: set[str] = set()
    while len(names) < count:
        parts = rng.choice(syllables, size=int(rng.integers(2, 5)))
        names.add("".join(parts).capitalize())
    return sorted(names)


def generate(rows: int, output: Path, seed: int = 42) -> None:
    rng = np.random.default_rng(seed)
    names = np.array(station_names(STATIONS, rng), dtype=object)
    means = rng.uniform(-10.0, 30.0, size=STATIONS)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as out:
        out.write("station;temperature\n")
        written = 0
        while written < rows:
            n = min(CHUNK, rows - written)
            idx = rng.integers(0, STATIONS, size=n)
            temps = np.round(rng.normal(means[idx], 10.0), 1)
            temps = np.clip(temps, -99.9, 99.9)
            lines = np.char.add(np.char.add(names[idx].astype(str), ";"), temps.astype(str))
            out.write("\n".join(lines.tolist()))
            out.write("\n")
            written += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=int)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    generate(args.rows, args.output, args.seed)


if __name__ == "__main__":
    main()
