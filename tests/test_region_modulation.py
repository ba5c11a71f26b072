"""Region (face-aware) modulation of the windowed aligners: the joint task supervises the mask head, a given region
mask passes through guidance and cond dropout, and a model deep-copies after a training forward."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import TEXT_DIM, joint_inputs, perturb, tiny_joint_tensors
from safetensors.torch import save_file

from avflow.errors import ConfigError
from avflow.flow.guidance import guided_velocity, preset_branches
from avflow.flow.loss import noised_streams
from avflow.flow.solvers import sample
from avflow.models.audio_tower import AudioTowerConfig
from avflow.models.joint import JointConfig, JointModel
from avflow.models.wan import WanConfig
from avflow.nn.fusion.region_modulation import mask_loss, region_target
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask
from avflow.train.joint_task import JointFlowConfig, JointFlowTask

REGION = {"heads": 2, "every": 1, "window": 1, "region_modulation": True}


def region_model(seed: int = 0, scale: float = 0.0) -> JointModel:
    """A tiny joint model whose windowed aligners modulate by region (video grid (3, 2, 2) for 3x4x4 latents)."""
    torch.manual_seed(seed)
    model = JointModel(
        JointConfig(
            video=WanConfig(
                num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=2
            ),
            audio=AudioTowerConfig(
                text_dim=TEXT_DIM, hidden_dim=32, depth=2, fused_depth=1, num_heads=2, text_seq_len=5
            ),
            fusion="windowed_aligners",
            fusion_options=REGION,
            alignment="avsync",
            text_dim=TEXT_DIM,
            text_len=5,
        )
    )
    return perturb(model, scale) if scale else model


def learnable_batch(seed: int, n: int = 8) -> dict:
    """Clips whose region (a random half of the video tokens) is bright in every channel, so a head can see it."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, 3, 2, 2, generator=g) > 0.5).float()  # on the token grid (patch 1x2x2)
    pixels = mask.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)  # (n, 3, 4, 4)
    video = 0.3 * torch.randn(n, 16, 3, 4, 4, generator=g) + 2.0 * (2 * pixels[:, None] - 1)
    return {
        "streams": {"video": video, "audio": torch.randn(n, 24, 20, generator=g)},
        "cond": {
            "text": torch.randn(n, 5, TEXT_DIM, generator=g),
            "text_mask": torch.ones(n, 5, dtype=torch.bool),
            "region_mask": mask,
        },
        "seed": torch.arange(n) + 1000 * seed,
    }


def predicted_mask_loss(model: JointModel, batch: dict, sigma_min: float = 0.0) -> float:
    """The region-mask loss of the model's own predictions on a prepared batch (no mask given to the model)."""
    cond = {k: v for k, v in batch["cond"].items() if k != "region_mask"}
    xt, _, _ = noised_streams(batch["streams"], batch["t"], batch["noise"], sigma_min)
    aux = {}
    with torch.no_grad():
        model.velocity(xt, batch["t"], cond, aux=aux)
    return float(mask_loss(aux["region_masks"], batch["cond"]["region_mask"]))


def test_joint_task_trains_the_mask_head_on_its_predictions():
    """The task's loss is flow + mask_loss_weight x BCE(predicted masks, cond.region_mask); the head gets gradients
    and learns the region; the model modulates with its prediction, so the given mask changes only the target."""
    model = region_model()
    task = JointFlowTask(JointFlowConfig(cond_dropout=0.0, mask_loss_weight=1.0))
    flow_only = JointFlowTask(JointFlowConfig(cond_dropout=0.0, mask_loss_weight=0.0))
    probe = task.prepare(learnable_batch(99), torch.device("cpu"))

    loss, flow = task.loss(model, probe), flow_only.loss(model, probe)
    torch.testing.assert_close(loss - flow, torch.tensor(predicted_mask_loss(model, probe)), atol=1e-5, rtol=1e-5)
    loss.backward()
    head = [p.grad for p in model.fusion.region.parameters()]
    assert all(g is not None for g in head) and any(g.abs().sum() > 0 for g in head)
    opposite = {**probe, "cond": {**probe["cond"], "region_mask": 1 - probe["cond"]["region_mask"]}}
    torch.testing.assert_close(flow_only.loss(model, opposite), flow)  # no teacher forcing: same velocity

    model.zero_grad(set_to_none=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = predicted_mask_loss(model, probe)
    for step in range(30):
        batch = task.prepare(learnable_batch(step), torch.device("cpu"))
        opt.zero_grad()
        task.loss(model, batch).backward()
        opt.step()
    after = predicted_mask_loss(model, probe)
    assert math.isclose(before, math.log(2), rel_tol=1e-4)  # a fresh head predicts 0.5 everywhere
    assert after < 0.6 * before, (before, after)


def test_object_masks_are_pooled_onto_the_token_grid():
    """Per-object masks (B, T, K, H, W) at pixel resolution are a target as good as their pooled token-grid union."""
    model = region_model(scale=0.05)
    task = JointFlowTask(JointFlowConfig(cond_dropout=0.0, mask_loss_weight=1.0))
    batch = task.prepare(learnable_batch(3, n=2), torch.device("cpu"))
    objects = torch.zeros(2, 12, 2, 32, 32, dtype=torch.bool)
    objects[0, :, 0, :16, :16] = True
    objects[1, 4:, 1, 8:, 8:24] = True
    pooled = {**batch, "cond": {**batch["cond"], "region_mask": region_target(objects, (3, 2, 2))}}
    given = {**batch, "cond": {**batch["cond"], "region_mask": objects}}
    with torch.no_grad():
        torch.testing.assert_close(task.loss(model, given), task.loss(model, pooled))


def test_mask_loss_weight_is_validated():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="mask_loss_weight"):
            JointFlowConfig(mask_loss_weight=bad)
    assert JointFlowConfig().mask_loss_weight == 0.1


