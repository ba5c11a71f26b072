"""Fewer sampling steps at Euler-25's accuracy: sampler presets against a dopri5 solution, on a trained network.

For a network and --inputs noise draws (>= 8) under the same conditions and guidance: the final latents of a dopri5
solve at rtol = atol = --rtol (default 1e-6) of the same guided velocity field are the truth; every candidate
(solver, steps, time-grid shift) gets its mean squared error against them (pooled over every generated stream:
MSE = sum_s sum (x_s - x*_s)^2 / sum_s numel(x_s); per stream too when there are several), its NFE, its forwards,
its measured seconds and its time relative to Euler 25 (the published setting) measured in the same run. A
candidate qualifies when its MSE <= Euler-25's and its time <= --budget (0.4) of Euler-25's; the fastest one that
qualifies is printed as the preset to put in avflow/flow/sampling.py SAMPLER_PRESETS["fast"].

Counting: NFE is per input and counts every guidance branch (CFG: 2 per velocity, Euler 25 = 50), as
`avflow.flow.guidance` does; `forwards` counts the network calls, where the conditional and negative branches run
as one batched call of 2 x --inputs rows (Euler 25 with CFG = 25 forwards). All inputs are solved as one batch.

The network, one of:
- an MMAudio-layout network: a weights file (official layout, .pth or .safetensors) with --variant or
  --config-json, a model folder holding one weights file and config.json (MMAudioConfig fields, top level or under
  "constructor"), or --fixture for the tiny fixture network of the tests (random weights: it tests this script, not
  the presets). Conditions: --features FILE (safetensors with clip_f, sync_f, text_f, batch 1 or --inputs) or, by
  default, random ones shaped like real features (unit-norm CLIP image and text rows, unit-variance Synchformer
  features).
- the joint model (--joint PATH): a training run folder (config.yaml; weights: `avflow.weights.run_weights`, its
  EMA export of the smallest sigma_rel, else the newest checkpoints/step_*.pt, its EMA of the smallest sigma_rel),
  or an exported model folder (config.json with "joint" and optionally "sampling"; joint.safetensors). It generates
  every stream from noise (t2av: video and the audio streams together), conditioned on the text and text_mask of
  the first --inputs rows of --joint-cache (a latent cache of scripts/train_default_v2.py: streams.<name> set the
  shapes, cond.text and cond.text_mask the conditions), with the model's guidance (its "sampling"; else CFG 3.0).

    .venv/bin/python benchmarks/fast_sampler.py --fixture             # also without arguments (`make bench`)
    .venv/bin/python benchmarks/fast_sampler.py path/to/audio_tower/ --features feats.safetensors --json out.json
    .venv/bin/python benchmarks/fast_sampler.py best_model.pth --variant small_16k --candidates heun:5:1 heun:5:2
    .venv/bin/python benchmarks/fast_sampler.py --joint runs/default_v2/joint \\
        --joint-cache runs/default_v2/cache_val.safetensors --json fast_joint.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from common import (
    ArgumentParser,
    check_output,
    load_average,
    load_facts,
    positive_float,
    positive_int,
    print_table,
    run_main,
)
from safetensors import safe_open
from safetensors.torch import load_file

from avflow.config import RUN_CONFIG, from_dict, read_run_config
from avflow.errors import AvflowError
from avflow.flow.sampling import SamplingConfig
from avflow.flow.solvers import sample
from avflow.models.joint import JointConfig, JointModel
from avflow.models.mmaudio import MMAudio, build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import SAMPLING, MMAudioConfig, get_config
from avflow.nn.mmaudio_blocks import winograd_convolutions
from avflow.weights import load_strict, read_state_dict, run_weights

FIXTURE = Path(os.environ.get("AVFLOW_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
REFERENCE = "euler:25:1"
CANDIDATES = [
    *(f"euler:{n}:{s}" for n in (8, 10) for s in (1, 2, 3)),
    *(f"{solver}:{n}:{s}" for solver in ("heun", "midpoint") for n in (4, 5) for s in (1, 1.5, 2, 3)),
]
JOINT_CFG = 3.0  # the joint model's CFG when its folder states none (scripts/train_default_v2.py exports 3.0)


def parse_candidate(text: str) -> tuple[str, int, float]:
    """'heun:5:2' -> ('heun', 5, 2.0); a ValueError naming the problem for anything else."""
    parts = text.split(":")
    fixed = ("euler", "heun", "midpoint")
    if len(parts) != 3 or parts[0] not in fixed:
        raise ValueError(f"{text!r}: give solver:steps:shift, solver one of {', '.join(fixed)} (e.g. heun:5:2)")
    try:
        steps, shift = int(parts[1]), float(parts[2])
    except ValueError:
        raise ValueError(f"{text!r}: steps an integer, shift a number (e.g. heun:5:2)") from None
    if steps < 1 or not shift > 0:
        raise ValueError(f"{text!r}: steps >= 1 and shift > 0")
    return parts[0], steps, shift


@dataclass(frozen=True, kw_only=True)
class Problem:
    """What every candidate solves: the same model, noise, conditions and guidance; only the solver changes."""

    model: Any  # implements the sampler-model protocol (velocity, empty_conditions)
    noise: dict[str, torch.Tensor]  # every stream at t = 0, batch = the number of inputs
    cond: Any
    negative: Any  # conditions of the negative guidance branches; None: the model's empty ones
    sampling: SamplingConfig  # the model's guidance settings (candidates set solver, steps and shift)
    source: str  # where the network came from
    context: Callable[[], AbstractContextManager] = nullcontext  # entered around every solve


@dataclass(frozen=True, kw_only=True)
class Solve:
    """One sampler run: the final latents per stream, NFE per input (every branch counted), network calls, s."""

    streams: dict[str, torch.Tensor]
    nfe: int
    forwards: int
    seconds: float


class CountingModel:
    """The sampler-model protocol of `model`, counting its `velocity` calls (a batched guidance call is one)."""

    def __init__(self, model: Any):
        self.model, self.forwards = model, 0

    def velocity(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        self.forwards += 1
        return self.model.velocity(*args, **kwargs)

    def empty_conditions(self, batch: int) -> Any:
        return self.model.empty_conditions(batch)


# --- MMAudio-layout networks -----------------------------------------------------------------------------------


def read_config(values: dict) -> MMAudioConfig:
    values = values.get("constructor", values.get("network", values))
    known = MMAudioConfig.__dataclass_fields__
    return MMAudioConfig(**{k: v for k, v in values.items() if k in known})


def load_network(args: argparse.Namespace) -> tuple[MMAudio, str]:
    """The network in eval mode and a description of where it came from."""
    if args.fixture:
        folder = FIXTURE / "mmaudio"
        config = read_config(json.loads((folder / "network_tiny_v1.json").read_text()))
        weights = folder / "network_tiny_v1.weights.safetensors"
    else:
        path = Path(args.weights)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".pt"))
            if len(files) != 1:
                sys.exit(f"{path}: expected one weights file (.safetensors/.pth), found {[p.name for p in files]}")
            weights, config = files[0], read_config(json.loads((path / "config.json").read_text()))
        else:
            weights = path
            config = read_config(json.loads(Path(args.config_json).read_text())) if args.config_json else None
            config = config or get_config(args.variant)
    net = load_official_state_dict(build_mmaudio(config, device="meta"), weights)
    return net.eval().requires_grad_(False), str(weights)


def conditions(net: MMAudio, args: argparse.Namespace, batch: int) -> dict[str, torch.Tensor]:
    """Preprocessed conditions for `batch` inputs: from --features, the fixture's, or random realistic ones."""
    c = net.config
    if args.features or args.fixture:
        path = args.features or FIXTURE / "mmaudio" / "network_tiny_v1.io.safetensors"
        feats = {k: v for k, v in load_file(str(path)).items() if k in ("clip_f", "sync_f", "text_f")}
        feats = {k: v[:1].expand(batch, *v.shape[1:]) if v.shape[0] != batch else v for k, v in feats.items()}
    else:
        gen = torch.Generator().manual_seed(1)

        def unit_rows(n: int, d: int) -> torch.Tensor:
            x = torch.randn(1, n, d, generator=gen)
            return (x / x.norm(dim=-1, keepdim=True)).expand(batch, -1, -1)

        feats = {
            "clip_f": unit_rows(net.clip_seq_len, c.clip_dim),
            "sync_f": torch.randn(1, net.sync_seq_len, c.sync_dim, generator=gen).expand(batch, -1, -1),
            "text_f": unit_rows(c.text_seq_len, c.text_dim),
        }
    with torch.no_grad():
        return net.preprocess_conditions(feats["clip_f"], feats["sync_f"], feats["text_f"])


