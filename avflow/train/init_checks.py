"""What `avflow train` checks of `init.weights` before it builds the model: the shipped weights found in the installed
package when a shipped recipe runs outside the repository, and a joint training file made for the model folder the
weights come from (its clip format, codecs and text encoder)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path

from avflow import assets_dir
from avflow.errors import ConfigError, TrainingWarning, WeightsError
from avflow.train.components import DATASETS
from avflow.train.config import InitConfig, TrainConfig, resolve_component
from avflow.train.datasets import TensorFileConfig
from avflow.weights import read_metadata

SHIPPED_PREFIX = ("avflow", "assets")  # how the shipped recipes name the shipped weights (from the repository root)


def shipped_init(init: InitConfig) -> InitConfig:
    """`init` as given, or with the installed package's copy of a relative `init.weights` under `avflow/assets/`
    that the current folder does not hold (a shipped recipe run outside the repository), said in a note. The run's
    config.yaml then records the file it started from, which `avflow generate --model RUN` reads."""
    typed = init.weights
    if typed is None or Path(typed).is_absolute() or Path(typed).exists():
        return init
    parts = Path(typed).parts
    if parts[: len(SHIPPED_PREFIX)] != SHIPPED_PREFIX:
        return init
    shipped = assets_dir().joinpath(*parts[len(SHIPPED_PREFIX) :])
    if not shipped.is_file():
        return init
    warnings.warn(TrainingWarning(f"init.weights: no {typed} in the current folder; the installed avflow's "
                                  f"{shipped}"), stacklevel=3)  # fmt: skip
    return replace(init, weights=str(shipped))


# What a model folder's config.json and a joint training file's metadata (`avflow cache joint`'s `clip_format`,
# `codecs_checksum`) both record about the clips and latents the model takes.
CLIP_KEYS = ("duration", "fps", "height", "width", "sample_rate", "text_encoder")


def model_folder_format(weights: str | None) -> tuple[Path, dict] | None:
    """The `config.json` beside `init.weights` (a model folder, as the shipped one) and its clip format and codecs
    checksum; None where there is no such file or it is not a JSON object. Read as plain JSON (the model folder
    reader lives in `avflow.pipelines`, above training)."""
    if weights is None:
        return None
    file = Path(weights).parent / "config.json"
    try:
        data = json.loads(file.read_text()) if file.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    recorded = {k: data[k] for k in (*CLIP_KEYS, "codecs_checksum") if k in data}
    return (file, recorded) if recorded else None


def data_file_format(file: str) -> dict:
    """The clip format and codecs checksum a training file's safetensors metadata records (read from its header
    alone); {} for a file that records none or cannot be read (its dataset says why)."""
    try:
        meta = read_metadata(file)
    except WeightsError:
        return {}
    recorded = {"codecs_checksum": meta["codecs_checksum"]} if "codecs_checksum" in meta else {}
    try:
        clip = json.loads(meta.get("clip_format", "{}"))
    except ValueError:
        clip = {}
    if isinstance(clip, dict):
        recorded |= {k: clip[k] for k in CLIP_KEYS if k in clip}
    return recorded


def _differs(a, b) -> bool:
    """Whether two recorded values differ (numbers by value: 2 and 2.0 are the same duration)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a != b


def _shown(value) -> str:
    """A recorded value as said in a message: a checksum by its first 12 digits, a number as %g."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return value[:12] if isinstance(value, str) and len(value) == 64 else str(value)


def check_data_fits_model(config: TrainConfig) -> None:
    """A one-line ConfigError naming both files where a `tensor_file` dataset records another clip format, codecs
    checksum or text encoder than the model folder `init.weights` lies in: its latents are of other clips than the
    model was made for, which training would not notice. Only what both record is compared."""
    found = model_folder_format(config.init.weights)
    if found is None:
        return
    model_file, model = found
    for path, comp in (("data.train", config.data.train), ("data.val", config.data.val)):
        if comp is None or DATASETS.get(comp.name) is None or DATASETS[comp.name].config is not TensorFileConfig:
            continue
        file = resolve_component(DATASETS, comp, path).file
        data = data_file_format(file)
        odd = [k for k in model if k in data and _differs(data[k], model[k])]
        if odd:
            both = ", ".join(f"{k} {_shown(data[k])} vs {_shown(model[k])}" for k in odd)
            raise ConfigError(f"{path}.args.file {file} was made for another model than init.weights "
                              f"{config.init.weights}: {both} (the file's metadata vs {model_file}); make it for "
                              f"that model (avflow cache joint ... --model {model_file.parent}) or start from the "
                              "model it was made for")  # fmt: skip
