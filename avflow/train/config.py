"""Training configuration: dataclasses (the source of truth) and the strict YAML loader."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from avflow.config import apply_overrides, from_dict, read_yaml, to_dict
from avflow.errors import ConfigError, MissingPathError
from avflow.models.peft import PeftConfig


@dataclass
class ComponentConfig:
    """A named builder (see `avflow.train.components`) and its arguments, checked against its own dataclass."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    train: ComponentConfig
    val: ComponentConfig | None = None
    num_workers: int = 0
    shuffle: bool = True

    def __post_init__(self):
        if self.num_workers < 0:
            raise ConfigError("num_workers: must be >= 0")


@dataclass
class OptimConfig:
    """AdamW."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_all: bool = False  # weight decay on every parameter (MMAudio); False: none on biases and 1-D (norm gains)
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping

    def __post_init__(self):
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas: each must be in [0, 1), got {list(self.betas)}")
        if not 0 < self.eps < math.inf:
            raise ConfigError(f"eps: must be > 0, got {self.eps}")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not 0 < self.grad_clip < math.inf:
            raise ConfigError(f"grad_clip: must be > 0 (or null: no clipping), got {self.grad_clip}")


@dataclass
class ScheduleConfig:
    """Linear warm-up, then constant, step (x gamma at each milestone) or cosine decay to min_lr_ratio.

    Cosine only: `restarts` are steps where a new cycle begins (SGDR warm restarts), each with its own warm-up
    and decay to min_lr_ratio at the next restart or the last step, peaking at `restart_peak` x the base rate.
    """

    kind: Literal["constant", "step", "cosine"] = "constant"
    warmup_steps: int = 0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    restarts: list[int] = field(default_factory=list)
    restart_peak: float = 1.0

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        if any(b <= a for a, b in zip([0, *self.milestones], self.milestones)):
            raise ConfigError(f"milestones: must be steps > 0 in increasing order, got {self.milestones}")
        if not 0 < self.gamma < math.inf:
            raise ConfigError(f"gamma: must be > 0, got {self.gamma}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.restarts and self.kind != "cosine":
            raise ConfigError(f"restarts: only for kind cosine, got kind {self.kind!r}")
        if any(b <= a for a, b in zip([self.warmup_steps, *self.restarts], self.restarts)):
            raise ConfigError(f"restarts: must increase and come after warmup_steps, got {self.restarts}")
        if not 0 < self.restart_peak <= 1:
            raise ConfigError(f"restart_peak: must be in (0, 1], got {self.restart_peak}")


@dataclass
class EMAConfig:
    """Power-function EMA (Karras et al. 2024, EDM2), one average per relative std `sigma_rels`."""

    enabled: bool = True
    sigma_rels: tuple[float, ...] = (0.05, 0.1)
    snapshot_every: int = 0  # save both profiles every N steps for post-hoc reconstruction; 0 = never

    def __post_init__(self):
        if self.snapshot_every < 0:
            raise ConfigError(f"snapshot_every: must be >= 0 (0 = never), got {self.snapshot_every}")
        if self.enabled and not self.sigma_rels:
            raise ConfigError("sigma_rels: needs at least one value when enabled")
        for s in self.sigma_rels:
            if not 0 < s < 0.28:
                raise ConfigError(f"sigma_rels: each value must be in (0, 0.28), got {s}")


@dataclass
class LoopConfig:
    steps: int = 1000
    batch_size: int = 32  # global: samples per optimizer step over all processes and accumulation steps
    grad_accum: int = 1
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA when supported, fp32 on CPU
    compile: bool = False
    threads: int | None = None  # torch intra-op threads per process; None = torch's default
    find_unused_parameters: bool = False  # DDP option for models with parameters unused in some steps

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: must be >= 1 (or null: torch's default), got {self.threads}")


@dataclass
class LogConfig:
    every: int = 10
    val_every: int = 0  # 0 = never
    val_batches: int = 4
    sample_every: int = 0  # 0 = never
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self):
        for name, least in (("every", 1), ("val_every", 0), ("val_batches", 1), ("sample_every", 0)):
            if getattr(self, name) < least:
                never = " (0 = never)" if least == 0 else ""
                raise ConfigError(f"{name}: must be >= {least}{never}, got {getattr(self, name)}")


@dataclass
class CheckpointConfig:
    every: int = 1000
    keep_last: int = 3
    resume: str = "auto"  # auto (latest valid in out_dir), none, or a checkpoint file

    def __post_init__(self):
        if self.every < 1:
            raise ConfigError(f"every: must be >= 1, got {self.every}")
        if self.keep_last < 1:
            raise ConfigError(f"keep_last: must be >= 1, got {self.keep_last}")
        if self.resume not in ("auto", "none") and not Path(self.resume).is_file():
            raise MissingPathError(f"resume: no such checkpoint file: {self.resume!r}")


@dataclass
class InitConfig:
    """Start from trained weights instead of random ones (before any resume, which then takes precedence), and keep
    some parameters fixed: e.g. a codec's decoder trained further on its frozen encoder, so models trained on its
    latents stay valid. `weights`: a safetensors state dict (int8 files as `avflow.weights.quantize_int8` writes them
    are dequantized), loaded strictly but for `new`: name prefixes of parts trained from scratch (e.g. a head added
    to a trained codec): they keep their random initialization, whether the file has them or not, so a rerun from a
    file that already holds a trained head starts the same way; `freeze`: parameter-name prefixes left out of the
    optimizer. Growing a trained model: `rename` maps name prefixes of the file to the model's (all at once, e.g.
    trained blocks 1, 2, 3 moved to 2, 4, 6 between blocks added as `new`), and `zero` sets the parameters under its
    prefixes to zero after loading (an added residual block's output projections, so it starts as the identity and
    the grown model computes what the trained one did)."""

    weights: str | None = None
    freeze: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    zero: list[str] = field(default_factory=list)

    def __post_init__(self):
        # whether `weights` exists is checked by the trainer, and only where nothing is resumed: a resumed run's
        # weights are its checkpoint's, so a run moved to another machine needs no copy of the file it started from
        if self.freeze and self.weights is None:
            raise ConfigError("freeze: needs init.weights (frozen random weights would never be trained)")
        for name in ("new", "rename", "zero"):
            if getattr(self, name) and self.weights is None:
                raise ConfigError(f"{name}: needs init.weights (it changes how the weights file is loaded)")


@dataclass
class DistributedConfig:
    """ddp: replicated weights (DistributedDataParallel); fsdp: weights, gradients and optimizer state sharded
    across processes with FSDP2 (`torch.distributed.fsdp.fully_shard`), one unit per transformer block."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    reshard_after_forward: bool = True  # fsdp: free gathered weights after forward (ZeRO-3) or keep them (ZeRO-2)


