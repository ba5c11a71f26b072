"""Every stage of `avflow foley` on an 8 s clip, timed beside a faithful plain baseline in the same run.

Models: each variant's network, VAE and vocoder and the official-size CLIP (DFN5B ViT-H/14, 384 px) and Synchformer,
all with random weights. Stages: frame decode + preprocessing, CLIP, Synchformer, text, network sampling (Euler
--steps, CFG --cfg), VAE decode, vocoder, mux. Ways:
  plain     the reference's way, pinned in benchmarks/baseline/ (conditions computed once, separate conditional and
            unconditional forwards at batch 1, F.scaled_dot_product_attention, the reference's batching);
  avflow    this package, fp32 (on a GPU with TF32 off, for the parity check);
  avflow bf16 / avflow tf32   with --precision bf16 / on a GPU;
  avflow compiled   (--compile, vocoder stage) the vocoder's anti-aliased activations compiled, as `avflow foley
            --compile` runs them (after one untimed call that compiles; its seconds are in the row's note);
  reference the public MMAudio code in a local clone (--reference PATH) on the same weights (network, VAE, vocoder).
Stages whose code is shared by both ways (frame decode, VAE, mux) are timed once, as "avflow = plain"; the encoder
stages (frames, CLIP, Synchformer, text) are the same for every variant and are timed for the first one only.

Per row: seconds for the 8 s clip (CLIP is timed on --clip-frames of its 64 frames, Synchformer on --sync-segments of
its 24 segments, VAE and vocoder on --audio-seconds, and scaled linearly), FLOPs counted with FlopCounterMode
(executed ones: avflow's Winograd convolutions count what they multiply), GFLOP/s, share of the matmul peak measured
in this run (fp32; bf16 rows against the bf16 peak), the stage's peak RSS (GPU: peak allocated), the speed-up over
plain, max |difference| from plain (fp32) and the relative RMS deviation from avflow fp32 (bf16 / tf32 rows). End to
end: the sum of the stages per way, and with --end-to-end one real run of the pipeline on the 8 s video (slow).
A summary table then puts the ways side by side per stage (seconds, speed-ups over plain), with the load average
before and after the run.

Run it with PYTHONPATH=. from the repository root (so that this checkout's avflow is the one imported):
    .venv/bin/python benchmarks/foley_stages.py                                  # both variants, every stage
    .venv/bin/python benchmarks/foley_stages.py --quick                          # small_16k, 2 s, 2 steps, 1 frame
    .venv/bin/python benchmarks/foley_stages.py --quick --tiny                   # narrow models: tests the script
    .venv/bin/python benchmarks/foley_stages.py --variants small_16k --stages network vocoder --json out.json
    .venv/bin/python benchmarks/foley_stages.py --precision fp32 bf16 --reference ~/src/MMAudio --end-to-end
    .venv/bin/python benchmarks/foley_stages.py --device cuda                     # TF32 off and on
    .venv/bin/python benchmarks/foley_stages.py --stages vocoder --compile        # + the compiled vocoder
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from baseline import bigvgan as plain_bigvgan
from baseline import encoders as plain_encoders
from baseline import reference
from baseline.mmaudio import PlainMMAudio
from common import (
    ArgumentParser,
    check_output,
    count_flops,
    current_memory_mb,
    device_type,
    difference,
    load_average,
    matmul_peak_gflops,
    peak_memory_mb,
    positive_float,
    positive_int,
    print_table,
    reset_peak_memory,
    run_main,
    synchronize,
)

from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAE, AudioVAEConfig
from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGAN, BigVGANConfig
from avflow.codecs.fused_activation import compiler_missing
from avflow.data.media import mux_audio, write_video
from avflow.encoders.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from avflow.encoders.features import Encoders
from avflow.encoders.preprocess import clip_normalize, frame_counts, iter_encoder_frames, sync_normalize
from avflow.encoders.synchformer import SEGMENT_FRAMES, SEGMENT_STEP, Synchformer, SynchformerConfig
from avflow.encoders.tokenizer import CLIPTokenizer
from avflow.heap import keep_freed_memory
from avflow.models.mmaudio import MMAudio, build_mmaudio
from avflow.models.mmaudio_config import CONFIGS, SAMPLING, MMAudioConfig, get_config, sequence_lengths
from avflow.nn.mmaudio_blocks import WINOGRAD_PAYS_OFF
from avflow.pipelines.foley import FoleyPipeline
from avflow.pipelines.foley_model import FoleyModel, sample_latents
from avflow.precision import autocast

STAGES = ("frames", "clip", "sync", "text", "network", "vae", "vocoder", "mux")
ENCODER_STAGES = ("frames", "clip", "sync", "text")  # the same for every variant: timed once
SHARED = "every variant"  # the variant column of the encoder stages' rows
# Run sizes: the (an 8 s clip, every variant users run) and --quick (a short check of the script and the
# ratios; full-size models). Options given on the command line win.
FULL = {"variants": ["small_16k", "large_44k_v2"], "duration": 8.0, "steps": SAMPLING.steps, "clip_frames": 16,
        "sync_segments": 8, "audio_seconds": None}  # fmt: skip
QUICK = {"variants": ["small_16k"], "duration": 2.0, "steps": 2, "clip_frames": 1, "sync_segments": 1,
         "audio_seconds": 0.5}  # fmt: skip
PROMPT = "footsteps on gravel, then a door slams"
# Stand-ins for the encoder a stage does not time (Encoders holds both).
NO_CLIP = CLIPConfig(
    embed_dim=8,
    vision=CLIPVisionConfig(width=16, layers=0, head_width=16),
    text=CLIPTextConfig(width=8, heads=1, layers=0),
)
NO_SYNC = SynchformerConfig(embed_dim=8, num_heads=1, depth=0)
# --tiny: narrow encoders of the same structure (the official input sizes).
TINY_CLIP = CLIPConfig(
    embed_dim=16,
    vision=CLIPVisionConfig(width=32, layers=1, head_width=16),
    text=CLIPTextConfig(width=16, heads=1, layers=1),
)
TINY_SYNC = SynchformerConfig(embed_dim=32, num_heads=2, depth=1)
# Per way, where its seconds come from for the end-to-end sum, in order of preference.
SUM_SOURCES = {
    "plain": ("plain", "avflow = plain"),
    "avflow": ("avflow", "avflow = plain"),
    "avflow bf16": ("avflow bf16", "avflow", "avflow = plain"),
    "avflow tf32": ("avflow tf32", "avflow", "avflow = plain"),
    "avflow compiled": ("avflow compiled", "avflow", "avflow = plain"),
    "reference": ("reference", "plain", "avflow = plain"),
}


@dataclass(frozen=True, kw_only=True)
class Models:
    """The configurations one variant's stages run: the official sizes, or (--tiny) narrow ones of the same
    structure, which only test this script."""

    network: MMAudioConfig
    vae: AudioVAEConfig
    vocoder: BigVGANConfig
    clip: CLIPConfig
    sync: SynchformerConfig


def models_for(variant: str, tiny: bool) -> Models:
    network = get_config(variant)
    mode = "16k" if network.sample_rate == 16000 else "44k"
    vae, vocoder = AUDIO_VAE_CONFIGS[mode], BIGVGAN_CONFIGS[mode]
    if not tiny:
        return Models(network=network, vae=vae, vocoder=vocoder, clip=CLIPConfig(), sync=SynchformerConfig())
    widths = dict(clip_dim=TINY_CLIP.embed_dim, sync_dim=TINY_SYNC.embed_dim, text_dim=TINY_CLIP.text.width)
    return Models(
        network=replace(network, hidden_dim=64, depth=2, fused_depth=1, num_heads=1, **widths),
        vae=replace(vae, hidden_dim=32),
        vocoder=replace(vocoder, upsample_initial_channel=64),
        clip=TINY_CLIP,
        sync=TINY_SYNC,
    )


@dataclass
class Way:
    """One way of running a stage: `run()` returns its output (compared across ways) or None."""

    name: str
    run: Callable[[], torch.Tensor | None]
    flops: float | None = None  # for the whole 8 s clip
    precision: str = "fp32"
    tf32: bool = False
    note: str = ""  # added to the stage's note in this way's row


@dataclass
class Run:
    args: argparse.Namespace
    device: torch.device
    peaks: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    video: Path | None = None
    audio: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------------------------
# Measuring


def set_tf32(on: bool) -> None:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def measure(run: Run, way: Way) -> tuple[float, tuple[float, float], torch.Tensor | None]:
    """(wall seconds, (peak memory MB, its growth over the start), output) of one call after a garbage collection;
    best of --repeat calls. Under inference mode, as the pipelines run (paths that differ in training, such as the
    vocoder's in-place snake and FFT convolutions, are the ones users get)."""
    set_tf32(way.tf32)
    best, peak, growth, out = math.inf, 0.0, 0.0, None
    for _ in range(run.args.repeat):
        out = None
        gc.collect()
        reset_peak_memory(run.device)
        start_mb = current_memory_mb(run.device)
        synchronize(run.device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast(way.precision, run.device):
            out = way.run()
        synchronize(run.device)
        best = min(best, time.perf_counter() - start)
        peak = max(peak, peak_memory_mb(run.device))
        growth = max(growth, peak_memory_mb(run.device) - start_mb)
    set_tf32(False)
    return best, (peak, growth), out


def time_stage(
    run: Run, variant: str, stage: str, ways: list[Way], scale: float = 1.0, note: str = ""
) -> dict[str, torch.Tensor | None]:
    """Time each way (the first is the baseline), add one table row per way; returns each way's output."""
    results = []
    for way in ways:
        seconds, peak, out = measure(run, way)
        results.append((way, seconds * scale, peak, out))
        print(f"  {variant} {stage} {way.name}: {seconds:.2f} s measured", flush=True)
    base_s, base_out = results[0][1], results[0][3]
    fp32_out = next((o for w, _, _, o in results if w.name in ("avflow", "avflow = plain") and not w.tf32), None)
    for way, seconds, peak, out in results:
        peak_gflops = run.peaks["bf16" if way.precision == "bf16" else ("tf32" if way.tf32 else "fp32")]
        gflops = way.flops / seconds / 1e9 if way.flops else None
        max_diff, _ = difference(out, base_out) if way is not results[0][0] and way.precision == "fp32" else (None, 0)
        _, deviation = difference(out, fp32_out) if (way.precision != "fp32" or way.tf32) else (None, None)
        run.rows.append(
            {
                "variant": variant,
                "stage": stage,
                "way": way.name,
                "seconds": seconds,
                "GFLOP": way.flops / 1e9 if way.flops else None,
                "GFLOP/s": gflops,
                "% of peak": 100 * gflops / peak_gflops if gflops else None,
                "peak MB": peak[0],
                "+MB": peak[1],
                "speed-up": base_s / seconds if way is not results[0][0] else None,
                "max |diff|": max_diff,
                "rel dev": deviation,
                "note": "; ".join(filter(None, (note, way.note))),
            }
        )
    return {way.name: out for way, _, _, out in results}


def extra_ways(run: Run, make: Callable[[], torch.Tensor], flops: float | None) -> list[Way]:
    """avflow bf16 (if asked) and, on a GPU, avflow with TF32."""
    ways = []
    if "bf16" in run.args.precision:
        ways.append(Way("avflow bf16", make, flops, precision="bf16"))
    if run.device.type == "cuda":
        ways.append(Way("avflow tf32", make, flops, tf32=True))
    return ways


def reference_way(run: Run, name: str, build: Callable[[], Callable[[], torch.Tensor]], flops) -> list[Way]:
    """The clone's way, or nothing (with a printed reason) when --reference is unset or its imports fail."""
    if not run.args.reference:
        return []
    try:
        fn = build()
    except (ImportError, RuntimeError, KeyError, TypeError) as exc:
        print(f"  reference {name}: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return []
    return [Way("reference", fn, flops)]


# ------------------------------------------------------------------------------------------------------------------
# Models with random weights (full size)


def randomize(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Every parameter from N(0, std^2), LayerNorm weights 1 (the encoders allocate some parameters uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")) or (
                ".norm" in name and name.endswith("weight")
            ):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module.eval().requires_grad_(False)


def random_network(config: MMAudioConfig, duration: float, device: torch.device) -> MMAudio:
    """PyTorch's default init, unit latent statistics, random empty features (non-trivial outputs)."""
    torch.manual_seed(0)
    net = build_mmaudio(config).eval().requires_grad_(False)
    net.set_duration(duration)
    with torch.no_grad():
        net.latent_mean.zero_()
        net.latent_std.fill_(1.0)
        for p in (net.sync_pos_emb, net.empty_clip_feat, net.empty_sync_feat, net.empty_string_feat):
            p.normal_(0.0, 0.5)
    return net.to(device)


def random_vocoder(config: BigVGANConfig, device: torch.device) -> BigVGAN:
    torch.manual_seed(0)
    vocoder = BigVGAN(config).eval().requires_grad_(False)
    with torch.no_grad():  # snake parameters away from their init, so that every snake does something
        for name, p in vocoder.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.normal_(0.0, 0.3)
    return vocoder.to(device)


def meta_flops(build: Callable[[], torch.nn.Module], fn: Callable[[torch.nn.Module, dict], object]) -> float:
    """FLOPs of fn(module, state_dict) on a meta-device twin (counted without computing)."""
    with torch.device("meta"):
        module = build()
    return float(count_flops(lambda: fn(module, module.state_dict())))


# ------------------------------------------------------------------------------------------------------------------
# Stages


def make_video(path: Path, seconds: float, fps: float = 25.0, size: tuple[int, int] = (360, 640)) -> Path:
    """A test video: gradients, noise and a moving square (h264)."""
    n = round(seconds * fps)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    frames = np.empty((n, *size, 3), np.uint8)
    for i in range(n):
        img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, np.full_like(xx, (5 * i) % 256)], -1)
        x = (8 * i) % (size[1] - 64)
        img[100:164, x : x + 64] = 255
        frames[i] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return write_video(path, frames, fps, preset="ultrafast")


def stage_frames(run: Run, variant: str) -> None:
    def decode() -> None:
        for _ in iter_encoder_frames(run.video, run.args.duration):
            pass

    time_stage(run, variant, "frames", [Way("avflow = plain", decode)], note="decode + resize, CPU")


def clip_model(run: Run, config: CLIPConfig) -> CLIP:
    return randomize(CLIP(config)).to(run.device)


def stage_clip(run: Run, variant: str, clip: CLIP) -> None:
    total, _ = frame_counts(run.args.duration)
    n = min(run.args.clip_frames, total)
    frames = torch.randint(0, 256, (n, 3, 384, 384), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    encoders = Encoders(clip, Synchformer(NO_SYNC).to(run.device))
    params = clip.state_dict()
    config = clip.config
    pixels = clip_normalize(frames).to(run.device)

    flops = total * meta_flops(
        lambda: CLIP(config), lambda m, p: plain_encoders.clip_images(p, config, pixels[:1].to("meta"))
    )
    ways = [
        Way("plain", lambda: plain_encoders.clip_images(params, config, pixels), flops),
        Way("avflow", lambda: encoders.encode_clip(frames[None])[0], flops),
    ]
    ways += extra_ways(run, ways[1].run, flops)
    time_stage(run, variant, "clip", ways, scale=total / n, note=f"{n} of {total} frames, scaled")


def stage_sync(run: Run, variant: str, config: SynchformerConfig) -> None:
    sync = randomize(Synchformer(config)).to(run.device)
    config = sync.config
    _, n_frames = frame_counts(run.args.duration)
    total = (n_frames - SEGMENT_FRAMES) // SEGMENT_STEP + 1
    m = min(run.args.sync_segments, total)
    frames = torch.randint(
        0, 256, (SEGMENT_FRAMES + SEGMENT_STEP * (m - 1), 3, 224, 224), dtype=torch.uint8,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    segments = sync_normalize(frames.unfold(0, SEGMENT_FRAMES, SEGMENT_STEP).permute(0, 4, 1, 2, 3)).to(run.device)
    encoders = Encoders(CLIP(NO_CLIP).to(run.device), sync)
    params = sync.state_dict()

    def one_segment(module, p):
        return plain_encoders.synchformer(p, config, segments[:1].to("meta"))

    flops = total * meta_flops(lambda: Synchformer(config), one_segment)
    ways = [
        Way("plain", lambda: plain_encoders.synchformer(params, config, segments).flatten(0, 1), flops),
        Way("avflow", lambda: encoders.encode_sync(frames[None].to(run.device))[0], flops),
    ]
    ways += extra_ways(run, ways[1].run, flops)
    time_stage(run, variant, "sync", ways, scale=total / m, note=f"{m} of {total} segments, scaled")


def stage_text(run: Run, variant: str, clip: CLIP) -> None:
    encoders = Encoders(clip, Synchformer(NO_SYNC).to(run.device))
    tokens = CLIPTokenizer()([PROMPT])
    config = clip.config
    params = clip.state_dict()
    flops = meta_flops(lambda: CLIP(config), lambda m, p: plain_encoders.clip_text(p, config, tokens.to("meta")))
    ways = [
        Way("plain", lambda: plain_encoders.clip_text(params, config, tokens.to(run.device)), flops),
        Way("avflow", lambda: encoders.encode_text([PROMPT]), flops),
    ]
    ways += extra_ways(run, ways[1].run, flops)
    time_stage(run, variant, "text", ways, note="one prompt")


def stage_network(run: Run, variant: str, config: MMAudioConfig) -> torch.Tensor:
    """Times sampling; returns avflow's fp32 latents (normalized, (1, N, C)) for the decoding stages."""
    args, device = run.args, run.device
    net = random_network(config, args.duration, device)
    c = net.config
    gen = torch.Generator().manual_seed(3)
    inputs = {
        "clip_f": torch.randn(1, net.clip_seq_len, c.clip_dim, generator=gen),
        "sync_f": torch.randn(1, net.sync_seq_len, c.sync_dim, generator=gen),
        "text_f": torch.randn(1, c.text_seq_len, c.text_dim, generator=gen),
        "x0": torch.randn(1, net.latent_seq_len, c.latent_dim, generator=gen),
    }
    inputs = {k: v.to(device) for k, v in inputs.items()}
    params = net.state_dict()
    plain = PlainMMAudio(params, c, net.latent_seq_len, net.clip_seq_len, net.sync_seq_len)

    def plain_way(steps: int) -> torch.Tensor:
        with torch.inference_mode():
            return plain.sample(inputs["x0"], inputs["clip_f"], inputs["sync_f"], inputs["text_f"], steps, args.cfg)

    def avflow_way(steps: int) -> torch.Tensor:
        with torch.inference_mode():
            net.clear_caches()  # the empty conditions are computed in the timed run, as the plain way does
            cond = net.preprocess_conditions(inputs["clip_f"], inputs["sync_f"], inputs["text_f"])
            sampling = SAMPLING.override(steps=steps, cfg_strength=args.cfg)
            return sample_latents(net, inputs["x0"], cond, sampling)[0]

    def flops_of(way: Callable[[int], torch.Tensor]) -> float:
        one, two = count_flops(lambda: way(1)), count_flops(lambda: way(2))
        return float(one + (args.steps - 1) * (two - one))  # preprocessing once + steps x one step

    avflow_way(1)  # Winograd's measured choices are made here, not under the flop counter
    flops_plain, flops_avflow = flops_of(plain_way), flops_of(avflow_way)
    winograd_shapes = f"Winograd on {sum(WINOGRAD_PAYS_OFF.values())} of {len(WINOGRAD_PAYS_OFF)} conv shapes"
    lengths = net.set_duration(args.duration)
    ways = [
        Way("plain", lambda: plain_way(args.steps), flops_plain),
        Way("avflow", lambda: avflow_way(args.steps), flops_avflow),
    ]
    ways += extra_ways(run, ways[1].run, flops_avflow)
    ways += reference_way(
        run,
        "network",
        lambda: (lambda sample: lambda: sample(
            inputs["x0"], inputs["clip_f"], inputs["sync_f"], inputs["text_f"], args.steps, args.cfg
        ))(reference.network_sampler(args.reference, c, params, lengths)),
        flops_plain,
    )  # fmt: skip
    note = f"Euler {args.steps}, CFG {args.cfg}, {net.latent_seq_len} latents, {winograd_shapes}"
    outputs = time_stage(run, variant, "network", ways, note=note)
    with torch.inference_mode():
        return net.unnormalize(outputs["avflow"])


def audio_piece(run: Run, latents: torch.Tensor, sample_rate: int, hop: int) -> tuple[torch.Tensor, float]:
    """The first --audio-seconds of the latents and the scale to the whole clip."""
    total = latents.shape[1]
    n = min(total, max(1, math.ceil(run.args.audio_seconds * sample_rate / hop / 2)))
    return latents[:, :n], total / n


def stage_vae(run: Run, variant: str, models: Models, latents: torch.Tensor) -> torch.Tensor:
    mode = "16k" if models.network.sample_rate == 16000 else "44k"
    torch.manual_seed(0)
    vae = AudioVAE(models.vae).fold().eval().requires_grad_(False).to(run.device)
    c = models.network
    z, scale = audio_piece(run, latents, c.sample_rate, c.hop_length)
    z = z.transpose(1, 2).contiguous()  # (1, C, n)
    flops = scale * meta_flops(lambda: AudioVAE(models.vae), lambda m, p: m.decode(z.to("meta")))
    ways = [Way("avflow = plain", lambda: vae.decode(z), flops)]
    ways += extra_ways(run, ways[0].run, flops)
    ways += reference_way(
        run, "VAE", lambda: (lambda d: lambda: d(z))(reference.vae_decoder(run.args.reference, mode, vae.state_dict())),
        flops,
    )  # fmt: skip
    note = f"{z.shape[-1]} latents, scaled" if scale > 1 else ""
    outputs = time_stage(run, variant, "vae", ways, scale=scale, note=note)
    return outputs["avflow = plain"]


def stage_vocoder(run: Run, variant: str, config: BigVGANConfig, mel: torch.Tensor, scale: float) -> None:
    vocoder = random_vocoder(config, run.device)
    params, config = vocoder.state_dict(), vocoder.config

    def count(module, p):
        return plain_bigvgan.vocode(p, config, mel.to("meta"))

    flops_plain = scale * meta_flops(lambda: BigVGAN(config), count)
    with torch.inference_mode():  # the path inference takes (its long convolutions by FFT, avflow.nn.fft_conv)
        flops_avflow = scale * meta_flops(lambda: BigVGAN(config), lambda m, p: m(mel.to("meta")))
    ways = [
        Way("plain", lambda: plain_bigvgan.vocode(params, config, mel), flops_plain),
        Way("avflow", lambda: vocoder(mel), flops_avflow),
    ]
    ways += extra_ways(run, ways[1].run, flops_avflow)
    if run.args.compile:
        compiled = copy.deepcopy(vocoder).compile_activations()
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(mel)  # compiles (or reads inductor's disk cache): not timed with the calls
        first_call = f"first call (compiling) {time.perf_counter() - start:.1f} s"
        ways.append(Way("avflow compiled", lambda: compiled(mel), flops_avflow, note=first_call))
    ways += reference_way(
        run, "vocoder", lambda: (lambda v: lambda: v(mel))(reference.vocoder(run.args.reference, config, params)),
        flops_plain,
    )  # fmt: skip
    seconds = mel.shape[-1] * vocoder.hop_length / vocoder.sample_rate
    note = f"{seconds:.2f} s of audio" + (", scaled" if scale > 1 else "")
    outputs = time_stage(run, variant, "vocoder", ways, scale=scale, note=note)
    run.audio = outputs["avflow"][0].float().cpu().numpy()


def stage_mux(run: Run, variant: str, sample_rate: int) -> None:
    n = round(run.args.duration * sample_rate)
    audio = np.resize(run.audio if run.audio is not None else np.zeros((1, n), np.float32), (1, n))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "muxed.mp4"
        time_stage(run, variant, "mux", [Way("avflow = plain", lambda: mux_audio(run.video, audio, sample_rate, out))])


# ------------------------------------------------------------------------------------------------------------------
# End to end


def end_to_end_sums(run: Run, variant: str) -> None:
    """Per way, the sum of the stages' seconds (stages a way has no row of take the next source in SUM_SOURCES)."""
    rows = {(r["stage"], r["way"]): r["seconds"] for r in run.rows if r["variant"] in (variant, SHARED)}
    stages = sorted({stage for stage, _ in rows}, key=STAGES.index)
    totals = {}
    for way, sources in SUM_SOURCES.items():
        if any(w == way for _, w in rows):
            totals[way] = sum(next((rows[s, src] for src in sources if (s, src) in rows), 0.0) for s in stages)
    for way, total in totals.items():
        speed_up = totals["plain"] / total if "plain" in totals and way != "plain" else None
        run.rows.append({"variant": variant, "stage": "end to end (sum)", "way": way, "seconds": total,
                         "speed-up": speed_up, "note": ", ".join(stages)})  # fmt: skip


def end_to_end_run(run: Run, variant: str, models: Models, clip: CLIP) -> None:
    """The whole pipeline on the 8 s video (one run per precision): streaming, windows and muxing included."""
    torch.manual_seed(0)
    vae = AudioVAE(models.vae).fold().eval().requires_grad_(False).to(run.device)
    model = FoleyModel(
        random_network(models.network, run.args.duration, run.device), vae, random_vocoder(models.vocoder, run.device),
        SAMPLING.override(steps=run.args.steps, cfg_strength=run.args.cfg),
    )  # fmt: skip
    sync = randomize(Synchformer(models.sync)).to(run.device)
    for precision in run.args.precision:
        pipe = FoleyPipeline(model, Encoders(clip, sync), precision=precision)

        def full(pipe=pipe) -> None:
            result = pipe.generate_video(run.video, PROMPT, duration=run.args.duration)
            with tempfile.TemporaryDirectory() as tmp:
                mux_audio(run.video, result.channels_first(), result.sample_rate, Path(tmp) / "out.mp4")

        seconds, peak, _ = measure(run, Way(precision, full))
        name = "avflow" if precision == "fp32" else f"avflow {precision}"
        print(f"  {variant} end to end {name}: {seconds:.1f} s")
        run.rows.append({"variant": variant, "stage": "end to end (run)", "way": name, "seconds": seconds,
                         "peak MB": peak[0], "+MB": peak[1], "note": "FoleyPipeline.generate_video + mux"})  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the short run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="narrow models of the same structure (tests the script)")
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(CONFIGS),
                        help=f"default: {' '.join(FULL['variants'])}")  # fmt: skip
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--duration", type=positive_float, default=None,
                        help=f"clip seconds (default: {FULL['duration']:g})")  # fmt: skip
    parser.add_argument("--steps", type=positive_int, default=None, help=f"Euler steps (default: {FULL['steps']})")
    parser.add_argument("--cfg", type=float, default=SAMPLING.cfg_strength, help="CFG strength")
    parser.add_argument("--clip-frames", type=positive_int, default=None,
                        help=f"CLIP frames timed (8 a second), scaled (default: {FULL['clip_frames']})")  # fmt: skip
    parser.add_argument("--sync-segments", type=positive_int, default=None,
                        help=f"Synchformer segments timed, scaled (default: {FULL['sync_segments']})")  # fmt: skip
    parser.add_argument("--audio-seconds", type=positive_float, default=None,
                        help="VAE/vocoder seconds timed (default: all)")  # fmt: skip
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--device", type=device_type, default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--repeat", type=positive_int, default=1, help="timed calls per way (the best counts)")
    parser.add_argument("--reference", default=None, help="local clone of github.com/hkchengrex/MMAudio (not vendored)")
    parser.add_argument("--end-to-end", action="store_true", help="also run the whole pipeline once (slow)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the run's facts here")
    parser.add_argument("--compile", action="store_true",
                        help="add the vocoder with its activations compiled (`avflow foley --compile`; needs a C++ "
                             "compiler; fp32 on the CPU)")  # fmt: skip
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="every way with freed memory kept in the heap, as the avflow command runs "
                        "(avflow.heap; benchmarks/heap.py compares the two)")  # fmt: skip
    args = parser.parse_args()
    check_output(parser, args.json)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if "fp32" not in args.precision:
        args.precision = ["fp32", *args.precision]  # bf16 is measured against fp32
    if args.compile and (missing := compiler_missing()) and args.device.type == "cpu":
        parser.error(f"--compile: {missing}")
    args.audio_seconds = args.audio_seconds or args.duration
    return args