@pytest.mark.parametrize("batched", [False, True])
def test_guidance_keeps_a_given_region_mask_in_every_branch(batched):
    """v = v_c + (w - 1)(v_c - v_u) with the given mask in the conditional and the empty-text branch alike."""
    model = region_model(scale=0.05).eval()
    streams, t, cond = joint_inputs(frames=3, tokens=24)
    cond["region_mask"] = (torch.rand(2, 3, 2, 2) > 0.5).float()
    empty = model.empty_conditions(2)
    with torch.no_grad():
        v_c = model.velocity(streams, t, cond)
        v_u = model.velocity(streams, t, {**empty, "region_mask": cond["region_mask"]})
        v_predicted = model.velocity(streams, t, empty)
        v, nfe = guided_velocity(model, streams, t, cond, preset_branches("plain", cfg_strength=3.0), batched=batched)
    assert nfe == 2
    assert not torch.allclose(v_u["video"], v_predicted["video"], atol=1e-4)  # the mask matters to the negative
    for s in v_c:
        torch.testing.assert_close(v[s], v_c[s] + 2.0 * (v_c[s] - v_u[s]), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        modality = preset_branches("modality_text", cfg_strength=2.0, text_cfg_strength=2.0)
        guided_velocity(model, streams, t, cond, modality, batched=batched)
        noise = {k: torch.randn_like(x) for k, x in streams.items()}
        out = sample(model, noise, cond, steps=2, guidance=preset_branches("plain", cfg_strength=3.0))
    assert out.streams["video"].shape == streams["video"].shape


def test_cond_dropout_keeps_the_region_mask():
    """Dropped samples get the empty text and keep their region mask (which has no empty value)."""
    model = region_model(scale=0.05)
    generic = FlowMatchingTask(FlowMatchingConfig(cond_dropout=1.0))  # every sample dropped; the model gets the mask
    batch = generic.prepare(learnable_batch(5, n=4), torch.device("cpu"))
    assert batch["drop"].all()
    xt, target, _ = noised_streams(batch["streams"], batch["t"], batch["noise"], 0.0)
    mask = batch["cond"]["region_mask"]
    with torch.no_grad():
        loss = generic.loss(model, batch)
        pred = model.velocity(xt, batch["t"], {**model.empty_conditions(4), "region_mask": mask})
    expected = torch.stack([(pred[s] - target[s]).square().mean() for s in pred]).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)

    joint = JointFlowTask(JointFlowConfig(cond_dropout=0.5, mask_loss_weight=0.5))
    prepared = joint.prepare(learnable_batch(6, n=8), torch.device("cpu"))
    assert prepared["drop"].any() and not prepared["drop"].all()
    loss = joint.loss(model, prepared)
    loss.backward()
    assert torch.isfinite(loss) and model.fusion.region[0].logit.weight.grad is not None


