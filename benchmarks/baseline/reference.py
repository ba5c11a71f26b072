"""The public MMAudio code (a local clone, passed as --reference PATH; never vendored) on avflow's weights.

Covers the stages the clone implements without downloads: network sampling (`mmaudio.model.networks`, its
`ode_wrapper` in the Euler loop of `mmaudio.model.flow_matching`), the VAE decoder and both BigVGAN vocoders. Each
loader raises ImportError naming what is missing (the clone's own dependencies: einops; omegaconf for BigVGAN v1 and
the VAE package; huggingface_hub for BigVGAN v2).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch


class AttrDict(dict):
    """The attribute-style config dict the reference's BigVGAN classes read (`h.num_mels`, `h.get(...)`)."""

    __getattr__ = dict.__getitem__


def use_clone(path: str | Path) -> None:
    path = Path(path).expanduser().resolve()
    if not (path / "mmaudio" / "model" / "networks.py").is_file():
        raise ImportError(f"{path}: not a clone of the public MMAudio repository (no mmaudio/model/networks.py)")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def network_sampler(path, config, state_dict: dict, lengths):
    """A function (x0, clip_f, sync_f, text_f, steps, cfg) -> normalized latents, run by the reference network."""
    use_clone(path)
    from mmaudio.model.networks import MMAudio

    fields = asdict(config)
    for key in ("sample_rate", "hop_length"):
        fields.pop(key)
    fields.update(latent_seq_len=lengths.latent, clip_seq_len=lengths.clip, sync_seq_len=lengths.sync)
    net = MMAudio(**fields).to(next(iter(state_dict.values())).device).eval()
    net.load_weights(dict(state_dict))

    @torch.inference_mode()
    def sample(x0, clip_f, sync_f, text_f, steps: int, cfg_strength: float) -> torch.Tensor:
        conditions = net.preprocess_conditions(clip_f, sync_f, text_f)
        empty = net.get_empty_conditions(x0.shape[0])
        x, grid = x0, torch.linspace(0, 1, steps + 1)
        for i, t in enumerate(grid[:-1]):  # FlowMatching.run_t0_to_t1, inference_mode="euler"
            flow = net.ode_wrapper(t, x, conditions, empty, cfg_strength)
            x = x + (grid[i + 1] - t) * flow
        return x

    return sample


def vae_decoder(path, mode: str, state_dict: dict):
    """A function latents (B, C, n) -> mel, run by the reference VAE (weights already folded, as avflow keeps them)."""
    use_clone(path)
    from mmaudio.ext.autoencoder.vae import get_my_vae

    vae = get_my_vae("16k" if mode == "16k" else "44k").eval()
    vae.load_state_dict(dict(state_dict))
    for module in vae.modules():  # avflow's weights are folded already (its remove_weight_norm would fold again)
        if hasattr(module, "weight_norm_removed"):
            module.weight_norm_removed = True
    device = next(iter(state_dict.values())).device
    vae = vae.to(device)
    return lambda z: vae.decode(z)


def vocoder(path, config, state_dict: dict):
    """A function mel -> waveform, run by the reference BigVGAN (v1 for 16 kHz, v2 for 44.1 kHz)."""
    use_clone(path)
    h = AttrDict({**asdict(config), "use_cuda_kernel": False})
    if config.sample_rate == 16000:
        from mmaudio.ext.bigvgan.models import BigVGANVocoder as Generator
    else:
        from mmaudio.ext.bigvgan_v2.bigvgan import BigVGAN as Generator
    model = Generator(h)
    model.remove_weight_norm()
    model.load_state_dict(dict(state_dict))
    device = next(iter(state_dict.values())).device
    model = model.to(device).eval()
    return lambda mel: model(mel)
