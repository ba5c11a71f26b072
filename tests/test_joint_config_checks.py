"""The joint model's config refuses sizes and rates it cannot build or run with when it loads (one line naming the key
path), stores its fusion's options resolved, and refuses a temporal alignment the fusion cannot use."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TEXT_DIM, one_step_joint_run, tiny_joint_tensors
from safetensors.torch import save_file

from avflow.config import from_dict, to_dict
from avflow.errors import ConfigError
from avflow.models.joint import JointConfig
from avflow.nn.fusion import build_fusion, check_fusion
from avflow.nn.temporal_alignment import TemporalAlignment
from avflow.train import checkpoint as ckpt

ARGS = {  # a tiny joint network (bidirectional fusion, the options left to their defaults)
    "video": dict(
        num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=2
    ),
    "audio": dict(text_dim=TEXT_DIM, hidden_dim=32, depth=2, fused_depth=1, num_heads=2, text_seq_len=5),
    "fusion": "bidirectional",
    "text_dim": TEXT_DIM,
    "text_len": 5,
    "audio_latent_rate": 32.0,
}


def with_args(**changes) -> dict:
    """ARGS with `changes` (`audio={...}` / `video={...}` update those sections)."""
    args = copy.deepcopy(ARGS)
    for key, value in changes.items():
        args[key] = {**args[key], **value} if isinstance(value, dict) and key in ("audio", "video") else value
    return args


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"video_fps": 0.0}, "model.args.video_fps: must be a positive number, got 0.0"),
        ({"video_fps": float("inf")}, "model.args.video_fps: must be a positive number"),
        ({"audio_latent_rate": 0.0}, "model.args.audio_latent_rate: must be a positive number"),
        ({"audio_latent_rate": float("nan")}, "model.args.audio_latent_rate: must be a positive number"),
        ({"video_temporal_stride": -4}, "model.args.video_temporal_stride: must be >= 1, got -4"),
        ({"text_len": 0}, "model.args.text_len: must be >= 1, got 0"),
        ({"audio": {"num_heads": 0}}, "model.args.audio.num_heads: must be >= 1, got 0"),
        ({"audio": {"hidden_dim": 30, "num_heads": 4}}, "model.args.audio.hidden_dim: 30 must split into num_heads=4"),
        ({"audio": {"hidden_dim": 30, "num_heads": 2}}, "model.args.audio.hidden_dim: 30 must split into num_heads=2"),
        ({"audio": {"fused_depth": 3}}, "model.args.audio.fused_depth: need 0 <= fused_depth <= depth"),
        ({"audio": {"fused_depth": -1}}, "model.args.audio.fused_depth: need 0 <= fused_depth <= depth"),
        ({"audio": {"depth": -1}}, "model.args.audio.depth: must be >= 1, got -1"),
        ({"audio": {"latent_dim": 0}}, "model.args.audio.latent_dim: must be >= 1"),
        ({"audio": {"mlp_ratio": 0.0}}, "model.args.audio.mlp_ratio: must be a positive number"),
        ({"video": {"attention_head_dim": 15}}, "model.args.video.attention_head_dim: must be even and >= 6"),
        ({"video": {"attention_head_dim": 4}}, "model.args.video.attention_head_dim: must be even and >= 6"),
        ({"video": {"freq_dim": 33}}, "model.args.video.freq_dim: must be even and >= 2"),
        ({"video": {"num_layers": -2}}, "model.args.video.num_layers: must be >= 1, got -2"),
        ({"video": {"num_attention_heads": 0}}, "model.args.video.num_attention_heads: must be >= 1"),
        ({"video": {"ffn_dim": 0}}, "model.args.video.ffn_dim: must be >= 1"),
        ({"video": {"patch_size": [1, 0, 2]}}, "model.args.video.patch_size: must be 3 sizes >= 1"),
    ],
)
def test_sizes_and_rates_the_network_cannot_use_are_refused_naming_the_key(changes, message):
    with pytest.raises(ConfigError) as info:
        from_dict(JointConfig, with_args(**changes), "model.args")
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_the_tiny_network_and_the_defaults_still_build():
    assert from_dict(JointConfig, ARGS, "model.args").video.dim == 24
    assert JointConfig().fusion_options == {"heads": 2}


def tiny_run(tmp_path: Path, fusion_options: dict | None) -> dict:
    data = tmp_path / "joint.safetensors"
    if not data.exists():
        save_file(tiny_joint_tensors(), str(data))
    args = with_args() if fusion_options is None else with_args(fusion_options=fusion_options)
    return one_step_joint_run(tmp_path / "run", data, args, batch_size=4)


def train(cfg: dict, folder: Path, *overrides: str) -> int:
    from avflow.cli import main

    path = folder / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main(["train", str(path), *overrides])


def test_print_config_names_the_key_of_a_bad_size_in_one_line(tmp_path, capsys):
    cfg = tiny_run(tmp_path, None)
    assert train(cfg, tmp_path, "model.args.audio.num_heads=0", "--print-config") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.args.audio.num_heads: must be >= 1, got 0" in err, err
    assert train(cfg, tmp_path, "--print-config") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["args"]["fusion_options"] == {"heads": 2}  # resolved: the defaults filled in


@pytest.mark.parametrize(
    "fusion, options, resolved",
    [
        ("bidirectional", {}, {"heads": 2}),
        ("bidirectional", {"heads": 4}, {"heads": 4}),
        ("full_attention", {"layers": 1}, {"heads": 2, "layers": 1}),
        ("windowed_aligners", {"every": 2}, {"heads": 2, "every": 2, "window": 1, "region_modulation": False}),
        ("none", {}, {}),
    ],
)
def test_fusion_options_are_stored_resolved(fusion, options, resolved):
    config = from_dict(JointConfig, with_args(fusion=fusion, fusion_options=options), "model.args")
    assert config.fusion_options == resolved and type(config.fusion_options) is dict
    assert to_dict(config)["fusion_options"] == resolved
    assert from_dict(JointConfig, to_dict(config)) == config  # a saved config builds the same again


def test_sparse_and_spelled_out_fusion_options_are_one_network_on_resume(tmp_path, capsys):
    """A run whose checkpoint holds the options as given (`{}`, what earlier versions saved) resumes under a config
    that spells the defaults out, and one saved spelled out resumes under `{}`; other options are another network."""
    cfg = tiny_run(tmp_path, {})
    assert train(cfg, tmp_path) == 0
    path = ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 1)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["config"]["model"]["args"]["fusion_options"] = {}  # as an earlier version saved it
    ckpt.save_checkpoint(path.parent, 1, state, keep_last=1)
    capsys.readouterr()

    spelled = tiny_run(tmp_path, {"heads": 2})
    assert train(spelled, tmp_path, "train.steps=2") == 0, capsys.readouterr().err
    assert "another network" not in capsys.readouterr().err
    assert train(cfg, tmp_path, "train.steps=3") == 0, capsys.readouterr().err
    capsys.readouterr()
    assert train(tiny_run(tmp_path, {"heads": 4}), tmp_path, "train.steps=4") == 2
    err = capsys.readouterr().err
    assert "another network than this config builds (model.args.fusion_options.heads 2 -> 4)" in err, err


@pytest.mark.parametrize("fusion", ["none", "bidirectional"])
def test_an_alignment_the_fusion_cannot_use_is_refused(fusion):
    """`check_fusion` (the config) and `build_fusion` (from Python) refuse it alike; 'none' passes."""
    want = f"alignment: fusion {fusion!r} has no temporal RoPE to align; use alignment 'none'"
    with pytest.raises(ConfigError, match=want):
        check_fusion(fusion, {}, "avsync", video_dim=24, audio_dim=32, n_layers=2)
    with pytest.raises(ConfigError, match=f"model.args.{want}"):
        from_dict(JointConfig, with_args(fusion=fusion, alignment="avsync"), "model.args")
    with pytest.raises(ConfigError, match=want):
        build_fusion(fusion, 24, 32, 2, 2, alignment=TemporalAlignment("avsync"))
    assert build_fusion(fusion, 24, 32, 2, 2, alignment=TemporalAlignment("none")) is not None
    check_fusion(fusion, {}, "none", video_dim=24, audio_dim=32, n_layers=2)
