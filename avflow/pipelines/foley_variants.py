"""Which cached weight files and which configs make up each foley model (`VARIANTS`), and fetching them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from avflow import hub
from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAEConfig
from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGANConfig
from avflow.encoders.clip import CLIPConfig
from avflow.encoders.synchformer import SynchformerConfig
from avflow.errors import WeightsError
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio_config import CONFIGS, SAMPLING, MMAudioConfig


@dataclass(frozen=True, kw_only=True)
class FoleySpec:
    """Asset stems (see `avflow.hub.ASSETS`) and configs of one model variant."""

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
    sampling: SamplingConfig = SAMPLING  # the variant's default sampling settings


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


def check_model(model: str) -> FoleySpec:
    """The spec of a model that can be fetched, or a one-line WeightsError listing the known ones."""
    if model not in VARIANTS or model not in hub.MODELS:
        raise WeightsError(f"unknown model {model!r}; choose from {', '.join(m for m in VARIANTS if m in hub.MODELS)}")
    return VARIANTS[model]


def model_paths(model: str, root: Path | None = None) -> dict[str, Path]:
    """Converted weight files of a model, or a one-line WeightsError naming `avflow download MODEL`."""
    check_model(model)
    try:
        return hub.fetch_model(model, root)
    except WeightsError as exc:
        message = str(exc).strip().splitlines()[0].replace("avflow download MODEL", f"avflow download {model}")
        message = message if len(message) <= 300 else message[:300] + "..."  # torch errors can run long
        raise WeightsError(f"model {model} is not ready: {message}") from None