def test_deepcopy_after_a_training_forward():
    """The fusion keeps no graph after a forward: a model deep-copies (the trainer's EMA sampling) mid-step."""
    model = region_model(scale=0.05)
    task = JointFlowTask(JointFlowConfig(cond_dropout=0.0))
    loss = task.loss(model, task.prepare(learnable_batch(7, n=2), torch.device("cpu")))
    assert loss.requires_grad
    assert all(not m.requires_grad for m in model.fusion.predicted_masks)
    assert len(model.fusion.predicted_masks) == len(model.fusion.layers)
    twin = copy.deepcopy(model)
    streams, t, cond = joint_inputs(frames=3, tokens=24)
    aux = {}
    out = twin.velocity(streams, t, cond, aux=aux)
    assert out["video"].shape == streams["video"].shape
    assert aux["region_grid"] == (3, 2, 2) and all(m.grad_fn is not None for m in aux["region_masks"])
    loss.backward()  # the original step still completes


AUDIT_CONFIG = {  # /tmp/audit2_variants/train/wa_region.yaml: region modulation, EMA, sampling without validation
    "model": {
        "name": "joint",
        "args": {
            "video": {
                "num_attention_heads": 2,
                "attention_head_dim": 12,
                "text_dim": 24,
                "freq_dim": 32,
                "ffn_dim": 48,
                "num_layers": 2,
            },
            "audio": {
                "text_dim": 24,
                "hidden_dim": 32,
                "depth": 2,
                "fused_depth": 1,
                "num_heads": 2,
                "text_seq_len": 5,
            },
            "fusion": "windowed_aligners",
            "fusion_options": {"heads": 2, "every": 1, "window": 1, "region_modulation": True},
            "alignment": "avsync",
            "text_dim": 24,
            "text_len": 5,
        },
    },
    "task": {"name": "joint_flow", "args": {"timesteps": "logit_normal", "cond_dropout": 0.0, "sample_steps": 2}},
    "data": {"num_workers": 0},
    "train": {
        "steps": 3,
        "batch_size": 4,
        "grad_accum": 1,
        "seed": 0,
        "device": "cpu",
        "precision": "fp32",
        "threads": 1,
    },
    "optim": {"lr": 1e-3},
    "ema": {"enabled": True, "sigma_rels": [0.05], "snapshot_every": 0},
    "log": {"every": 1, "val_every": 0, "val_batches": 1, "sample_every": 2, "tensorboard": False, "progress": False},
    "checkpoint": {"every": 100, "keep_last": 1, "resume": "auto"},
}


def audit_data(folder: Path, with_masks: bool) -> Path:
    """The audit's tensor file: 8 clips of 3x4x4 video latents, 24 audio latents, 5 text tokens (and region masks)."""
    data = tiny_joint_tensors()
    if with_masks:
        g = torch.Generator().manual_seed(1)
        data["cond.region_mask"] = (torch.rand(len(data["cond.text"]), 3, 2, 2, generator=g) > 0.5).float()
    path = folder / ("region.safetensors" if with_masks else "plain.safetensors")
    save_file(data, str(path))
    return path


def train_audit(tmp_path: Path, name: str, with_masks: bool, **task_args):
    from avflow.config import from_dict
    from avflow.train.config import TrainConfig, validate
    from avflow.train.trainer import train

    cfg = copy.deepcopy(AUDIT_CONFIG)
    data = str(audit_data(tmp_path, with_masks))
    cfg["out_dir"] = str(tmp_path / name)
    cfg["data"] |= {"train": {"name": "tensor_file", "args": {"file": data}},
                    "val": {"name": "tensor_file", "args": {"file": data}}}  # fmt: skip
    cfg["task"]["args"] |= task_args
    return train(validate(from_dict(TrainConfig, cfg)))


@pytest.mark.parametrize("cond_dropout", [0.0, 0.1])
def test_audit_config_trains_samples_and_logs_the_mask_loss(tmp_path, cond_dropout):
    """Region modulation + EMA, sampling at step 2 with no validation before it (the EMA model is a deep copy), with
    and without cond dropout."""
    result = train_audit(tmp_path, "run", with_masks=True, cond_dropout=cond_dropout)
    assert result.step == 3 and math.isfinite(result.loss)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sampled = [line for line in lines if "sample/region_mask_loss" in line]
    assert len(sampled) == 1 and sampled[0]["step"] == 2 and math.isfinite(sampled[0]["sample/region_mask_loss"])


def test_region_modulation_without_masks_in_the_data(tmp_path):
    """No cond.region_mask: a one-line error naming the way out, which (mask_loss_weight=0) then trains."""
    with pytest.raises(ConfigError, match="cond.region_mask") as info:
        train_audit(tmp_path, "plain", with_masks=False)
    assert "\n" not in str(info.value) and "mask_loss_weight=0" in str(info.value)
    result = train_audit(tmp_path, "unsupervised", with_masks=False, mask_loss_weight=0.0)
    assert result.step == 3 and math.isfinite(result.loss)
