"""`peft:` in a training config: frozen towers and LoRA on them, trained, resumed and exported as a plain model."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import joint_inputs, perturb, run_train, tiny_joint_tensors
from safetensors.torch import load_file, save_file

from avflow.config import from_dict
from avflow.errors import ConfigError, TrainingWarning, WeightsError
from avflow.models.joint import JointConfig, JointModel
from avflow.models.peft import PeftConfig, apply_peft
from avflow.train import checkpoint as ckpt
from avflow.train.config import TrainConfig, load_train_config, validate
from avflow.train.trainer import train
from avflow.weights import load_strict, merge_lora_state, read_state_dict, run_weights

JOINT_ARGS = {
    "video": {
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "text_dim": 24,
        "freq_dim": 32,
        "ffn_dim": 48,
        "num_layers": 2,
    },
    "audio": {"text_dim": 24, "hidden_dim": 32, "depth": 2, "fused_depth": 1, "num_heads": 2, "text_seq_len": 5},
    "fusion": "windowed_aligners",
    "fusion_options": {"heads": 2, "every": 1, "window": 1},
    "alignment": "avsync",
    "text_dim": 24,
    "text_len": 5,
}
PEFT = {"lora_rank": 2, "lora_alpha": 4.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The training data and "pretrained" plain weights (every parameter perturbed, so the adapters see signal)."""
    folder = tmp_path_factory.mktemp("peft_files")
    save_file(tiny_joint_tensors(), str(folder / "data.safetensors"))
    torch.manual_seed(1)
    model = perturb(JointModel(from_dict(JointConfig, JOINT_ARGS)), 0.1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "pretrained.safetensors"))
    return {"data": str(folder / "data.safetensors"), "weights": str(folder / "pretrained.safetensors")}


def config(files: dict, out_dir: Path, steps: int = 2, peft: dict | None = PEFT) -> dict:
    return {
        "out_dir": str(out_dir),
        "model": {"name": "joint", "args": copy.deepcopy(JOINT_ARGS)},
        "task": {"name": "joint_flow", "args": {"timesteps": "logit_normal", "cond_dropout": 0.1}},
        "data": {"train": {"name": "tensor_file", "args": {"file": files["data"]}}, "num_workers": 0},
        "train": {"steps": steps, "batch_size": 4, "seed": 0, "device": "cpu", "precision": "fp32", "threads": 1},
        "optim": {"lr": 1e-2},
        "ema": {"sigma_rels": [0.05]},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 100, "keep_last": 2},
        "init": {"weights": files["weights"]},
        "peft": peft,
    }


def run(cfg: dict):
    return train(validate(from_dict(TrainConfig, cfg)))


def plain_model() -> JointModel:
    return JointModel(from_dict(JointConfig, JOINT_ARGS)).eval()


@pytest.fixture(scope="module")
def two_steps(files, tmp_path_factory) -> Path:
    """The out_dir of a 2-step peft run."""
    out = tmp_path_factory.mktemp("peft_run") / "run"
    run(config(files, out))
    return out


def test_peft_trains_only_fusion_and_adapters(files, two_steps):
    pretrained = load_file(files["weights"])
    state = torch.load(ckpt.checkpoint_path(two_steps / "checkpoints", 2), weights_only=True)
    model = state["model"]
    adapters = [k for k in model if ".lora_" in k]
    assert adapters and all(k.endswith((".lora_a", ".lora_b")) for k in adapters)
    assert state["lora_scale"] == PEFT["lora_alpha"] / PEFT["lora_rank"]  # how a reader folds the adapters
    for key, value in model.items():
        if key.startswith(("video.", "audio.")) and ".lora_" not in key:
            assert torch.equal(value, pretrained[key]), f"frozen {key} changed"
    assert any(not torch.equal(model[k], pretrained[k]) for k in pretrained if k.startswith("fusion."))
    assert all(model[k].abs().sum() > 0 for k in adapters if k.endswith(".lora_b"))  # zero-initialized, now trained
    # the optimizer and the EMA hold the trainable parameters only: the fusion and the adapters
    trainable = [k for k in model if k.startswith("fusion.") or ".lora_" in k]
    assert sum(len(g["params"]) for g in state["optimizer"]["param_groups"]) == len(trainable)
    assert sorted(state["ema"]["averages"][0]) == sorted(trainable)
    assert state["config"]["peft"] == {**PEFT, "lora_targets": ["attn", "ffn", "linear1"], "towers": ["video", "audio"]}


def test_peft_run_says_what_trains(files, tmp_path, capfd):
    run(config(files, tmp_path / "run", steps=1))
    err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("peft:"))
    assert "towers video, audio frozen, LoRA rank 2 on" in line and "trainable" in line and "fusion" in line


