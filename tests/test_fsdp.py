"""FSDP2: one unit per outermost block for every shipped model; the joint model under FSDP equals DDP; a single-process
(or DDP) checkpoint resumes under FSDP; full states and the EMA are gathered to rank 0 only (on CPU)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_train, tiny_joint_tensors
from safetensors.torch import load_file, save_file

from avflow.config import read_yaml
from avflow.train import checkpoint as ckpt
from avflow.train import fsdp
from avflow.train.components import MODELS
from avflow.train.config import ComponentConfig, OptimConfig, resolve_component
from avflow.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
FSDP_TOL = 1e-5  # max |difference| of weights, EMA or optimizer moments: FSDP2 x2 vs one process / DDP x2

# ---------------------------------------------------------------------------------------------------------------
# Units


def _shipped_model(name: str) -> torch.nn.Module:
    """The network of configs/`name`, on the meta device (its structure; no data or weights are read)."""
    model = read_yaml(REPO / "configs" / name)["model"]
    given = dict(model.get("args", {}))
    if model["name"] == "mmaudio" and given.get("init") is None:  # from scratch: statistics are data, not structure
        given["latent_stats"] = "none"
    args = resolve_component(MODELS, ComponentConfig(model["name"], given), "model")
    with torch.device("meta"):
        return MODELS[model["name"]].build(args)


def test_the_shipped_configs_cover_the_joint_mmaudio_and_binaural_models():
    names = {read_yaml(REPO / "configs" / c)["model"]["name"] for c in CONFIGS}
    assert {"joint", "mmaudio", "binaural"} <= names


@pytest.mark.parametrize("config", CONFIGS)
def test_units_lie_inside_no_other_unit_and_cover_every_block(config):
    """`fully_shard` on a module inside an already sharded unit fails (the joint model's `video.blocks.0.ffn.net.0`
    inside `video.blocks.0`): no unit may lie inside another, and every parameterized block of a ModuleList /
    ModuleDict is in one."""
    model = _shipped_model(config)
    names = {id(m): n for n, m in model.named_modules()}
    units = fsdp._units(model)
    ids = {id(u) for u in units}
    assert len(ids) == len(units) > 0
    nested = [names[id(m)] for u in units for m in u.modules() if m is not u and id(m) in ids]
    assert not nested, f"{config}: units inside other units: {nested[:5]}"
    covered = {id(m) for u in units for m in u.modules()}
    for module in model.modules():
        if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            children = module.values() if isinstance(module, torch.nn.ModuleDict) else module
            for child in children:
                if any(True for _ in child.parameters()):
                    assert id(child) in covered, f"{config}: {names[id(child)]} is in no unit"


# ---------------------------------------------------------------------------------------------------------------
# Optimizer state by position (single process, DDP) -> by name (FSDP)


def test_positional_optimizer_state_becomes_torchs_named_state_exactly():
    """A single-process / DDP checkpoint keys the optimizer state by position; converted, it equals the state
    torch.distributed.checkpoint names (what FSDP saves and loads), tensor for tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[1].weight.requires_grad_(False)  # a frozen parameter: not in the optimizer
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.1))
    for _ in range(2):
        model(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    positional = optimizer.state_dict()
    named = fsdp.optimizer_state_by_name(model, optimizer, positional)
    want = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    assert [g["params"] for g in named["param_groups"]] == [g["params"] for g in want["param_groups"]]
    assert sorted(named["state"]) == sorted(want["state"]) == ["0.bias", "0.weight", "1.bias", "2.bias", "2.weight"]
    for name, moments in want["state"].items():
        for key, value in moments.items():
            assert torch.equal(named["state"][name][key], value), (name, key)
    assert fsdp.optimizer_state_by_name(model, optimizer, named) is named  # already by name: as it is


# ---------------------------------------------------------------------------------------------------------------
# Two processes (gloo on CPU)


def _worst(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


JOINT = {
    "model": {
        "name": "joint",
        "args": {  # default_joint_v2's network (windowed aligners, avsync), tiny
            "video": {"num_attention_heads": 2, "attention_head_dim": 12, "text_dim": 24, "freq_dim": 32,
                      "ffn_dim": 48, "num_layers": 2},  # fmt: skip
            "audio": {"text_dim": 24, "hidden_dim": 32, "depth": 2, "fused_depth": 1, "num_heads": 2,
                      "text_seq_len": 5},  # fmt: skip
            "fusion": "windowed_aligners",
            "fusion_options": {"heads": 2, "every": 1, "window": 1},
            "alignment": "avsync",
            "text_dim": 24,
            "text_len": 5,
        },
    },
    "task": {"name": "joint_flow", "args": {"timesteps": "logit_normal", "cond_dropout": 0.1}},
    "data": {"num_workers": 0},
    "train": {"steps": 3, "batch_size": 4, "seed": 0, "device": "cpu", "precision": "fp32", "threads": 1},
    "optim": {"lr": 1e-3, "grad_clip": 1.0},
    "ema": {"sigma_rels": [0.05]},
    "log": {"every": 1, "val_every": 0, "sample_every": 0, "tensorboard": False, "progress": False},
    "checkpoint": {"every": 3, "keep_last": 1},
}


def _joint_data(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tiny_joint_tensors(), str(folder / "joint.safetensors"))
    return str(folder / "joint.safetensors")


@pytest.mark.slow
def test_joint_model_under_fsdp_trains_and_equals_ddp(tmp_path):
    """The project's joint model (nested ModuleLists in its blocks) trains under FSDP2 and ends where DDP does."""
    data = _joint_data(tmp_path)
    runs = {}
    for strategy in ("ddp", "fsdp"):
        cfg = copy.deepcopy(JOINT)
        cfg["out_dir"] = str(tmp_path / strategy / "run")
        cfg["data"]["train"] = {"name": "tensor_file", "args": {"file": data}}
        cfg["distributed"] = {"strategy": strategy}
        proc = run_train(cfg, tmp_path / strategy, 2)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[strategy] = tmp_path / strategy / "run"
    ddp, sharded = (torch.load(ckpt.checkpoint_path(runs[s] / "checkpoints", 3), weights_only=True) for s in runs)
    worst = _worst(ddp["model"], sharded["model"])
    print(f"joint model, max |param difference| FSDP2 x2 vs DDP x2: {worst:.3g}")
    assert worst <= FSDP_TOL
    assert _worst(ddp["ema"]["averages"][0], sharded["ema"]["averages"][0]) <= FSDP_TOL
    for name in ("model.safetensors", "ema_0.05.safetensors"):
        assert _worst(load_file(runs["ddp"] / name), load_file(runs["fsdp"] / name)) <= FSDP_TOL, name


def _toy(out_dir: Path) -> dict:
    streams = {"audio": [4, 3], "video": [2, 5]}  # 3 classes: an embedding of 3 rows, sharded 2 + 1
    return {
        "out_dir": str(out_dir),
        "model": {"name": "toy_flow", "args": {"streams": streams, "hidden": 16, "depth": 1, "num_classes": 3}},
        "task": {"name": "flow_matching", "args": {"cond_dropout": 0.25}},
        "data": {"train": {"name": "synthetic", "args": {"size": 40, "streams": streams, "num_classes": 3}}},
        "train": {"steps": 4, "batch_size": 8, "seed": 3, "device": "cpu", "threads": 1},
        "optim": {"lr": 1e-2, "weight_decay": 0.01, "grad_clip": 0.5},
        "ema": {"sigma_rels": [0.05, 0.1], "snapshot_every": 2},
        "log": {"every": 2, "sample_every": 0, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 2, "keep_last": 3},
    }


@pytest.mark.slow
def test_a_single_process_checkpoint_resumes_under_fsdp(tmp_path):
    """Step 2 of a single-process run (optimizer state by position) resumed by two FSDP2 processes ends where the
    uninterrupted single-process run does: weights, optimizer moments and step, EMA (checkpoint, snapshot, export)."""
    one = run_train(_toy(tmp_path / "one" / "run"), tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    shutil.copytree(tmp_path / "one" / "run" / "checkpoints", tmp_path / "two" / "run" / "checkpoints")
    for step in (4,):
        for ext in ("pt", "json"):
            (tmp_path / "two" / "run" / "checkpoints" / f"step_{step:08d}.{ext}").unlink()
    cfg = _toy(tmp_path / "two" / "run")
    cfg["distributed"] = {"strategy": "fsdp"}
    two = run_train(cfg, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "resuming" in two.stderr and "step_00000002" in two.stderr

    want = torch.load(ckpt.checkpoint_path(tmp_path / "one/run/checkpoints", 4), weights_only=True)
    got = torch.load(ckpt.checkpoint_path(tmp_path / "two/run/checkpoints", 4), weights_only=True)
    worst = _worst(want["model"], got["model"])
    print(f"single -> fsdp resume, max |param difference| vs the uninterrupted run: {worst:.3g}")
    assert worst <= FSDP_TOL
    names = [n for g in got["optimizer"]["param_groups"] for n in g["params"]]  # by name, in the optimizer's order
    positions = [i for g in want["optimizer"]["param_groups"] for i in g["params"]]
    assert len(names) == len(positions) and all(isinstance(n, str) for n in names)
    for i, name in zip(positions, names):
        a, b = want["optimizer"]["state"][i], got["optimizer"]["state"][name]
        assert float(a["step"]) == float(b["step"]) == 4.0, name  # the moments went on from step 2
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b[key], a[key], atol=1e-7, rtol=1e-4)
    assert got["ema"]["steps"] == 4
    for a, b in zip(want["ema"]["averages"], got["ema"]["averages"]):
        assert _worst(a, b) <= FSDP_TOL
    for name in ("model.safetensors", "ema_0.05.safetensors", "ema_0.1.safetensors", "ema_snapshots/step_00000004"
                 ".safetensors"):  # fmt: skip
        assert _worst(load_file(tmp_path / "one/run" / name), load_file(tmp_path / "two/run" / name)) <= FSDP_TOL


PROBE = r"""
import gc, json, sys
from pathlib import Path
import torch
from avflow.train import distributed as dist, fsdp
from avflow.train.optim import build_optimizer
from avflow.train.config import OptimConfig


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
                                           for _ in range(3)])
        self.emb = torch.nn.Embedding(3, 8)  # 3 rows: shards of 2 and 1

    def forward(self, i):
        x = self.emb(i)
        for block in self.blocks:
            x = block(x)
        return x


info = dist.setup("cpu")
torch.manual_seed(0)
model = Net()
full = {k: v.clone() for k, v in model.state_dict().items()}
fsdp.shard(model, model, info)
nbytes = lambda d: sum(t.numel() * t.element_size() for t in d.values())
out = {"full_bytes": nbytes(full)}
dump = lambda: Path(sys.argv[1], f"rank{info.rank}.json").write_text(json.dumps(out))  # after each part
state = fsdp.full_model_state(model)
out |= {"model_bytes": nbytes(state), "devices": sorted({str(t.device) for t in state.values()})}
if info.is_main:
    out["model_equal"] = sorted(state) == sorted(full) and all(torch.equal(state[k], full[k]) for k in full)
optimizer = build_optimizer(model, OptimConfig(lr=1e-2))
model(torch.tensor([0, 2])).sum().backward()
optimizer.step()
optim = fsdp.full_optimizer_state(model, optimizer)
out["optim_bytes"] = sum(nbytes({k: s[k] for k in ("exp_avg", "exp_avg_sq")}) for s in optim.get("state", {}).values())
dump()
after = fsdp.full_model_state(model)  # the weights after the step (rank 0), sent to every rank
full = dist.broadcast_object(after if info.is_main else None, info)
ema = fsdp.ShardedEMA(model, (0.05,), info.is_main)
out["ema_local_bytes"] = nbytes(ema.averages[0])
gathered = ema.gathered()
out["ema_gathered"] = gathered is not None
if gathered is not None:
    out["ema_equal"] = all(torch.equal(gathered.averages[0][k], full[k]) for k in full)
    out["ema_devices"] = sorted({str(t.device) for t in gathered.averages[0].values()})
ema.load_state_dict({"sigma_rels": [0.05], "steps": 1, "averages": [{k: v + 1 for k, v in full.items()}]})
local = dict(fsdp._LocalShards(model).named_parameters())
out["ema_loaded_shards"] = all(torch.equal(ema.averages[0][k], local[k] + 1) for k in ema.names)
dump()
# as the trainer ends: free what holds the process group while it is alive, and let every rank finish before it is
# torn down (a gloo rank that left early aborted with "terminate called without an active exception" under load)
del model, optimizer, ema, gathered, local, after, full, optim
gc.collect()
dist.barrier(info)
dist.cleanup()
"""


def test_full_states_and_the_ema_are_gathered_to_rank_0_only(tmp_path):
    """Rank 0 gets the full model, optimizer state and EMA on CPU; rank 1 keeps none of them; the EMA holds each
    rank's shards only (an embedding of 3 rows: shards of 2 and 1 rows)."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*launch, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "rank1.json").is_file(), proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["model_bytes"] == r0["full_bytes"] and r0["devices"] == ["cpu"] and r0["model_equal"]
    assert r0["optim_bytes"] == 2 * r0["full_bytes"]  # exp_avg and exp_avg_sq, whole
    assert r1["model_bytes"] == 0 and r1["optim_bytes"] == 0, r1
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r0["ema_gathered"] and r0["ema_equal"] and r0["ema_devices"] == ["cpu"] and not r1["ema_gathered"]
    assert r0["ema_local_bytes"] + r1["ema_local_bytes"] == r0["full_bytes"]
    assert r0["ema_local_bytes"] < r0["full_bytes"] and r1["ema_local_bytes"] < r0["full_bytes"]
    assert r0["ema_loaded_shards"] and r1["ema_loaded_shards"]  # full averages loaded: each rank keeps its shards
