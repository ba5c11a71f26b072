"""The vocoder's residual-block convolutions by FFT (avflow.nn.fft_conv) against the direct ones: where does it pay?

For BigVGAN's C -> C 'same' convolutions (kernels 3, 7, 11; dilations 1, 3, 5) at the channel counts and lengths of
its levels, the best-of-N milliseconds of the direct convolution the way the vocoder runs it (F.conv1d on (B, C, T)
for the first level, channels-last F.conv2d on frames after it) and of the FFT path (weight transform included, as
at every call), the ratio, the max |difference| and whether `fft_conv.pays_off` chooses FFT there. `PAYS_OFF` in
avflow/nn/fft_conv.py is read from this table; the load average before and after is printed.

`--vocoder 16k 44k` times whole vocoders instead (random weights, --seconds of audio, inference mode): the plain
reference way (benchmarks/baseline/), avflow with every convolution direct (the FFT path switched off), avflow as
shipped and avflow with its anti-aliased activations compiled (`avflow foley --compile`; its first, compiling
call reported apart as first_call_s), called in turn for --rounds rounds, each call after gc and malloc_trim (a
cold heap, as in a fresh process), so that a slow spell of a shared machine hits every way alike; the best and the
median of each are printed.

    .venv/bin/python benchmarks/vocoder_convs.py [--threads 2] [--shapes 768x2000 384x8000 ...] [--json OUT]
    .venv/bin/python benchmarks/vocoder_convs.py --vocoder 16k 44k [--seconds 8] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import bigvgan as plain_bigvgan  # noqa: E402
from common import ArgumentParser, check_output, positive_int, report, reset_peak_memory, run_main, timed  # noqa: E402
from foley_stages import random_vocoder  # noqa: E402

from avflow.codecs.bigvgan import BIGVGAN_CONFIGS  # noqa: E402
from avflow.codecs.fused_activation import compiler_missing  # noqa: E402
from avflow.heap import keep_freed_memory  # noqa: E402
from avflow.nn import fft_conv  # noqa: E402

# (channels, samples): BigVGAN 16 kHz's levels for 2 s and 8 s of audio, 44.1 kHz's first level for 8 s
SHAPES = ("768x500", "768x1000", "768x2000", "768x5512", "384x1000", "384x2000", "384x8000",
          "192x2000", "192x4000", "192x16000", "96x8000", "96x32000", "48x64000")  # fmt: skip


def row(channels: int, length: int, k: int, dilation: int, repeat: int) -> dict:
    x = torch.randn(1, length, channels)  # (B, T, C): the memory order of the vocoder's frames
    weight, bias = torch.randn(channels, channels, k) / (channels * k) ** 0.5, torch.randn(channels) * 0.01
    pad = dilation * (k - 1) // 2
    if channels >= 768:  # the first level runs on (B, C, T)
        xc = x.transpose(1, 2).contiguous()
        direct = lambda: F.conv1d(xc, weight, bias, padding=pad, dilation=dilation)  # noqa: E731
    else:
        frames = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, T) channels-last
        w2 = weight.unsqueeze(2)
        direct = lambda: F.conv2d(frames, w2, bias, 1, (0, pad), (1, dilation))  # noqa: E731
    by_fft = lambda: fft_conv.conv1d_tokens(x, weight, bias, dilation, fft_conv.N_FFT)  # noqa: E731
    with torch.inference_mode():
        t_direct, t_fft = timed(direct, repeat=repeat), timed(by_fft, repeat=repeat)
        reference = direct().reshape(1, channels, length).transpose(1, 2)
        diff = float((by_fft() - reference).abs().max())
    return {"channels": channels, "samples": length, "kernel": k, "dilation": dilation,
            "direct_ms": round(1e3 * t_direct, 2), "fft_ms": round(1e3 * t_fft, 2),
            "speedup": round(t_direct / t_fft, 2), "max_abs_diff": diff,
            "chosen": fft_conv.pays_off(channels, length, k)}  # fmt: skip


def vocoder_rows(mode: str, seconds: float, rounds: int, compiled: bool) -> list[dict]:
    """Plain, avflow direct, avflow as shipped and (`compiled`) avflow with its activations compiled
    (`BigVGAN.compile_activations`, after one untimed call that compiles) on one vocoder, alternating, cold heap
    before every call."""
    config = BIGVGAN_CONFIGS[mode]
    vocoder = random_vocoder(config, torch.device("cpu"))
    params = vocoder.state_dict()
    mel = torch.randn(1, config.num_mels, round(seconds * config.sample_rate / config.hop_length))
    shipped_rule = fft_conv.pays_off

    def direct(mel: torch.Tensor) -> torch.Tensor:
        fft_conv.pays_off = lambda *args: False
        try:
            return vocoder(mel)
        finally:
            fft_conv.pays_off = shipped_rule

    ways = {"plain": lambda: plain_bigvgan.vocode(params, config, mel), "avflow direct": lambda: direct(mel),
            "avflow": lambda: vocoder(mel)}  # fmt: skip
    compile_s = None
    if compiled:
        fused = copy.deepcopy(vocoder).compile_activations()
        with torch.inference_mode():
            start = time.perf_counter()
            fused(mel)  # compiles (or reads inductor's disk cache): not timed with the calls
            compile_s = time.perf_counter() - start
        ways["avflow compiled"] = lambda: fused(mel)
    times: dict[str, list[float]] = {name: [] for name in ways}
    outputs = {}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, way in ways.items():
                outputs[name] = None
                gc.collect()
                reset_peak_memory()
                start = time.perf_counter()
                outputs[name] = way()
                times[name].append(time.perf_counter() - start)
    rows = []
    for name, seconds_taken in times.items():
        rows.append({"vocoder": mode, "audio_s": round(mel.shape[-1] * config.hop_length / config.sample_rate, 2),
                     "way": name, "best_s": round(min(seconds_taken), 2),
                     "median_s": round(statistics.median(seconds_taken), 2),
                     "speedup_best": round(min(times["plain"]) / min(seconds_taken), 2),
                     "speedup_median": round(statistics.median(times["plain"]) / statistics.median(seconds_taken), 2),
                     "max_abs_diff": float((outputs[name] - outputs["plain"]).abs().max()),
                     "all_s": [round(t, 2) for t in seconds_taken]})  # fmt: skip
        if name == "avflow compiled":
            rows[-1]["first_call_s"] = round(compile_s, 1)
    return rows


def main() -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), help="CHANNELSxSAMPLES")
    p.add_argument("--kernels", type=positive_int, nargs="+", default=[3, 7, 11])
    p.add_argument("--dilations", type=positive_int, nargs="+", default=[1, 3, 5])
    p.add_argument("--repeat", type=positive_int, default=3)
    p.add_argument("--vocoder", nargs="+", choices=sorted(BIGVGAN_CONFIGS), default=None,
                   help="time whole vocoders (plain, avflow direct, avflow, avflow compiled) instead of single "
                        "convolutions")  # fmt: skip
    p.add_argument("--seconds", type=float, default=8.0, help="--vocoder: seconds of audio")
    p.add_argument("--rounds", type=int, default=3, help="--vocoder: calls of each way, in turn")
    p.add_argument("--no-compiled", action="store_true",
                   help="--vocoder: leave out the way with compiled activations (it needs a C++ compiler)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="--vocoder: every way with freed memory kept in the heap, as the avflow command runs "
                        "(avflow.heap; the heap is still trimmed before every call)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    check_output(p, args.json)
    if args.vocoder and (args.seconds <= 0 or args.rounds < 1):
        p.error("--seconds must be > 0 and --rounds >= 1")
    shapes = []
    for shape in args.shapes:
        channels, _, length = shape.partition("x")
        if not (channels.isdigit() and length.isdigit()):
            p.error(f"--shapes: {shape!r} is not CHANNELSxSAMPLES (e.g. 384x8000)")
        shapes.append((int(channels), int(length)))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()
    if args.vocoder:
        missing = None if args.no_compiled else compiler_missing()
        if missing:
            p.error(f"the compiled way: {missing} (or pass --no-compiled)")
        compiled = not args.no_compiled
        heap = "kept (avflow.heap)" if args.keep_freed_memory and keep_freed_memory() else "glibc's defaults"
        rows = [row for mode in args.vocoder for row in vocoder_rows(mode, args.seconds, args.rounds, compiled)]
        report(rows, args.threads, load, f"whole vocoders, inference mode, cold heap per call, heap: {heap}",
               args.json)  # fmt: skip
    else:
        rows = [row(c, t, k, d, args.repeat) for c, t in shapes for k in args.kernels for d in args.dilations]
        report(rows, args.threads, load, f"n_fft {fft_conv.N_FFT}", args.json)


if __name__ == "__main__":
    run_main(main)
