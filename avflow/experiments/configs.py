"""Experiment and size configs: dataclasses (the source of truth) mapped strictly from `experiments/NAME.yaml`
(shipped in the package, avflow/assets/experiments).

Every arm of an experiment shares the data, steps, seeds and sampling NFE; arms differ only by model overrides
(onto `avflow.models.joint.JointConfig`), the streams trained and generated, and the guidance at sampling time.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from avflow import assets_dir
from avflow.config import from_dict, read_yaml
from avflow.errors import ConfigError, MissingPathError
from avflow.flow.guidance import PRESETS
from avflow.flow.solvers import EVALUATIONS_PER_STEP
from avflow.models.joint import JointConfig
from avflow.nn.fusion import FUSIONS
from avflow.nn.temporal_alignment import ALIGNMENTS

EXPERIMENTS_DIR = assets_dir() / "experiments"  # in the package: an installed avflow has them too

# What a trained arm is scored on (`arm.evaluate_samples`, names only; an experiment's `metrics` must be among them):
# the measures of `avflow.eval.report.clip_measures` on a world clip (no reference, no offset in its meta), each the
# mean over the clips where it is defined (NaN, its name kept, when it is defined on none) with that count as
# `<metric>_n`; the trajectory residual split by contact, the Fréchet distances (`fd_*_n`: clips per set) and the
# sampling budget per sample. Arms without audio get the `phys_` ones, `fd_video` and the budget only. Signed
# offsets are not scored: a mean across clips lets +120 and −120 ms cancel (SIGNED_METRICS names their |x|).
CLIP_METRICS = ("n_onsets", "sync_offset_abs_ms", "sync_gt_abs_ms", "side_gt_agreement", "side_agreement",
                "follows_object", "av_align", "phys_residual_px", "phys_gravity_fit", "phys_permanence",
                "phys_energy_growth", "ild_db", "itd_us")  # fmt: skip
SIGNED_METRICS = {"sync_offset_ms": "sync_offset_abs_ms", "sync_gt_ms": "sync_gt_abs_ms"}  # signed -> its |x|
_AVERAGED = (*CLIP_METRICS, "phys_residual_px_heavy", "phys_residual_px_free", "fd_av", "fd_audio", "fd_video")
EVAL_METRICS = (*_AVERAGED, *(f"{m}_n" for m in _AVERAGED), "nfe", "sampling_steps")


@dataclass
class ArmConfig:
    name: str
    model: dict = field(default_factory=dict)  # overrides onto JointConfig, e.g. {fusion: avfull}
    streams: list[str] = field(default_factory=lambda: ["video", "audio"])
    guidance: Literal["none", "plain", "modality", "modality_text"] = "plain"  # a preset of avflow.flow.guidance
    note: str = ""

    def __post_init__(self) -> None:
        if not self.streams or set(self.streams) - {"video", "audio"}:
            raise ConfigError(f"arm {self.name}: streams must be a non-empty subset of [video, audio]")


@dataclass
class ExperimentConfig:
    name: str
    description: str
    arms: list[ArmConfig]
    metrics: list[str]  # reported and plotted, in order
    baseline: str  # the arm every other is compared with
    claim: str = ""
    budget: Literal["total", "video"] = "total"  # parameters held within 5 %: the whole model or the video tower
    cfg_strength: float = 3.0
    text_cfg_strength: float = 2.0  # the empty-text branch of `modality_text`
    seeds: int = 3

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or self.baseline not in names:
            raise ConfigError(f"experiment {self.name}: arm names must be unique and include baseline {self.baseline}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"seeds: training seeds per arm must be an integer >= 1, got {self.seeds!r}")


@dataclass
class SizeConfig:
    """Everything the size changes, identical for all arms of a run."""

    width: int
    height: int
    duration: float
    fps: int
    max_objects: int
    n_train: int
    n_eval: int
    video_patch: tuple[int, int, int]
    video_heads: int
    video_head_dim: int
    video_layers: int
    video_ffn: int
    audio_hidden: int
    audio_depth: int
    audio_fused_depth: int
    audio_heads: int
    audio_bands: int  # band energies per ear in the audio stream (fixed codecs only)
    text_encoder: Literal["tiny", "minilm"]
    steps: int
    batch_size: int
    lr: float
    nfe: int  # model evaluations per generated sample, every guidance branch counted
    ema: bool
    heavy_min_events: int = 3  # clips with at least this many impacts are contact-heavy
    free_max_events: int = 0  # clips with at most this many are contact-free
    # how clips become streams (avflow.experiments.world_data): "fixed" = pixels and band energies, untrained;
    # "world" = the shipped world codecs' latents (64x64, 16 fps, 16 kHz; frames and samples whole latents)
    codecs: Literal["fixed", "world"] = "fixed"


SIZES: dict[str, SizeConfig] = {
    "tiny": SizeConfig(
        width=32,
        height=32,
        duration=2.0,
        fps=16,
        max_objects=2,
        n_train=48,
        n_eval=8,
        video_patch=(4, 8, 8),
        video_heads=2,
        video_head_dim=16,
        video_layers=2,
        video_ffn=64,
        audio_hidden=32,
        audio_depth=2,
        audio_fused_depth=1,
        audio_heads=2,
        audio_bands=12,
        text_encoder="tiny",
        steps=150,
        batch_size=8,
        lr=2e-3,
        nfe=24,
        ema=False,
        heavy_min_events=2,
    ),  # fmt: skip
    "small": SizeConfig(
        width=64,
        height=64,
        duration=4.0,
        fps=16,
        max_objects=4,
        n_train=512,
        n_eval=32,
        video_patch=(2, 8, 8),
        video_heads=4,
        video_head_dim=32,
        video_layers=4,
        video_ffn=512,
        audio_hidden=128,
        audio_depth=4,
        audio_fused_depth=2,
        audio_heads=2,
        audio_bands=20,
        text_encoder="minilm",
        steps=4000,
        batch_size=16,
        lr=5e-4,
        nfe=50,
        ema=True,
    ),  # fmt: skip
}

# the smallest size on the world codecs, only for the slow smoke test: tiny's model on 64x64 clips coded by the
# world codecs (video patch (1, 2, 2) on their (16, T/4, 8, 8) latents; the audio codec sets the audio streams)
SIZES["world_smoke"] = replace(SIZES["tiny"], width=64, height=64, n_train=8, n_eval=3, video_patch=(1, 2, 2),
                               audio_bands=0, batch_size=4, nfe=6, codecs="world")  # fmt: skip


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load_experiment(name_or_path: str) -> ExperimentConfig:
    """`experiments/NAME.yaml` (or a path to a YAML file) -> ExperimentConfig, strictly. An argument that looks like
    a path (a / in it, or a .yaml/.yml suffix) is one: a missing file says so, not "unknown experiment"."""
    path, shipped = Path(name_or_path), EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    looks_like_path = is_yaml or "/" in name_or_path or os.sep in name_or_path
    names = ", ".join(experiment_names())
    if not looks_like_path and shipped.is_file():
        path = shipped
    elif path.is_file() and not is_yaml:
        raise ConfigError(f"{name_or_path}: not a .yaml or .yml file name (an experiment file is YAML named so; "
                          f"or give a shipped experiment's name: {names})")  # fmt: skip
    elif looks_like_path and not path.is_file():
        raise MissingPathError(f"{name_or_path}: {'a folder, not a YAML file' if path.is_dir() else 'no such file'}")
    elif not looks_like_path:
        raise ConfigError(f"unknown experiment {name_or_path!r} (choose from {names}, or give a YAML file's path)")
    raw = read_yaml(path)  # its errors name the file already
    try:
        exp = from_dict(ExperimentConfig, raw)
        check_experiment(exp)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return exp


def metric_names(streams: list[str]) -> tuple[str, ...]:
    """The metrics an arm with these streams is scored on: `EVAL_METRICS`, without audio only the video ones."""
    if "audio" in streams:
        return EVAL_METRICS
    video = ("fd_video", "fd_video_n", "nfe", "sampling_steps")
    return tuple(m for m in EVAL_METRICS if m.startswith("phys_") or m in video)


def unavailable_reason(model: dict) -> str:
    """Why an arm cannot run: its model names a fusion or temporal alignment the joint model does not implement (yet),
    the one reason an arm is reported as "not available"; "" when both exist."""
    fusion, alignment = model.get("fusion"), model.get("alignment")
    if isinstance(fusion, str) and fusion not in FUSIONS:
        return f"fusion {fusion!r} is not implemented (avflow.nn.fusion.FUSIONS: {', '.join(FUSIONS)})"
    if isinstance(alignment, str) and alignment not in ALIGNMENTS:
        return f"alignment {alignment!r} is not implemented (avflow.nn.temporal_alignment: {', '.join(ALIGNMENTS)})"
    return ""


# How close (difflib ratio) an unknown fusion or alignment name must be to an implemented one to count as its typo:
# full_atention 0.96, av_sync 0.92, avsnyc 0.83 are; cross_attention (0.69 to full_attention), a variant of its own
# not implemented yet, is not (its arm is "not available").
TYPO_CUTOFF = 0.8


def check_variant_names(model: dict, path: str) -> None:
    """A fusion or alignment name that is not implemented but close to one that is (`TYPO_CUTOFF`) is a typo: a
    one-line ConfigError naming the key path and the name meant, not an arm reported as "not available"."""
    for key, known in (("fusion", FUSIONS), ("alignment", ALIGNMENTS)):
        name = model.get(key)
        if isinstance(name, str) and name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=TYPO_CUTOFF)
            if close:
                raise ConfigError(f"{path}.{key}: unknown {key} {name!r} (did you mean {close[0]!r}?)")


def check_arm_model(model: dict, path: str) -> None:
    """The arm's overrides build a JointConfig (on its defaults) strictly: an unknown key, a wrong type, options
    that do not fit or a misspelt variant name (`check_variant_names`) are a one-line ConfigError naming the key
    path. A variant not implemented is left out (its arm is not available, not wrong); `runner.plan_arms` checks the
    model again at the size's widths."""
    check_variant_names(model, path)
    reason = unavailable_reason(model)
    skip = {"fusion", "fusion_options", "alignment"} if reason.startswith("fusion") else {"alignment"} if reason else ()
    from_dict(JointConfig, {k: v for k, v in model.items() if k not in skip}, path)


