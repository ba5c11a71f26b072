"""MMAudio network sampling speed: avflow's sampler vs the faithful plain baseline (the reference's way).

small_16k with random weights, an 8 s clip, Euler 25 steps, CFG 4.5, batch 1, on the CPU. The plain way
(benchmarks/baseline/mmaudio.py) preprocesses the conditions once and runs the conditional and unconditional
forwards separately, as the public MMAudio code does; avflow batches the branches, shares what they share and runs
the kernel-3 convolutions as Winograd F(4, 3). Prints wall seconds, NFE, executed FLOPs, achieved GFLOP/s and the
fraction of this machine's fp32 matmul peak (measured in the same run), the speed-up (target >= 1.5x) and the max
difference (<= 1e-4). benchmarks/foley_stages.py times every stage of a foley run the same way.

    .venv/bin/python benchmarks/mmaudio_sampling.py [--steps 25] [--variant small_16k] [--threads 1]

On a shared machine wall time depends on the load; the table also gives the process CPU seconds (with one
thread, the compute actually spent) and the ratio of both. `--threads 0` uses torch's default thread count.
"""

from __future__ import annotations

import os
import time

import torch
from baseline.mmaudio import PlainMMAudio
from common import (
    ArgumentParser,
    count_flops,
    load_facts,
    matmul_peak_gflops,
    non_negative_int,
    positive_float,
    positive_int,
    print_table,
    run_main,
    timed,
)

from avflow.models.mmaudio import MMAudio, build_mmaudio
from avflow.models.mmaudio_config import CONFIGS, SAMPLING
from avflow.pipelines.foley_model import sample_latents


def random_model(variant: str, duration: float) -> MMAudio:
    """Full-size network with PyTorch's default random init (non-trivial outputs) and unit latent statistics."""
    model = build_mmaudio(variant).eval().requires_grad_(False)
    model.set_duration(duration)
    with torch.no_grad():
        model.latent_mean.zero_()
        model.latent_std.fill_(1.0)
        for p in (model.sync_pos_emb, model.empty_clip_feat, model.empty_sync_feat, model.empty_string_feat):
            p.normal_(0.0, 0.5)
    return model


def random_inputs(model: MMAudio, batch: int = 1) -> dict[str, torch.Tensor]:
    c = model.config
    return {
        "clip_f": torch.randn(batch, model.clip_seq_len, c.clip_dim),
        "sync_f": torch.randn(batch, model.sync_seq_len, c.sync_dim),
        "text_f": torch.randn(batch, c.text_seq_len, c.text_dim),
        "x0": torch.randn(batch, model.latent_seq_len, c.latent_dim),
    }


def fast_way(model: MMAudio, inp: dict[str, torch.Tensor], steps: int, cfg: float) -> tuple[torch.Tensor, int]:
    """Conditions preprocessed once per sample; conditional and empty branches in one batched forward."""
    cond = model.preprocess_conditions(inp["clip_f"], inp["sync_f"], inp["text_f"])
    return sample_latents(model, inp["x0"], cond, SAMPLING.override(steps=steps, cfg_strength=cfg), batched=True)


def plain_way(model: MMAudio, inp: dict[str, torch.Tensor], steps: int, cfg: float) -> tuple[torch.Tensor, int]:
    """The reference's way: conditions once, then two batch-1 forwards per step (conditional, unconditional)."""
    plain = PlainMMAudio(model.state_dict(), model.config, model.latent_seq_len, model.clip_seq_len, model.sync_seq_len)
    return plain.sample(inp["x0"], inp["clip_f"], inp["sync_f"], inp["text_f"], steps, cfg), 2 * steps


