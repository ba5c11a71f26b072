"""The shipped default joint model (v2): its folder, its `config.json` (a frozen `DefaultModelConfig`) and the loader
that turns the folder into a `JointPipeline` (joint model + world codecs + text encoder).

A model folder holds `joint.safetensors` (fp16) and `config.json`; the world codecs it was trained with come from
`avflow/assets/codecs`, or from the folder that `config.json`'s `codecs` names (relative to the model folder).
`codecs_checksum` records those codecs: loading the model with any others is a one-line `WeightsError`.

A training run folder of the joint model (`avflow train`'s out_dir, e.g. a fine-tune of the shipped model) loads
too (`run_model_config`): its network and weights (`avflow.weights.run_weights`: the EMA) with the other settings of
the model folder it started from.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from avflow.config import RUN_CONFIG, from_dict
from avflow.errors import ConfigError, MissingPathError, WeightsError, WeightsWarning
from avflow.flow.sampling import SamplingConfig
from avflow.models.joint import JointConfig
from avflow.pipelines.generate import JointPipeline

WEIGHT_FILES = ("joint.safetensors", "config.json")
V1_KEYS = ("video_ae", "audio_vae")  # the first format kept its own codecs in the folder (mono audio + spatialiser)


@dataclass(frozen=True, kw_only=True)
class DefaultModelConfig:
    """A model folder's `config.json`: the joint network, the codecs it was trained with, the clip format, the
    sampling settings, the text encoder and how clips longer than `duration` are windowed."""

    joint: JointConfig
    codecs_checksum: str  # sha256 of the world codecs the model was trained with (`avflow.codecs.world`)
    codecs: str | None = None  # codec folder relative to the model folder; None: the shipped avflow/assets/codecs
    text_encoder: str = "minilm"
    duration: float  # the length the model was trained on (s): default clip length and window length
    fps: float
    height: int
    width: int
    sample_rate: int
    sampling: SamplingConfig  # the model's default sampling settings (`avflow generate --steps / --cfg` override)
    overlap: float = 0.5  # s of context each window after the first takes from the one before (or the given clip)
    crossfade: float = 0.25  # s over which the decoded media of consecutive windows are blended (<= overlap)
    default_prompt: str = "a ball bounces on the floor"
    training: dict = field(default_factory=dict)  # how the weights were made (for the model card)

    def __post_init__(self) -> None:
        j = self.joint
        if j.audio_streams != ("left", "right"):
            raise ConfigError(f"joint.audio_streams: the default model generates binaural audio, so it must be "
                              f"[left, right], got {list(j.audio_streams)}")  # fmt: skip
        if j.video_fps != self.fps:
            raise ConfigError(f"fps {self.fps:g} differs from joint.video_fps {j.video_fps:g}")
        try:
            self.sampling.check_streams(self.streams)
        except ConfigError as exc:
            raise ConfigError(f"sampling: {exc}") from None
        if self.height % 8 or self.width % 8 or min(self.height, self.width) < 8:
            raise ConfigError(f"height and width must be multiples of 8, got {self.height}x{self.width}")
        frames = self.duration * self.fps / j.video_temporal_stride  # latent frames per window
        if not (math.isfinite(frames) and frames >= 2 and abs(frames - round(frames)) < 1e-6):
            raise ConfigError(f"duration {self.duration:g} s must be a whole number (>= 2) of video latent frames "
                              f"({j.video_temporal_stride} frames at {self.fps:g} fps each)")  # fmt: skip
        if not 0 < self.overlap <= self.duration / 2 or not 0 <= self.crossfade <= self.overlap:
            raise ConfigError(f"need 0 < overlap <= duration / 2 and 0 <= crossfade <= overlap, got overlap "
                              f"{self.overlap:g}, crossfade {self.crossfade:g}, duration {self.duration:g}"
                              )  # fmt: skip

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams the model samples: the video's latents and each ear's."""
        return ("video", *self.joint.audio_streams)

    def codec_dir(self, folder: Path) -> Path | None:
        """The codec folder of a model in `folder` (None: the shipped codecs)."""
        return None if self.codecs is None else Path(folder) / self.codecs