def mmaudio_problem(args: argparse.Namespace) -> Problem:
    """The MMAudio-layout network's audio stream from noise, at its published guidance (or --cfg)."""
    net, source = load_network(args)
    if args.duration is not None:
        net.set_duration(args.duration)
    x0 = torch.randn(args.inputs, net.latent_seq_len, net.config.latent_dim, generator=torch.Generator().manual_seed(0))
    sampling = SAMPLING.override(cfg_strength=args.cfg)
    negative = net.empty_conditions(args.inputs) if sampling.guided else None
    return Problem(model=net, noise={"audio": x0}, cond=conditions(net, args, args.inputs), negative=negative,
                   sampling=sampling, source=source, context=partial(winograd_convolutions, net))  # fmt: skip


# --- the joint model -------------------------------------------------------------------------------------------


def load_joint(path: Path) -> tuple[JointModel, dict, str]:
    """The joint model in eval mode, its folder's sampling settings ({} when it states none) and its source.

    `path`: an exported model folder (config.json + joint.safetensors) or a training run folder (config.yaml)."""
    if (path / "config.json").is_file() and (path / "joint.safetensors").is_file():
        try:
            data = json.loads((path / "config.json").read_text())
        except ValueError as exc:
            raise AvflowError(f"{path / 'config.json'}: not JSON ({exc})") from None
        config = from_dict(JointConfig, data.get("joint"), "joint")
        weights, source, sampling = read_state_dict(path / "joint.safetensors"), str(path), data.get("sampling", {})
    elif (path / RUN_CONFIG).is_file():
        config = from_dict(JointConfig, read_run_config(path, "joint")["model"].get("args"), "model.args")
        (weights, source), sampling = run_weights(path), {}
        source = f"{path}: {source}"
    else:
        raise AvflowError(f"{path}: neither a training run folder (config.yaml) nor an exported model folder "
                          "(config.json + joint.safetensors)")  # fmt: skip
    model = JointModel(config)
    load_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, source)
    return model.eval().requires_grad_(False), sampling, source


