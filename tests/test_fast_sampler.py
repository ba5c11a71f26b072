"""benchmarks/fast_sampler.py on the joint model (--joint): a tiny random binaural joint model written as an exported
model folder and as a training run folder, with a tiny latent cache; the measurement's counting and MSE pooling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import TEXT_DIM, perturb
from safetensors.torch import save_file

from avflow.config import dump_yaml, to_dict
from avflow.models.audio_tower import AudioTowerConfig
from avflow.models.joint import JointConfig, JointModel
from avflow.models.wan import WanConfig
from avflow.train.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fast_sampler  # noqa: E402

ROWS, TEXT_LEN = 3, 5


def tiny_binaural() -> JointConfig:
    return JointConfig(
        video=WanConfig(num_attention_heads=2, attention_head_dim=8, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=16,
                        num_layers=1),
        audio=AudioTowerConfig(latent_dim=8, text_dim=TEXT_DIM, hidden_dim=16, depth=2, fused_depth=1, num_heads=1,
                               text_seq_len=TEXT_LEN),
        fusion_options={"heads": 2},
        text_dim=TEXT_DIM,
        text_len=TEXT_LEN,
        audio_streams=("left", "right"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def joint_files(tmp_path_factory) -> dict[str, Path]:
    """An exported model folder (fp16 weights, CFG 2), a run folder (config.yaml, one checkpoint with two EMA
    profiles) and a latent cache of 3 rows."""
    root = tmp_path_factory.mktemp("joint")
    torch.manual_seed(0)
    config = tiny_binaural()
    model = perturb(JointModel(config), scale=0.05)  # small: a smooth field, few dopri5 steps
    state = model.state_dict()
    exported = root / "model"
    exported.mkdir()
    save_file({k: v.half() for k, v in state.items()}, str(exported / "joint.safetensors"))
    sampling = {"cfg_strength": 2.0, "steps": 25}
    (exported / "config.json").write_text(json.dumps({"joint": to_dict(config), "sampling": sampling}))
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml({"model": {"name": "joint", "args": to_dict(config)}}))
    params = [n for n, p in model.named_parameters()]
    ema = {"sigma_rels": [0.1, 0.05], "steps": 10,
           "averages": [{n: torch.zeros_like(state[n]) for n in params}, {n: state[n] for n in params}]}  # fmt: skip
    save_checkpoint(run / "checkpoints", 10, {"step": 10, "model": state, "ema": ema}, keep_last=1)
    cache = root / "cache_val.safetensors"
    mask = torch.arange(TEXT_LEN).expand(ROWS, -1) < 3
    save_file({"streams.video": torch.randn(ROWS, 16, 2, 4, 4), "streams.left": torch.randn(ROWS, 6, 4),
               "streams.right": torch.randn(ROWS, 6, 4), "cond.text": torch.randn(ROWS, TEXT_LEN, TEXT_DIM),
               "cond.text_mask": mask.contiguous()}, str(cache))  # fmt: skip
    return {"model": exported, "run": run, "cache": cache}


def run_joint(folder: Path, cache: Path, out: Path, *extra: str) -> dict:
    argv = ["--joint", str(folder), "--joint-cache", str(cache), "--inputs", "2", "--rtol", "1e-3", "--candidates",
            "heun:2:1", "euler:4:2", "--threads", "1", "--json", str(out), *extra]  # fmt: skip
    fast_sampler.main(argv)
    return json.loads(out.read_text())


def test_joint_model_folder_all_streams_counted_and_pooled(joint_files, tmp_path, capsys):
    result = run_joint(joint_files["model"], joint_files["cache"], tmp_path / "out.json")
    facts, rows = result["facts"], result["rows"]
    assert facts["streams"] == {"video": [16, 2, 4, 4], "left": [6, 4], "right": [6, 4]}
    assert facts["cfg"] == 2.0 and facts["guidance"] == "plain"  # the folder's sampling settings
    assert facts["dopri5_nfe"] == 2 * facts["dopri5_forwards"] > 0
    assert [(r["solver"], r["steps"], r["NFE"], r["forwards"]) for r in rows] == [
        ("euler", 25, 50, 25),  # CFG: two branches per velocity, batched into one network call
        ("heun", 2, 8, 4),
        ("euler", 4, 8, 4),
    ]
    sizes = {"video": 16 * 2 * 4 * 4, "left": 6 * 4, "right": 6 * 4}
    for r in rows:
        pooled = sum(r[f"MSE {s}"] * n for s, n in sizes.items()) / sum(sizes.values())
        assert r["MSE"] == pytest.approx(pooled, rel=1e-9) and r["MSE"] > 0
        assert r["time vs Euler 25"] == pytest.approx(r["seconds"] / rows[0]["seconds"])
    assert rows[0]["MSE"] < rows[2]["MSE"]  # 25 Euler steps are closer to the truth than 4
    assert "sampler presets vs dopri5" in capsys.readouterr().out


def test_joint_run_folder_takes_the_checkpoints_smallest_sigma_ema(joint_files, tmp_path):
    """The run's checkpoint holds the weights as EMA sigma_rel 0.05 and zeros as 0.1: the same solutions as the
    exported folder (fp16 there: close, not equal) at --cfg 2."""
    run = run_joint(joint_files["run"], joint_files["cache"], tmp_path / "run.json", "--cfg", "2")
    exported = run_joint(joint_files["model"], joint_files["cache"], tmp_path / "model.json")
    assert "step_00000010.pt (its EMA (sigma_rel 0.05))" in run["facts"]["source"]
    for a, b in zip(run["rows"], exported["rows"]):
        assert a["MSE"] == pytest.approx(b["MSE"], rel=0.2)


def test_joint_run_folder_defaults_to_cfg_3(joint_files):
    fast_sampler_args = fast_sampler.parse_args(["--joint", str(joint_files["run"]), "--joint-cache",
                                                 str(joint_files["cache"]), "--inputs", "1"])  # fmt: skip
    problem = fast_sampler.joint_problem(fast_sampler_args)
    assert problem.sampling.cfg_strength == fast_sampler.JOINT_CFG == 3.0
    assert set(problem.noise) == {"video", "left", "right"} and problem.cond["text"].shape == (1, TEXT_LEN, TEXT_DIM)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--joint", "{empty}", "--joint-cache", "{cache}"], "neither a training run folder"),
        (["--joint", "{model}", "--joint-cache", "{cache}", "--inputs", "4"], "fewer than the 4 inputs"),
        (["--joint", "{model}", "--joint-cache", "{empty}/none.safetensors"], "no such latent cache"),
    ],
)
def test_joint_bad_input_is_one_line(joint_files, tmp_path, argv, message):
    paths = {k: str(v) for k, v in joint_files.items()} | {"empty": str(tmp_path)}
    with pytest.raises(SystemExit) as exc:
        fast_sampler.main([a.format(**paths) for a in argv])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_joint_excludes_the_mmaudio_options(joint_files, capsys):
    with pytest.raises(SystemExit):
        fast_sampler.parse_args(["--joint", str(joint_files["model"]), "--fixture"])
    assert "drop fixture" in capsys.readouterr().err


def test_mse_columns_pool_by_element_count():
    errors = {"video": (8.0, 8), "left": (2.0, 1), "right": (0.0, 1)}
    assert fast_sampler.mse_columns(errors) == {"MSE": 1.0, "MSE video": 1.0, "MSE left": 2.0, "MSE right": 0.0}
    assert fast_sampler.mse_columns({"audio": (3.0, 2)}) == {"MSE": 1.5}


def test_mmaudio_fixture_network_takes_the_same_measurement(fixtures, tmp_path):
    """The MMAudio-layout path (--fixture) through the same candidate loop: one stream, so the pooled MSE only."""
    out = tmp_path / "fixture.json"
    fast_sampler.main(["--fixture", "--inputs", "2", "--rtol", "1e-3", "--candidates", "midpoint:4:3", "--threads", "1",
                       "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["facts"]["streams"] == {"audio": [50, 20]} and result["facts"]["cfg"] == 4.5
    assert [(r["solver"], r["NFE"], r["forwards"]) for r in result["rows"]] == [("euler", 50, 25), ("midpoint", 16, 8)]
    assert "MSE audio" not in result["rows"][0]
