"""Training throughput (samples/s) of the toy flow model on the CPU: one process vs two under torchrun (gloo).

The rate is measured over the second half of the run (after start-up). Baseline: one process, one thread,
measured in the same run. Usage: .venv/bin/python benchmarks/train.py [--steps 60] [--batch 64] [--hidden 256]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ArgumentParser, load_facts, positive_int, run_main

REPO = Path(__file__).resolve().parents[1]
STREAMS = {"audio": [32, 20], "video": [4, 64]}


def config(out_dir: Path, steps: int, batch: int, hidden: int, threads: int) -> dict:
    return {
        "out_dir": str(out_dir),
        "model": {"name": "toy_flow", "args": {"streams": STREAMS, "hidden": hidden, "depth": 4}},
        "task": {"name": "flow_matching"},
        "data": {"train": {"name": "synthetic", "args": {"size": batch * 8, "streams": STREAMS}}},
        "train": {"steps": steps, "batch_size": batch, "device": "cpu", "threads": threads},
        "log": {"every": steps // 2, "tensorboard": False, "progress": False},
        "checkpoint": {"every": steps, "keep_last": 1},
    }


def measure(nproc: int, threads: int, args) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(config(Path(tmp) / "run", args.steps, args.batch, args.hidden, threads)))
        cmd = [sys.executable, "-m", "avflow.cli", "train", str(path)]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
            cmd += ["-m", "avflow.cli", "train", str(path)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"benchmark run failed ({nproc} processes):\n{proc.stderr[-2000:]}")
        rate = float(re.search(r"([\d.]+) samples/s", proc.stdout).group(1))
        return rate, wall


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=positive_int, default=60)
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--hidden", type=positive_int, default=256)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps: give >= 2 (the rate is measured over the second half)")
    if args.batch % 2:
        parser.error(f"--batch {args.batch}: give an even global batch (two processes share it)")
    load_before = os.getloadavg()
    print(
        f"toy flow model, hidden {args.hidden}, depth 4, global batch {args.batch}, {args.steps} steps, CPU, "
        f"{os.cpu_count()} cores visible"
    )
    rows = [("1 process, 1 thread (baseline)", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]
    results = [(name, *measure(nproc, threads, args)) for name, nproc, threads in rows]
    base = results[0][1]
    print(f"{'configuration':<32} {'samples/s':>10} {'vs baseline':>12} {'wall s':>8}")
    for name, rate, wall in results:
        print(f"{name:<32} {rate:>10.1f} {rate / base:>11.2f}x {wall:>8.1f}")
    print(load_facts(load_before))


if __name__ == "__main__":
    run_main(main)