def cache_inputs(path: Path, n: int, streams: tuple[str, ...]) -> tuple[dict[str, tuple[int, ...]], dict]:
    """Shapes (n, ...) of `streams` (from streams.<name>) and the conditions {"text", "text_mask"} of the first n
    rows of a latent cache."""
    if not path.is_file():
        raise AvflowError(f"{path}: no such latent cache")
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            cond = {k: f.get_slice(f"cond.{k}")[:n] for k in ("text", "text_mask") if f"cond.{k}" in shapes}
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise AvflowError(f"{path}: not a readable safetensors cache ({str(exc).splitlines()[0]})") from None
    missing = [k for k in [f"streams.{s}" for s in streams] + ["cond.text", "cond.text_mask"] if k not in shapes]
    if missing:
        raise AvflowError(f"{path}: a latent cache without {', '.join(missing)}")
    if shapes["cond.text"][0] < n:
        raise AvflowError(f"{path}: {shapes['cond.text'][0]} rows, fewer than the {n} inputs asked for")
    return {s: (n, *shapes[f"streams.{s}"][1:]) for s in streams}, cond


def joint_problem(args: argparse.Namespace) -> Problem:
    """The joint model generating every stream from noise (t2av) under the cache's first texts, at its guidance."""
    model, sampling, source = load_joint(Path(args.joint))
    c = model.config
    shapes, cond = cache_inputs(Path(args.joint_cache), args.inputs, ("video", *c.audio_streams))
    if tuple(cond["text"].shape[1:]) != (c.text_len, c.text_dim):
        raise AvflowError(f"{args.joint_cache}: cond.text rows {tuple(cond['text'].shape[1:])} do not match the "
                          f"model's (text_len, text_dim) = {(c.text_len, c.text_dim)}")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    noise = {s: torch.randn(shape, generator=gen) for s, shape in shapes.items()}
    base = from_dict(SamplingConfig, {"cfg_strength": JOINT_CFG} | sampling, "sampling")
    return Problem(model=model, noise=noise, cond=cond, negative=None, sampling=base.override(cfg_strength=args.cfg),
                   source=source)  # fmt: skip


