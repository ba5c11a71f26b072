"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the trainer: one unit per block, full-state save and load.

Checkpoints stay in the trainer's single-file format: every rank joins the gather and rank 0 writes the full
(unsharded) model and optimizer state; loading scatters it back. The optimizer state is keyed by parameter
name (torch.distributed.checkpoint.state_dict), so an fsdp checkpoint resumes under fsdp with any process count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from avflow.errors import ConfigError
from avflow.train.distributed import DistInfo


def _units(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard separately: every parameterized child of a ModuleList / ModuleDict."""
    units = []
    for module in model.modules():
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            children = module.values() if isinstance(module, nn.ModuleDict) else module
            units += [m for m in children if any(True for _ in m.parameters())]
    return units


def shard(root: nn.Module, model: nn.Module, info: DistInfo, reshard_after_forward: bool = True) -> nn.Module:
    """Apply fully_shard to each block of `model`, then to `root` (whose forward runs the whole loss)."""
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:  # pragma: no cover - old torch
        raise ConfigError(f"distributed.strategy: fsdp needs torch.distributed.fsdp.fully_shard ({exc})") from None
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
    """The unsharded state dict on CPU, on every rank (a collective: all ranks must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=False))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The unsharded optimizer state keyed by parameter names (collective), on CPU."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=False))
    return _to_cpu(state)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict, optim_state) -> None:
    """Scatter full states (present on every rank) back into the sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, model_state, options=_options())
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=_options())


def _to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_to_cpu(v) for v in x]
    return x


class StateView:
    """What PowerFunctionEMA reads from a model (`named_parameters`, `state_dict`), backed by a full state dict."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def named_parameters(self):
        return self.state.items()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state
