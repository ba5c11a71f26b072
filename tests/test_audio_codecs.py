"""Mel front end, audio VAE and BigVGAN vocoders against the MMAudio / BigVGAN reference fixtures."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAE, AudioVAEConfig
from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGAN, BigVGANConfig
from avflow.codecs.bigvgan_blocks import AntiAliasedActivation, to_frames
from avflow.codecs.fused_activation import anti_aliased_snake
from avflow.codecs.mel import MEL_CONFIGS, MelSpectrogram
from avflow.codecs.weight_norm import fold_weight_norm
from avflow.errors import WeightsError

TOL = dict(atol=1e-4, rtol=1e-4)


def _bigvgan_fixture(fixtures, version: str):
    root = fixtures / "bigvgan" / f"bigvgan_{version}_tiny"
    config = BigVGANConfig.from_dict(json.loads(root.with_suffix(".json").read_text())["constructor"])
    return config, load_file(f"{root}.weights.safetensors"), load_file(f"{root}.io.safetensors")


@pytest.mark.parametrize("rate", ["16k", "44k"])
def test_mel_matches_reference(fixtures, rate):
    io = load_file(fixtures / "mmaudio" / "mel.io.safetensors")
    mel = MelSpectrogram(MEL_CONFIGS[rate])(io[f"wav_{rate}"])
    torch.testing.assert_close(mel, io[f"mel_{rate}"], **TOL)


@pytest.mark.parametrize("rate", ["16k", "44k"])
def test_audio_vae_matches_reference(fixtures, rate):
    root = fixtures / "mmaudio" / f"vae_tiny_{rate}"
    config = AudioVAEConfig(**json.loads(root.with_suffix(".json").read_text())["constructor"])
    io = load_file(f"{root}.io.safetensors")
    vae = AudioVAE(config).load_weights(load_file(f"{root}.weights.safetensors")).eval()
    with torch.no_grad():
        dist = vae.encode(io["mel"])
        decoded = vae.decode(dist.mean)
    torch.testing.assert_close(dist.mean, io["latent_mean"], **TOL)
    torch.testing.assert_close(dist.std, io["latent_std"], **TOL)
    torch.testing.assert_close(decoded, io["decoded"], **TOL)


def test_audio_vae_unfolded_forward_equals_folded(fixtures):
    """Training form (normalization on the fly) and inference form (baked) compute the same thing."""
    root = fixtures / "mmaudio" / "vae_tiny_16k"
    config = AudioVAEConfig(**json.loads(root.with_suffix(".json").read_text())["constructor"])
    weights, mel = load_file(f"{root}.weights.safetensors"), load_file(f"{root}.io.safetensors")["mel"]
    folded = AudioVAE(config).load_weights(weights)
    raw = AudioVAE(config)
    raw.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(raw.encode(mel).mean, folded.encode(mel).mean, **TOL)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bigvgan_matches_reference(fixtures, version):
    config, weights, io = _bigvgan_fixture(fixtures, version)
    vocoder = BigVGAN(config).load_weights(weights).eval()
    with torch.no_grad():
        waveform = vocoder(io["mel"])
    assert waveform.shape == (io["mel"].shape[0], 1, io["mel"].shape[-1] * config.hop_length)
    torch.testing.assert_close(waveform, io["waveform"], **TOL)


def _rename(weights: dict, naming: str) -> dict:
    if naming == "weight_g/weight_v":
        return dict(weights)
    if naming == "parametrizations":
        renamed = {}
        for key, value in weights.items():
            key = key.replace(".weight_g", ".parametrizations.weight.original0")
            renamed[key.replace(".weight_v", ".parametrizations.weight.original1")] = value
        return renamed
    plain = {}  # fold with torch's own weight-norm kernel, independent of our loader
    for key, value in weights.items():
        if key.endswith(".weight_g"):
            prefix = key[: -len(".weight_g")]
            plain[prefix + ".weight"] = torch._weight_norm(weights[prefix + ".weight_v"], value, 0)
        elif not key.endswith(".weight_v"):
            plain[key] = value
    return plain


@pytest.mark.parametrize("naming", ["weight_g/weight_v", "parametrizations", "plain"])
def test_bigvgan_loader_accepts_weight_norm_namings(fixtures, naming):
    config, weights, io = _bigvgan_fixture(fixtures, "v1")
    renamed = _rename(weights, naming)
    assert (naming == "weight_g/weight_v") == any(k.endswith(".weight_g") for k in renamed)
    vocoder = BigVGAN(config).load_weights({"generator": renamed}).eval()
    with torch.no_grad():
        torch.testing.assert_close(vocoder(io["mel"]), io["waveform"], **TOL)


def test_bigvgan_loader_names_bad_keys(fixtures):
    config, weights, _ = _bigvgan_fixture(fixtures, "v2")
    missing = {k: v for k, v in weights.items() if not k.startswith("conv_pre.")}
    with pytest.raises(WeightsError, match=r"missing keys: conv_pre\.bias, conv_pre\.weight"):
        BigVGAN(config).load_weights(missing)
    with pytest.raises(WeightsError, match=r"unexpected keys: conv_post\.bias"):
        BigVGAN(config).load_weights({**weights, "conv_post.bias": torch.zeros(1)})
    orphan = {k: v for k, v in weights.items() if k != "ups.0.0.weight_g"}
    with pytest.raises(WeightsError, match=r"ups\.0\.0\.weight_v"):
        BigVGAN(config).load_weights(orphan)
    with pytest.raises(WeightsError, match="shape mismatch"):
        BigVGAN(BigVGANConfig(**{**config.__dict__, "num_mels": 81})).load_weights(weights)


def test_audio_vae_loader_names_missing_key(fixtures):
    root = fixtures / "mmaudio" / "vae_tiny_44k"
    config = AudioVAEConfig(**json.loads(root.with_suffix(".json").read_text())["constructor"])
    weights = load_file(f"{root}.weights.safetensors")
    del weights["decoder.up.1.upsample.conv.weight"]
    with pytest.raises(WeightsError, match=r"missing keys: decoder\.up\.1\.upsample\.conv\.weight"):
        AudioVAE(config).load_weights(weights)


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("rate", "official"), [("16k", "bigvgan_v1_16k"), ("44k", "bigvgan_v2_44k_128band_512x")])
def test_bigvgan_full_size_layout_matches_official(fixtures, rate, official):
    entry = json.loads((fixtures / "bigvgan" / "official_state_dicts.json").read_text())[official]
    with torch.device("meta"):
        vocoder = BigVGAN(BIGVGAN_CONFIGS[rate])
    expected = {k: torch.empty(v, device="meta") for k, v in entry["state_dict"].items()}
    expected = {k: list(v.shape) for k, v in fold_weight_norm(expected).items()}
    assert _shapes(vocoder) == expected
    assert sum(p.numel() for p in vocoder.parameters()) == entry["param_count_after_remove_weight_norm"]


@pytest.mark.parametrize("rate", ["16k", "44k"])
def test_audio_vae_full_size_layout_matches_official(fixtures, rate):
    entry = json.loads((fixtures / "mmaudio" / "official_state_dicts.json").read_text())[f"vae_{rate}"]
    with torch.device("meta"):
        vae = AudioVAE(AUDIO_VAE_CONFIGS[rate])
    assert _shapes(vae) == entry["state_dict"]
    assert sum(p.numel() for p in vae.parameters()) == entry["param_count"]


def reference_anti_aliased(act, x: torch.Tensor) -> torch.Tensor:
    """BigVGAN's formulation in float64: replicate pad 5, x2 transposed kaiser-sinc convolution, crop 15 each side,
    snake, replicate pad (5, 6), strided low-pass. x (B, C, T)."""
    c = x.shape[1]
    up, down = act.upsample.filter.double(), act.downsample.lowpass.filter.double()
    y = 2 * F.conv_transpose1d(F.pad(x.double(), (5, 5), mode="replicate"), up.expand(c, -1, -1), stride=2, groups=c)
    y = y[..., 15:-15]
    alpha, beta = act.act.alpha.double().exp()[None, :, None], act.act.beta.double().exp()[None, :, None]
    y = y + (1.0 / (beta + 1e-9)) * torch.sin(y * alpha).pow(2)
    return F.conv1d(F.pad(y, (5, 6), mode="replicate"), down.expand(c, -1, -1), stride=2, groups=c)


@pytest.mark.parametrize("length", [1, 2, 7, 40])
def test_polyphase_anti_aliased_activation_matches_the_reference_formulation(length):
    act = AntiAliasedActivation(6).eval()
    gen = torch.Generator().manual_seed(length)
    with torch.no_grad():
        act.act.alpha.copy_(torch.randn(6, generator=gen) * 0.5)
        act.act.beta.copy_(torch.randn(6, generator=gen) * 0.5)
    x = torch.randn(2, 6, length, generator=gen) * 2  # edges included: replicate padding of both signals
    expected = reference_anti_aliased(act, x)
    with torch.no_grad():
        out = act(x)  # (B, C, T) in, computed on frames
        frames = act(to_frames(x))
    assert out.shape == x.shape and frames.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frames[:, :, 0], out, atol=0, rtol=0)
    trained = act(to_frames(x))  # gradients on: out-of-place snake, padding by concatenation
    torch.testing.assert_close(trained[:, :, 0], out, atol=1e-6, rtol=1e-6)
    act.fused = anti_aliased_snake  # the function torch.compile fuses, run eagerly here
    with torch.no_grad():
        fused = act(to_frames(x))
    assert fused.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fused.double()[:, :, 0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(act(to_frames(x)), trained, atol=0, rtol=0)  # training never takes it


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bigvgan_with_fused_activations_matches_reference(fixtures, version, monkeypatch):
    """`compile_activations` with the fused function run eagerly (the compiled run is a slow test): the fixture's
    waveform, and every activation of the vocoder set."""
    import avflow.codecs.bigvgan as bigvgan

    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return anti_aliased_snake(*args)

    monkeypatch.setattr(bigvgan, "compiled_anti_aliased_snake", lambda: counted)
    config, weights, io = _bigvgan_fixture(fixtures, version)
    vocoder = BigVGAN(config).load_weights(weights).eval().compile_activations()
    activations = [m for m in vocoder.modules() if isinstance(m, AntiAliasedActivation)]
    with torch.no_grad():
        torch.testing.assert_close(vocoder(io["mel"]), io["waveform"], **TOL)
    assert len(calls) == len(activations) > 1  # every activation ran fused, once


@pytest.mark.slow
def test_compiled_vocoder_matches_eager_vocoder():
    """The real torch.compile of the fused activation (needs a C++ compiler): a BigVGAN v1 of random weights,
    1 s of audio, against the eager vocoder, max |difference| <= 1e-4 (the speed target's numerics)."""
    from avflow.codecs.fused_activation import compiler_missing

    if compiler_missing():
        pytest.skip(compiler_missing())
    torch.manual_seed(0)
    vocoder = BigVGAN(BIGVGAN_CONFIGS["16k"]).eval()
    with torch.no_grad():
        for name, p in vocoder.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.normal_(0.0, 0.3)
        mel = torch.randn(1, 80, 63)
        eager = vocoder(mel)
        fused = vocoder.compile_activations()(mel)
    assert (fused - eager).abs().max() <= 1e-4
