"""AdamW and learning-rate schedules (linear warm-up, then constant, step or cosine decay)."""

from __future__ import annotations

import math
from bisect import bisect_right

import torch
from torch import nn

from avflow.train.config import OptimConfig, ScheduleConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW; biases and 1-D parameters (norm gains) get no weight decay unless `decay_all` (MMAudio: every
    parameter). The two groups exist either way, so a run resumes with `decay_all` changed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    low_dim = config.weight_decay if config.decay_all else 0.0
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": low_dim}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas, eps=config.eps)


def lr_factor(step: int, config: ScheduleConfig, total_steps: int) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based).

    Cosine cycle from `start` to `end` (the next restart or total_steps) with peak p (1, or restart_peak after a
    restart) and warm-up w: p (k + 1) / w for k = step - start < w, then m + (p - m) (1 + cos(pi u)) / 2 with
    u = (k - w) / (end - start - w) and m = min_lr_ratio.
    """
    if config.kind == "cosine":
        cycle = bisect_right(config.restarts, step)
        start = config.restarts[cycle - 1] if cycle else 0
        end = config.restarts[cycle] if cycle < len(config.restarts) else total_steps
        peak = config.restart_peak if cycle else 1.0
        k, w = step - start, config.warmup_steps
        if k < w:
            return peak * (k + 1) / w
        progress = min(1.0, (k - w) / max(1, end - start - w))
        return config.min_lr_ratio + (peak - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.kind == "step":
        return config.gamma ** bisect_right(sorted(config.milestones), step)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, total_steps))