def default_model_dir() -> Path:
    """The shipped weights folder inside the installed package."""
    return Path(str(resources.files("avflow") / "assets" / "default_model"))


def read_default_config(path: str | Path | None = None) -> DefaultModelConfig:
    """The `config.json` of a model folder (default: the shipped one), strictly, without loading any weights."""
    folder = Path(path) if path is not None else default_model_dir()
    if not folder.is_dir():
        if folder.exists():
            raise WeightsError(f"{folder}: is a file; give the model's folder (config.json + joint.safetensors)")
        raise WeightsError(f"{folder}: not found")
    if not (folder / "config.json").is_file():
        if (folder / RUN_CONFIG).is_file():
            return run_model_config(folder)[0]
        raise WeightsError(f"{folder}: no config.json here; a model folder holds config.json and joint.safetensors, "
                           "as scripts/train_default_v2.py (avflow source repository) exports them (or give a "
                           f"training run folder of the joint model: its {RUN_CONFIG} and weights)")  # fmt: skip
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{folder}: cannot read config.json: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and any(key in data for key in V1_KEYS):
        raise WeightsError(f"{folder}: a default model of the first format (its own video_ae/audio_vae, mono "
                           "audio); this avflow reads v2 folders (joint.safetensors + config.json with "
                           "codecs_checksum)")  # fmt: skip
    try:
        return from_dict(DefaultModelConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{folder / 'config.json'}: {exc}") from None


def run_model_config(folder: Path) -> tuple[DefaultModelConfig, Path]:
    """A training run of the joint model (`avflow train`'s out_dir: its `config.yaml`) as a model config, and the
    model folder it inherits from.

    The joint network is the run's (`model.args`); the clip format, sampling, text encoder, windows and codecs are
    those of the model folder its `init.weights` came from (a fine-tune of the shipped model, or of a folder of
    one's own), else the shipped model's. The codecs checksum is the run's training data's (`data.train.args.file`,
    a latent cache whose metadata records it) where that file is at hand, else the inherited folder's. Relative
    paths in `config.yaml` are as typed where the run started: see `run_path`. `training` records the training
    cache and the shape of its video latents, which `load_default_model` compares with the clip format.
    """
    from avflow.config import read_run_config, to_dict
    from avflow.weights import run_weights_file

    data = read_run_config(folder, "joint")
    model = data["model"]
    run_weights_file(folder)  # a run without weights yet says so before anything loads
    base_dir = _inherited_folder(folder, data)
    base = read_default_config(base_dir)
    cache = _training_cache(folder, data)
    codecs = base.codec_dir(base_dir)
    training = {"run": str(folder), "settings_from": str(base_dir)}
    if cache is not None:
        training |= {"data": str(cache), "data_video_latents": _video_latent_shape(cache)}
    fields = to_dict(base) | {
        "joint": model.get("args") or {},
        "codecs": None if codecs is None else str(codecs.resolve()),
        "codecs_checksum": _data_codecs_checksum(cache) or base.codecs_checksum,
        "training": training,
    }
    try:
        return from_dict(DefaultModelConfig, fields), base_dir
    except ConfigError as exc:
        raise ConfigError(f"{folder / RUN_CONFIG}: model.args with the settings of {base_dir}: {exc}") from None


def run_start_folders(folder: Path, run_config: dict) -> list[Path]:
    """The folders a relative path in a run's `config.yaml` may be relative to, most likely first.

    `avflow train` keeps paths as typed, relative to the folder it ran in, and records no such folder; its
    `out_dir` (as typed) ends the run folder's path when the run has not moved, and what comes before is that
    folder. Then the current folder, then the run folder's parent (a run moved with the files beside it)."""
    bases = [start] if (start := _folder_run_from(Path(folder), run_config.get("out_dir"))) is not None else []
    bases += [Path.cwd(), Path(os.path.abspath(folder)).parent]
    return list(dict.fromkeys(bases))


def _folder_run_from(folder: Path, out_dir) -> Path | None:
    """The folder `avflow train` ran in, from the run folder's path and its relative `out_dir` as typed; None where
    `out_dir` is absolute, climbs (`..`) or does not end the run folder's path (a moved run)."""
    if not isinstance(out_dir, str) or not out_dir or Path(out_dir).is_absolute():
        return None
    parts = Path(os.path.normpath(out_dir)).parts
    if ".." in parts:
        return None
    parts = () if parts == (".",) else parts
    for path in dict.fromkeys((Path(os.path.abspath(folder)), Path(folder).resolve())):
        if len(path.parts) > len(parts) and path.parts[len(path.parts) - len(parts) :] == parts:
            return Path(*path.parts[: len(path.parts) - len(parts)])
    return None


def run_path(folder: Path, run_config: dict, typed: str) -> tuple[Path | None, list[Path]]:
    """A path from a run's `config.yaml` as found on this machine (None: nowhere), and the places looked at
    (`run_start_folders` for a relative one)."""
    path = Path(typed)
    places = [path] if path.is_absolute() else [base / path for base in run_start_folders(folder, run_config)]
    return next((p for p in places if p.is_file()), None), places


def _inherited_folder(folder: Path, run_config: dict) -> Path:
    """The model folder whose weights a run started from (`init.weights`, where a `config.json` lies beside them),
    else the shipped model's. An `init.weights` not found is a one-line error: the settings would silently be
    another model's."""
    init = run_config.get("init") if isinstance(run_config.get("init"), dict) else {}
    weights = init.get("weights")
    if not (isinstance(weights, str) and weights):
        return default_model_dir()
    file, places = run_path(folder, run_config, weights)
    if file is None:
        raise MissingPathError(f"{Path(folder) / RUN_CONFIG}: init.weights {weights} not found (looked for "
                               f"{', '.join(map(str, places))}); its folder gives the run's clip format, sampling "
                               "and codecs: run from the folder the training ran in, or put it back")  # fmt: skip
    return file.parent if (file.parent / "config.json").is_file() else default_model_dir()


def _training_cache(folder: Path, run_config: dict) -> Path | None:
    """A run's training data file (`data.train.args.file`) where it is at hand, else None."""
    try:
        typed = run_config["data"]["train"]["args"]["file"]
    except (KeyError, TypeError):
        return None
    return run_path(folder, run_config, typed)[0] if isinstance(typed, str) and typed else None


def _data_codecs_checksum(cache: Path | None) -> str | None:
    """The codecs checksum in the metadata of a run's training cache, None where there is none or it records none."""
    from avflow.weights import read_metadata

    if cache is None:
        return None
    try:
        return read_metadata(cache).get("codecs_checksum")
    except WeightsError:
        return None


def _video_latent_shape(cache: Path) -> list[int] | None:
    """The (N, C, T, H, W) shape of a training cache's video latents (`streams.video`), from its header alone; None
    where it holds none or cannot be read so."""
    from avflow.weights import read_state_dict

    try:
        state = read_state_dict(cache, meta=True)
    except WeightsError:
        return None
    video = state.get("streams.video") if isinstance(state, dict) else None
    return list(video.shape) if video is not None and video.ndim == 5 else None


def data_format_note(config: DefaultModelConfig, codecs) -> str | None:
    """For a training run's config (`run_model_config`): one line where the video latents it was trained on are of
    another grid (T, H, W) than the clip format it generates (the inherited folder's), else None."""
    shape = config.training.get("data_video_latents")
    if not shape:
        return None
    video = codecs.video
    frames = round(config.duration * config.fps)
    expected = tuple(video.latent_shape(frames, config.height, config.width))
    t, h, w = shape[2:]
    if (t, h, w) == expected:
        return None
    kt, ks = video.temporal_down, video.spatial_down
    return (f"{config.training['run']}: trained on {config.training['data']} (video latents {t}x{h}x{w}: "
            f"{w * ks}x{h * ks}, {t * kt / config.fps:g} s clips), but generates the clip format of "
            f"{config.training['settings_from']}: {config.width}x{config.height}, {config.duration:g} s (latents "
            f"{'x'.join(map(str, expected))}); to generate in its own, export it as a model folder whose "
            "config.json says so")  # fmt: skip


def check_codecs(config: DefaultModelConfig, codecs, folder: Path) -> None:
    """One-line WeightsError unless the codecs' layout is the one the joint model reads."""
    j, audio = config.joint, codecs.audio
    per_frame = j.video_temporal_stride * audio.sample_rate / (config.fps * audio.samples_per_latent)
    problems = [
        (audio.sample_rate == config.sample_rate,
         f"sample_rate {config.sample_rate} vs the codec's {audio.sample_rate}"),
        (abs(j.audio_latent_rate - audio.latent_rate) < 1e-9,
         f"joint.audio_latent_rate {j.audio_latent_rate:g} vs the codec's {audio.latent_rate:g}"),
        (j.audio.latent_dim == 2 * audio.latent_channels,
         f"joint.audio.latent_dim {j.audio.latent_dim} vs 2 x the codec's {audio.latent_channels} (left, right)"),
        (j.video.in_channels == codecs.video.latent_channels,
         f"joint.video.in_channels {j.video.in_channels} vs the codec's {codecs.video.latent_channels}"),
        (j.video_temporal_stride == codecs.video.temporal_down,
         f"joint.video_temporal_stride {j.video_temporal_stride} vs the codec's {codecs.video.temporal_down}"),
        (abs(per_frame - round(per_frame)) < 1e-9 and per_frame >= 1,
         f"a video latent frame must span whole audio latents, got {per_frame:g}"),
    ]  # fmt: skip
    bad = [text for ok, text in problems if not ok]
    if bad:
        raise WeightsError(f"{folder}: the model does not fit the codecs in {codecs.folder}: {bad[0]}")


def _other_weights(folder: Path, missing: list[str]) -> str:
    """For a model folder without its joint.safetensors: the weights files it holds instead and what to do (the
    file is read by its content, so a renamed .pth loads too), or nothing."""
    from avflow.weights import weight_files_in

    files = weight_files_in(folder) if WEIGHT_FILES[0] in missing and folder.is_dir() else []
    if not files:
        return ""
    which = f"it holds {files[0]}" if len(files) == 1 else f"it holds {', '.join(files[:6])}"
    return f"; {which}: a model folder's weights are read from {WEIGHT_FILES[0]}, rename the file that holds them"


def load_default_model(path: str | Path | None = None) -> JointPipeline:
    """The shipped default model (or one exported the same way to `path`) on the CPU, in eval mode."""
    from avflow.codecs.world import load_world_codecs
    from avflow.encoders.text import load_text_encoder
    from avflow.models.joint import JointModel
    from avflow.weights import load_strict, read_state_dict, run_weights

    folder = Path(path) if path is not None else default_model_dir()
    run = path is not None and not (folder / "config.json").is_file() and (folder / RUN_CONFIG).is_file()
    missing = [f for f in WEIGHT_FILES if not (folder / f).is_file()]
    if missing and not run:
        raise WeightsError(f"{folder}: {'default ' if path is None else ''}model files missing: {', '.join(missing)}"
                           f"{_other_weights(folder, missing)}")  # fmt: skip
    config = read_default_config(folder)
    codecs = load_world_codecs(config.codec_dir(folder))
    codecs.check_trained_with(config.codecs_checksum, f"the model in {folder}")
    check_codecs(config, codecs, folder)
    try:
        model = JointModel(config.joint)
        if run:
            state, source = run_weights(folder)
            source = f"{folder}: {source}"
            settings = config.training["settings_from"]
            warnings.warn(WeightsWarning(f"{source}, with the clip format, sampling and codecs of {settings}"),
                          stacklevel=2)  # fmt: skip
            if (note := data_format_note(config, codecs)) is not None:
                warnings.warn(WeightsWarning(note), stacklevel=2)
        else:
            source = str(folder / "joint.safetensors")
            state = read_state_dict(source)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # fp16
        load_strict(model, state, source)
        model.eval().requires_grad_(False)
    except (ValueError, RuntimeError, OSError, WeightsError) as exc:
        what = "the default model" if path is None else "its model"
        raise WeightsError(f"{folder}: cannot load {what}: {str(exc).splitlines()[0]}") from None
    text_encoder = load_text_encoder(config.text_encoder, max_len=config.joint.text_len)
    return JointPipeline(model, codecs, text_encoder, config)
