"""--precision {auto,fp32,bf16} and --fast: the precision helpers, and the foley commands (tiny weights)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import TINY_FOLEY_MODEL, fixtures_root, install_tiny_foley, tiny_foley_raw_files, write_tiny_default_model
from safetensors.torch import load_file

from avflow import precision
from avflow.cli import main
from avflow.commands.foley import add_model_arguments, check_model_arguments, load_pipeline
from avflow.errors import ConfigError
from avflow.flow.sampling import SAMPLER_PRESETS, SamplingConfig
from avflow.models.mmaudio import MMAudio, load_official_state_dict
from avflow.models.mmaudio_config import MMAudioConfig
from avflow.pipelines.foley_model import sample_latents
from avflow.pipelines.foley_variants import FoleySpec

FAST = ["--model", TINY_FOLEY_MODEL, "--steps", "2", "--window", "1.0", "--overlap", "0.25", "--device", "cpu"]


def test_autocast_runs_bf16_only_when_asked():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    for name in ("fp32", "auto"):  # auto on the CPU: fp32
        with precision.autocast(name, "cpu"):
            assert (a @ b).dtype == torch.float32
    with precision.autocast("bf16", torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        precision.check_precision("fp16")


def test_auto_is_bf16_for_the_networks_on_a_bf16_gpu_only(monkeypatch):
    """auto: bf16 for the networks on a CUDA GPU that supports it, codecs in fp32; fp32: never; bf16: always."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.autocast_dtype("auto", "cuda") == torch.bfloat16
    assert precision.autocast_dtype("auto", "cuda", codec=True) is None
    assert precision.autocast_dtype("auto", "cpu") is None
    assert precision.autocast_dtype("fp32", "cuda") is None
    assert precision.autocast_dtype("bf16", "cuda", codec=True) == torch.bfloat16
    assert precision.autocast_dtype("bf16", "cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.autocast_dtype("auto", "cuda") is None


@pytest.mark.parametrize("native", ["AMX-BF16", "AVX512-BF16", None])
def test_help_states_whether_bf16_is_fast_here(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: native)
    text = precision.precision_help()
    assert f"default: {precision.DEFAULT_PRECISION}" in text and "GPU" in text
    assert ("bf16 is fast here" in text) == bool(native) and ("slower than fp32" in text) == (not native)
    assert native is None or f"this CPU has {native}" in text


@pytest.mark.parametrize(("flags", "native"), [("fpu amx_bf16 avx512_bf16", "AMX-BF16"),
                                               ("fpu avx512f avx512_bf16", "AVX512-BF16"), ("fpu avx2", None)])
def test_cpu_bf16_instructions_read_from_the_flags(monkeypatch, tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real = precision.Path
    monkeypatch.setattr(precision, "Path", lambda p: real(cpuinfo) if p == "/proc/cpuinfo" else real(p))
    assert precision.cpu_bf16_instructions() == native


def relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).square().mean().sqrt() / b.float().square().mean().sqrt()).item()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bf16_sampling_stays_near_the_reference_fixture(fixtures, version):
    """The fixture network's guided Euler sample under bf16 autocast: within 10 % relative RMS of the reference's
    fp32 sample (measured: 2-3 %), and not equal to avflow's fp32 sample (bf16 really ran)."""
    folder = fixtures / "mmaudio"
    meta = json.loads((folder / f"network_tiny_{version}.json").read_text())
    io = load_file(str(folder / f"network_tiny_{version}.io.safetensors"))
    model = MMAudio(MMAudioConfig(**meta["constructor"])).eval()
    load_official_state_dict(model, folder / f"network_tiny_{version}.weights.safetensors")
    sampling = SamplingConfig(steps=meta["euler_steps"], cfg_strength=meta["cfg_strength"])
    out = {}
    for name in ("fp32", "bf16"):
        with torch.no_grad(), precision.autocast(name, torch.device("cpu")):
            cond = model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
            out[name], _ = sample_latents(model, io["x0"], cond, sampling)
    assert out["bf16"].shape == io["sample"].shape and torch.isfinite(out["bf16"]).all()
    torch.testing.assert_close(out["fp32"], io["sample"], atol=1e-4, rtol=1e-4)
    assert 0 < relative_rms(out["bf16"], out["fp32"])
    assert relative_rms(out["bf16"], io["sample"]) < 0.1


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    raw = tmp_path / "raw_source"
    raw.mkdir()
    files, spec = tiny_foley_raw_files(raw, fixtures_root())
    return install_tiny_foley(monkeypatch, tmp_path / "home", raw, files, FoleySpec(**spec))


