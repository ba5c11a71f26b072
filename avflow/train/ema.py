"""Power-function EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2).

After step t the average weights past parameters by a power function  w(tau) ~ tau^gamma  on [0, t], so its length
scales with training time. A profile is named by its relative std `sigma_rel` (width of w relative to t).
Keeping two profiles and saving snapshots of them lets `posthoc_coefficients` / `reconstruct` synthesize an EMA
of any other `sigma_rel` after training (EDM2 section 3); MMAudio trains with such post-hoc EMA (0.05, 0.1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Exponent gamma with relative std sigma_rel: sigma_rel^2 = (g + 1) / ((g + 2)^2 (g + 3)), a cubic in g."""
    k = sigma_rel**-2
    return float(np.roots([1.0, 7.0, 16.0 - k, 12.0 - k]).real.max())


def power_beta(gamma: float, step: int) -> float:
    """Decay after `step` (1-based) updates: beta = (1 - 1/t)^(gamma + 1); step 1 copies the weights."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


class PowerFunctionEMA:
    """fp32 averages of a model's floating-point parameters, one per `sigma_rel`; buffers are copied as they are."""

    def __init__(self, model: nn.Module, sigma_rels: tuple[float, ...] = (0.05, 0.1)):
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        params = dict(model.named_parameters())
        self.averages = [{n: params[n].detach().float().clone() for n in self.names} for _ in self.sigma_rels]
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        params = dict(model.named_parameters())
        current = [params[n].detach().float() for n in self.names]
        for gamma, avg in zip(self.gammas, self.averages):
            beta = power_beta(gamma, self.steps)
            torch._foreach_lerp_([avg[n] for n in self.names], current, 1.0 - beta)

    def averaged_state_dict(self, model: nn.Module, index: int = 0) -> dict[str, torch.Tensor]:
        """The model's state dict with profile `index`'s averages in place of its parameters (model dtypes)."""
        from avflow.weights import with_averages

        return with_averages(model.state_dict(), self.averages[index])

    def state_dict(self) -> dict:
        return {"sigma_rels": list(self.sigma_rels), "steps": self.steps, "averages": self.averages}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["sigma_rels"]) != self.sigma_rels:
            raise ValueError(f"EMA profiles differ: checkpoint {state['sigma_rels']} vs config {list(self.sigma_rels)}")
        self.steps = int(state["steps"])
        self.averages = [{n: avg[n].float().clone() for n in self.names} for avg in state["averages"]]

    def snapshot(self, path: Path) -> None:
        """Save both profiles at the current step for post-hoc reconstruction (safetensors, atomically)."""
        from avflow.weights import save_safetensors

        tensors = {f"{i}.{n}": t for i, avg in enumerate(self.averages) for n, t in avg.items()}
        meta = {"sigma_rels": ",".join(map(str, self.sigma_rels)), "step": str(self.steps)}
        save_safetensors(tensors, path, meta)


def _inner(g1: float, t1: float, g2: float, t2: float) -> float:
    """<p1, p2> for normalized power profiles p(tau) = (g + 1) tau^g / t^(g + 1) on [0, t]."""
    m = min(t1, t2)
    return (g1 + 1) * (g2 + 1) * m ** (g1 + g2 + 1) / ((g1 + g2 + 1) * t1 ** (g1 + 1) * t2 ** (g2 + 1))


def posthoc_coefficients(stored: list[tuple[float, float]], target: tuple[float, float]) -> np.ndarray:
    """Least-squares weights x with sum_i x_i p_i ~ p_target, profiles given as (gamma, t) pairs, under
    sum_i x_i = 1 (every profile has unit mass): minimise x'Ax - 2b'x + 1 subject to 1'x = 1, solved from its KKT
    system [[A, 1], [1', 0]] [x; λ] = [b; 1]. Without the constraint (Karras et al.'s plain least squares) a few
    snapshots fit the target with a sum off 1 (0.91 for four snapshots and σ_rel 0.2), scaling every reconstructed
    weight, an untrained constant tensor included; a target among the stored profiles still gets exactly its own."""
    a = np.array([[_inner(gi, ti, gj, tj) for gj, tj in stored] for gi, ti in stored], dtype=np.float64)
    b = np.array([_inner(gi, ti, *target) for gi, ti in stored], dtype=np.float64)
    n = len(stored)
    kkt = np.zeros((n + 1, n + 1), dtype=np.float64)
    kkt[:n, :n], kkt[:n, n], kkt[n, :n] = a, 1.0, 1.0
    return np.linalg.lstsq(kkt, np.append(b, 1.0), rcond=None)[0][:n]


def reconstruct(snapshot_paths: list[str | Path], sigma_rel: float, step: int | None = None) -> dict[str, torch.Tensor]:
    """EMA weights of any `sigma_rel` at `step` (default: the last snapshot's) from saved snapshots."""
    from avflow.weights import read_safetensors

    stored, sources, snapshots = [], [], {}
    for path in snapshot_paths:
        tensors, meta = snapshots[path] = read_safetensors(path)
        sigmas = [float(s) for s in meta["sigma_rels"].split(",")]
        for i, s in enumerate(sigmas):
            stored.append((sigma_rel_to_gamma(s), float(meta["step"])))
            sources.append((path, i))
    t_target = float(step) if step is not None else max(t for _, t in stored)
    coef = posthoc_coefficients(stored, (sigma_rel_to_gamma(sigma_rel), t_target))
    out: dict[str, torch.Tensor] = {}
    for c, (path, i) in zip(coef, sources):
        for key, tensor in snapshots[path][0].items():
            idx, name = key.split(".", 1)
            if int(idx) == i:
                out[name] = out.get(name, 0) + float(c) * tensor.double()
    return {k: v.float() for k, v in out.items()}
