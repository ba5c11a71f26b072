"""Start-up time of the `avflow` command: `avflow --help`, a command's `--help` and argument errors (argparse's, and the
commands' own checks that need no media), each in a fresh Python process (what a user waits for before anything
happens). Target: under 1 s each (issue 25), which needs every command module to import without torch, numpy or PyAV.
Errors that must read a media file or build the sampling settings import them (PyAV, torch) and take that long.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common import ArgumentParser, load_facts, positive_int, print_table, run_main

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 1.0
CASES = {
    "avflow --help": ["--help"],
    "avflow foley --help": ["foley", "--help"],
    "avflow foley (missing argument)": ["foley"],
    "avflow t2a x --steps x (bad value)": ["t2a", "x", "--steps", "x"],
    "avflow world make (missing --n)": ["world", "make"],
    "avflow t2a '' (empty prompt)": ["t2a", ""],
    "avflow t2a rain --duration 0": ["t2a", "rain", "--duration", "0", "-o", "/nonexistent/t.wav"],
    "avflow foley missing.mp4": ["foley", "missing.mp4"],
    "python -c pass (interpreter alone)": None,
}


def run_once(argv: list[str] | None) -> float:
    command = [sys.executable, "-c", "pass"] if argv is None else [sys.executable, "-m", "avflow.cli", *argv]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=5, help="runs per case (the best is reported)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for name, argv in CASES.items():
        times = [run_once(argv) for _ in range(args.repeat)]
        best = min(times)
        rows.append({"case": name, "best_s": best, "median_s": sorted(times)[len(times) // 2],
                     "under_1s": "yes" if best < TARGET_S else "NO"})  # fmt: skip
    print_table(rows, f"avflow start-up ({args.repeat} runs per case, fresh process each; {load_facts(load_before)})")
    return 0 if all(r["under_1s"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    run_main(main)