def check_experiment(exp: ExperimentConfig) -> None:
    """Before anything trains: every arm's model (`check_arm_model`), a baseline that can run, and metric names the
    arms are scored on (an unknown one would only show as n/a), guidance strengths `SamplingConfig` takes (it is
    built with them only after training); one-line ConfigErrors naming the key path."""
    from avflow.flow.sampling import SamplingConfig

    SamplingConfig(cfg_strength=exp.cfg_strength, text_cfg_strength=exp.text_cfg_strength)
    for i, arm in enumerate(exp.arms):
        check_arm_model(arm.model, f"arms[{i}].model")
    baseline = next(a for a in exp.arms if a.name == exp.baseline)
    if reason := unavailable_reason(baseline.model):
        raise ConfigError(f"baseline: arm {exp.baseline} is not available ({reason}); choose another baseline")
    scored = [m for m in EVAL_METRICS if any(m in metric_names(a.streams) for a in exp.arms)]
    for i, metric in enumerate(exp.metrics):
        if metric in SIGNED_METRICS:
            raise ConfigError(f"metrics[{i}]: {metric} is a signed offset, and its mean across clips lets +120 and "
                              f"-120 ms cancel; use {SIGNED_METRICS[metric]} (its |x|)")  # fmt: skip
        if metric in EVAL_METRICS and metric not in scored:
            raise ConfigError(f"metrics[{i}]: no arm generates audio, so none is scored on {metric!r}")
        if metric not in scored:
            close = difflib.get_close_matches(metric, scored, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            names = ", ".join(scored)
            raise ConfigError(f"metrics[{i}]: unknown metric {metric!r} ({hint}the arms are scored on {names})")


def get_size(name: str) -> SizeConfig:
    if name not in SIZES:
        raise ConfigError(f"unknown size {name!r} (choose from {', '.join(SIZES)})")
    return SIZES[name]


def evaluations_per_step(solver: str) -> int:
    """Velocity evaluations per step of a fixed-step solver; a one-line error for an adaptive or unknown one."""
    if solver not in EVALUATIONS_PER_STEP:
        raise ConfigError(f"solver {solver!r}: matching the NFE needs a fixed-step solver "
                          f"({', '.join(EVALUATIONS_PER_STEP)})")  # fmt: skip
    return EVALUATIONS_PER_STEP[solver]


def evaluations_per_sampling_step(guidance: str, solver: str = "euler") -> int:
    """Model evaluations of one solver step: (1 + the preset's branches) × the solver's velocity evaluations."""
    return (1 + len(PRESETS[guidance])) * evaluations_per_step(solver)


def sampling_steps(guidance: str, nfe: int, solver: str = "euler") -> int:
    """Solver steps so that steps × model evaluations per step (`evaluations_per_sampling_step`) ≤ nfe (the NFE
    budget is matched across arms). A budget below one step is a one-line error: taking one step anyway would spend
    more than the budget, and arms would no longer be compared at matched NFE."""
    per_step = evaluations_per_sampling_step(guidance, solver)
    if nfe < per_step:
        raise ConfigError(f"an NFE budget of {nfe} is below one step of guidance {guidance} with the {solver} solver "
                          f"({per_step} evaluations)")  # fmt: skip
    return nfe // per_step


_ABSENT = "(not set)"  # stands for a setting one side of `settings_difference` lacks


def _first_difference(recorded, now, path: str) -> tuple[str, object, object] | None:
    """(key path, recorded value, value now) where two JSON trees first differ, in `now`'s key order; None if equal."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        for key in [*now, *(k for k in recorded if k not in now)]:
            where = f"{path}.{key}" if path else key
            if key not in recorded or key not in now:
                return where, recorded.get(key, _ABSENT), now.get(key, _ABSENT)
            if found := _first_difference(recorded[key], now[key], where):
                return found
        return None
    if isinstance(recorded, list) and isinstance(now, list) and len(recorded) == len(now):
        pairs = zip(recorded, now, strict=True)
        return next((d for i, (r, n) in enumerate(pairs) if (d := _first_difference(r, n, f"{path}[{i}]"))), None)
    return None if recorded == now else (path, recorded, now)


def _short(value) -> str:
    text = value if value is _ABSENT else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def settings_difference(recorded: dict | None, now: dict) -> str:
    """The first setting that differs between those recorded with a result and this run's (compared as JSON), e.g.
    "steps 2 (this run: 6)", or that none were recorded (a result written before they were); empty when equal."""
    if recorded is None:
        return "no recorded settings (written before avflow recorded them)"
    found = _first_difference(recorded, json.loads(json.dumps(now)), "")
    return "" if found is None else f"{found[0]} {_short(found[1])} (this run: {_short(found[2])})"
