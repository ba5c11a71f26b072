"""Experiment and size configs: dataclasses (the source of truth) mapped strictly from `experiments/NAME.yaml`.

Every arm of an experiment shares the data, steps, seeds and sampling NFE; arms differ only by model overrides
(onto `avflow.models.joint.JointConfig`), the streams trained and generated, and the guidance at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from avflow.config import from_dict, read_yaml
from avflow.errors import ConfigError
from avflow.flow.guidance import PRESETS
from avflow.flow.solvers import EVALUATIONS_PER_STEP

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


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
    """`experiments/NAME.yaml` (or a path to a YAML file) -> ExperimentConfig, strictly."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown experiment {name_or_path!r} (choose from {', '.join(experiment_names())})")
    raw = read_yaml(path)  # its errors name the file already
    try:
        return from_dict(ExperimentConfig, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


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


def sampling_steps(guidance: str, nfe: int, solver: str = "euler") -> int:
    """Solver steps so that steps × model evaluations per step ((1 + the preset's branches) × the solver's velocity
    evaluations per step) ≤ nfe (the NFE budget is matched across arms)."""
    return max(1, nfe // ((1 + len(PRESETS[guidance])) * evaluations_per_step(solver)))
