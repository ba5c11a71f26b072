"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the trainer: one unit per block, full-state save and load.

Checkpoints stay in the trainer's single-file format: every rank joins the gather (one tensor at a time), and only
rank 0 keeps the full (unsharded) model, optimizer and EMA state, on CPU, and writes it; loading scatters it back.
The optimizer state is keyed by parameter name (torch.distributed.checkpoint.state_dict), so an fsdp checkpoint
resumes under fsdp with any process count, and as a single process or under DDP; their checkpoints (keyed by
position) resume under fsdp. The EMA (`ShardedEMA`) averages each rank's shards and is gathered only to be saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from avflow.errors import ConfigError
from avflow.train.distributed import DistInfo
from avflow.train.ema import PowerFunctionEMA


def _units(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard separately: the parameterized children of ModuleLists / ModuleDicts that lie inside no
    other such child. A block's own lists (`video.blocks.0.ffn.net`, `attn1.to_out`) stay in the block's unit:
    `fully_shard` on an inner module after its block's would meet parameters the block already sharded."""
    units: dict[int, nn.Module] = {}
    for module in model.modules():
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            children = module.values() if isinstance(module, nn.ModuleDict) else module
            units.update((id(m), m) for m in children if any(True for _ in m.parameters()))
    inner = {id(m) for unit in units.values() for m in unit.modules() if m is not unit}
    return [unit for key, unit in units.items() if key not in inner]


def shard(root: nn.Module, model: nn.Module, info: DistInfo, reshard_after_forward: bool = True) -> nn.Module:
    """Apply fully_shard to each block of `model`, then to `root` (whose forward runs the whole loss)."""
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:  # pragma: no cover - old torch
        raise ConfigError(f"distributed.strategy: fsdp needs torch>=2.6 (torch.distributed.fsdp.fully_shard); this "
                          f"is torch {torch.__version__} ({exc})") from None  # fmt: skip
    if not info.distributed:
        return root  # one process: nothing to shard
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for unit in _units(model):
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(root, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return root


@contextmanager
def no_sync(root: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient reduce-scatter for accumulation micro-steps."""
    if sync:
        yield
        return
    root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0, on CPU; {} on the other ranks (a collective: all ranks must call it).
    Each tensor is all-gathered in turn; the other ranks drop it at once, so no rank but 0 holds the whole model."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The unsharded optimizer state keyed by parameter names on rank 0, on CPU; {} on the other ranks
    (collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """`state` (Optimizer.state_dict's layout) keyed by parameter name, as FSDP loads it. A single-process or DDP
    checkpoint keys it by position in the optimizer's parameter order, which `optimizer` shares: the same network
    and trainable parameters (a resume with another `init.freeze` is refused before this)."""
    saved = [g["params"] for g in state["param_groups"]]
    if all(isinstance(i, str) for ids in saved for i in ids):
        return state  # saved by FSDP
    names = {id(p): n for n, p in model.named_parameters()}
    ours = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    if [len(ids) for ids in saved] != [len(ids) for ids in ours]:
        raise ConfigError(f"the checkpoint's optimizer state has parameter groups of {[len(i) for i in saved]} "
                          f"parameters, this model's optimizer {[len(i) for i in ours]}")  # fmt: skip
    name_of = {i: n for ids, own in zip(saved, ours) for i, n in zip(ids, own)}
    return {
        "state": {name_of[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": own} for g, own in zip(state["param_groups"], ours)],
    }


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict, optim_state) -> None:
    """Scatter full states (present on every rank) back into the sharded model and optimizer; the optimizer state
    may be keyed by name (an fsdp checkpoint) or by position (a single-process or DDP one)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, model_state, options=_options())
    if optimizer is not None and optim_state is not None:
        optim_state = optimizer_state_by_name(model, optimizer, optim_state)
        set_optimizer_state_dict(model, optimizer, optim_state, options=_options())


class _LocalShards:
    """`named_parameters` of a sharded model as this rank's local shards (plain tensors)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def named_parameters(self):
        from torch.distributed.tensor import DTensor

        for name, p in self.model.named_parameters():
            yield name, p.to_local() if isinstance(p, DTensor) else p


class ShardedEMA(PowerFunctionEMA):
    """The EMA under FSDP2: every rank averages its own shards of the parameters, with no communication per step and
    1/world_size of the memory. An average is elementwise, so its shards are the shards of the EMA of the full weights.
    `gathered`, `state_dict` and `snapshot` are collectives (all ranks call them) that gather the full averages to rank
    0, on CPU; `load_state_dict` takes full averages (every rank reads the checkpoint) and keeps this rank's shards."""

    def __init__(self, model: nn.Module, sigma_rels: tuple[float, ...], is_main: bool):
        from torch.distributed.tensor import DTensor

        super().__init__(_LocalShards(model), sigma_rels)
        params = dict(model.named_parameters())
        # (device mesh, placements, global shape, global stride) of each sharded parameter
        self.layouts = {n: (p.device_mesh, p.placements, p.shape, p.stride()) for n, p in params.items()
                        if n in self.names and isinstance(p, DTensor)}  # fmt: skip
        self.is_main = is_main

    def update(self, model: nn.Module) -> None:
        super().update(_LocalShards(model))

    def _full(self, name: str, local: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        if name not in self.layouts:
            return local
        mesh, placements, shape, stride = self.layouts[name]
        return DTensor.from_local(local, mesh, placements, run_check=False, shape=shape, stride=stride).full_tensor()

    def _local(self, name: str, full: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import distribute_tensor

        device = self.averages[0][name].device
        if name not in self.layouts:
            return full.to(device, torch.float32, copy=True)
        mesh, placements, _, _ = self.layouts[name]
        full = full.to(device, torch.float32)
        try:  # every rank holds the full tensor: split it here, with no scatter
            shard = distribute_tensor(full, mesh, placements, src_data_rank=None)
        except TypeError:  # pragma: no cover - torch < 2.7: scattered from rank 0 (the same data)
            shard = distribute_tensor(full, mesh, placements)
        return shard.to_local().clone()

    def gathered(self) -> PowerFunctionEMA | None:
        """A PowerFunctionEMA with the full averages on rank 0, on CPU; None on the other ranks (collective). The other
        ranks hold one gathered tensor at a time."""
        averages = []
        for avg in self.averages:
            full = {}
            for name in self.names:
                tensor = self._full(name, avg[name])
                if self.is_main:
                    full[name] = tensor.cpu()
                del tensor
            averages.append(full)
        if not self.is_main:
            return None
        ema = PowerFunctionEMA.__new__(PowerFunctionEMA)
        ema.sigma_rels, ema.gammas, ema.names, ema.steps = self.sigma_rels, self.gammas, self.names, self.steps
        ema.averages = averages
        return ema

    def averaged_state_dict(self, model, index: int = 0) -> dict[str, torch.Tensor]:
        raise NotImplementedError("ShardedEMA: use gathered() (a collective) and its averaged_state_dict on rank 0")

    def state_dict(self) -> dict | None:
        """The full EMA state on rank 0 (the single-process format); None elsewhere (collective)."""
        ema = self.gathered()
        return ema.state_dict() if ema is not None else None

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["sigma_rels"]) != self.sigma_rels:
            raise ValueError(f"EMA profiles differ: checkpoint {state['sigma_rels']} vs config {list(self.sigma_rels)}")
        self.steps = int(state["steps"])
        self.averages = [{n: self._local(n, avg[n]) for n in self.names} for avg in state["averages"]]

    def snapshot(self, path: Path) -> None:
        """Gather both profiles to rank 0, which writes them (collective)."""
        ema = self.gathered()
        if ema is not None:
            ema.snapshot(path)


class StateView:
    """What PowerFunctionEMA reads from a model (`named_parameters`, `state_dict`), backed by a full state dict."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def named_parameters(self):
        return self.state.items()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state