def test_peft_exports_plain_merged_weights(files, two_steps):
    """model.safetensors and the EMA export load strictly into the plain model `model.args` builds and compute what
    the LoRA model does; a checkpoint read as weights (a run folder whose checkpoint is newer) folds them alike."""
    state = torch.load(ckpt.checkpoint_path(two_steps / "checkpoints", 2), weights_only=True)
    lora = JointModel(from_dict(JointConfig, JOINT_ARGS))
    apply_peft(lora, PeftConfig(**PEFT))
    lora.load_state_dict(state["model"])
    plain = plain_model()
    load_strict(plain, load_file(two_steps / "model.safetensors"), "model.safetensors")
    streams, t, cond = joint_inputs(2, 3, 24)
    with torch.no_grad():
        want, got = lora.eval().velocity(streams, t, cond), plain.velocity(streams, t, cond)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)

    ema = load_file(two_steps / "ema_0.05.safetensors")
    assert sorted(ema) == sorted(plain.state_dict())
    pretrained = load_file(files["weights"])
    assert torch.equal(ema["video.blocks.0.norm2.weight"], pretrained["video.blocks.0.norm2.weight"])  # frozen
    assert not torch.equal(ema["video.blocks.0.attn1.to_q.weight"], pretrained["video.blocks.0.attn1.to_q.weight"])
    with pytest.warns(Warning, match="training checkpoint"):
        from_checkpoint = read_state_dict(ckpt.checkpoint_path(two_steps / "checkpoints", 2))
    assert sorted(from_checkpoint) == sorted(ema)
    for key in ema:
        torch.testing.assert_close(from_checkpoint[key], ema[key], atol=1e-6, rtol=1e-6)
    # as docs/training.md says of EMA snapshots: averages of the trainable parameters, folded with the checkpoint's
    folded = merge_lora_state(state["model"] | state["ema"]["averages"][0], state["lora_scale"])
    for key in ema:
        torch.testing.assert_close(folded[key], ema[key], atol=1e-6, rtol=1e-6)
    weights, _ = run_weights(two_steps)  # what `avflow generate --model RUN_DIR` loads
    load_strict(plain_model(), weights, str(two_steps))


def test_peft_run_resumes_exactly(files, two_steps, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(two_steps, resumed)
    with pytest.warns(TrainingWarning, match=r"resuming .* \(step 2 of 3\)$"):  # no change to note
        assert run(config(files, resumed, steps=3)).step == 3
    straight = tmp_path / "straight"
    run(config(files, straight, steps=3))
    a, b = (torch.load(ckpt.checkpoint_path(d / "checkpoints", 3), weights_only=True) for d in (resumed, straight))
    assert sorted(a["model"]) == sorted(b["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.parametrize(
    ("peft", "said"),
    [({**PEFT, "lora_rank": 4}, "peft.lora_rank 2 -> 4"), (None, "peft {lora_rank: 2"),
     ({**PEFT, "towers": ["video"]}, "peft.towers ['video', 'audio'] -> ['video']")],
)  # fmt: skip
def test_resume_with_another_peft_is_refused(files, two_steps, tmp_path, peft, said):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    with pytest.raises(WeightsError, match="another network") as info:
        run(config(files, out, steps=3, peft=peft))
    message = str(info.value)
    assert "\n" not in message and said in message and "or the peft section it was trained with" in message


def test_resume_without_peft_of_a_plain_run_is_refused_with_peft(files, tmp_path):
    out = tmp_path / "run"
    run(config(files, out, steps=1, peft=None))
    with pytest.raises(WeightsError, match=r"another network .*\(peft null -> \{lora_rank: 2"):
        run(config(files, out, steps=2))


def test_checkpoint_from_before_the_peft_section_resumes_without_a_note(files, tmp_path):
    """A checkpoint whose config has no `peft` key (saved before the section existed) is the same as `peft: null`."""
    out = tmp_path / "run"
    run(config(files, out, steps=1, peft=None))
    path = ckpt.checkpoint_path(out / "checkpoints", 1)
    state = torch.load(path, weights_only=True)
    del state["config"]["peft"]
    ckpt.save_checkpoint(out / "checkpoints", 1, state, keep_last=2)
    with pytest.warns(TrainingWarning) as said:
        run(config(files, out, steps=2, peft=None))
    assert [str(w.message).endswith("(step 1 of 2)") for w in said] == [True]
    assert not list(out.glob("config_until_step_*.yaml"))


@pytest.mark.slow
def test_peft_under_fsdp_equals_ddp(files, tmp_path):
    """Two gloo processes: FSDP2 shards the frozen towers with their adapters and exports what DDP does."""
    exports = []
    for strategy in ("ddp", "fsdp"):
        cfg = config(files, tmp_path / strategy / "run") | {"distributed": {"strategy": strategy}}
        proc = run_train(cfg, tmp_path / strategy, 2)
        assert proc.returncode == 0, proc.stderr[-3000:]
        exports.append(load_file(tmp_path / strategy / "run" / "ema_0.05.safetensors"))
    assert sorted(exports[0]) == sorted(exports[1]) == sorted(plain_model().state_dict())
    for key in exports[0]:
        torch.testing.assert_close(exports[1][key], exports[0][key], atol=1e-5, rtol=1e-5)


def test_peft_section_loads_from_yaml(files, tmp_path):
    cfg = config(files, tmp_path / "run", peft={"lora_rank": 8, "lora_alpha": 8, "towers": ["video", "audio"]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_train_config(tmp_path / "c.yaml").peft
    assert loaded == PeftConfig(lora_rank=8, lora_alpha=8.0, towers=("video", "audio"))
    assert load_train_config(tmp_path / "c.yaml", ["peft=null"]).peft is None


@pytest.mark.parametrize(
    ("change", "said"),
    [({"model": {"name": "toy_flow", "args": {}}}, "peft: the 'toy_flow' model has no video tower to freeze"),
     ({"init": {}}, "peft: needs init.weights"),
     ({"peft": {"lora_rank": -1}}, "peft.lora_rank: must be >= 0"),
     ({"peft": {"lora_alpha": 0}}, "peft.lora_alpha: must be > 0"),
     ({"peft": {"towers": ["video", "text"]}}, "peft.towers: one or both of video, audio"),
     ({"peft": {"towers": []}}, "peft.towers: one or both of video, audio"),
     ({"peft": {"lora_targets": []}}, "peft.lora_targets: needs at least one")],
)  # fmt: skip
def test_bad_peft_section_is_one_line_at_load(files, tmp_path, change, said):
    cfg = config(files, tmp_path / "run") | change
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as info:
        load_train_config(tmp_path / "c.yaml")
    assert said in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()
