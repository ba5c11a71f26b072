"""Shared helpers for the benchmark scripts: timing, the machine's matmul peak, tables."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time in seconds over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    """Achieved fp32 GFLOP/s of a large square matmul on this machine, now (the reference 'peak')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    sec = timed(lambda: a @ b, repeat=repeat)
    return 2 * n**3 / sec / 1e9


def print_table(rows: list[dict], title: str = "") -> None:
    """Print a list of dicts as an aligned text table."""
    if title:
        print(title)
    if not rows:
        return
    cols = list(rows[0])
    cells = [[f"{r.get(c, ''):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
