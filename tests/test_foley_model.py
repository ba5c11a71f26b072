"""FoleyModel end to end with the tiny fixture network, VAE and vocoder."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import constructor, tiny_foley_model
from safetensors.torch import load_file

from avflow.codecs.audio_vae import AudioVAE, AudioVAEConfig
from avflow.codecs.bigvgan import BigVGAN, BigVGANConfig
from avflow.errors import ConfigError
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio import MMAudio
from avflow.models.mmaudio_config import SAMPLING, MMAudioConfig
from avflow.pipelines.foley_model import FoleyModel


@pytest.fixture
def foley_16k(fixtures) -> FoleyModel:
    """The tiny fixture network with the VAE fixture of the same latent width and the 16 kHz vocoder."""
    return tiny_foley_model(fixtures, steps=4)


def test_sampling_matches_reference_latents(fixtures, foley_16k):
    """Same noise and features as the network fixture: the latents handed to the VAE are the reference ones."""
    spec = json.loads((fixtures / "mmaudio" / "network_tiny_v1.json").read_text())
    io = load_file(fixtures / "mmaudio" / "network_tiny_v1.io.safetensors")
    net = foley_16k.network
    net.update_seq_lengths(io["x0"].shape[1], io["clip_f"].shape[1], io["sync_f"].shape[1])
    sampling = SamplingConfig(steps=spec["euler_steps"], cfg_strength=spec["cfg_strength"])
    latents = foley_16k.sample(io["x0"], io["clip_f"], io["sync_f"], io["text_f"], sampling=sampling)
    torch.testing.assert_close(latents, io["sample_unnormalized"], atol=1e-4, rtol=1e-4)
    negative = foley_16k.sample(
        io["x0"], io["clip_f"], io["sync_f"], io["text_f"], negative_text_f=io["negative_text_f"], sampling=sampling
    )
    torch.testing.assert_close(negative, io["sample_unnormalized_negative"], atol=1e-4, rtol=1e-4)
    wav = foley_16k.decode(latents)
    expected = foley_16k.vocoder(foley_16k.vae.decode(io["sample_unnormalized"].transpose(1, 2)))[:, 0]
    torch.testing.assert_close(wav, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("duration", [1.0, 0.81])
def test_generate_length_rate_and_determinism(foley_16k, duration):
    cfg = foley_16k.network.config
    lengths = foley_16k.network.set_duration(duration)
    gen = torch.Generator().manual_seed(1)
    clip = torch.randn(2, lengths.clip, cfg.clip_dim, generator=gen)
    sync = torch.randn(2, lengths.sync, cfg.sync_dim, generator=gen)
    text = torch.randn(2, cfg.text_seq_len, cfg.text_dim, generator=gen)
    a = foley_16k.generate(duration, clip, sync, text, seed=7)
    b = foley_16k.generate(duration, clip, sync, text, seed=7)
    c = foley_16k.generate(duration, clip, sync, text, seed=8)
    assert foley_16k.sample_rate == 16000
    assert a.shape == (2, round(duration * 16000))
    assert torch.isfinite(a).all() and a.abs().max() <= 1.0
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_generate_text_only_and_unconditional(foley_16k):
    cfg = foley_16k.network.config
    text = torch.randn(1, cfg.text_seq_len, cfg.text_dim)
    text_only = foley_16k.generate(0.7, text_f=text, seed=0)
    unconditional = foley_16k.generate(0.7, batch=1, seed=0)
    assert text_only.shape == unconditional.shape == (1, round(0.7 * foley_16k.sample_rate))
    assert not torch.allclose(text_only, unconditional)  # the text changes the audio


def test_generate_rejects_bad_features(foley_16k):
    cfg = foley_16k.network.config
    with pytest.raises(ConfigError, match="CLIP features must be"):
        foley_16k.generate(1.0, clip_f=torch.randn(1, 3, cfg.clip_dim))
    with pytest.raises(ConfigError, match="batch size"):
        foley_16k.generate(1.0, text_f=torch.randn(2, cfg.text_seq_len, cfg.text_dim), batch=1)


def test_44k_components_give_exact_length(fixtures):
    """44.1 kHz wiring: hop 512, the 44k VAE fixture's latent width; 0.7 s -> 31 latents -> 31744 samples, trimmed to
    round(0.7 * 44100)."""
    mm, bv = fixtures / "mmaudio", fixtures / "bigvgan"
    vae_config = AudioVAEConfig(**constructor(mm / "vae_tiny_44k.json"))
    network = MMAudio(
        MMAudioConfig(
            latent_dim=vae_config.embed_dim,
            clip_dim=8,
            sync_dim=8,
            text_dim=8,
            hidden_dim=32,
            depth=2,
            fused_depth=1,
            num_heads=1,
            text_seq_len=3,
            sample_rate=44100,
            hop_length=512,
        )  # fmt: skip
    ).eval()
    with torch.no_grad():
        network.latent_mean.zero_()
        network.latent_std.fill_(1.0)
    vae = AudioVAE(vae_config)
    vae.load_weights(load_file(mm / "vae_tiny_44k.weights.safetensors"))
    config = BigVGANConfig.from_dict({**constructor(bv / "bigvgan_v2_tiny.json"), "sampling_rate": 44100})
    vocoder = BigVGAN(config).load_weights(load_file(bv / "bigvgan_v2_tiny.weights.safetensors"))
    foley = FoleyModel(network, vae.eval(), vocoder.eval(), SAMPLING.override(steps=2))
    wav = foley.generate(0.7, seed=0)
    assert foley.sample_rate == 44100 and wav.shape == (1, round(0.7 * 44100))
    assert torch.equal(wav, foley.generate(0.7, seed=0))
    with pytest.raises(ConfigError, match="do not fit"):
        FoleyModel(network, vae, BigVGAN(BigVGANConfig.from_dict(constructor(bv / "bigvgan_v1_tiny.json"))))
