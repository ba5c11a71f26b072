"""scripts/bench_probe.py: the step-0 model of a bench arm is the shipped towers with a fresh interaction, which
computes exactly what the shipped model computes with its interaction off."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from helpers import REPO

from avflow.config import from_dict
from avflow.models.joint import JointConfig, JointModel
from avflow.weights import load_strict, read_state_dict


def probe_script():
    spec = importlib.util.spec_from_file_location("bench_probe", REPO / "scripts" / "bench_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(joint: dict, state: dict) -> JointModel:
    model = JointModel(from_dict(JointConfig, joint, "joint"))
    load_strict(model, state, "test")
    return model.eval()


def test_bench_prompts_are_held_out_of_the_card_prompts():
    bench = json.loads((REPO / "configs" / "bench_prompts.json").read_text())
    card = json.loads((REPO / "configs" / "model_card_prompts.json").read_text())
    assert {r["prompt"] for r in bench["prompts"]}.isdisjoint(r["prompt"] for r in card["prompts"])
    assert sum(r["objects"] == 1 for r in bench["prompts"]) >= 32 and len(bench["prompts"]) >= 48


@pytest.mark.parametrize(
    "fusion, options, alignment",
    [("full_attention", {"heads": 2, "layers": 4}, "avsync"), ("bidirectional", {"heads": 2}, "none")],
)
def test_fresh_interaction_computes_the_towers_alone(fusion, options, alignment):
    probe = probe_script()
    config = probe.arm_config(fusion, options, alignment)
    assert config["joint"]["fusion"] == fusion and config["joint"]["audio_streams"] == ["left", "right"]
    arm = build(config["joint"], probe.fresh_state(config))
    shipped_config = json.loads((probe.SHIPPED / "config.json").read_text())["joint"]
    shipped = build(shipped_config, read_state_dict(probe.SHIPPED / "joint.safetensors"))
    assert any(k.startswith("fusion.") for k in arm.state_dict())  # the arm's own interaction, not the shipped one

    g = torch.Generator().manual_seed(0)
    n_audio = int(2.0 * shipped_config["audio_latent_rate"])  # tokens of a 2 s clip
    channels = shipped_config["audio"]["latent_dim"] // 2  # per ear
    streams = {
        "video": torch.randn(1, 16, 8, 8, 8, generator=g),
        "left": torch.randn(1, n_audio, channels, generator=g),
        "right": torch.randn(1, n_audio, channels, generator=g),
    }
    t = {k: torch.full((1,), 0.4) for k in streams}
    cond = {"text": torch.randn(1, shipped_config["text_len"], 384, generator=g),
            "text_mask": torch.ones(1, shipped_config["text_len"])}  # fmt: skip
    with torch.no_grad():
        got = arm.velocity(streams, t, cond)
        alone = shipped.velocity(streams, t, cond, cross_modal=False)
        with_interaction = shipped.velocity(streams, t, cond)
    for k in streams:
        torch.testing.assert_close(got[k], alone[k], rtol=1e-5, atol=1e-5)
    assert (with_interaction["video"] - alone["video"]).abs().max() > 1e-3  # the shipped interaction does act


def test_at_steps_are_checked_before_training(tmp_path, monkeypatch):
    probe = probe_script()
    monkeypatch.setattr(probe, "train", lambda *a: pytest.fail("trained despite a bad --at"))
    (tmp_path / "cache_train.safetensors").write_bytes(b"")
    (tmp_path / "cache_val.safetensors").write_bytes(b"")
    argv = ["bench_probe.py", "--work", str(tmp_path), "--out", str(tmp_path / "o"), "--fusion", "bidirectional",
            "--steps", "600", "--at", "200"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="multiples of 150"):
        probe.main()
