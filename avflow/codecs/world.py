"""The world codecs as one object: the video autoencoder and the binaural audio codec, loaded together.

Every model trained on world latents (the joint model, the binaural model, the experiments) reads its codecs here
and records `checksum`; loading such a model with other codecs is a one-line `WeightsError`. The checksum covers what
defines the latent spaces: both codecs' configs (less decoder-only fields) and their encoder weights and latent
scales as stored (sha256). A decoder trained further, or given a new decoder part, keeps the checksum, so models
trained on the latents stay valid. Files in a codec folder: `video.safetensors`, `audio.safetensors` (int8 with a
scale per 64 values, `avflow.weights.quantize_int8`; or fp16, fp32) and `codecs.json` (`{"video": {config},
"audio": {config}}`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
from avflow.codecs.world_video_codec import WorldVideoCodec, WorldVideoCodecConfig
from avflow.config import from_dict, to_dict
from avflow.errors import ConfigError, WeightsError
from avflow.weights import atomic_write, dequantize_int8, load_strict, quantize_int8, read_state_dict, save_safetensors

CODEC_FILES = ("video.safetensors", "audio.safetensors", "codecs.json")


def default_codec_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "codecs"


def latent_checksum(codecs: dict[str, torch.nn.Module], states: dict[str, dict[str, torch.Tensor]]) -> str:
    """sha256 (hex) over each codec's config (less its `decoder_fields`, which the latents do not depend on) and the
    stored tensors of its encoder (`encoder_keys`), in name order."""
    h = hashlib.sha256()
    for name in sorted(codecs):
        decoder_only = getattr(codecs[name], "decoder_fields", ())
        config = {k: v for k, v in to_dict(codecs[name].config).items() if k not in decoder_only}
        h.update(json.dumps({name: config}, sort_keys=True).encode())
        state = states[name]
        for key in sorted(k for k in state if k.startswith(codecs[name].encoder_keys)):
            tensor = state[key].contiguous().reshape(-1)
            h.update(f"{key}:{tensor.dtype}:{tuple(state[key].shape)}".encode())
            h.update(tensor.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class WorldCodecs:
    video: WorldVideoCodec
    audio: WorldAudioCodec
    checksum: str
    folder: Path

    def check_trained_with(self, checksum: str | None, what: str) -> None:
        """One-line error when `what` was trained with other codecs than these."""
        if checksum != self.checksum:
            raise WeightsError(
                f"{what} was trained with world codecs {str(checksum)[:12]}..., but the codecs in {self.folder} are "
                f"{self.checksum[:12]}...; use the codec folder it was trained with"
            )


def load_world_codecs(folder: str | Path | None = None) -> WorldCodecs:
    """The codecs in `folder` (default: the shipped ones) on the CPU, in eval mode, fp32, no gradients."""
    folder = Path(folder) if folder is not None else default_codec_dir()
    missing = [f for f in CODEC_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsError(f"{folder}: world codec files missing: {', '.join(missing)}")
    try:
        meta = json.loads((folder / "codecs.json").read_text())
        video = WorldVideoCodec(from_dict(WorldVideoCodecConfig, meta["video"], "video"))
        audio = WorldAudioCodec(from_dict(WorldAudioCodecConfig, meta["audio"], "audio"))
    except (KeyError, ValueError, ConfigError) as exc:
        raise WeightsError(f"{folder / 'codecs.json'}: not a world codec description ({exc})") from None
    stored = {}
    for module, name in ((video, "video"), (audio, "audio")):
        path = folder / f"{name}.safetensors"
        stored[name] = read_state_dict(path)
        load_strict(module, dequantize_int8(stored[name]), str(path)).eval().requires_grad_(False)
    return WorldCodecs(video, audio, latent_checksum({"video": video, "audio": audio}, stored), folder)


STORAGE = ("int8", "fp16", "fp32")


def save_codec(
    module: torch.nn.Module,
    folder: str | Path,
    name: str,
    storage: str = "int8",
    encoder_state: dict[str, torch.Tensor] | None = None,
    frozen: tuple[str, ...] = (),
) -> None:
    """Write one codec's weights (`{name}.safetensors`: int8 weights with per-row scales by default, see
    `avflow.weights.quantize_int8`; or fp16, fp32) and its config into `codecs.json`. `encoder_state`: a stored
    state dict (as read from a codec file) whose encoder tensors (`encoder_keys`), and those under the `frozen`
    prefixes (parts a run kept fixed), are written unchanged instead of the module's, so a decoder trained on a
    frozen encoder keeps the latent checksum and frozen parts keep their bytes."""
    if storage not in STORAGE:
        raise ConfigError(f"storage must be one of {', '.join(STORAGE)}, got {storage!r}")
    folder = Path(folder)
    state = module.state_dict()
    if storage == "int8":
        state = quantize_int8(state)
    elif storage == "fp16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if encoder_state is not None:
        keys = tuple(module.encoder_keys) + tuple(frozen)
        kept = {k: v for k, v in encoder_state.items() if k.startswith(keys)}
        if {k for k in state if k.startswith(keys)} != set(kept):
            raise WeightsError(
                f"{name}: the stored encoder's or frozen parts' keys differ from the codec's (other storage or layout)"
            )
        state = {k: v for k, v in state.items() if not k.startswith(keys)} | kept
    save_safetensors(state, folder / f"{name}.safetensors")
    meta_path = folder / "codecs.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta[name] = to_dict(module.config)
    atomic_write(meta_path, lambda f: f.write((json.dumps(meta, indent=1) + "\n").encode()))
