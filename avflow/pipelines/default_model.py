"""The shipped default joint model: its folder, its `config.json` (a frozen `DefaultModelConfig`) and the loader that
turns the folder into a `JointPipeline` (joint model + world codecs + text encoder + spatialiser)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from avflow.codecs.world_audio_vae import WorldAudioVAEConfig
from avflow.codecs.world_video_ae import WorldVideoAEConfig
from avflow.config import from_dict
from avflow.errors import ConfigError, WeightsError
from avflow.flow.sampling import SamplingConfig
from avflow.models.joint import JointConfig
from avflow.pipelines.generate import JointPipeline

WEIGHT_FILES = ("joint.safetensors", "video_ae.safetensors", "audio_vae.safetensors", "config.json")


@dataclass(frozen=True, kw_only=True)
class DefaultModelConfig:
    """A model folder's `config.json`: the three networks, the clip format, the sampling settings, the text encoder."""

    joint: JointConfig
    video_ae: WorldVideoAEConfig
    audio_vae: WorldAudioVAEConfig
    video_ae_without_output_norms: bool = False  # codec surgery the weights were trained with (`codecs/surgery.py`)
    audio_vae_without_output_norms: bool = False
    text_encoder: str = "minilm"
    duration: float  # default clip length (s)
    fps: float
    height: int
    width: int
    sample_rate: int
    sampling: SamplingConfig  # the model's default sampling settings (`avflow generate --steps / --cfg` override)
    default_prompt: str = "a ball bounces on the floor"
    training: dict = field(default_factory=dict)  # how the weights were made (for the model card)


def default_model_dir() -> Path:
    """The shipped weights folder inside the installed package."""
    return Path(str(resources.files("avflow") / "assets" / "default_model"))


def read_default_config(path: str | Path | None = None) -> DefaultModelConfig:
    """The `config.json` of a model folder (default: the shipped one), strictly, without loading any weights."""
    folder = Path(path) if path is not None else default_model_dir()
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{folder}: cannot read config.json: {str(exc).splitlines()[0]}") from None
    try:
        return from_dict(DefaultModelConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{folder / 'config.json'}: {exc}") from None


def load_default_model(path: str | Path | None = None) -> JointPipeline:
    """The shipped default model (or one exported the same way to `path`) on the CPU, in eval mode."""
    from avflow.codecs.surgery import without_output_norms
    from avflow.codecs.world_audio_vae import WorldAudioVAE
    from avflow.codecs.world_video_ae import WorldVideoAE
    from avflow.encoders.text import load_text_encoder
    from avflow.models.joint import JointModel
    from avflow.weights import load_strict, read_state_dict

    folder = Path(path) if path is not None else default_model_dir()
    missing = [f for f in WEIGHT_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsError(f"{folder}: default model files missing: {', '.join(missing)}")
    config = read_default_config(folder)
    try:
        model = JointModel(config.joint)
        video_ae = WorldVideoAE(config.video_ae)
        audio_vae = WorldAudioVAE(config.audio_vae)
        if config.video_ae_without_output_norms:
            video_ae = without_output_norms(video_ae)
        if config.audio_vae_without_output_norms:
            audio_vae = without_output_norms(audio_vae)
        for module, name in ((model, "joint"), (video_ae, "video_ae"), (audio_vae, "audio_vae")):
            file = folder / f"{name}.safetensors"
            state = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(file).items()}  # fp16
            load_strict(module, state, str(file))
            module.eval().requires_grad_(False)
    except (ValueError, RuntimeError, OSError, WeightsError) as exc:
        raise WeightsError(f"{folder}: cannot load the default model: {str(exc).splitlines()[0]}") from None
    text_encoder = load_text_encoder(config.text_encoder, max_len=model.config.text_len)
    return JointPipeline(model, video_ae, audio_vae, text_encoder, config)