def test_fast_and_precision_reach_the_pipeline(cache):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, default_duration=8.0)
    args = parser.parse_args(["--model", TINY_FOLEY_MODEL, "--fast", "--precision", "bf16", "--device", "cpu"])
    pipe = load_pipeline(args, *check_model_arguments(args))
    fast = SAMPLER_PRESETS["fast"]
    assert {k: getattr(pipe.model.sampling, k) for k in fast} == fast
    assert pipe.precision == "bf16"
    args = parser.parse_args(["--model", TINY_FOLEY_MODEL, "--fast", "--steps", "3"])
    sampling, _ = check_model_arguments(args)  # the settings are checked and settled before any weights are read
    assert sampling.steps == 3 and sampling.solver == fast["solver"]  # --steps overrides the preset's steps
    assert args.precision == precision.DEFAULT_PRECISION
    plain, _ = check_model_arguments(parser.parse_args(["--model", TINY_FOLEY_MODEL]))
    assert plain.solver != fast["solver"] or plain.steps != fast["steps"]  # without --fast: the model's own
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])


def test_t2a_in_bf16_stays_near_fp32(cache, tmp_path):
    """Every stage under bf16 autocast: the same length, finite, a small but real deviation from fp32."""
    audio = {}
    for name in ("fp32", "bf16"):
        out = tmp_path / f"{name}.wav"
        assert main(["t2a", "rain on a roof", "--duration", "1.3", "-o", str(out), "--precision", name, *FAST]) == 0
        audio[name], _ = sf.read(str(out), dtype="float32")
    assert audio["bf16"].shape == audio["fp32"].shape and np.isfinite(audio["bf16"]).all()
    deviation = np.sqrt(np.mean((audio["bf16"] - audio["fp32"]) ** 2) / np.mean(audio["fp32"] ** 2))
    assert 0 < deviation < 0.1, deviation  # measured: 0.02


def test_generate_in_bf16_stays_near_fp32(tmp_path):
    """The joint pipeline (default model v2: a tiny random folder until the shipped weights are v2) with every stage
    in bf16 (sampling, the world video codec and the binaural audio codec, whose spectra stay fp32): same shapes,
    frames within 2 grey levels of fp32 on average (measured 0.22), audio as loud within 10 % and within 0.1 relative
    RMS (measured 0.011)."""
    from avflow.pipelines.default_model import load_default_model

    pipe = load_default_model(write_tiny_default_model(tmp_path / "tiny_v2"))
    one = pipe.sampling.override(steps=1)
    clips = {}
    for name in ("fp32", "bf16"):
        clips[name] = pipe.to("cpu", name).generate("a red ball bounces", seed=1, sampling=one, duration=0.5)
    a, b = clips["fp32"], clips["bf16"]
    assert pipe.precision == "bf16"
    assert b.frames.shape == a.frames.shape and b.audio.shape == a.audio.shape and torch.isfinite(b.audio).all()
    assert 0 < (b.frames.float() - a.frames.float()).abs().mean() < 2
    rms_a, rms_b = a.audio.square().mean().sqrt(), b.audio.square().mean().sqrt()
    assert abs(rms_b / rms_a - 1) < 0.1
    assert 0 < relative_rms(b.audio, a.audio) < 0.1


def test_autocast_weights_hold_the_cast_weights_for_the_block_and_give_them_back():
    """In a bf16 autocast block at inference the Linear weights are held in bf16 (cast once, not at every call; the
    convolutions are left to autocast): the same output bits as autocast's own casts, the float32 tensors back
    afterwards; outside autocast or with gradients on nothing is touched."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(8, 8, 3, padding=1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.SiLU(), torch.nn.Linear(8, 8))
    x = torch.randn(2, 5, 8)
    weights = list(net.parameters())
    before = [p.data_ptr() for p in weights]

    def run() -> torch.Tensor:
        return conv(net(x).transpose(1, 2))

    with torch.no_grad(), precision.autocast("bf16", "cpu"):
        plain = run()
        with precision.autocast_weights(net), precision.autocast_weights(conv):
            assert all(p.dtype == torch.bfloat16 for p in weights)
            assert all(p.dtype == torch.float32 for p in conv.parameters())
            held = run()
    assert torch.equal(held, plain) and held.dtype == torch.bfloat16
    assert all(p.data_ptr() == d and p.dtype == torch.float32 for p, d in zip(weights, before))
    with torch.no_grad(), precision.autocast_weights(net):  # no autocast
        assert all(p.dtype == torch.float32 for p in net.parameters())
    with precision.autocast("bf16", "cpu"), precision.autocast_weights(net):  # gradients on: training
        assert all(p.dtype == torch.float32 for p in net.parameters())
