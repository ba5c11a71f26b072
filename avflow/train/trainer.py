"""The training loop: DDP, gradient accumulation, bf16 autocast, clipping, EMA, validation, sampling, checkpoints."""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from avflow.config import dump_yaml, to_dict
from avflow.errors import ConfigError, TrainingError, TrainingWarning, WeightsError, first_line, on_every_rank
from avflow.models.peft import PeftConfig, apply_peft, trainable_summary
from avflow.precision import autocast_dtype
from avflow.train import checkpoint as ckpt
from avflow.train import distributed as dist
from avflow.train import fsdp
from avflow.train.components import DATASETS, MODELS, TASKS
from avflow.train.config import InitConfig, TrainConfig, resolve_component, resolved_model
from avflow.train.datasets import SeededDataset
from avflow.train.ema import PowerFunctionEMA
from avflow.train.init_checks import check_data_fits_model, shipped_init
from avflow.train.optim import build_optimizer, build_scheduler
from avflow.train.run_folder import check_out_dir, resume_changes, resume_refusal
from avflow.train.sampler import ResumableBatchSampler
from avflow.weights import (
    atomic_write,
    dequantize_int8,
    load_strict,
    merge_lora_state,
    read_state_dict,
    save_safetensors,
)

# Test hook: "N" kills this process with SIGKILL after step N (after its checkpoint), "N:mid" during step N.
KILL_ENV = "AVFLOW_TRAIN_KILL_AT"


@dataclass
class TrainResult:
    step: int
    loss: float | None  # mean training loss over the last logging window
    val_loss: float | None
    samples_per_s: float
    checkpoint: Path | None
    interrupted: bool = False  # stopped by Ctrl-C: saved at `step`, not exported; the same command resumes it


class LossModule(nn.Module):
    """`forward(batch) = task.loss(model, batch)`, so DDP and torch.compile see the whole loss computation."""

    def __init__(self, model: nn.Module, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict) -> torch.Tensor:
        return self.task.loss(self.model, batch)


