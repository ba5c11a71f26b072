"""Numeric precision of inference: "auto", "fp32" or "bf16" (matmuls, convolutions and attention in bfloat16 under
autocast), one setting for every generating command and pipeline.

  auto  the networks run under bf16 autocast on a CUDA GPU that supports it, decoding to audio and frames in fp32;
        fp32 everywhere else (so CPU results are exactly the fp32 ones).
  fp32  everything in fp32, on every device (the parity setting).
  bf16  every stage under bf16 autocast, decoding included, on any device.

bf16 is fast where the hardware multiplies bfloat16 natively: GPUs, CPUs with AMX-BF16 (Intel Xeon 4th generation
and later) and CPUs with AVX512-BF16 (e.g. AMD EPYC Zen 4 and later: a 2048^2 bf16 matmul ran 4.2x fp32 on one,
small_16k network sampling 2.2x; on a 2-core Xeon with AMX-BF16 the whole foley pipeline ran 3.3-3.8x its fp32 run,
docs/foley.md). Elsewhere (e.g. AVX2-only CPUs) it still works, but the bfloat16 kernels are emulated and run slower
than fp32. `precision_help()` says which case this machine is, for --help,
without importing torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from avflow.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_PRECISION = "auto"


def cpu_bf16_instructions() -> str | None:
    """The native bfloat16 matmul instructions this CPU reports: "AMX-BF16", "AVX512-BF16" or None (Linux
    /proc/cpuinfo; None where it cannot tell)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}
    return "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def precision_help() -> str:
    """The --precision help: the choices, the default, and whether bf16 pays off on this CPU."""
    native = cpu_bf16_instructions()
    here = (
        f"this CPU has {native}, so bf16 is fast here"
        if native
        else "this CPU has neither AMX-BF16 nor AVX512-BF16: bf16 works on it but is slower than fp32"
    )
    return (
        f"numeric precision (default: {DEFAULT_PRECISION}): auto = the networks in bf16 on a CUDA GPU that supports "
        "it, fp32 on the CPU; fp32 = fp32 everywhere; bf16 = every stage in bf16, which is fast on GPUs and on CPUs "
        f"with AMX-BF16 or AVX512-BF16 ({here})"
    )


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    return precision


def autocast_dtype(precision: str, device: str | object, *, codec: bool = False):
    """The dtype `precision` runs on `device` under autocast (torch.bfloat16), or None for fp32. `codec`: the
    codecs that turn latents into audio or frames and back (bf16 only when asked for explicitly)."""
    import torch

    device = torch.device(device)
    if check_precision(precision) == "bf16":
        return torch.bfloat16
    on_gpu = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if precision == "auto" and on_gpu and not codec else None


@contextmanager
def autocast(precision: str, device: str | object = "cpu", *, codec: bool = False) -> Iterator[None]:
    """Run the block in `precision` on `device` (a torch.device or its name); see `autocast_dtype`."""
    import torch

    dtype = autocast_dtype(precision, device, codec=codec)
    if dtype is None:
        yield
        return
    with warnings.catch_warnings(), torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        # bf16 activations meet fp32 norm weights: torch then skips its fused kernels and says so at every call
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
        yield


@contextmanager
def autocast_weights(module) -> Iterator[None]:
    """Inside an autocast block, at inference: `module`'s Linear weights and biases held in the autocast dtype for
    the block, then given back. Autocast casts a float32 weight at every call (it keeps a cast only of weights that
    require grad), so a sampling loop of many steps casts every matrix at every step; cast once here instead. The
    values are the ones autocast would make, so outputs are bit-identical; a no-op outside autocast or with gradients
    on (training keeps its float32 weights). Convolutions are left to autocast: held in bf16 they made MMAudio
    large's sampling slower on an AMX CPU (docs/foley.md)."""
    import torch
    from torch import nn

    first = next(module.parameters(), None)
    device = first.device.type if first is not None else "cpu"
    if first is None or torch.is_grad_enabled() or not torch.is_autocast_enabled(device):
        yield
        return
    dtype = torch.get_autocast_dtype(device)
    held = [p for m in module.modules() if isinstance(m, nn.Linear) for p in (m.weight, m.bias)
            if p is not None and p.dtype == torch.float32]  # fmt: skip
    originals = [p.data for p in held]
    try:
        for p in held:
            p.data = p.data.to(dtype)
        yield
    finally:
        for p, data in zip(held, originals):
            p.data = data
