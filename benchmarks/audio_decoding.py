"""Decoding speed of MMAudio's audio path (VAE decode + BigVGAN) with random full-size weights.

Prints seconds of compute per second of audio for each stage and the real-time factor (RTF = compute / audio
duration; < 1 is faster than real time), against the real-time baseline of 1.0.

    .venv/bin/python benchmarks/audio_decoding.py [--seconds 2] [--repeats 1] [--device cpu] [--threads N]
"""

from __future__ import annotations

import math
import os
import time

import torch
from common import ArgumentParser, device_type, load_facts, positive_float, positive_int, run_main

from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAE
from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGAN
from avflow.codecs.mel import MEL_CONFIGS


def _timed(fn, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    best, out = math.inf, None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_mode(mode: str, seconds: float, repeats: int, device: torch.device) -> dict:
    mel_cfg = MEL_CONFIGS[mode]
    vae = AudioVAE(AUDIO_VAE_CONFIGS[mode]).fold().eval().to(device)
    vocoder = BigVGAN(BIGVGAN_CONFIGS[mode]).eval().to(device)
    frames_per_latent = vae.config.downsample
    n_latents = math.ceil(seconds * mel_cfg.sample_rate / mel_cfg.hop_length / frames_per_latent)
    z = torch.randn(1, vae.embed_dim, n_latents, device=device)
    with torch.inference_mode():
        vae.decode(z[..., :4])  # warm-up
        t_vae, mel = _timed(lambda: vae.decode(z), repeats, device)
        vocoder(mel[..., :4])
        t_voc, wav = _timed(lambda: vocoder(mel), repeats, device)
    audio_s = wav.shape[-1] / mel_cfg.sample_rate
    return {
        "mode": mode,
        "audio_s": audio_s,
        "vae_s_per_s": t_vae / audio_s,
        "vocoder_s_per_s": t_voc / audio_s,
        "rtf": (t_vae + t_voc) / audio_s,
        "params_m": (sum(p.numel() for p in vae.parameters()) + sum(p.numel() for p in vocoder.parameters())) / 1e6,
    }


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive_float, default=2.0, help="audio duration to decode")
    parser.add_argument("--repeats", type=positive_int, default=1, help="timed runs per stage (best is kept)")
    parser.add_argument("--device", type=device_type, default="cpu")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--modes", nargs="+", default=["16k", "44k"], choices=["16k", "44k"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    load_before = os.getloadavg()
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} audio={args.seconds}s")
    header = f"{'mode':<5} {'audio s':>8} {'params M':>9} {'VAE s/s':>9} {'vocoder s/s':>12} {'RTF':>7} {'vs RT':>7}"
    print(header)
    print("-" * len(header))
    for mode in args.modes:
        r = bench_mode(mode, args.seconds, args.repeats, device)
        speed = "faster" if r["rtf"] < 1.0 else "slower"
        print(
            f"{r['mode']:<5} {r['audio_s']:>8.2f} {r['params_m']:>9.1f} {r['vae_s_per_s']:>9.3f} "
            f"{r['vocoder_s_per_s']:>12.3f} {r['rtf']:>7.3f} {speed:>7}"
        )
    print("RTF = (VAE + vocoder seconds) / audio seconds; baseline real time = 1.0")
    print(load_facts(load_before))


if __name__ == "__main__":
    run_main(main)