class _StopRequest:
    """Ctrl-C (SIGINT) in a single-process run asks the loop to stop after the step under way and save it (steps
    since the last checkpoint are not lost); a second Ctrl-C stops at once, as Python does. Under torchrun every
    rank gets the signal at a different point of a collective, so there the default stays."""

    def __init__(self, enabled: bool):
        self.requested = False
        self.previous = None
        if enabled and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)
        print("\nstopping after this step to save it (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.previous is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self.previous)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def to_device(x, device: torch.device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def own_data_errors(batches):
    """The batches of a loader, a ConfigError raised while reading one (a damaged cache shard) marked as this rank's
    own: each rank reads its own part of the data, so the rank that hit it says it (the others only lose a peer)."""
    batches = iter(batches)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except ConfigError as exc:
            raise on_every_rank(exc, alike=False) from exc.__cause__  # the same error, as it was raised
        yield batch


def _kill_point() -> tuple[int, str] | None:
    value = os.environ.get(KILL_ENV)
    if not value:
        return None
    step, _, phase = value.partition(":")
    return int(step), phase or "end"


def _logged_step(line: str) -> float:
    """The step of one metrics.jsonl line; infinite (dropped on resume) for a line cut short by a kill."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class MetricsLog:
    """`metrics.jsonl` in the output folder: one JSON line per logged step (loss, lr, validation, sampling).

    On resume, lines of steps after the resumed step are dropped, so the file always describes one run.
    """

    def __init__(self, path: Path, resumed_step: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if _logged_step(line) <= resumed_step]
            atomic_write(path, lambda f: f.write("".join(line + "\n" for line in keep).encode()))

    def write(self, **values) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 1), **values}) + "\n")


def _renamed(state: dict[str, Tensor], rename: dict[str, str]) -> dict[str, Tensor]:
    """The file's keys with their longest `rename` prefix replaced (all at once: {a: b, b: c} moves a to b and b
    to c)."""
    for prefix in rename:
        if not any(k.startswith(prefix) for k in state):
            raise ConfigError(f"init.rename: no name in the weights file starts with {prefix!r}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        prefix = max((p for p in rename if key.startswith(p)), key=len, default=None)
        name = key if prefix is None else rename[prefix] + key[len(prefix) :]
        if name in out:
            raise ConfigError(f"init.rename: two names of the weights file become {name!r}")
        out[name] = value
    return out


def initialize(model: nn.Module, init: InitConfig, resuming: bool = False) -> None:
    """Load `init.weights` strictly (after `init.rename`), except the parts under an `init.new` prefix, which keep
    their random initialization (whether the file has them or not); zero the parameters under an `init.zero`
    prefix; freeze the parameters whose names start with an `init.freeze` prefix. `resuming`: a checkpoint will
    replace every weight, so the file is not read (nor needed), only the freeze applied."""
    names = [name for name, _ in model.named_parameters()]
    if init.weights is not None and not resuming:
        state = _renamed(dequantize_int8(read_state_dict(init.weights)), init.rename)
        own = model.state_dict()
        for prefix in init.new:
            added = {k: v for k, v in own.items() if k.startswith(prefix)}
            if not added:
                raise ConfigError(f"init.new: no parameter or buffer name starts with {prefix!r}")
            state = {k: v for k, v in state.items() if not k.startswith(prefix)} | added
        load_strict(model, state, init.weights)
        with torch.no_grad():
            for prefix in init.zero:
                params = [p for name, p in model.named_parameters() if name.startswith(prefix)]
                if not params:
                    raise ConfigError(f"init.zero: no parameter name starts with {prefix!r}")
                for p in params:
                    p.zero_()
    for prefix in init.freeze:
        if not any(name.startswith(prefix) for name in names):
            raise ConfigError(f"init.freeze: no parameter name starts with {prefix!r}")
    for name, param in model.named_parameters():
        if name.startswith(tuple(init.freeze)):
            param.requires_grad_(False)


def setup_peft(model: nn.Module, peft: PeftConfig, is_main: bool) -> None:
    """Freeze the joint model's towers and wrap their linears in LoRA (`peft`), after `initialize` loaded the
    pretrained plain weights (whose files hold no adapter); rank 0 says what trains, in one line on stderr."""
    wrapped = apply_peft(model, peft)
    if is_main:
        lora = f"LoRA rank {peft.lora_rank} on {len(wrapped)} linears" if wrapped else "no LoRA"
        print(f"peft: towers {', '.join(peft.towers)} frozen, {lora}; {trainable_summary(model)}", file=sys.stderr,
              flush=True)  # fmt: skip


class TrainableView:
    """A model's `named_parameters` limited to those that train: the EMA of a `peft` run averages the fusion and the
    adapters only, not a constant copy of the frozen towers (their weights are taken as they are when exported)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def named_parameters(self):
        return ((name, p) for name, p in self.model.named_parameters() if p.requires_grad)


def as_saved(config: TrainConfig, saved: dict) -> dict:
    """`config` as a dict to compare with a checkpoint's config `saved`: a `peft: null` is left out where `saved`,
    written before that section existed, has none (nothing changed)."""
    current = to_dict(config)
    if current.get("peft") is None and "peft" not in saved:
        current.pop("peft", None)
    return current


def _peft_text(peft: dict | None) -> str:
    return "null" if peft is None else "{" + ", ".join(f"{k}: {v}" for k, v in peft.items()) + "}"


