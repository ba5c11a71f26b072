"""One arm × one seed: build the joint model for the arm, train it with `avflow.train`, sample the eval set with
the arm's guidance at the shared NFE budget, decode and score with `avflow.eval`."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from avflow.config import from_dict, to_dict
from avflow.errors import ConfigError
from avflow.experiments import world_data as wd
from avflow.experiments.configs import ArmConfig, ExperimentConfig, SizeConfig, sampling_steps
from avflow.flow.sampling import SamplingConfig, sample_with


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if v and isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def base_model(size: SizeConfig) -> dict:
    """The JointConfig (as a dict) every arm starts from at this size; channels, strides and rates are those of the
    size's codecs (`world_data.stream_layout`)."""
    layout = wd.stream_layout(size)
    model = {
        "video": {
            "patch_size": list(size.video_patch), "num_attention_heads": size.video_heads,
            "attention_head_dim": size.video_head_dim, "in_channels": layout.video_channels,
            "out_channels": layout.video_channels, "text_dim": 384, "ffn_dim": size.video_ffn,
            "num_layers": size.video_layers, "freq_dim": 64,
        },
        "audio": {
            "latent_dim": len(layout.audio_streams) * layout.audio_channels, "text_dim": 384,
            "hidden_dim": size.audio_hidden, "depth": size.audio_depth, "fused_depth": size.audio_fused_depth,
            "num_heads": size.audio_heads, "text_seq_len": 32,
        },
        "fusion": "bidirectional", "text_dim": 384, "text_len": 32, "video_fps": float(size.fps),
        "video_temporal_stride": layout.video_temporal_stride, "audio_latent_rate": layout.audio_latent_rate,
    }  # fmt: skip
    if layout.audio_streams != ("audio",):  # only then: the dict (hence the train key) of fixed sizes stays as it was
        model["audio_streams"] = list(layout.audio_streams)
    return model


def arm_model(arm: ArmConfig, size: SizeConfig) -> dict:
    return _merge(base_model(size), arm.model)