def summary(rows: list[dict]) -> list[dict]:
    """One row per variant and stage: each way's seconds, and its speed-up over plain (or avflow = plain)."""
    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["stage"]), {})[r["way"]] = r
    table = []
    for (variant, stage), ways in groups.items():
        base = ways.get("plain") or ways.get("avflow = plain")
        row = {"variant": variant, "stage": stage}
        for name in ("plain", "avflow = plain", "avflow", "avflow compiled", "avflow bf16", "avflow tf32", "reference"):
            if name in ways:
                row[f"{name} s"] = ways[name]["seconds"]
                if base is not None and ways[name] is not base:
                    row[f"{name} x"] = base["seconds"] / ways[name]["seconds"]
        if "avflow" in ways and ways["avflow"].get("max |diff|") is not None:
            row["max |diff|"] = ways["avflow"]["max |diff|"]
        table.append(row)
    columns = list(dict.fromkeys(k for row in table for k in row))
    return [{c: row.get(c, "") for c in columns} for row in table]


def main() -> None:
    args = parse_args()
    heap = "kept (avflow.heap)" if args.keep_freed_memory and keep_freed_memory() else "glibc's defaults"
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run = Run(args, device)
    load_before = load_average()
    started = time.perf_counter()
    set_tf32(False)
    run.peaks["fp32"] = matmul_peak_gflops(device=device)
    if "bf16" in args.precision:
        run.peaks["bf16"] = matmul_peak_gflops(dtype=torch.bfloat16, device=device)
    if device.type == "cuda":
        set_tf32(True)
        run.peaks["tf32"] = matmul_peak_gflops(device=device)
        set_tf32(False)
    print(f"{platform.processor() or platform.machine()}, {device}, threads={torch.get_num_threads()}, "
          f"torch {torch.__version__}; matmul peak " + ", ".join(f"{k} {v:.3g}" for k, v in run.peaks.items())
          + f" GFLOP/s; load {load_before}; heap {heap}" + ("; --tiny: narrow models, the numbers only test the script"
                                               if args.tiny else ""), flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        run.video = make_video(Path(tmp) / "clip.mp4", args.duration)
        encoders = models_for(args.variants[0], args.tiny)  # CLIP and Synchformer are the same for every variant
        needs_clip = {"clip", "text"} & set(args.stages) or args.end_to_end
        shared_clip = clip_model(run, encoders.clip) if needs_clip else None
        if set(ENCODER_STAGES) & set(args.stages):
            print(f"{SHARED}:", flush=True)
        if "frames" in args.stages:
            stage_frames(run, SHARED)
        if "clip" in args.stages:
            stage_clip(run, SHARED, shared_clip)
        if "sync" in args.stages:
            stage_sync(run, SHARED, encoders.sync)
        if "text" in args.stages:
            stage_text(run, SHARED, shared_clip)
        for variant in args.variants:
            print(f"{variant}:", flush=True)
            models = models_for(variant, args.tiny)
            config = models.network
            if {"network", "vae", "vocoder"} & set(args.stages):
                if "network" in args.stages:
                    latents = stage_network(run, variant, config)
                else:
                    n = sequence_lengths(args.duration, config.sample_rate, config.hop_length).latent
                    latents = torch.randn(1, n, config.latent_dim, device=device)
                if {"vae", "vocoder"} & set(args.stages):
                    mel = stage_vae(run, variant, models, latents) if "vae" in args.stages else None
                    z, scale = audio_piece(run, latents, config.sample_rate, config.hop_length)
                    if mel is None:
                        mel = torch.randn(1, models.vae.data_dim, 2 * z.shape[1], device=device)
                    if "vocoder" in args.stages:
                        stage_vocoder(run, variant, models.vocoder, mel, scale)
            if "mux" in args.stages:
                stage_mux(run, variant, config.sample_rate)
            end_to_end_sums(run, variant)
            if args.end_to_end:
                end_to_end_run(run, variant, models, shared_clip)
            gc.collect()
        peak_after = matmul_peak_gflops(device=device)
    run.peaks["fp32 (after)"] = peak_after
    load_after = load_average()

    print()
    columns = ("variant", "stage", "way", "seconds", "GFLOP", "GFLOP/s", "% of peak", "peak MB", "+MB", "speed-up",
               "max |diff|", "rel dev", "note")  # fmt: skip
    table = [{c: ("" if r.get(c) is None else r[c]) for c in columns} for r in run.rows]
    size = f"{args.duration:g} s clip, Euler {args.steps}" + (", --tiny models" if args.tiny else "")
    print_table(table, f"foley stages, {size}, {device}, threads={torch.get_num_threads()}")
    print()
    print_table(summary(run.rows), "baseline (plain) vs avflow, seconds for the whole clip; x = speed-up over plain")
    print("matmul peak (2048^2, GFLOP/s): " + ", ".join(f"{k} {v:.3g}" for k, v in run.peaks.items()))
    print(f"load average: before {load_before}; after {load_after}")
    print(f"this run took {time.perf_counter() - started:.0f} s")
    print("plain = the reference's way (benchmarks/baseline/); seconds are for the whole clip; % of peak uses the "
          "fp32 peak measured before the stages (bf16 rows: the bf16 peak)")  # fmt: skip
    if args.json:
        facts = {
            "machine": platform.processor() or platform.machine(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "peaks_gflops": run.peaks,
            "load_before": load_before,
            "load_after": load_after,
            "heap": heap,
            "args": {k: str(v) if isinstance(v, Path | torch.device) else v for k, v in vars(args).items()},
        }
        args.json.write_text(json.dumps({"facts": facts, "rows": run.rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_main(main)
