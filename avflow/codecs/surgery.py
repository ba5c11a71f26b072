"""Codec surgery: structural changes to a codec that the weights of the shipped world codecs depend on."""

from __future__ import annotations

import torch


def without_output_norms(codec: torch.nn.Module) -> torch.nn.Module:
    """Drop the GroupNorm right before each codec's output conv (encoder latents and decoder pixels / mels).

    Workaround: a per-sample GroupNorm there removes each clip's absolute level (the world's per-clip background
    colour). Used for the audio VAE of the shipped model; must match how the weights were trained.
    """
    for seq in (codec.encoder, codec.decoder):
        idx = [i for i, m in enumerate(seq) if isinstance(m, torch.nn.GroupNorm)]
        if idx:
            seq[idx[-1]] = torch.nn.Identity()
    return codec
