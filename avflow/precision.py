"""Numeric precision of inference: "fp32", or "bf16" (matmuls, convolutions and attention in bfloat16 under autocast).

bf16 is fast where the hardware multiplies bfloat16 natively: GPUs, and CPUs with AMX-BF16 (Intel Xeon 4th
generation and later). Elsewhere (e.g. AVX2-only CPUs) it still works, but the bfloat16 kernels are emulated and run
slower than fp32. `PRECISION_HELP` says which case this machine is, for --help, without importing torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from avflow.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU reports the AMX-BF16 instructions (Linux /proc/cpuinfo; False where it cannot tell)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines())


def precision_help() -> str:
    """One sentence for --help: where bf16 pays off, and whether this CPU is such a place."""
    here = (
        "this CPU has AMX-BF16, so bf16 is fast here"
        if cpu_has_amx_bf16()
        else "this CPU has no AMX-BF16: bf16 works on it but is slower than fp32"
    )
    return f"numeric precision (default fp32); bf16 is fast on GPUs and on CPUs with AMX-BF16 ({here})"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    return precision


@contextmanager
def autocast(precision: str, device: str | object = "cpu") -> Iterator[None]:
    """Run the block in `precision` on `device` (a torch.device or its name)."""
    import torch

    if check_precision(precision) == "fp32":
        yield
        return
    with warnings.catch_warnings(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        # bf16 activations meet fp32 norm weights: torch then skips its fused kernels and says so at every call
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
        yield
