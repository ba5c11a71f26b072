"""The fusion base class and the layer schedule that pairs the two towers' blocks.

A fusion module owns the block loop of the joint model (`run`), so a variant may interleave the towers' blocks with
cross-modal layers (bidirectional cross-attention, windowed aligners) or replace a layer altogether (joint attention
over both token sets). The towers' interface (`TowerState`, `Tower`) lives in `avflow.nn.towers`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from avflow.nn.towers import Tower, TowerState


@dataclass(frozen=True, kw_only=True)
class FusionOptions:
    """Options of a fusion variant. Each variant subclasses it; the defaults of its fields are the variant's."""

    def check(self, video_dim: int, audio_dim: int, n_layers: int) -> None:
        """Raise ConfigError when the options do not fit towers of these widths and this many layers."""


def block_schedule(n_blocks: int, n_layers: int) -> list[list[int]]:
    """Spread `n_blocks` over `n_layers` layers by relative depth: layer k gets blocks whose depth falls in it."""
    layers: list[list[int]] = [[] for _ in range(n_layers)]
    for i in range(n_blocks):
        layers[min(n_layers - 1, (i * n_layers) // n_blocks)].append(i)
    return layers


class Fusion(nn.Module):
    """Base: runs the two towers layer by layer and calls `exchange` after each layer when cross_modal is on.

    `n_layers = max(video blocks, audio blocks)`; the shallower tower's blocks spread evenly over the layers.
    Subclasses set up their parameters in `__init__` and override `exchange` (or `run` to change whole layers);
    `takes_alignment` says whether the variant's cross-modal attention has a temporal RoPE to align.
    """

    takes_alignment = False

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
