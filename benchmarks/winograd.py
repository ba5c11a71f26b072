"""Winograd F(4, 3) against the direct kernel-3 convolution, per token count: where does it pay?

For the ConvMLP shapes of MMAudio small (448 <-> 1280) and large (1024 <-> 2816) at batch 2 (the CFG pair) and
several token counts, the best-of-5 milliseconds of: the direct convolution (`ChannelLastConv1d`'s plain path),
Winograd with the transformed weight cached, and the one-time weight transform. Prints the ratios measured side by
side in this run and the load average before and after; `--json` writes the rows.

    .venv/bin/python benchmarks/winograd.py [--threads 2] [--tokens 32 63 125 250 500 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ArgumentParser, check_output, positive_int, report, run_main, timed  # noqa: E402

from avflow.nn import winograd  # noqa: E402

SHAPES = {"small 448->1280": (448, 1280), "small 1280->448": (1280, 448),
          "large 1024->2816": (1024, 2816), "large 2816->1024": (2816, 1024)}  # fmt: skip


def row(name: str, c_in: int, c_out: int, tokens: int, batch: int, repeat: int) -> dict:
    x = torch.randn(batch, tokens, c_in)  # (B, N, C_in)
    weight = torch.randn(c_out, c_in, 3) / (3 * c_in) ** 0.5
    u = winograd.transform_weight(weight)  # (6, C_out, C_in)
    with torch.no_grad():
        direct = timed(lambda: F.conv1d(x.transpose(1, 2), weight, padding=1).transpose(1, 2), repeat=repeat)
        cached = timed(lambda: winograd.conv3(x, weight, transformed=u), repeat=repeat)
        transform = timed(lambda: winograd.transform_weight(weight), repeat=repeat)
        diff = (winograd.conv3(x, weight, transformed=u) - F.conv1d(x.transpose(1, 2), weight, padding=1).mT).abs()
    return {"shape": name, "tokens": tokens, "batch": batch, "direct_ms": 1e3 * direct,
            "winograd_cached_ms": 1e3 * cached, "transform_ms": 1e3 * transform,
            "speedup_cached": direct / cached, "max_abs_diff": float(diff.max())}  # fmt: skip


def main() -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--tokens", type=positive_int, nargs="+", default=[32, 63, 125, 250, 500, 1000])
    p.add_argument("--batch", type=positive_int, default=2)
    p.add_argument("--repeat", type=positive_int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    check_output(p, args.json)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = [row(name, *shape, n, args.batch, args.repeat) for name, shape in SHAPES.items() for n in args.tokens]
    report(rows, args.threads, load, "Winograd F(4, 3) with the cached weight", args.json)


if __name__ == "__main__":
    run_main(main)