# --- the measurement -------------------------------------------------------------------------------------------


def run_sampler(problem: Problem, sampling: SamplingConfig, rtol: float) -> Solve:
    """Solve `problem` with the solver, steps and shift of `sampling` (dopri5: at rtol = atol = `rtol`)."""
    counted = CountingModel(problem.model)
    start = time.perf_counter()
    with torch.inference_mode(), problem.context():
        result = sample(
            counted,
            problem.noise,
            problem.cond,
            steps=sampling.steps,
            solver=sampling.solver,
            shift=sampling.shift,
            guidance=sampling.branches(problem.negative),
            rtol=rtol,
            atol=rtol,
        )
    return Solve(streams=result.streams, nfe=result.nfe, forwards=counted.forwards,
                 seconds=time.perf_counter() - start)  # fmt: skip


def squared_errors(x: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> dict[str, tuple[float, int]]:
    """Per stream s: (sum (x_s - x*_s)^2, numel x_s), summed in float64."""
    return {s: (float((x[s].double() - truth[s].double()).square().sum()), x[s].numel()) for s in truth}


def mse_columns(errors: dict[str, tuple[float, int]]) -> dict[str, float]:
    """{"MSE": sum_s SSE_s / sum_s n_s} (pooled over every stream), then "MSE <s>" = SSE_s / n_s per stream when
    there are several."""
    pooled = {"MSE": sum(e for e, _ in errors.values()) / sum(n for _, n in errors.values())}
    return pooled | ({f"MSE {s}": e / n for s, (e, n) in errors.items()} if len(errors) > 1 else {})


def measure(problem: Problem, candidates: list[str], rtol: float) -> tuple[list[dict], Solve]:
    """The dopri5 truth, then one row per candidate (Euler 25 first): solver, steps, shift, NFE, forwards, seconds
    and the MSE columns against the truth."""
    truth = run_sampler(problem, problem.sampling.override(solver="dopri5"), rtol)
    print(f"dopri5 rtol={rtol:g}: NFE {truth.nfe}, {truth.forwards} forwards, {truth.seconds:.1f} s", flush=True)
    rows = []
    for text in [REFERENCE, *[c for c in candidates if c != REFERENCE]]:
        solver, steps, shift = parse_candidate(text)
        run = run_sampler(problem, problem.sampling.override(solver=solver, steps=steps, shift=shift), 0)
        row = {"solver": solver, "steps": steps, "shift": shift, "NFE": run.nfe, "forwards": run.forwards,
               "seconds": run.seconds} | mse_columns(squared_errors(run.streams, truth.streams))  # fmt: skip
        rows.append(row)
        print(f"  {text}: NFE {run.nfe}, {run.seconds:.2f} s, MSE {row['MSE']:.3e}", flush=True)
    return rows, truth


def rank(rows: list[dict], budget: float) -> list[dict]:
    """Rows (the first is Euler 25) with time and MSE relative to Euler 25's and whether each qualifies:
    MSE <= MSE_ref and seconds / seconds_ref <= `budget`."""
    ref = rows[0]
    out = []
    for r in rows:
        rel = r["seconds"] / ref["seconds"]
        qualifies = r is not ref and r["MSE"] <= ref["MSE"] and rel <= budget
        out.append(r | {"time vs Euler 25": rel, "MSE vs Euler 25": r["MSE"] / max(ref["MSE"], 1e-30),
                        "qualifies": qualifies})  # fmt: skip
    return out


def verdict(rows: list[dict], budget: float) -> str:
    """The fastest qualifying candidate (ties: the smaller MSE) as a preset, or why there is none."""
    ref = rows[0]
    fit = sorted((r for r in rows if r["qualifies"]), key=lambda r: (r["seconds"], r["MSE"]))
    if not fit:
        return f"no candidate reaches Euler-25's MSE ({ref['MSE']:.3e}) in <= {100 * budget:.0f} % of its time"
    best = fit[0]
    return (f"fastest that qualifies: solver={best['solver']!r}, steps={best['steps']}, shift={best['shift']} "
            f"({100 * best['time vs Euler 25']:.0f} % of Euler-25's time, MSE {best['MSE']:.3e} vs "
            f"{ref['MSE']:.3e})")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", help="MMAudio weights file or model folder (none: --fixture)")
    parser.add_argument("--fixture", action="store_true", help="the tiny fixture network (tests the script only)")
    parser.add_argument("--variant", default="small_16k", help="MMAudio variant of a weights file")
    parser.add_argument("--config-json", default=None, help="MMAudioConfig fields of a weights file")
    parser.add_argument("--duration", type=positive_float, default=None,
                        help="MMAudio clip seconds (default: the config's)")  # fmt: skip
    parser.add_argument("--features", default=None, help="MMAudio conditions: safetensors with clip_f, sync_f, text_f")
    parser.add_argument("--joint", default=None, help="the joint model: a training run folder or an exported one")
    parser.add_argument("--joint-cache", default=None, help="the joint model's latent cache (shapes, texts)")
    parser.add_argument("--inputs", type=positive_int, default=8, help="noise draws (>= 8 for the issue's measurement)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance strength (default: the model's)")
    parser.add_argument("--rtol", type=positive_float, default=1e-6,
                        help="dopri5 rtol and atol of the reference solution")  # fmt: skip
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES, help="solver:steps:shift")
    parser.add_argument("--budget", type=positive_float, default=0.4, help="largest time relative to Euler 25")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    check_output(parser, args.json)
    for text in args.candidates:
        try:
            parse_candidate(text)
        except ValueError as exc:
            parser.error(f"--candidates {exc}")
    mmaudio_only = [name for name in ("weights", "fixture", "features", "duration") if getattr(args, name)]
    if args.joint and mmaudio_only:
        parser.error(f"--joint measures the joint model: drop {', '.join(mmaudio_only)} (MMAudio-layout networks)")
    if bool(args.joint) != bool(args.joint_cache):
        parser.error("--joint and --joint-cache go together")
    if not args.joint and not args.fixture and not args.weights:
        print("no weights given: the tiny fixture network (--fixture; tests this script, not the presets)")
        args.fixture = True
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    try:
        problem = joint_problem(args) if args.joint else mmaudio_problem(args)
    except AvflowError as exc:
        sys.exit(str(exc))
    shapes = {s: tuple(x.shape[1:]) for s, x in problem.noise.items()}
    print(f"{problem.source}: {args.inputs} inputs, streams {shapes}, guidance {problem.sampling.guidance} CFG "
          f"{problem.sampling.cfg_strength:g}, threads {torch.get_num_threads()}, load {load_average()}",
          flush=True)  # fmt: skip
    rows, truth = measure(problem, args.candidates, args.rtol)
    rows = rank(rows, args.budget)
    print_table(rows, f"sampler presets vs dopri5 (rtol {args.rtol:g}), {args.inputs} inputs")
    print(verdict(rows, args.budget))
    print(load_facts(load_before))
    if args.json:
        facts = {"source": problem.source, "inputs": args.inputs, "streams": shapes,
                 "guidance": problem.sampling.guidance, "cfg": problem.sampling.cfg_strength, "rtol": args.rtol,
                 "dopri5_nfe": truth.nfe, "dopri5_forwards": truth.forwards, "dopri5_seconds": truth.seconds,
                 "threads": torch.get_num_threads(), "load": load_average()}  # fmt: skip
        args.json.write_text(json.dumps({"facts": facts, "rows": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_main(main)
