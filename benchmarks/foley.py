"""`avflow foley` pipeline: seconds per second of video per stage, and peak memory against video length.

Random weights, CPU, one thread (default), 8 s windows with 1 s overlap, Euler `--steps` (default 4), CFG 4.5.
  speed  : a `--seconds` (default 3) 25 fps 96x128 video through the tiny config and the small_16k shapes
           (small_16k network, full 16 kHz VAE and BigVGAN; encoders are the tiny ones unless --full-encoders,
           since DFN5B ViT-H/14 at 384 px and Synchformer take minutes per second of video on one CPU core).
           Stages: features (video decode + CLIP + Synchformer), sampling, decoding (VAE + vocoder), muxing.
  memory : the tiny config on 10 s, 60 s and 300 s videos, each in its own subprocess; peak RSS (VmHWM) and
           its growth over the RSS after loading. Flat in length is the target (baseline: the 10 s run).

    .venv/bin/python benchmarks/foley.py [--steps 4] [--seconds 3] [--lengths 10 60 300] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import ArgumentParser, load_facts, positive_float, positive_int, print_table, run_main

from avflow.codecs.audio_vae import AUDIO_VAE_16K, AudioVAE, AudioVAEConfig
from avflow.codecs.bigvgan import BIGVGAN_V1_16K, BigVGAN, BigVGANConfig
from avflow.data.media import mux_audio, write_video
from avflow.encoders.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from avflow.encoders.features import Encoders
from avflow.encoders.synchformer import Synchformer, SynchformerConfig
from avflow.models.mmaudio import MMAudio
from avflow.models.mmaudio_config import SAMPLING, MMAudioConfig, get_config
from avflow.pipelines.foley import FoleyPipeline
from avflow.pipelines.foley_model import FoleyModel

TINY_CLIP = CLIPConfig(
    embed_dim=16,
    vision=CLIPVisionConfig(width=32, layers=1, head_width=16),
    text=CLIPTextConfig(width=16, heads=1, layers=1),
)
TINY_SYNC = SynchformerConfig(embed_dim=32, num_heads=2, depth=1)


def _network(config: MMAudioConfig) -> MMAudio:
    net = MMAudio(config).eval().requires_grad_(False)
    with torch.no_grad():
        net.latent_mean.zero_()
        net.latent_std.fill_(1.0)
    return net


def _random(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Every parameter drawn from N(0, scale^2) (some encoder parameters are allocated uninitialized)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    return model


def build(config: str, full_encoders: bool = False, steps: int = 4) -> FoleyPipeline:
    """A pipeline with random weights: "tiny" or "small_16k" shapes."""
    clip_cfg, sync_cfg = (CLIPConfig(), SynchformerConfig()) if full_encoders else (TINY_CLIP, TINY_SYNC)
    dims = dict(clip_dim=clip_cfg.embed_dim, sync_dim=sync_cfg.embed_dim, text_dim=clip_cfg.text.width)
    if config == "tiny":
        net_cfg = MMAudioConfig(hidden_dim=64, depth=3, fused_depth=1, num_heads=1, **dims)
        vae = AudioVAE(AudioVAEConfig(data_dim=80, embed_dim=20, hidden_dim=32))
        vocoder = BigVGAN(BigVGANConfig(sample_rate=16000, upsample_initial_channel=64))
    else:
        net_cfg = replace(get_config(config), **dims)
        vae, vocoder = AudioVAE(AUDIO_VAE_16K), BigVGAN(BIGVGAN_V1_16K)
    model = FoleyModel(_network(net_cfg), vae.fold().eval(), vocoder.eval(), SAMPLING.override(steps=steps))
    encoders = Encoders(_random(CLIP(clip_cfg)), _random(Synchformer(sync_cfg)))
    return FoleyPipeline(model, encoders.requires_grad_(False), window_s=8.0, overlap_s=1.0)


def make_video(path: Path, seconds: float, fps: float = 25.0, size=(96, 128)) -> Path:
    n = round(seconds * fps)
    frames = np.zeros((n, *size, 3), np.uint8)
    for i in range(n):
        frames[i] = (5 * i) % 200
        x = (4 * i) % (size[1] - 16)
        frames[i, 32:48, x : x + 16] = 255
    return write_video(path, frames, fps, preset="ultrafast")


def speed_row(config: str, video: Path, seconds: float, steps: int, full_encoders: bool) -> dict:
    pipe = build(config, full_encoders, steps)
    start = time.perf_counter()
    result = pipe.generate_video(video, "footsteps", seed=0)
    total = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mux_audio(video, result.audio[None], result.sample_rate, Path(tmp) / "out.mp4")
        mux = time.perf_counter() - start
    t = pipe.timings
    return {
        "config": config + (" (full encoders)" if full_encoders else ""),
        "features s/s": t.get("features", 0.0) / seconds,
        "sampling s/s": t.get("sampling", 0.0) / seconds,
        "decoding s/s": t.get("decoding", 0.0) / seconds,
        "muxing s/s": mux / seconds,
        "total s/s": (total + mux) / seconds,
        "windows": result.windows,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the forking parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(video: str, steps: int) -> None:
    """Run in a subprocess: load, generate, report RSS figures as JSON."""
    torch.set_num_threads(1)
    pipe = build("tiny", steps=steps)
    loaded = peak_rss_mb()
    start = time.perf_counter()
    result = pipe.generate_video(video, "footsteps", seed=0)
    wall = time.perf_counter() - start
    peak = peak_rss_mb()
    print(json.dumps({"loaded_mb": loaded, "peak_mb": peak, "wall_s": wall, "windows": result.windows}))


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=4)
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="video length for the speed table")
    parser.add_argument("--lengths", type=positive_float, nargs="*", default=[10.0, 60.0, 300.0], help="memory table")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--full-encoders", action="store_true", help="official-size CLIP and Synchformer (slow)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.steps)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    print(f"cpu, threads={torch.get_num_threads()}, torch {torch.__version__}, Euler {args.steps} steps, CFG 4.5")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_speed:
            video = make_video(tmp / "speed.mp4", args.seconds)
            rows = [speed_row(c, video, args.seconds, args.steps, args.full_encoders) for c in ("tiny", "small_16k")]
            print_table(rows, f"seconds per second of video ({args.seconds:g} s, 25 fps, 96x128)")
        rows = []
        for length in args.lengths:
            video = make_video(tmp / f"mem_{length:g}.mp4", length, size=(64, 96))
            cmd = [sys.executable, __file__, "--memory-child", str(video), "--steps", str(args.steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            rows.append(
                {
                    "video s": length,
                    "windows": r["windows"],
                    "peak RSS MB": r["peak_mb"],
                    "growth over loaded MB": r["peak_mb"] - r["loaded_mb"],
                    "wall s": r["wall_s"],
                }
            )
        if rows:
            base = rows[0]["growth over loaded MB"]
            for r in rows:
                r["vs shortest"] = f"{r['growth over loaded MB'] / max(base, 1e-9):.2f}x"
            print_table(rows, "peak memory, tiny config, one subprocess per length (target: flat in length)")
    print(load_facts(load_before))


if __name__ == "__main__":
    run_main(main)