def build_model(model: dict):
    """JointModel from a config dict; ConfigError when the variant does not exist (yet)."""
    from avflow.models.joint import JointConfig, JointModel

    try:
        return JointModel(from_dict(JointConfig, model, "model"))
    except (TypeError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot build model: {exc}") from None


def count_params(model, budget: str, streams: list[str]) -> int:
    """Parameters in use: the video tower for `video` budgets; else every module the arm's streams run through."""
    parts = [model.video] if budget == "video" or streams == ["video"] else []
    if budget == "total":
        if "audio" in streams and streams != ["audio"] or streams == ["audio"]:
            parts = [model.audio] if streams == ["audio"] else [model.video, model.audio, model.fusion]
    return sum(p.numel() for m in parts for p in m.parameters())


def pad_to_budget(models: dict[str, dict], counts: dict[str, int], arms: dict[str, ArmConfig], budget: str,
                  tolerance: float = 0.05) -> tuple[dict[str, dict], dict[str, int]]:  # fmt: skip
    """Widen the video tower's FFN of arms more than `tolerance` below the largest until all are within it."""
    target = max(counts.values())
    for name, model in models.items():
        while counts[name] < (1 - tolerance) * target:
            model["video"]["ffn_dim"] += 8
            counts[name] = count_params(build_model(model), budget, arms[name].streams)
    low, high = min(counts.values()), max(counts.values())
    if high > (1 + tolerance) * low:
        raise ConfigError(f"parameter budgets differ by more than {tolerance:.0%}: {counts}")
    return models, counts


def device_type(device: str) -> str:
    """Where `device` ("cpu", "cuda", "auto") trains: the training precision follows it (bf16 autocast on CUDA)."""
    return "cuda" if device == "cuda" or device == "auto" and torch.cuda.is_available() else "cpu"


def training_settings(size: SizeConfig, steps: int, device: str) -> dict:
    """What a training run depends on besides its model, streams, seed and data (one data set per output folder)."""
    device = device_type(device)
    return {"steps": steps, "batch_size": size.batch_size, "lr": size.lr, "ema": size.ema, "device": device}


def train_key(model: dict, streams: list[str], training: dict) -> str:
    """Arms with the same model, streams and `training_settings` share one training run per seed (e.g. the guidance
    arms); other steps (or batch size, ...) train in another folder, never resume this one's weights."""
    blob = json.dumps({"model": model, "streams": sorted(streams), "training": training}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# What the scores mean (`evaluate_samples` and the `avflow.eval` measures it runs): bumped when one changes, so a
# result scored before is refused by the settings check rather than averaged with new ones. 2 (2026-12-06): no
# signed offsets, `<metric>_n` counts, the physics fixes (rest frames, rolling index, object contacts left out of
# energy growth), the Fréchet features at 16 kHz and the scaled eps (docs/metrics.md). 3 (2026-12-07): the video
# Fréchet features' motion over 0.2 s whatever the frame rate (`fd_video`, `fd_av`), and visual events and
# tracking that read 4:2:0 chroma as mixed (`chroma_reach`; the sync, side and physics measures of decoded video).
# 4 (2026-12-07): no contacts from frames where a track holds two objects of near colours (`Tracks.spread`). 5
# (2026-12-07): an object appearing beside one of its colour is a brightening event (`EventConfig.novel_fraction`).
# 6 (2026-12-07): offsets are matched on where each sound leaves the noise floor (`AudioOnsets.starts`). 7
# (2026-12-07): an onset's novelty is its own sound's (`OnsetConfig.quiet_s`), and an event whose ILD and ITD disagree
# is read again over its sound (`EventCue.disagree`). 8 (2026-12-07): an object appearing beside one of a near
# colour is a brightening event when its colour lasts (`EventConfig.appear_fraction`). 9 (2026-12-07): a side from
# one cue alone at the onset yields to the sound's where both cues agree (`side.event_cues`). 10 (2026-12-07): a
# fade-in found at its second frame is timed at its first (`EventConfig.fade_share`), and an event with no onset or
# energy rise paired takes the late attack of a sound that starts under the noise (`CueConfig.late_attack_s`). 11
# (2026-12-07): an onset whose own sound stays within 3.5 dB of the clip's noise is a flicker of it and is dropped
# (`OnsetConfig.min_sound_db`).
METRICS_VERSION = 11


def arm_settings(exp: ExperimentConfig, arm: ArmConfig, model_cfg: dict, size: SizeConfig, steps: int, seed: int,
                 checksum: str | None, device: str = "cpu") -> dict:  # fmt: skip
    """Everything the metrics of one arm × seed depend on, recorded with them (`runner.run_arms` reuses a result
    only when they are equal): the steps, the seed, the size (data, widths, training, NFE, contact split), the
    codecs, the training device, the arm's resolved model (padded to the budget), streams and guidance, the
    guidance strengths, and `METRICS_VERSION` (results without it were scored before version 2)."""
    return {
        "steps": steps, "seed": seed, "size": to_dict(size), "codecs_checksum": checksum, "device": device_type(device),
        "model": model_cfg, "streams": list(arm.streams), "guidance": arm.guidance, "cfg_strength": exp.cfg_strength,
        "text_cfg_strength": exp.text_cfg_strength, "metrics_version": METRICS_VERSION,
    }  # fmt: skip


def train_arm(model: dict, streams: list[str], size: SizeConfig, steps: int, seed: int, data: Path, out: Path,
              device: str = "cpu", threads: int | None = 1) -> Path:  # fmt: skip
    """Train (or resume from the trainer's latest checkpoint) and return the weights file to sample with."""
    from avflow.train.config import (
        CheckpointConfig,
        ComponentConfig,
        DataConfig,
        EMAConfig,
        LogConfig,
        LoopConfig,
        OptimConfig,
        ScheduleConfig,
        TrainConfig,
        validate,
    )  # fmt: skip
    from avflow.train.trainer import train

    weights = out / ("ema_0.05.safetensors" if size.ema else "model.safetensors")
    if weights.is_file():
        return weights
    file = data / ("train_video.safetensors" if streams == ["video"] else "train_video_audio.safetensors")
    config = TrainConfig(
        out_dir=str(out),
        model=ComponentConfig("joint", model),
        task=ComponentConfig("flow_matching", {"timesteps": "logit_normal", "cond_dropout": 0.1}),
        data=DataConfig(train=ComponentConfig("tensor_file", {"file": str(file)})),
        train=LoopConfig(steps=steps, batch_size=size.batch_size, seed=seed, device=device, threads=threads),
        optim=OptimConfig(lr=size.lr, betas=(0.9, 0.99), weight_decay=0.01, grad_clip=1.0),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=min(50, steps // 10), min_lr_ratio=0.1),
        ema=EMAConfig(enabled=size.ema, sigma_rels=(0.05,)),
        log=LogConfig(every=max(1, steps // 10), tensorboard=False, progress=False),
        checkpoint=CheckpointConfig(every=max(1, steps // 4), keep_last=1, resume="auto"),
    )
    train(validate(config))
    return weights


@torch.no_grad()
def generate(model, streams: list[str], cond: dict, shapes: dict, sampling: SamplingConfig, seed: int):
    g = torch.Generator().manual_seed(seed)
    noise = {s: torch.randn(shapes[s], generator=g) for s in streams}
    return sample_with(sampling, model, noise, cond)


def evaluate_samples(video: np.ndarray | None, audio: np.ndarray | None, data: Path, manifest: dict,
                     size: SizeConfig) -> dict[str, float]:  # fmt: skip
    """Per-clip metrics against ground truth, each the mean over the clips where it is defined with that count as
    `<metric>_n` (signed offsets left out: `configs.SIGNED_METRICS`), the contact split and the Fréchet distances to
    the references (`fd_*_n`: clips per set)."""
    from avflow.eval import distribution
    from avflow.eval.report import SIGNED_MS, EvalClip, clip_measures
    from avflow.world.dataset import load_clip

    sr = manifest["sample_rate"]
    per_clip, preds, refs = [], [], []
    for i, row in enumerate(manifest["eval"]):
        ref = load_clip(data / "eval" / row["id"])
        frames = video[i] if video is not None else None
        wav = audio[i] if audio is not None else np.zeros_like(ref.audio)
        clip = EvalClip(row["id"], wav, sr, frames, float(size.fps), ref.meta)
        m = {k: v.get() for k, v in clip_measures(clip).measures.items() if k not in SIGNED_MS}  # undefined: NaN
        if audio is None:
            m = {k: v for k, v in m.items() if k.startswith("phys_")}
        m["n_events"] = row["n_events"]
        per_clip.append(m)
        preds.append(clip)
        refs.append(EvalClip(row["id"], ref.audio, sr, ref.frames, float(size.fps), ref.meta))
    out: dict[str, float] = {}
    keys = sorted({k for m in per_clip for k in m if k != "n_events"})
    for k in keys:
        v = np.array([m.get(k, math.nan) for m in per_clip], dtype=float)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
        out[f"{k}_n"] = float(np.isfinite(v).sum())  # clips where it is defined
        for label, keep in (
            ("heavy", [m["n_events"] >= size.heavy_min_events for m in per_clip]),
            ("free", [m["n_events"] <= size.free_max_events for m in per_clip]),
        ):
            if k.startswith("phys_residual"):
                sel = v[np.array(keep)]
                out[f"{k}_{label}"] = float(np.nanmean(sel)) if np.isfinite(sel).any() else math.nan
                out[f"{k}_{label}_n"] = float(np.isfinite(sel).sum())
    for modality in ["video"] if audio is None else ["av", "audio", "video"]:
        emb = distribution.StatsEmbedder(modality)
        a = np.stack([emb(c.audio, c.sample_rate, c.frames, c.fps) for c in preds])
        b = np.stack([emb(c.audio, c.sample_rate, c.frames, c.fps) for c in refs])
        out[f"fd_{modality}"] = distribution.frechet_distance(a, b)
        out[f"fd_{modality}_n"] = float(len(preds))  # clips per set (predictions = references)
    return out


def run_arm(exp: ExperimentConfig, arm: ArmConfig, model_cfg: dict, size: SizeConfig, steps: int, seed: int,
            data: Path, work: Path, manifest: dict, device: str = "cpu", threads: int | None = 1) -> dict:  # fmt: skip
    """Train (shared per train key), generate the eval set, score it; returns the metrics."""
    from avflow.weights import load_strict, read_state_dict

    key = train_key(model_cfg, arm.streams, training_settings(size, steps, device))
    run_dir = work / f"train_{key}" / f"seed_{seed}"
    weights = train_arm(model_cfg, arm.streams, size, steps, seed, data, run_dir, device, threads)
    model = build_model(model_cfg)
    load_strict(model, read_state_dict(weights), str(weights))
    model.eval()
    ev = read_state_dict(data / "eval.safetensors")
    cond = {"text": ev["cond.text"], "text_mask": ev["cond.text_mask"]}
    streams = wd.stream_layout(size).model_streams(arm.streams)  # audio: `audio`, or `left` and `right`
    shapes = {s: tuple(ev[s].shape) for s in streams}
    steps_s = sampling_steps(arm.guidance, size.nfe)
    sampling = SamplingConfig(steps=steps_s, cfg_strength=exp.cfg_strength, text_cfg_strength=exp.text_cfg_strength,
                              guidance=arm.guidance)  # fmt: skip
    torch.manual_seed(seed)
    result = generate(model, streams, cond, shapes, sampling, seed=10_000 + seed)
    video, audio = wd.decode_streams(result.streams, size, manifest["sample_rate"])  # decoded through the codecs
    metrics = evaluate_samples(video, audio, data, manifest, size)
    metrics |= {"nfe": float(result.nfe), "sampling_steps": float(steps_s)}  # per sample, every branch counted
    return metrics
