"""Parameter-efficient training of a joint model: frozen towers, trainable fusion, optional LoRA on the towers.

`LoRALinear` is an `nn.Linear` (same `weight`/`bias` keys, so tower checkpoints still load) with a trainable
low-rank update `scale · B A x`, B initialised to zero (a fresh adapter changes nothing). `apply_peft` freezes
`model.video` and `model.audio`, leaves `model.fusion` trainable and wraps the towers' attention/MLP linears in LoRA
when `lora_rank > 0`; `merge_lora` folds the adapters back into plain linears, `avflow.weights.merge_lora_state`
into a state dict (what `avflow train` does to the weights it exports with a `peft` section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.weights import merge_lora_state

TOWERS = ("video", "audio")  # a joint model's towers, the modules `apply_peft` freezes


@dataclass(frozen=True, kw_only=True)
class PeftConfig:
    lora_rank: int = 0  # 0: no LoRA, only the fusion layers train
    lora_alpha: float = 1.0  # update scale = alpha / rank
    # towers' linears whose qualified name contains one of these (attention, its output projection, MLP);
    # adaLN modulation, embedders and heads are left out
    lora_targets: tuple[str, ...] = ("attn", "ffn", "linear1")
    towers: tuple[str, ...] = ("video", "audio")

    def __post_init__(self):
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank: must be >= 0 (0: no LoRA, only fusion trains), got {self.lora_rank}")
        if not 0 < self.lora_alpha < math.inf:
            raise ConfigError(f"lora_alpha: must be > 0, got {self.lora_alpha}")
        if not self.lora_targets or not all(self.lora_targets):
            raise ConfigError(f"lora_targets: needs at least one non-empty name part, got {list(self.lora_targets)}")
        unknown = [t for t in self.towers if t not in TOWERS]
        if unknown or not self.towers or len(set(self.towers)) < len(self.towers):
            raise ConfigError(f"towers: one or both of {', '.join(TOWERS)}, each once, got {list(self.towers)}")


class LoRALinear(nn.Linear):
    """A frozen linear plus a trainable rank-r update; `weight`/`bias` keep their names."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)  # reuse the base's tensors instead of allocating new ones
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        """A plain linear with the update folded in."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.weight.device)
        out.load_state_dict(merge_lora_state(self.state_dict(), self.scale))  # as exported weights are folded
        return out


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def add_lora(module: nn.Module, rank: int, alpha: float, targets: tuple[str, ...]) -> list[str]:
    """Wrap every `nn.Linear` of `module` whose name contains a target; returns the wrapped names."""
    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    names = [
        n
        for n, m in module.named_modules()
        if type(m) is nn.Linear and "adaLN" not in n and any(t in n for t in targets)
    ]
    for n in names:
        _replace(module, n, LoRALinear(module.get_submodule(n), rank, alpha))
    return names


def merge_lora(module: nn.Module) -> int:
    """Replace every `LoRALinear` by its merged plain linear; returns how many were merged."""
    names = [n for n, m in module.named_modules() if isinstance(m, LoRALinear)]
    for n in names:
        _replace(module, n, module.get_submodule(n).merged())
    return len(names)


def apply_peft(model: nn.Module, config: PeftConfig | None = None) -> list[str]:
    """Freeze the towers of a joint model (fusion stays trainable), optionally add LoRA; returns the LoRA names."""
    config = config or PeftConfig()
    wrapped = []
    for tower in config.towers:
        if not hasattr(model, tower):
            raise ConfigError(f"model has no tower {tower!r} to freeze (towers: video, audio)")
        module = getattr(model, tower)
        module.requires_grad_(False)
        if config.lora_rank > 0:
            names = add_lora(module, config.lora_rank, config.lora_alpha, config.lora_targets)
            wrapped += [f"{tower}.{n}" for n in names]
    return wrapped


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """-> (trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def trainable_summary(model: nn.Module) -> str:
    """One line: trainable / total parameters, with the trainable part by top-level module."""
    trainable, total = trainable_parameters(model)
    parts = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            top = name.split(".")[0]
            parts[top] = parts.get(top, 0) + p.numel()
    detail = ", ".join(f"{k} {v:,}" for k, v in parts.items())
    share = 100 * trainable / max(total, 1)
    return f"trainable {trainable:,} / {total:,} parameters ({share:.2f} %): {detail or 'none'}"
