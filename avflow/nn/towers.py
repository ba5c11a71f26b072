"""What a tower of the joint model exposes, so fusion modules can run towers block by block.

A tower implements `embed(...) -> TowerState`, `run_block(i, state)` and `head(state)`, and has `n_blocks` and `dim`
(`avflow.models.wan.WanVideoTower`, `avflow.models.audio_tower.AudioTower`). The joint model sets each state's
`seconds`; fusion modules (`avflow.nn.fusion`) read and update the states' tokens between blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor


@dataclass
class TowerState:
    """Tokens of one stream during a forward pass (mutable: blocks and fusion layers update `x` in place).

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
