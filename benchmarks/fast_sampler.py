"""Fewer sampling steps at Euler-25's accuracy: sampler presets against a dopri5 solution, on a trained network.

For an MMAudio-layout network and --inputs noise draws (>= 8) under the same conditions: the final latents of a
dopri5 solve at rtol = atol = --rtol (default 1e-6) are the truth; every candidate (solver, steps, time-grid shift)
gets its mean squared error against them, its NFE, its measured seconds and its time relative to Euler 25 (the
published setting). A candidate qualifies when its MSE <= Euler-25's and its time <= --budget (0.4) of Euler-25's;
the fastest one that qualifies is printed as the preset to put in avflow/flow/sampling.py SAMPLER_PRESETS["fast"].

The network: a weights file (official MMAudio layout, .pth or .safetensors) with --variant or --config-json, a model
folder holding one weights file and config.json (MMAudioConfig fields, top level or under "constructor"), or
--fixture for the tiny fixture network of the tests (random weights: it tests this script, not the presets).
Conditions: --features FILE (safetensors with clip_f, sync_f, text_f, batch 1 or --inputs) or, by default, random
ones shaped like real features (unit-norm CLIP image and text rows, unit-variance Synchformer features).

    .venv/bin/python benchmarks/fast_sampler.py --fixture             # also without arguments (`make bench`)
    .venv/bin/python benchmarks/fast_sampler.py path/to/audio_tower/ --features feats.safetensors --json out.json
    .venv/bin/python benchmarks/fast_sampler.py best_model.pth --variant small_16k --candidates heun:5:1 heun:5:2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from common import load_average, print_table
from safetensors.torch import load_file

from avflow.flow.sampling import SamplingConfig
from avflow.flow.solvers import sample
from avflow.models.mmaudio import MMAudio, build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import SAMPLING, MMAudioConfig, get_config
from avflow.nn.mmaudio_blocks import winograd_convolutions

FIXTURE = Path(os.environ.get("AVFLOW_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
REFERENCE = "euler:25:1"
CANDIDATES = [
    *(f"euler:{n}:{s}" for n in (8, 10) for s in (1, 2, 3)),
    *(f"{solver}:{n}:{s}" for solver in ("heun", "midpoint") for n in (4, 5) for s in (1, 1.5, 2, 3)),
]


def parse_candidate(text: str) -> tuple[str, int, float]:
    """'heun:5:2' -> ('heun', 5, 2.0)."""
    solver, steps, shift = text.split(":")
    return solver, int(steps), float(shift)


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


def run_sampler(net, x0, cond, negative, sampling: SamplingConfig, rtol: float) -> tuple[torch.Tensor, int, float]:
    """(final latents, NFE per input, seconds)."""
    start = time.perf_counter()
    with torch.inference_mode(), winograd_convolutions(net):
        result = sample(
            net,
            {"audio": x0},
            cond,
            steps=sampling.steps,
            solver=sampling.solver,
            shift=sampling.shift,
            guidance=sampling.branches(negative),
            rtol=rtol,
            atol=rtol,
        )
    return result.streams["audio"], result.nfe, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", help="weights file or model folder (none: --fixture)")
    parser.add_argument("--fixture", action="store_true", help="the tiny fixture network (tests the script only)")
    parser.add_argument("--variant", default="small_16k", help="MMAudio variant of a weights file")
    parser.add_argument("--config-json", default=None, help="MMAudioConfig fields of a weights file")
    parser.add_argument("--duration", type=float, default=None, help="clip seconds (default: the config's lengths)")
    parser.add_argument("--features", default=None, help="safetensors with clip_f, sync_f, text_f")
    parser.add_argument("--inputs", type=int, default=8, help="noise draws (>= 8 for the issue's measurement)")
    parser.add_argument("--cfg", type=float, default=SAMPLING.cfg_strength, help="guidance strength")
    parser.add_argument("--rtol", type=float, default=1e-6, help="dopri5 rtol and atol of the reference solution")
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES, help="solver:steps:shift")
    parser.add_argument("--budget", type=float, default=0.4, help="largest time relative to Euler 25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.fixture and not args.weights:
        print("no weights given: the tiny fixture network (--fixture; tests this script, not the presets)")
        args.fixture = True
    torch.set_num_threads(args.threads)
    net, source = load_network(args)
    if args.duration is not None:
        net.set_duration(args.duration)
    x0 = torch.randn(args.inputs, net.latent_seq_len, net.config.latent_dim, generator=torch.Generator().manual_seed(0))
    cond = conditions(net, args, args.inputs)
    base = SAMPLING.override(cfg_strength=args.cfg)
    negative = net.empty_conditions(args.inputs) if base.guided else None
    print(f"{source}: {args.inputs} inputs, {net.latent_seq_len} latents, CFG {args.cfg}, threads "
          f"{torch.get_num_threads()}, load {load_average()}", flush=True)  # fmt: skip

    truth, nfe_truth, sec_truth = run_sampler(net, x0, cond, negative, base.override(solver="dopri5"), args.rtol)
    print(f"dopri5 rtol={args.rtol:g}: NFE {nfe_truth}, {sec_truth:.1f} s", flush=True)
    rows = []
    for text in [REFERENCE, *[c for c in args.candidates if c != REFERENCE]]:
        solver, steps, shift = parse_candidate(text)
        x, nfe, seconds = run_sampler(
            net, x0, cond, negative, base.override(solver=solver, steps=steps, shift=shift), 0
        )
        mse = (x - truth).square().mean().item()
        rows.append({"solver": solver, "steps": steps, "shift": shift, "NFE": nfe, "seconds": seconds, "MSE": mse})
        print(f"  {text}: NFE {nfe}, {seconds:.2f} s, MSE {mse:.3e}", flush=True)
    ref = rows[0]
    for r in rows:
        r["time vs Euler 25"] = r["seconds"] / ref["seconds"]
        r["MSE vs Euler 25"] = r["MSE"] / max(ref["MSE"], 1e-30)
        r["qualifies"] = r is not ref and r["MSE"] <= ref["MSE"] and r["time vs Euler 25"] <= args.budget
    print_table(rows, f"sampler presets vs dopri5 (rtol {args.rtol:g}), {args.inputs} inputs")
    fit = sorted((r for r in rows if r["qualifies"]), key=lambda r: (r["seconds"], r["MSE"]))
    if fit:
        best = fit[0]
        print(f"fastest that qualifies: solver={best['solver']!r}, steps={best['steps']}, shift={best['shift']} "
              f"({100 * best['time vs Euler 25']:.0f} % of Euler-25's time, MSE {best['MSE']:.3e} vs "
              f"{ref['MSE']:.3e})")  # fmt: skip
    else:
        print(f"no candidate reaches Euler-25's MSE ({ref['MSE']:.3e}) in <= {100 * args.budget:.0f} % of its time")
    if args.json:
        facts = {"source": source, "inputs": args.inputs, "cfg": args.cfg, "rtol": args.rtol, "dopri5_nfe": nfe_truth}
        args.json.write_text(json.dumps({"facts": facts, "rows": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
