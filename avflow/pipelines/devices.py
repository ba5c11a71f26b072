"""Where the pipelines run: on a CUDA device that supports it the networks run under bf16 autocast; elsewhere, and for
decoding to audio and frames, in fp32 (so CPU results stay bit for bit what they were)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """bf16 on CUDA devices that support it, else None (no autocast)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """`torch.autocast` to `dtype` on `device`, or nothing when dtype is None."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