def sampling_flops(model: MMAudio, inp: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
    """Executed FLOPs of each way (matmuls, convolutions, attention): one and two steps counted, the rest scaled."""
    flops = {}
    for name, way in (("fast", fast_way), ("plain", plain_way)):
        model.clear_caches()
        one = count_flops(lambda way=way: way(model, inp, 1, 4.5))
        model.clear_caches()
        two = count_flops(lambda way=way: way(model, inp, 2, 4.5))
        flops[name] = one + (steps - 1) * (two - one)
        flops[f"{name}_step"] = two - one
        flops[f"{name}_preprocess"] = 2 * one - two
    return flops


def time_decoding(model: MMAudio, latents: torch.Tensor) -> float | None:
    """Unnormalize, VAE-decode and vocode `latents` with random full-size codecs of the variant's rate; wall seconds."""
    from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAE
    from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGAN

    mode = "16k" if model.config.sample_rate == 16000 else "44k"
    vae = AudioVAE(AUDIO_VAE_CONFIGS[mode]).fold().eval()
    vocoder = BigVGAN(BIGVGAN_CONFIGS[mode]).eval()
    z = model.unnormalize(latents).transpose(1, 2)  # (B, C, N)
    return timed(lambda: vocoder(vae.decode(z)), repeat=1, warmup=0)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="small_16k", choices=sorted(CONFIGS))
    parser.add_argument("--duration", type=positive_float, default=8.0, help="clip seconds")
    parser.add_argument("--steps", type=positive_int, default=25, help="Euler steps")
    parser.add_argument("--cfg", type=float, default=4.5, help="CFG strength")
    parser.add_argument("--threads", type=non_negative_int, default=1, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = random_model(args.variant, args.duration)
    inp = random_inputs(model)
    print(
        f"{args.variant}: {args.duration} s clip ({model.latent_seq_len} latents), Euler {args.steps} steps, "
        f"CFG {args.cfg}, batch 1, cpu, threads={torch.get_num_threads()}, torch {torch.__version__}"
    )

    with torch.inference_mode():
        flops = sampling_flops(model, inp, args.steps)
        peak = matmul_peak_gflops()
        fast_way(model, inp, 1, args.cfg)  # warm-up (allocator, kernels)
        plain_way(model, inp, 1, args.cfg)
        start, cpu = time.perf_counter(), time.process_time()
        x_plain, nfe_plain = plain_way(model, inp, args.steps, args.cfg)
        t_plain, cpu_plain = time.perf_counter() - start, time.process_time() - cpu
        model.clear_caches()  # the fast way pays for its empty conditions too
        start, cpu = time.perf_counter(), time.process_time()
        x_fast, nfe_fast = fast_way(model, inp, args.steps, args.cfg)
        t_fast, cpu_fast = time.perf_counter() - start, time.process_time() - cpu
        peak = max(peak, matmul_peak_gflops())  # measured before and after, the machine is shared
        t_decode = time_decoding(model, x_fast)

    rows = []
    for way, sec, cpu_sec, nfe in [("plain", t_plain, cpu_plain, nfe_plain), ("fast", t_fast, cpu_fast, nfe_fast)]:
        gflops = flops[way] / sec / 1e9
        rows.append(
            {
                "way": way,
                "wall_s": sec,
                "cpu_s": cpu_sec,
                "NFE": nfe,
                "GFLOP/step": flops[f"{way}_step"] / 1e9,
                "GFLOP total": flops[way] / 1e9,
                "GFLOP/s": gflops,
                "of peak": f"{100 * gflops / peak:.1f}%",
            }
        )
    print_table(rows)
    diff = (x_fast - x_plain).abs().max().item()
    ratio = t_plain / t_fast
    print(
        f"fp32 matmul peak (2048^3 mm, this run): {peak:.1f} GFLOP/s; condition preprocessing (both ways, once): "
        f"{flops['plain_preprocess'] / 1e9:.2f} GFLOP"
    )
    print(
        f"speed-up fast vs plain: {ratio:.2f}x wall, {cpu_plain / cpu_fast:.2f}x cpu "
        f"(target >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'})"
    )
    print(f"max |fast - plain|: {diff:.2e} (target <= 1e-4: {'met' if diff <= 1e-4 else 'NOT met'})")
    per_s = "" if t_decode is None else f" ({t_decode / args.duration:.3f} s per second of audio)"
    print(f"decode (VAE + vocoder): {'n/a' if t_decode is None else f'{t_decode:.2f} s'}{per_s}")
    print(load_facts(load_before))


if __name__ == "__main__":
    run_main(main)
