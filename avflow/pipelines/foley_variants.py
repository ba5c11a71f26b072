"""Which weights and which configs make up a foley model: the official variants (`VARIANTS`), a model of one's own
described by a JSON file (`load_model_config`), a network checkpoint on top of either (`resolve_model(...,
weights=)`), and finding the files without reading them (`check_available`) or with it (`model_files`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from avflow import hub
from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAEConfig
from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGANConfig
from avflow.config import from_dict
from avflow.encoders.clip import CLIPConfig
from avflow.encoders.synchformer import SynchformerConfig
from avflow.errors import ConfigError, WeightsError
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio_config import CONFIGS, SAMPLING, MMAudioConfig
from avflow.weights import WEIGHT_SUFFIXES, describe_keys, weight_files_in

PARTS = ("network", "vae", "vocoder", "synchformer", "clip")  # the weight fields of a FoleySpec


@dataclass(frozen=True, kw_only=True)
class FoleySpec:
    """The weights and configs of one foley model.

    Each weight field (`PARTS`) is either an asset of the weight cache (a stem of `avflow.hub.ASSETS`, fetched by
    `avflow download`), a weights file (a name ending in .pth, .pt, .safetensors, .bin or .ckpt: official checkpoints,
    Lightning checkpoints or the project's safetensors exports, read directly; in a JSON model config, relative to
    the config's folder) or a file to download when the model loads, as the user asked: on the Hugging Face Hub
    (`hf://ORG/NAME/PATH`) or at a URL (`https://HOST/PATH/NAME`, optionally pinned with `#sha256=HEX`).
    """

    network: str
    vae: str
    vocoder: str
    synchformer: str
    clip: str
    network_config: MMAudioConfig
    vae_config: AudioVAEConfig
    vocoder_config: BigVGANConfig
    clip_config: CLIPConfig = field(default_factory=CLIPConfig)
    synchformer_config: SynchformerConfig = field(default_factory=SynchformerConfig)
    sampling: SamplingConfig = SAMPLING  # the model's default sampling settings


def _official(name: str) -> FoleySpec:
    mode = "16k" if CONFIGS[name].sample_rate == 16000 else "44k"
    vocoder = "best_netG" if mode == "16k" else "bigvgan_v2_44khz_128band_512x"
    return FoleySpec(
        network=f"mmaudio_{name}",
        vae="v1-16" if mode == "16k" else "v1-44",
        vocoder=vocoder,
        synchformer="synchformer_state_dict",
        clip="dfn5b_clip_vit_h_14_384",
        network_config=CONFIGS[name],
        vae_config=AUDIO_VAE_CONFIGS[mode],
        vocoder_config=BIGVGAN_CONFIGS[mode],
    )


# Model name (as in `avflow.hub.MODELS`) -> spec. Plain dict: tests register tiny variants here.
VARIANTS: dict[str, FoleySpec] = {name: _official(name) for name in CONFIGS}


def is_weights_file(ref: str | Path) -> bool:
    """Whether a weight field names a local file (by its suffix) rather than a cache asset or a remote file."""
    return not hub.is_remote_file(ref) and Path(ref).suffix.lower() in WEIGHT_SUFFIXES


def is_cache_asset(ref: str | Path) -> bool:
    """Whether a weight field names an asset of the weight cache (fetched by `avflow download`)."""
    return not is_weights_file(ref) and not hub.is_remote_file(ref)


def check_remote_file(ref: str, what: str = "--weights") -> str:
    """A Hub file (`hf://...`) or a file at a URL whose name is well formed and ends in a weights suffix, and that
    is cached where it cannot be downloaded (offline mode); else a one-line WeightsError. Reads no weights."""
    name = hub.parse_hub_file(ref)[1] if hub.is_hub_file(ref) else hub.parse_url_file(ref)[1]
    if Path(name).suffix.lower() not in WEIGHT_SUFFIXES:
        raise WeightsError(f"{what} {ref}: expected a {', '.join(WEIGHT_SUFFIXES)} file")
    if hub.offline():
        hub.remote_file(ref, download=False)
    return ref


def check_weights_file(path: str | Path, what: str = "--weights") -> Path:
    """A readable, non-empty weights file with a known suffix, else a one-line WeightsError; reads no weights."""
    path = Path(path)
    if not is_weights_file(path):
        raise WeightsError(f"{what} {path}: expected a {', '.join(WEIGHT_SUFFIXES)} file")
    if not path.is_file():
        raise WeightsError(f"{what} {path}: file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} {path}: file is empty")
    return path


def load_model_config(path: str | Path) -> FoleySpec:
    """A FoleySpec from a JSON file (keys: the FoleySpec fields; configs as nested objects), strictly; weight files
    are resolved against the file's folder and must exist."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model config ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    try:
        spec = from_dict(FoleySpec, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    files = {}
    for part in PARTS:
        ref = getattr(spec, part)
        if is_weights_file(ref):
            file = Path(ref).expanduser()
            files[part] = str(check_weights_file(file if file.is_absolute() else path.parent / file, f"{path}: {part}"))
    return replace(spec, **files)


def known_models() -> str:
    return ", ".join(m for m in VARIANTS if m in hub.MODELS)


def resolve_model(model: str, weights: str | Path | None = None, *, weights_option: str = "--weights") -> FoleySpec:
    """The spec of `model`, an official variant's name or a JSON model config, with the network's weights taken from
    `weights` when given (a weights file, or an `avflow train` run folder: `with_training_run`; the option that gave
    it: `weights_option`); one-line errors for unknown names and unreadable files. Reads no weights."""
    model = str(model)
    if model.lower().endswith(".json"):
        spec = load_model_config(model)
    elif model in VARIANTS and model in hub.MODELS:
        spec = VARIANTS[model]
    else:
        raise WeightsError(f"unknown model {model!r}; choose from {known_models()}, or give a model config .json")
    if weights is not None and hub.is_remote_file(weights):
        spec = replace(spec, network=check_remote_file(str(weights), weights_option))
    elif weights is not None and Path(weights).is_dir():
        spec = with_training_run(spec, Path(weights), weights_option)
    elif weights is not None:
        spec = replace(spec, network=str(check_weights_file(weights, weights_option)))
    return spec


# the network config fields its codecs and encoders read: a run of another shape must keep these
TIED_FIELDS = ("latent_dim", "sample_rate", "hop_length", "clip_dim", "sync_dim", "text_dim")


def with_training_run(spec: FoleySpec, run: Path, option: str = "--weights") -> FoleySpec:
    """`spec` with the network of an `avflow train` run of MMAudio (its out_dir): the run's network config
    (`model.args.variant` and `overrides`: a fine-tune of another depth needs no model config .json) and its
    weights (`avflow.weights.run_weights_file`: the EMA export, else the newest checkpoint, whose EMA is read). A
    folder that is no such run, or a network whose latents or features do not fit the spec's other parts, is a
    one-line error; reads no weights."""
    from avflow.config import RUN_CONFIG, read_run_config
    from avflow.models.mmaudio_config import variant_config
    from avflow.weights import run_weights_file

    if not (run / RUN_CONFIG).is_file():
        raise ConfigError(f"{option} {run}: a folder without {RUN_CONFIG}, not the out_dir of an `avflow train` run; "
                          f"{weights_in_folder(run, option)}")  # fmt: skip
    try:
        args = read_run_config(run, "mmaudio")["model"].get("args") or {}
        config = variant_config(str(args.get("variant", "small_16k")), args.get("overrides") or {})
    except ConfigError as exc:
        raise ConfigError(f"{option} {exc}") from None
    differ = [f"{k} {getattr(config, k)} (its codecs and encoders read {getattr(spec.network_config, k)})"
              for k in TIED_FIELDS if getattr(config, k) != getattr(spec.network_config, k)]  # fmt: skip
    if differ:
        raise WeightsError(f"{option} {run}: the run trained a network that does not fit this model: "
                           f"{differ[0]}; give the --model it was trained for ({args.get('variant')})")  # fmt: skip
    return replace(spec, network=str(run_weights_file(run)), network_config=config)


def weights_in_folder(folder: Path, option: str = "--weights") -> str:
    """What weights files a folder holds, and how to give one (for the error of a folder given where a run folder
    or a file was expected: a Hugging Face style folder of config.json + model.safetensors)."""
    files = weight_files_in(folder)
    if not files:
        return f"it holds no weights file ({', '.join(WEIGHT_SUFFIXES)})"
    if len(files) == 1:
        return f"it holds {files[0]}: give that file with {option}"
    return f"it holds {describe_keys(files)}: give one of them with {option}"


def _download_hint(stem: str, model: str) -> str:
    """The `avflow download` argument that fetches asset `stem`."""
    if model in hub.MODELS and stem in hub.MODELS[model]:
        return model
    return next((name for name, stems in hub.MODELS.items() if stem in stems), "MODEL")


def _not_ready(exc: WeightsError, stem: str, model: str) -> WeightsError:
    hint = f"avflow download {_download_hint(stem, model)}"
    message = str(exc).strip().splitlines()[0].replace("avflow download MODEL", hint)
    message = message if len(message) <= 300 else message[:300] + "..."  # torch errors can run long
    return WeightsError(f"model {model} is not ready: {message}")


def check_available(spec: FoleySpec, model: str, root: Path | None = None) -> None:
    """A one-line WeightsError (naming `avflow download ...`) unless every part's file is at hand; reads no weights."""
    for part in PARTS:
        ref = getattr(spec, part)
        if is_weights_file(ref):
            check_weights_file(ref, part)
            continue
        if hub.is_remote_file(ref):
            check_remote_file(ref, part)
            continue
        try:
            hub.require(ref, root)
        except WeightsError as exc:
            raise _not_ready(exc, ref, model) from None


def model_files(spec: FoleySpec, model: str, root: Path | None = None) -> dict[str, Path]:
    """The weights file of every part (cache assets fetched and converted as needed), by part name."""
    files = {}
    for part in PARTS:
        ref = getattr(spec, part)
        if is_weights_file(ref):
            files[part] = Path(ref)
            continue
        if hub.is_remote_file(ref):
            files[part] = hub.remote_file(ref)  # named by the user: the request to download it
            continue
        try:
            files[part] = hub.fetch(ref, root)
        except WeightsError as exc:
            raise _not_ready(exc, ref, model) from None
    return files