def peft_changes(saved: dict, current: dict) -> list[str]:
    """How the `peft` section changed since a checkpoint ("key saved -> now"): its trainable parameters and
    adapters are another network's, so any change is refused."""
    old, new = saved.get("peft"), current.get("peft")
    if old == new:
        return []
    if old is None or new is None:
        return [f"peft {_peft_text(old)} -> {_peft_text(new)}"]
    keys = sorted(old.keys() | new.keys())
    return [f"peft.{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)]


def check_tensorboard(config: TrainConfig) -> None:
    """A one-line ConfigError where `log.tensorboard` is on and TensorBoard (the [train] extra) is not installed
    (found, not imported: cheap), before anything is built (not an ImportError after the first step)."""
    if config.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log.tensorboard needs the [train] extra (tensorboard): pip install 'avflow[train]', or set "
                          "log.tensorboard=false")  # fmt: skip


class Trainer:
    def __init__(self, config: TrainConfig, info: dist.DistInfo):
        config = replace(config, init=shipped_init(config.init))
        self.config, self.info = config, info
        check_tensorboard(config)  # every rank, before the task, the model and the data are built
        loop = config.train
        if loop.threads:
            torch.set_num_threads(loop.threads)
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.device = info.device
        self.dtype = autocast_dtype(loop.precision, self.device)
        self.kill = _kill_point()
        self.task = TASKS[config.task.name].build(resolve_component(TASKS, config.task, "task"))
        self.fsdp = config.distributed.strategy == "fsdp" and info.distributed
        ddp = info.distributed and not self.fsdp
        if ddp and self.task.leaves_parameters_unused and not loop.find_unused_parameters:
            raise ConfigError(f"task {config.task.name}: some steps leave parameters unused (e.g. "
                              "cross_modal_dropout > 0), which DDP needs to know: set "
                              "train.find_unused_parameters=true")  # fmt: skip
        check_out_dir(self.out_dir, config.checkpoint.resume)
        resume_path, resume_state = self._find_checkpoint()  # before the model is built: another network is refused
        if resume_path is None and config.init.weights is not None and not Path(config.init.weights).is_file():
            raise ConfigError(f"init.weights: no such file: {config.init.weights!r}")
        check_data_fits_model(config)  # before the model is built: the data's clips are another model's

        seed_all(loop.seed)  # identical initial weights on every rank
        self.model = MODELS[config.model.name].build(resolve_component(MODELS, config.model, "model")).to(self.device)
        initialize(self.model, config.init, resuming=resume_path is not None)
        if config.peft is not None:  # after the plain weights loaded; a resumed checkpoint then sets the adapters
            setup_peft(self.model, config.peft, info.is_main)
        peft = config.peft
        self.lora_scale = peft.lora_alpha / peft.lora_rank if peft is not None and peft.lora_rank else None
        averaged = TrainableView(self.model) if config.peft is not None else self.model
        self.ema = None  # rank 0's EMA of the whole model; under fsdp every rank's EMA of its shards
        if config.ema.enabled and info.is_main and not self.fsdp:
            self.ema = PowerFunctionEMA(averaged, config.ema.sigma_rels)
        self.loss_module = LossModule(self.model, self.task)
        if self.fsdp:
            self.ddp = fsdp.shard(self.loss_module, self.model, info, config.distributed.reshard_after_forward)
            if config.ema.enabled:
                self.ema = fsdp.ShardedEMA(averaged, config.ema.sigma_rels, info.is_main)
        else:
            self.ddp = dist.wrap_ddp(self.loss_module, info, loop.find_unused_parameters)
        self.forward = torch.compile(self.ddp) if loop.compile else self.ddp
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, loop.steps)

        train_set = DATASETS[config.data.train.name].build(resolve_component(DATASETS, config.data.train, "data.train"))
        check_data = getattr(self.task, "check_data", None)  # a task that can tell data its model cannot train on
        if check_data is not None:
            check_data(self.model, train_set)
        self.sampler = ResumableBatchSampler(len(train_set), loop.batch_size, loop.grad_accum, info.rank,
                                             info.world_size, loop.seed, config.data.shuffle,
                                             dataset="the training set data.train")  # fmt: skip
        self.train_loader = self._loader(SeededDataset(train_set, loop.seed), self.sampler)
        self.val_set, self.val_loader = None, None
        if config.data.val is not None:
            val_set = DATASETS[config.data.val.name].build(resolve_component(DATASETS, config.data.val, "data.val"))
            if check_data is not None:
                check_data(self.model, val_set)
            # Global batches of train.batch_size in order, run as the training's micro-batches (grad_accum per global
            # batch, split across the ranks), so that val_loss covers the same samples however the run is split.
            val_sampler = ResumableBatchSampler(len(val_set), loop.batch_size, loop.grad_accum, info.rank,
                                                info.world_size, 0, shuffle=False,
                                                dataset="the validation set data.val")  # fmt: skip
            self.val_set = SeededDataset(val_set, loop.seed + 1)
            self.val_loader = self._loader(self.val_set, val_sampler)
        self.step, self.epoch, self.position = 0, 0, 0
        self.resumed_from = resume_path
        if resume_path is not None:
            state = resume_state if resume_state is not None else ckpt.load_checkpoint(resume_path, verify=False)
            self._load_state(state, resume_path)
            del state, resume_state
        else:
            seed_all(loop.seed + info.rank)  # per-rank streams for dropout and the like

    def _loader(self, dataset, sampler) -> DataLoader:
        # An explicit generator keeps the loader from drawing on the global RNG (needed for exact resume).
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.train.seed),
        )

    # --- checkpoints -------------------------------------------------------------------------------------------

    def _find_checkpoint(self) -> tuple[Path | None, dict | None]:
        """The checkpoint to resume (`checkpoint.resume`) and, on rank 0, its state, checked against this config
        (`run_folder.resume_changes`): a checkpoint of another network is a one-line error on every rank, other
        changes are named in a note (said when the state loads). Other ranks read the state later."""
        mode = self.config.checkpoint.resume
        if mode == "none":
            return None, None
        state, message, refusal = None, None, None
        self.resumed_config = None  # the config the resumed steps were trained with (rank 0)
        self.resume_note = None  # (what is resumed, the settings changed since) for rank 0's note
        if self.info.is_main:
            try:
                if mode == "auto":
                    found = ckpt.load_latest(self.ckpt_dir)
                    path, state = found if found is not None else (None, None)
                else:
                    path, state = Path(mode), ckpt.load_checkpoint(Path(mode))
            except WeightsError as exc:
                path, message = None, str(exc)
            if state is not None:
                saved = resolved_model(state["config"])  # as this version resolves it (e.g. sparse fusion options)
                current = as_saved(self.config, saved)
                refused, changed = resume_changes(saved, current)
                refused = peft_changes(saved, current) + refused
                refusal = None if refused else resume_refusal(saved, current, path)
                if refusal is not None:
                    path, state = None, None
                elif refused:
                    section = "peft section" if refused[0].startswith("peft") else "model config"
                    path, state, message = None, None, (
                        f"{path}: the checkpoint holds another network than this config builds ({refused[0]}"
                        f"{f' and {len(refused) - 1} more' if len(refused) > 1 else ''}): give another out_dir, "
                        f"or the {section} it was trained with"
                    )
                else:
                    self.resumed_config = saved
                    # said in _load_state, which knows where in the data the run goes on
                    self.resume_note = (f"resuming {self.out_dir} from {path.name} (step {state['step']} of "
                                        f"{self.config.train.steps})", changed)  # fmt: skip
            shared = (str(path) if path else None, message, refusal)
        else:
            shared = None
        path, message, refusal = dist.broadcast_object(shared, self.info)
        if refusal is not None:
            raise ConfigError(refusal)
        if message is not None:  # rank 0's, shared: said once
            raise on_every_rank(WeightsError(message))
        return (Path(path), state) if path is not None else (None, None)

    def _load_state(self, state: dict, path: Path) -> None:
        self._resume_data_position(state)
        # The loaded optimizer and scheduler states carry the saved config's lr, betas, eps and weight decay (per
        # group, as build_optimizer made them): keep this config's, so that a changed optim.* takes effect.
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        base_lrs = list(self.scheduler.base_lrs)
        if self.fsdp:
            fsdp.load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])  # its step; its lambdas are this config's schedule
        self.scheduler.base_lrs = base_lrs
        for group, hyper, base, fn in zip(self.optimizer.param_groups, configured, base_lrs,
                                          self.scheduler.lr_lambdas):  # fmt: skip
            group.update(hyper)
            group["lr"] = base * fn(self.scheduler.last_epoch)  # this config's schedule at the resumed step
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])  # fsdp: every rank keeps its shards of the full averages
            elif self.info.is_main:
                warnings.warn(TrainingWarning(f"{path}: no EMA state; the EMA restarts from the current weights"),
                              stacklevel=2)  # fmt: skip
        self.step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            ckpt.set_rng_state(rngs[self.info.rank])
        else:
            reseeded = f"saved by {len(rngs)} processes, resumed by {self.info.world_size}; RNG streams are reseeded"
            warnings.warn(TrainingWarning(f"{path}: {reseeded}"), stacklevel=2)
            seed_all(self.config.train.seed + self.step * 1000 + self.info.rank)

    def _resume_data_position(self, state: dict) -> None:
        """The epoch and global batch the resumed run goes on from, and rank 0's note on the resume. The position
        is counted in global batches of the saved config's `train.batch_size`: with another batch size it goes on
        by samples consumed (`ResumableBatchSampler.resumed_position`), which the note says."""
        epoch, position = int(state["epoch"]), int(state["position"])
        saved_batch = int(state.get("config", {}).get("train", {}).get("batch_size", self.sampler.global_batch))
        self.epoch, self.position = self.sampler.resumed_position(epoch, position, saved_batch)
        if self.resume_note is None:
            return
        what, changed = self.resume_note
        if saved_batch != self.sampler.global_batch:
            seen, size = position * saved_batch, self.sampler.size
            if self.epoch > epoch:
                how = (f"{seen} of epoch {epoch}'s {size} samples seen, less than a batch left: epoch {self.epoch} "
                       "from its start")  # fmt: skip
            else:
                start = self.position * self.sampler.global_batch
                again = f", {seen - start} of the {seen} seen again" if seen > start else f", after the {seen} seen"
                how = f"epoch {epoch} from its sample {start}{again}"
            changed = [f"{c} (the data goes on by samples: {how})" if c.startswith("train.batch_size ") else c
                       for c in changed]  # fmt: skip
        changed = f"; changed since: {'; '.join(changed)}" if changed else ""
        warnings.warn(TrainingWarning(f"{what}{changed}"), stacklevel=3)

    def save(self) -> Path | None:
        rngs = dist.gather_objects(ckpt.rng_state(), self.info)
        path = None
        if self.fsdp:  # collectives: every rank joins the gathers, rank 0 alone keeps the states (on CPU) and writes
            model_state = fsdp.full_model_state(self.model)
            optim_state = fsdp.full_optimizer_state(self.model, self.optimizer)
        else:
            model_state, optim_state = self.model.state_dict(), self.optimizer.state_dict()
        ema_state = self.ema.state_dict() if self.ema is not None else None  # fsdp: a collective as well
        if self.info.is_main:
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "model": model_state,
                "optimizer": optim_state,
                "scheduler": self.scheduler.state_dict(),
                "ema": ema_state,
                "rng": rngs,
                "config": to_dict(self.config),
            }
            if self.lora_scale is not None:  # how `avflow.weights` folds the adapters when it reads this as weights
                state["lora_scale"] = self.lora_scale
            path = ckpt.save_checkpoint(self.ckpt_dir, self.step, state, self.config.checkpoint.keep_last)
        dist.barrier(self.info)
        return path

    def export_weights(self) -> None:
        """`model.safetensors` and `ema_<sigma_rel>.safetensors` in the output folder (rank 0): the plain network's
        weights, LoRA adapters (`peft`) folded in, which `--model RUN_DIR` loads into the model `model.args` builds."""
        view, ema = self.model, self.ema
        if self.fsdp:  # collectives: the full weights and averages on rank 0 (CPU), nothing elsewhere
            view = fsdp.StateView(fsdp.full_model_state(self.model))
            ema = self.ema.gathered() if self.ema is not None else None
        if not self.info.is_main:
            return
        plain = dict if self.lora_scale is None else lambda state: merge_lora_state(state, self.lora_scale)
        save_safetensors(plain(view.state_dict()), self.out_dir / "model.safetensors")
        if ema is not None:
            for i, s in enumerate(ema.sigma_rels):
                ema_state = ema.averaged_state_dict(view, i)
                save_safetensors(plain(ema_state), self.out_dir / f"ema_{s:g}.safetensors")

    # --- steps -------------------------------------------------------------------------------------------------

    def _micro_batches(self):
        epoch, position = self.epoch, self.position
        while True:
            self.sampler.set_state(epoch, position)
            yield from own_data_errors(self.train_loader)
            epoch, position = epoch + 1, 0

    def _prepare(self, batch: dict) -> dict:
        prepare = getattr(self.task, "prepare", None)
        return prepare(batch, self.device) if prepare is not None else to_device(batch, self.device)

    def _maybe_kill(self, step: int, phase: str) -> None:
        if self.kill == (step, phase):
            os.kill(os.getpid(), signal.SIGKILL)

    def train_step(self, batches) -> torch.Tensor:
        """One optimizer step over `grad_accum` micro-batches; returns this rank's mean loss."""
        accum = self.config.train.grad_accum
        total = torch.zeros((), device=self.device)
        for m in range(accum):
            batch = self._prepare(next(batches))
            sync = m == accum - 1 or not self.info.distributed
            if self.fsdp:
                context = fsdp.no_sync(self.ddp, sync)
            else:
                context = nullcontext() if sync else self.ddp.no_sync()
            with context:
                with torch.autocast(
                    self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
                ):
                    loss = self.forward(batch)
                (loss / accum).backward()
            total += loss.detach().float()
            if m == 0:
                self._maybe_kill(self.step + 1, "mid")
        clip = self.config.optim.grad_clip
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / accum

    def _finite_mean_loss(self, loss_sum: torch.Tensor, loss_n: int) -> float:
        """The mean loss over the last `loss_n` steps of every rank (a collective: all ranks call it at the same
        steps); a TrainingError where it is not finite, before anything more is written: the checkpoints already
        saved hold finite weights, and the run can resume from the last of them with a lower optim.lr. The mean is
        every rank's, so is the error: said once, by rank 0."""
        mean = float(dist.all_reduce_sum(loss_sum.clone(), self.info) / (loss_n * self.info.world_size))
        if not math.isfinite(mean):
            first = self.step - loss_n + 1
            steps = f"step {self.step}" if loss_n == 1 else f"steps {first}-{self.step}"
            saved = ckpt.list_checkpoints(self.ckpt_dir)
            resume = (f"its last checkpoint (step {saved[0][0]}) is kept: resume from it" if saved
                      else "no checkpoint was saved before it: rerun")  # fmt: skip
            raise on_every_rank(TrainingError(
                f"the training loss is {mean} over {steps}: the run diverged (or the data holds non-finite values); "
                f"{resume} with a lower optim.lr, a smaller optim.grad_clip, or check the data"))  # fmt: skip
        return mean

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean validation loss per sample over the first `log.val_batches` global batches of `train.batch_size`
        validation samples (fewer where the set holds fewer), each run as the training's micro-batches on every rank:
        the same samples and value for any process count and `train.grad_accum`."""
        if self.val_loader is None:
            return None
        self.model.eval()
        total = torch.zeros(2, device=self.device, dtype=torch.float64)
        for i, raw in enumerate(own_data_errors(self.val_loader)):
            if i >= self.config.log.val_batches * self.config.train.grad_accum:  # this rank's micro-batches
                break
            batch = self._prepare(raw)
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
                loss = self.loss_module(batch)
            n = len(raw["seed"])
            total += torch.stack([loss.double() * n, torch.tensor(float(n), device=self.device, dtype=torch.float64)])
        self.model.train()
        dist.all_reduce_sum(total, self.info)
        return float(total[0] / total[1].clamp_min(1))

    @torch.no_grad()
    def sample_metrics(self) -> dict[str, float]:
        """Task sampling metrics on the first `train.batch_size // train.grad_accum` validation samples (a single
        process's micro-batch, whatever the process count), with the first EMA profile's weights (rank 0)."""
        sample = getattr(self.task, "sample", None)
        if sample is None or self.val_loader is None or not self.info.is_main or self.fsdp:
            return {}  # fsdp: sampling needs the whole model on one rank; use the exported weights instead
        model = self.model
        if self.ema is not None:
            model = copy.deepcopy(self.model)
            model.load_state_dict(self.ema.averaged_state_dict(self.model, 0))
        model.eval()
        count = self.config.train.batch_size // self.config.train.grad_accum  # the set holds a global batch
        batch = self._prepare(default_collate([self.val_set[(i, 0)] for i in range(count)]))  # as the loader's epoch 0
        metrics = sample(model, batch)
        self.model.train()
        return metrics

    # --- the loop ----------------------------------------------------------------------------------------------

    def _open_folder(self):
        """The run's folder, once a step has trained (a first step that fails leaves no folder behind): its
        config.yaml (the config the resumed steps were trained with kept beside it where this one differs), the
        metrics log and TensorBoard's writer (rank 0; None, None elsewhere)."""
        if not self.info.is_main:
            return None, None
        config, out_dir = self.config, self.out_dir
        if config.log.tensorboard:  # imported before anything is written: an import that fails leaves no folder
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # found by `check_tensorboard` but broken (e.g. a protobuf it cannot use)
                raise ConfigError(f"log.tensorboard: TensorBoard cannot be imported ({first_line(exc)}): pip install "
                                  "'avflow[train]', or set log.tensorboard=false") from None  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = getattr(self, "resumed_config", None)
        earlier = out_dir / f"config_until_step_{self.resumed_step:08d}.yaml"
        if saved is not None and resume_changes(saved, as_saved(config, saved))[1] and not earlier.exists():
            atomic_write(earlier, lambda f: f.write(dump_yaml(saved).encode()))
        atomic_write(out_dir / "config.yaml", lambda f: f.write(dump_yaml(config).encode()))
        metrics_log = MetricsLog(out_dir / "metrics.jsonl", self.resumed_step)
        writer = None
        if config.log.tensorboard:
            step = self.resumed_step
            writer = SummaryWriter(str(out_dir / "tb"), purge_step=step + 1 if step else None)
        return metrics_log, writer

    def fit(self) -> TrainResult:
        config, info = self.config, self.info
        main = info.is_main
        self.resumed_step = self.step
        metrics_log, writer = None, None
        from tqdm import tqdm

        bar = tqdm(
            total=config.train.steps,
            initial=self.step,
            disable=not (main and config.log.progress),
            unit="step",
            dynamic_ncols=True,
        )
        batches = self._micro_batches()
        loss_sum, loss_n = torch.zeros((), device=self.device), 0
        window_start, window_steps = time.perf_counter(), 0
        last_loss, val_loss, rate, last_ckpt = None, None, 0.0, None
        self.model.train()
        stop = _StopRequest(enabled=not info.distributed)
        try:
            while self.step < config.train.steps:
                if self.step == self.resumed_step:
                    try:
                        loss = self.train_step(batches)
                    except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
                        if dist.peer_lost(exc, info):  # another rank failed: not this rank's model or data
                            raise
                        raise ConfigError(f"the first training step failed, so the model, the task and the data may "
                                          f"not fit each other: {first_line(exc)}") from exc  # fmt: skip
                    metrics_log, writer = self._open_folder()
                else:
                    loss = self.train_step(batches)
                self.step += 1
                self.position += 1
                if self.position == self.sampler.batches_per_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                if self.ema is not None:  # fsdp: every rank averages its shards, with no communication
                    self.ema.update(self.model)
                loss_sum += loss
                loss_n += 1
                window_steps += 1
                bar.update(1)
                last = self.step == config.train.steps
                if self.step % config.log.every == 0 or last:
                    last_loss = self._finite_mean_loss(loss_sum, loss_n)
                    rate = window_steps * config.train.batch_size / max(time.perf_counter() - window_start, 1e-9)
                    lr = self.scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
                    if metrics_log is not None:
                        metrics_log.write(step=self.step, loss=last_loss, lr=lr, samples_per_s=rate)
                    if writer is not None:
                        writer.add_scalar("train/loss", last_loss, self.step)
                        writer.add_scalar("train/lr", lr, self.step)
                        writer.add_scalar("train/samples_per_s", rate, self.step)
                        writer.add_scalar("train/epoch", self.epoch, self.step)
                    loss_sum.zero_()
                    loss_n, window_start, window_steps = 0, time.perf_counter(), 0
                if config.log.val_every and (self.step % config.log.val_every == 0 or last):
                    val_loss = self.validate()
                    if metrics_log is not None and val_loss is not None:
                        metrics_log.write(step=self.step, val_loss=val_loss)
                    if writer is not None and val_loss is not None:
                        writer.add_scalar("val/loss", val_loss, self.step)
                if config.log.sample_every and self.step % config.log.sample_every == 0:
                    sampled = self.sample_metrics()
                    if metrics_log is not None and sampled:
                        metrics_log.write(step=self.step, **{f"sample/{k}": v for k, v in sampled.items()})
                    for name, value in sampled.items():
                        if writer is not None:
                            writer.add_scalar(f"sample/{name}", value, self.step)
                    dist.barrier(info)
                if self.ema is not None and config.ema.snapshot_every and self.step % config.ema.snapshot_every == 0:
                    self.ema.snapshot(self.out_dir / "ema_snapshots" / f"step_{self.step:08d}.safetensors")
                if self.step % config.checkpoint.every == 0 or last or stop.requested:
                    if loss_n:  # steps since the last logged loss: a diverged network is not saved over a good one
                        self._finite_mean_loss(loss_sum, loss_n)
                    last_ckpt = self.save()
                self._maybe_kill(self.step, "end")
                if stop.requested:
                    break
        finally:
            stop.close()
        bar.close()
        if writer is not None:
            writer.close()
        if stop.requested:
            return TrainResult(self.step, last_loss, val_loss, rate, last_ckpt, interrupted=True)
        self.export_weights()
        return TrainResult(self.step, last_loss, val_loss, rate, last_ckpt)


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training as described by `config`, as one process or one torchrun rank."""
    info = dist.setup(config.train.device)
    try:
        trainer = Trainer(config, info)
        result = trainer.fit()
        # DDP's reducer and the loader hold the process group: free them while it is alive, and let every rank
        # finish before any tears it down (a gloo rank that left early aborted 1 run in 20-30 under load).
        del trainer
        gc.collect()
        dist.barrier(info)
        return result
    except RuntimeError as exc:
        if dist.peer_lost(exc, info):  # a collective whose peer is gone: that rank says why, rank 0 says this
            raise on_every_rank(TrainingError("another process failed (its message is above)")) from None
        raise
    finally:
        dist.cleanup()