@dataclass
class TrainConfig:
    out_dir: str
    model: ComponentConfig
    task: ComponentConfig
    data: DataConfig
    train: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init: InitConfig = field(default_factory=InitConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    # the joint model's towers frozen (fusion trained), optionally with LoRA on them (avflow.models.peft); null: off.
    # A mapping that is no valid PeftConfig is kept as `dict` and read again below, so its error says what is wrong
    # (a `PeftConfig | None` field's error would only say that the mapping does not fit).
    peft: PeftConfig | dict | None = None

    def __post_init__(self):
        if not str(self.out_dir).strip():
            raise ConfigError("out_dir: must name a folder, got an empty name")
        if isinstance(self.peft, dict):
            self.peft = from_dict(PeftConfig, self.peft, "peft")
        if self.peft is not None and self.init.weights is None:
            raise ConfigError("peft: needs init.weights (the pretrained towers it freezes; random ones would never "
                              "be trained)")  # fmt: skip


def resolve_component(table: dict, comp: ComponentConfig, path: str) -> Any:
    """The typed arguments dataclass for `comp` from `table` (name -> ComponentSpec), strictly."""
    if comp.name not in table:
        raise ConfigError(f"{path}.name: unknown {path.split('.')[-1]} {comp.name!r} (choose from {', '.join(table)})")
    return from_dict(table[comp.name].config, comp.args, f"{path}.args")


def resolved_model(saved: dict) -> dict:
    """A saved run config (a checkpoint's) with its model's args resolved as `validate` resolves this config's (the
    defaults filled in, e.g. a joint model's fusion options), so that the same network compares equal however sparse
    an earlier version saved it; as saved where its model no longer resolves (the comparison then names what
    differs)."""
    from avflow.train.components import MODELS

    try:
        model = from_dict(ComponentConfig, saved["model"], "model")
        args = to_dict(resolve_component(MODELS, model, "model"))
    except (ConfigError, KeyError, TypeError):
        return saved
    return {**saved, "model": {**saved["model"], "args": args}}


def check_peft(peft: PeftConfig, name: str, model_config: type) -> None:
    """A one-line ConfigError where the model (its config dataclass `model_config`) has no tower `peft` names."""
    fields = {f.name for f in dataclasses.fields(model_config)}
    missing = [tower for tower in peft.towers if tower not in fields]
    if missing:
        raise ConfigError(f"peft: the {name!r} model has no {missing[0]} tower to freeze (peft is for the joint "
                          "model: its video and audio towers frozen, its fusion trained)")  # fmt: skip


def validate(config: TrainConfig) -> TrainConfig:
    """Check every component's arguments and normalize them to plain values; returns config."""
    from avflow.train.components import DATASETS, MODELS, TASKS

    parts = [(MODELS, config.model, "model"), (TASKS, config.task, "task"), (DATASETS, config.data.train, "data.train")]
    if config.data.val is not None:
        parts.append((DATASETS, config.data.val, "data.val"))
    for table, comp, path in parts:
        comp.args = to_dict(resolve_component(table, comp, path))
    if config.peft is not None:
        check_peft(config.peft, config.model.name, MODELS[config.model.name].config)
    loop = config.train
    if loop.batch_size % loop.grad_accum:
        raise ConfigError(f"train.batch_size: {loop.batch_size} is not divisible by train.grad_accum={loop.grad_accum}")
    return config


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """A validated TrainConfig from a YAML file and `key=value` overrides; raises ConfigError (one line)."""
    raw = read_yaml(path) if path is not None else {}
    try:
        return validate(from_dict(TrainConfig, apply_overrides(raw, list(overrides))))
    except ConfigError as exc:
        raise type(exc)(f"{path}: {exc}" if path is not None else str(exc)) from None
