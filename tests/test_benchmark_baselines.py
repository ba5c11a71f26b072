"""The plain baselines of benchmarks/foley_stages.py (benchmarks/baseline/) compute what the references compute, and
avflow's fast paths (batched guidance + Winograd F(4, 3) sampling, polyphase vocoder, batched encoders) match them:
both against the reference fixtures at their 1e-4, and fast vs plain directly at the issue's 1e-4."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import REPO, always_winograd
from safetensors.torch import load_file

from avflow.codecs.bigvgan import BigVGAN, BigVGANConfig
from avflow.encoders.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from avflow.encoders.features import Encoders
from avflow.encoders.synchformer import Synchformer, SynchformerConfig, split_segments
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio import MMAudio, load_official_state_dict
from avflow.models.mmaudio_config import MMAudioConfig
from avflow.nn import winograd
from avflow.pipelines.foley_model import sample_latents

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import `baseline` from their own folder
from baseline import bigvgan as plain_bigvgan  # noqa: E402
from baseline import encoders as plain_encoders  # noqa: E402
from baseline.mmaudio import PlainMMAudio  # noqa: E402

# Stand-ins for the encoder a test does not use (Encoders holds both).
NO_CLIP = CLIPConfig(
    embed_dim=8,
    vision=CLIPVisionConfig(width=8, layers=0, head_width=8),
    text=CLIPTextConfig(width=8, heads=1, layers=0),
)
NO_SYNC = SynchformerConfig(embed_dim=8, num_heads=1, depth=0)
TOL = dict(atol=1e-4, rtol=1e-4)  # the fixtures' tolerance (fixtures/README.md) and the issue's parity bound


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, **TOL)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_plain_mmaudio_matches_the_fixture_and_the_fast_sampler(fixtures, version, monkeypatch):
    folder = fixtures / "mmaudio"
    meta = json.loads((folder / f"network_tiny_{version}.json").read_text())
    shape = meta["constructor"]
    weights = folder / f"network_tiny_{version}.weights.safetensors"
    io = load_file(str(folder / f"network_tiny_{version}.io.safetensors"))
    plain = PlainMMAudio(
        load_file(str(weights)),
        MMAudioConfig(**shape),
        shape["latent_seq_len"],
        shape["clip_seq_len"],
        shape["sync_seq_len"],
    )
    steps, w = meta["euler_steps"], meta["cfg_strength"]
    with torch.no_grad():
        cond = plain.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
        close(plain.predict_flow(io["latent"], io["t"], cond), io["flow"])
        empty = {k: v.expand(io["latent"].shape[0], *v.shape[1:]) for k, v in plain.empty_conditions().items()}
        close(plain.predict_flow(io["latent"], io["t"], empty), io["flow_empty"])
    plain_sample = plain.sample(io["x0"], io["clip_f"], io["sync_f"], io["text_f"], steps, w)
    close(plain_sample, io["sample"])

    calls = []
    conv3 = winograd.conv3
    monkeypatch.setattr(winograd, "conv3", lambda *a, **k: calls.append(1) or conv3(*a, **k))
    always_winograd(monkeypatch)  # the fast path as on a CPU where Winograd measured faster
    model = MMAudio(MMAudioConfig(**shape)).eval()
    load_official_state_dict(model, weights)
    with torch.no_grad():
        cond = model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
        fast, nfe = sample_latents(model, io["x0"], cond, SamplingConfig(steps=steps, cfg_strength=w))
    assert calls, "the fast sampler did not run its Winograd convolutions"
    assert nfe == 2 * steps
    close(fast, plain_sample)
    close(fast, io["sample"])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_plain_bigvgan_matches_the_fixture_and_the_polyphase_vocoder(fixtures, version):
    root = fixtures / "bigvgan" / f"bigvgan_{version}_tiny"
    config = BigVGANConfig.from_dict(json.loads(root.with_suffix(".json").read_text())["constructor"])
    io = load_file(f"{root}.io.safetensors")
    vocoder = BigVGAN(config).load_weights(load_file(f"{root}.weights.safetensors")).eval()
    with torch.no_grad():
        plain = plain_bigvgan.vocode(vocoder.state_dict(), config, io["mel"])  # folded weights, official names
        fast = vocoder(io["mel"])
    close(plain, io["waveform"])
    close(fast, plain)


def test_plain_clip_matches_the_fixture_and_the_batched_encoder(fixtures):
    meta = json.loads((fixtures / "clip" / "clip_tiny.json").read_text())
    model = CLIP(CLIPConfig.from_open_clip(meta["constructor"])).eval()
    params = load_file(fixtures / "clip" / "clip_tiny.weights.safetensors")
    model.load_state_dict(params, strict=True)
    io = load_file(fixtures / "clip" / "clip_tiny.io.safetensors")
    frames = io["frames_normalized"]  # (B, T, 3, H, W)
    with torch.no_grad():
        plain = plain_encoders.clip_images(params, model.config, frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        text = plain_encoders.clip_text(params, model.config, io["tokens"])
    close(plain, io["image_features"])
    close(text, io["text_features"])
    encoders = Encoders(model, Synchformer(NO_SYNC), clip_batch=3)
    close(encoders.encode_clip(io["frames"]), plain)


def test_plain_synchformer_matches_the_fixture_and_the_batched_encoder(fixtures):
    shape = json.loads((fixtures / "synchformer" / "synchformer_visual_tiny.json").read_text())["constructor"]
    config = SynchformerConfig(
        embed_dim=shape["embed_dim"], num_heads=shape["num_heads"], depth=shape["depth"], img_size=shape["img_size"]
    )
    params = load_file(fixtures / "synchformer" / "synchformer_visual_tiny.weights.safetensors")
    model = Synchformer(config).eval()
    model.load_state_dict(params)
    io = load_file(fixtures / "synchformer" / "synchformer_visual_tiny.io.safetensors")
    segments = split_segments(io["video"])  # (B, S, 16, 3, H, W)
    with torch.no_grad():
        plain = plain_encoders.synchformer(params, config, segments.flatten(0, 1)).unflatten(0, segments.shape[:2])
    close(plain, io["segment_features"])
    encoders = Encoders(CLIP(NO_CLIP), model, sync_batch=3)
    close(encoders.encode_sync(io["video"]), plain.flatten(1, 2))
