"""What every fusion module sees: the two towers' token states and the layer schedule that pairs their blocks.

A fusion module owns the block loop of the joint model (`run`), so a variant may interleave the towers' blocks with
cross-modal layers (bidirectional cross-attention, windowed aligners) or replace a layer altogether (joint attention
over both token sets). Towers expose `embed(...) -> TowerState`, `run_block(i, state)`, `head(state)`, `n_blocks`
and `dim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor, nn


@dataclass
class TowerState:
    """Tokens of one stream during a forward pass.

    x: `(B, L, D)` tokens. grid: the token layout (`(T, H, W)` for video, `(N,)` for audio). seconds: wall-clock
    time of each temporal position (`(T,)` video latent frames, `(N,)` audio latents), set by the joint model.
    extras: tower-private tensors (text tokens, modulation, RoPE tables).
    """

    x: Tensor
    grid: tuple[int, ...]
    extras: dict = field(default_factory=dict)
    seconds: Tensor | None = None


class Tower(Protocol):
    n_blocks: int
    dim: int

    def run_block(self, i: int, state: TowerState) -> None: ...


def block_schedule(n_blocks: int, n_layers: int) -> list[list[int]]:
    """Spread `n_blocks` over `n_layers` layers by relative depth: layer k gets blocks whose depth falls in it."""
    layers: list[list[int]] = [[] for _ in range(n_layers)]
    for i in range(n_blocks):
        layers[min(n_layers - 1, (i * n_layers) // n_blocks)].append(i)
    return layers


class Fusion(nn.Module):
    """Base: runs the two towers layer by layer and calls `exchange` after each layer when cross_modal is on.

    `n_layers = max(video blocks, audio blocks)`; the shallower tower's blocks spread evenly over the layers.
    Subclasses set up their parameters in `__init__` and override `exchange` (or `run` to change whole layers).
    """

    def __init__(self, video_dim: int, audio_dim: int, video_blocks: int, audio_blocks: int):
        super().__init__()
        self.video_dim, self.audio_dim = video_dim, audio_dim
        self.n_layers = max(video_blocks, audio_blocks)
        self.video_schedule = block_schedule(video_blocks, self.n_layers)
        self.audio_schedule = block_schedule(audio_blocks, self.n_layers)

    def run(self, video_tower: Tower, audio_tower: Tower, v: TowerState, a: TowerState, cross_modal: bool) -> None:
        for layer in range(self.n_layers):
            for i in self.video_schedule[layer]:
                video_tower.run_block(i, v)
            for i in self.audio_schedule[layer]:
                audio_tower.run_block(i, a)
            if cross_modal:
                self.exchange(layer, v, a)

    def exchange(self, layer: int, v: TowerState, a: TowerState) -> None:
        """Update `v.x` and/or `a.x` in place with information from the other stream."""
