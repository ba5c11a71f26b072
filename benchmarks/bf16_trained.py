"""bf16 against fp32 on trained weights: how far `--precision bf16` moves what a user gets, and how much faster it is.

`foley_stages.py` measures bf16's speed and deviation on random full-size weights; random weights say little about
how a trained network's output moves. Here, in one run and one process, with the same noise for both precisions:

- default model: the shipped joint model (`avflow/assets/default_model`, or --model), `JointPipeline.generate` on
  the first --n held-out card prompts (configs/model_card_prompts.json; each row's seed), every stage in each
  precision (sampling of the Wan-layout video tower and the MMAudio-layout audio towers, and the codecs' decoding).
  Per clip: the relative RMS deviation of the binaural waveform from fp32 (sqrt(mean((b - a)^2) / mean(a^2))), the
  loudness ratio, the mean absolute frame difference in grey levels (0-255), and the seconds of each precision;
- fixture network: the reference fixtures' tiny MMAudio networks (v1, v2; ../shared/fixtures or $AVFLOW_FIXTURES),
  their guided Euler sample under each precision against the reference's recorded fp32 sample.

The table ends with the medians and the speed-up (fp32 seconds / bf16 seconds, per clip then median). The bf16 matmul
peak and the CPU's native bf16 instructions are printed, so a run on a CPU without them reads as what it is.

    PYTHONPATH=. .venv/bin/python benchmarks/bf16_trained.py --n 8 --threads 2 --json bf16_trained.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from common import (
    ArgumentParser,
    check_output,
    difference,
    load_average,
    matmul_peak_gflops,
    positive_int,
    print_table,
    run_main,
)

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "configs" / "model_card_prompts.json"


def default_model_rows(model: str | None, n: int, steps: int | None) -> list[dict]:
    from avflow.pipelines.default_model import load_default_model

    prompts = json.loads(PROMPTS.read_text())["prompts"][:n]
    pipe = load_default_model(model)
    sampling = pipe.sampling.override(steps=steps)
    rows = []
    for row in prompts:
        clips, seconds = {}, {}
        for precision in ("fp32", "bf16"):
            pipe.to("cpu", precision)
            start = time.perf_counter()
            clips[precision] = pipe.generate(row["prompt"], seed=row["seed"], sampling=sampling)
            seconds[precision] = time.perf_counter() - start
        a, b = clips["fp32"], clips["bf16"]
        rows.append({
            "what": f"default model {row['id']}",
            "fp32 s": seconds["fp32"],
            "bf16 s": seconds["bf16"],
            "speed-up": seconds["fp32"] / seconds["bf16"],
            "audio rel dev": difference(b.audio, a.audio)[1],
            "loudness ratio": (b.audio.square().mean() / a.audio.square().mean()).sqrt().item(),
            "frame diff /255": (b.frames.float() - a.frames.float()).abs().mean().item(),
        })  # fmt: skip
        print(f"{row['id']}: {rows[-1]}", flush=True)
    return rows


def fixture_rows(fixtures: Path) -> list[dict]:
    from safetensors.torch import load_file

    from avflow.flow.sampling import SamplingConfig
    from avflow.models.mmaudio import MMAudio, load_official_state_dict
    from avflow.models.mmaudio_config import MMAudioConfig
    from avflow.pipelines.foley_model import sample_latents
    from avflow.precision import autocast

    rows = []
    for version in ("v1", "v2"):
        meta = json.loads((fixtures / f"network_tiny_{version}.json").read_text())
        io = load_file(str(fixtures / f"network_tiny_{version}.io.safetensors"))
        model = MMAudio(MMAudioConfig(**meta["constructor"])).eval()
        load_official_state_dict(model, fixtures / f"network_tiny_{version}.weights.safetensors")
        sampling = SamplingConfig(steps=meta["euler_steps"], cfg_strength=meta["cfg_strength"])
        out, seconds = {}, {}
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            with torch.no_grad(), autocast(precision, "cpu"):
                cond = model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
                out[precision], _ = sample_latents(model, io["x0"], cond, sampling)
            seconds[precision] = time.perf_counter() - start
        rows.append({
            "what": f"fixture network {version}",
            "fp32 s": seconds["fp32"],
            "bf16 s": seconds["bf16"],
            "speed-up": seconds["fp32"] / seconds["bf16"],
            "audio rel dev": difference(out["bf16"], io["sample"])[1],  # latents here, against the reference's fp32
            "fp32 max |diff| vs reference": (out["fp32"] - io["sample"]).abs().max().item(),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default-model folder (default: the shipped one)")
    p.add_argument("--n", type=positive_int, default=8, help="held-out card prompts (default: 8)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--fixtures", type=Path, default=None,
                   help="reference fixtures (default: $AVFLOW_FIXTURES or ../shared/fixtures)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    check_output(p, args.json)
    fixtures = args.fixtures or Path(os.environ.get("AVFLOW_FIXTURES", REPO.parent / "shared" / "fixtures"))
    if not (fixtures / "mmaudio").is_dir():
        p.error(f"reference fixtures not found at {fixtures}/mmaudio (set --fixtures or AVFLOW_FIXTURES)")
    if args.model is not None:  # what load_default_model reads: an exported folder, or a training run's
        from avflow.config import RUN_CONFIG
        from avflow.pipelines.default_model import WEIGHT_FILES

        folder = Path(args.model)
        missing = [f for f in WEIGHT_FILES if not (folder / f).is_file()]
        if not folder.is_dir():
            p.error(f"--model {folder}: no such folder")
        if missing and not (folder / RUN_CONFIG).is_file():
            p.error(f"--model {folder}: model files missing: {', '.join(missing)} (nor a training run's {RUN_CONFIG})")
    if args.threads:
        torch.set_num_threads(args.threads)
    from avflow.heap import keep_freed_memory
    from avflow.precision import cpu_bf16_instructions

    keep_freed_memory()  # as the avflow command runs
    load_before = os.getloadavg()
    peaks = {name: matmul_peak_gflops(dtype=dtype) for name, dtype in (("fp32", torch.float32),
                                                                       ("bf16", torch.bfloat16))}  # fmt: skip
    start = time.time()
    rows = fixture_rows(fixtures / "mmaudio") + default_model_rows(args.model, args.n, args.steps)
    model_rows = [r for r in rows if r["what"].startswith("default model")]
    summary = {
        "what": f"default model, median of {len(model_rows)}",
        **{k: statistics.median(r[k] for r in model_rows) for k in model_rows[0] if k != "what"},
    }
    facts = (f"{cpu_bf16_instructions() or 'no native bf16'}; matmul peak fp32 {peaks['fp32']:.0f}, bf16 "
             f"{peaks['bf16']:.0f} GFLOP/s; {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"{time.time() - start:.0f} s; load {load_before[0]:.2f} before, now {load_average()}")  # fmt: skip
    columns = list(dict.fromkeys(k for r in [*rows, summary] for k in r))
    table = [{k: r.get(k, "") for k in columns} for r in [*rows, summary]]
    print_table(table, title=f"bf16 vs fp32 on trained weights ({facts})")
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "peaks": peaks, "rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
