"""Trainer core: DDP parity under torchrun, exact resume after SIGKILL, corrupt checkpoints, EMA, sampler, schedule."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_train

from avflow.errors import ConfigError, TrainingWarning
from avflow.train import checkpoint as ckpt
from avflow.train.config import ScheduleConfig
from avflow.train.ema import PowerFunctionEMA, reconstruct, sigma_rel_to_gamma
from avflow.train.optim import lr_factor
from avflow.train.sampler import ResumableBatchSampler
from avflow.weights import atomic_write

REPO = Path(__file__).resolve().parents[1]
STREAMS = {"audio": [4, 3], "video": [2, 5]}
PARITY_TOL = 1e-6  # max |param difference| between 1 and 2 processes after 6 AdamW steps


def tiny_config(out_dir: Path) -> dict:
    return {
        "out_dir": str(out_dir),
        "model": {"name": "toy_flow", "args": {"streams": STREAMS, "hidden": 16, "depth": 1, "num_classes": 3}},
        "task": {"name": "flow_matching", "args": {"cond_dropout": 0.25, "sample_steps": 2}},
        "data": {
            "train": {"name": "synthetic", "args": {"size": 40, "streams": STREAMS, "num_classes": 3}},
            "val": {"name": "synthetic", "args": {"size": 8, "streams": STREAMS, "num_classes": 3, "seed": 1}},
        },
        "train": {"steps": 6, "batch_size": 8, "seed": 3, "device": "cpu", "threads": 1},
        "optim": {"lr": 1e-2, "weight_decay": 0.01, "grad_clip": 0.5},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
        "ema": {"sigma_rels": [0.05, 0.1]},
        "log": {
            "every": 2,
            "val_every": 3,
            "val_batches": 1,
            "sample_every": 3,
            "tensorboard": False,
            "progress": False,
        },
        "checkpoint": {"every": 2, "keep_last": 3},
    }


def final_state(out_dir: Path, step: int = 6) -> dict:
    return torch.load(ckpt.checkpoint_path(out_dir / "checkpoints", step), weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted single-process run of 6 steps (checkpoints at 2, 4, 6; TensorBoard on)."""
    folder = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(folder / "run")
    cfg["log"]["tensorboard"] = True
    proc = run_train(cfg, folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "run"


def test_reference_run_outputs(reference):
    names = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert names == [f"step_{s:08d}.{ext}" for s in (2, 4, 6) for ext in ("json", "pt")]
    assert list((reference / "tb").glob("events.out.tfevents.*"))
    assert (reference / "model.safetensors").is_file() and (reference / "ema_0.05.safetensors").is_file()
    state = final_state(reference)
    assert state["step"] == 6 and state["epoch"] == 1 and state["position"] == 1  # 5 batches per epoch
    assert state["ema"]["steps"] == 6 and len(state["rng"]) == 1


def test_two_processes_match_one(reference, tmp_path):
    proc = run_train(tiny_config(tmp_path / "run"), tmp_path, nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = final_state(reference), final_state(tmp_path / "run")
    assert len(two["rng"]) == 2
    worst = max((one["model"][k] - two["model"][k]).abs().max().item() for k in one["model"])
    print(f"max |param difference| 1 vs 2 processes: {worst:.3g}")
    assert worst <= PARITY_TOL
    for a, b in zip(one["optimizer"]["state"].values(), two["optimizer"]["state"].values()):
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-8, rtol=1e-4)


def test_sigkill_mid_step_then_resume_is_exact(tmp_path):
    """Two ranks with dropout (so every rank's RNG state matters) killed in step 5, resumed from step 4."""
    cfg = tiny_config(tmp_path / "run")
    cfg["model"]["args"]["dropout"] = 0.2
    ref_cfg = tiny_config(tmp_path / "ref")
    ref_cfg["model"]["args"]["dropout"] = 0.2
    reference = run_train(ref_cfg, tmp_path / "r", nproc=2)
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = run_train(cfg, tmp_path, nproc=2, env={"AVFLOW_TRAIN_KILL_AT": "5:mid"})
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [4, 2]
    resumed = run_train(cfg, tmp_path, nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = final_state(tmp_path / "ref"), final_state(tmp_path / "run")
    for k in want["model"]:
        assert torch.equal(want["model"][k], got["model"][k]), k
    for i, s in want["optimizer"]["state"].items():
        for name in s:
            assert torch.equal(s[name], got["optimizer"]["state"][i][name]), (i, name)
    for a, b in zip(want["ema"]["averages"], got["ema"]["averages"]):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert want["scheduler"] == got["scheduler"]
    assert all(torch.equal(a["torch"], b["torch"]) for a, b in zip(want["rng"], got["rng"]))


def test_truncated_checkpoint_falls_back_to_previous(reference, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", folder)
    latest = ckpt.checkpoint_path(folder, 6)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with pytest.warns(TrainingWarning, match=r"step_00000006\.pt.*truncated"):
        path, state = ckpt.load_latest(folder)
    assert path.name == "step_00000004.pt" and state["step"] == 4


def test_under_torchrun_rank_0_alone_reports_what_every_rank_shares(reference, tmp_path):
    """Every rank loads the same config and resumes the same checkpoint: a config error, the notes on how the run
    goes on (a damaged checkpoint skipped, the RNG streams reseeded) and the result are said once, by rank 0, as
    `avflow train: note: ...` lines (they were printed by every rank, and the fallback as a Python warning)."""
    proc = run_train(tiny_config(tmp_path / "bad"), tmp_path / "bad", 2, None, "train.batch_size=33")
    assert proc.returncode != 0 and proc.stderr.count("avflow train: error:") == 1, proc.stderr[-3000:]
    assert "batch_size: 33 is not divisible" in proc.stderr
    run = tmp_path / "resume" / "run"
    shutil.copytree(reference, run)
    latest = ckpt.checkpoint_path(run / "checkpoints", 6)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    proc = run_train(tiny_config(run), tmp_path / "resume", 2, None, "train.steps=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("avflow train: note:")]
    assert sum("falling back to the previous checkpoint" in n for n in notes) == 1, proc.stderr[-3000:]
    assert sum("resumed by 2" in n for n in notes) == 1, proc.stderr[-3000:]
    assert "RuntimeWarning" not in proc.stderr
    assert proc.stdout.count("step 8: loss") == 1, proc.stdout


def test_checkpoint_without_manifest_or_with_bad_bytes_is_skipped(reference, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", folder)
    ckpt.checkpoint_path(folder, 6).with_suffix(".json").unlink()  # write interrupted before the manifest
    data = bytearray(ckpt.checkpoint_path(folder, 4).read_bytes())
    data[len(data) // 2] ^= 0xFF  # silent corruption, same size
    ckpt.checkpoint_path(folder, 4).write_bytes(bytes(data))
    with pytest.warns(TrainingWarning) as record:
        path, _ = ckpt.load_latest(folder)
    assert path.name == "step_00000002.pt"
    messages = " | ".join(str(w.message) for w in record)
    assert "no manifest" in messages and "checksum mismatch" in messages


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_power_ema_weights_match_the_power_profile():
    gamma = sigma_rel_to_gamma(0.1)
    assert abs((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)) - 0.1**2) < 1e-10
    model = torch.nn.Linear(1, 1, bias=False)
    ema = PowerFunctionEMA(model, (0.1,))
    n = 50
    for k in range(1, n + 1):
        model.weight.data.fill_(float(k))
        ema.update(model)
    ks = torch.arange(1, n + 1, dtype=torch.float64)
    weights = (ks ** (gamma + 1) - (ks - 1) ** (gamma + 1)) / n ** (gamma + 1)  # exact weight of step k
    expected = float((weights * ks).sum())
    assert abs(ema.averages[0]["weight"].item() - expected) < 1e-4 * expected


def test_posthoc_reconstruction_approximates_a_tracked_profile(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    stored = PowerFunctionEMA(model, (0.05, 0.1))
    tracked = PowerFunctionEMA(model, (0.07,))
    paths = []
    for step in range(1, 201):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p) + 0.01)
        stored.update(model)
        tracked.update(model)
        if step % 20 == 0:
            paths.append(tmp_path / f"s{step}.safetensors")
            stored.snapshot(paths[-1])
    rebuilt = reconstruct(paths, 0.07)
    spread = max((stored.averages[0][k] - stored.averages[1][k]).abs().max().item() for k in rebuilt)
    error = max((rebuilt[k] - tracked.averages[0][k]).abs().max().item() for k in rebuilt)
    assert error < 0.1 * spread, (error, spread)


def test_posthoc_weights_sum_to_one_so_a_constant_stays_itself(tmp_path):
    """Every EMA profile has unit mass: a tensor constant over training (an untrained buffer, a frozen weight) is
    reconstructed as itself for any sigma_rel, even from a few snapshots (plain least squares scaled it by 0.91 for
    four snapshots and sigma_rel 0.2), and a stored profile is still reconstructed exactly."""
    import numpy as np

    from avflow.train.ema import posthoc_coefficients

    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.fill_(0.5)
        model.bias.fill_(-2.0)
    stored = PowerFunctionEMA(model, (0.05, 0.1))
    paths = []
    for step in range(1, 41):
        stored.update(model)
        if step % 10 == 0:
            paths.append(tmp_path / f"s{step}.safetensors")
            stored.snapshot(paths[-1])
    for sigma_rel in (0.02, 0.07, 0.2):
        rebuilt = reconstruct(paths, sigma_rel)
        assert torch.allclose(rebuilt["weight"], torch.full((4, 4), 0.5), atol=1e-5), (sigma_rel, rebuilt["weight"])
        assert torch.allclose(rebuilt["bias"], torch.full((4,), -2.0), atol=1e-5)
    profiles = [(sigma_rel_to_gamma(s), float(t)) for t in (10, 20, 30, 40) for s in (0.05, 0.1)]
    own = posthoc_coefficients(profiles, profiles[-1])
    assert np.allclose(own, np.eye(len(profiles))[-1], atol=1e-6), own


def test_sampler_splits_global_batches_and_resumes():
    size, batch = 23, 6
    full = ResumableBatchSampler(size, batch, 1, 0, 1, seed=5)
    split = [ResumableBatchSampler(size, batch, 2, r, 3, seed=5) for r in range(3)]  # 2 micro-steps x 3 ranks
    globals_ = [sorted(i for i, _ in b) for b in full]
    per_rank = [list(s) for s in split]
    assert all(len(b) == 1 for r in per_rank for b in r)
    for g in range(size // batch):
        merged = sorted(i for r in per_rank for b in r[2 * g : 2 * g + 2] for i, _ in b)
        assert merged == globals_[g]
    resumed = ResumableBatchSampler(size, batch, 1, 0, 1, seed=5)
    resumed.set_state(0, 2)
    assert [sorted(i for i, _ in b) for b in resumed] == globals_[2:]
    full.set_state(1, 0)
    assert [sorted(i for i, _ in b) for b in full] != globals_  # a new permutation each epoch


def test_lr_schedules():
    cos = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cos, 110) == pytest.approx(0.1) and lr_factor(9, cos, 110) == pytest.approx(1.0)
    assert lr_factor(10, cos, 110) == pytest.approx(1.0) and lr_factor(60, cos, 110) == pytest.approx(0.55)
    assert lr_factor(110, cos, 110) == pytest.approx(0.1)
    step = ScheduleConfig(kind="step", milestones=[5, 8], gamma=0.5)
    assert [lr_factor(s, step, 10) for s in (4, 5, 7, 8)] == [1.0, 0.5, 0.5, 0.25]


def test_cosine_warm_restarts():
    one = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    two = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1, restarts=[110], restart_peak=0.5)
    assert [lr_factor(s, two, 310) for s in range(110)] == [lr_factor(s, one, 110) for s in range(110)]
    assert lr_factor(110, two, 310) == pytest.approx(0.05) and lr_factor(119, two, 310) == pytest.approx(0.5)
    assert lr_factor(220, two, 310) == pytest.approx(0.1 + 0.4 * 0.5 * (1 + math.cos(math.pi * 100 / 190)))
    assert lr_factor(310, two, 310) == pytest.approx(0.1)
    for bad in ({"restarts": [5]}, {"restarts": [50, 40]}, {"restart_peak": 0.0}):
        with pytest.raises(ConfigError):
            ScheduleConfig(kind="cosine", warmup_steps=10, **bad)
    with pytest.raises(ConfigError, match="only for kind cosine"):
        ScheduleConfig(kind="step", restarts=[50])


def in_process_run(tmp_path: Path, name: str, **loop) -> dict:
    from avflow.config import from_dict
    from avflow.train.config import TrainConfig, validate
    from avflow.train.trainer import train

    cfg = tiny_config(tmp_path / name)
    cfg["train"].update(steps=3, threads=None, **loop)
    cfg["log"].update(val_every=0, sample_every=0)
    result = train(validate(from_dict(TrainConfig, cfg)))
    assert result.step == 3 and result.loss is not None and result.loss == result.loss  # finite, not NaN
    return final_state(tmp_path / name, 3)["model"]


def test_grad_accumulation_matches_and_bf16_autocast_runs(tmp_path):
    plain = in_process_run(tmp_path, "plain")
    accum = in_process_run(tmp_path, "accum", grad_accum=4)
    assert max((plain[k] - accum[k]).abs().max().item() for k in plain) <= PARITY_TOL
    bf16 = in_process_run(tmp_path, "bf16", precision="bf16")
    diff = max((plain[k] - bf16[k]).abs().max().item() for k in plain)
    assert 0 < diff < 0.05  # bf16 autocast changes the numerics a little, and only a little


def test_init_weights_and_freeze(tmp_path):
    """`init.weights` starts a run from trained weights; parameters under `init.freeze` stay exactly as loaded."""
    from avflow.config import from_dict
    from avflow.errors import ConfigError
    from avflow.train.config import TrainConfig, validate
    from avflow.train.trainer import train
    from avflow.weights import read_state_dict

    in_process_run(tmp_path, "first")
    cfg = tiny_config(tmp_path / "second")
    cfg["train"].update(steps=3, threads=None)
    cfg["log"].update(val_every=0, sample_every=0)
    cfg["init"] = {"weights": str(tmp_path / "first" / "model.safetensors"), "freeze": ["inputs.", "time."]}
    train(validate(from_dict(TrainConfig, cfg)))
    loaded = read_state_dict(tmp_path / "first" / "model.safetensors")
    second = final_state(tmp_path / "second", 3)["model"]
    frozen = [k for k in second if k.startswith(("inputs.", "time."))]
    assert frozen and all(torch.equal(second[k], loaded[k]) for k in frozen)
    trained = [k for k in second if k.startswith("outputs.")]
    assert all(not torch.equal(second[k], loaded[k]) for k in trained)
    cfg["init"]["freeze"] = ["nothing."]
    with pytest.raises(ConfigError, match="init.freeze: no parameter name starts with 'nothing.'"):
        train(validate(from_dict(TrainConfig, cfg | {"out_dir": str(tmp_path / "third")})))
    with pytest.raises(ConfigError, match="freeze: needs init.weights"):
        from_dict(TrainConfig, cfg | {"init": {"freeze": ["inputs."]}})


def test_init_new_parts_keep_their_initialization(tmp_path):
    """`init.new` names parts trained from scratch (a head added to a trained model): they start from their own
    initialization, whether the file has them or not, everything else strictly from the file; without it a missing
    part is a one-line error."""
    from avflow.config import from_dict
    from avflow.errors import ConfigError, WeightsError
    from avflow.train.config import TrainConfig, validate
    from avflow.train.trainer import train
    from avflow.weights import read_state_dict, save_safetensors

    in_process_run(tmp_path, "first")
    loaded = read_state_dict(tmp_path / "first" / "model.safetensors")
    partial = {k: v for k, v in loaded.items() if not k.startswith("outputs.")}
    save_safetensors(partial, tmp_path / "partial.safetensors")
    cfg = tiny_config(tmp_path / "second")
    cfg["train"].update(steps=1, threads=None)
    cfg["log"].update(val_every=0, sample_every=0)
    cfg["init"] = {"weights": str(tmp_path / "partial.safetensors"), "new": ["outputs."], "freeze": ["inputs."]}
    train(validate(from_dict(TrainConfig, cfg)))
    second = final_state(tmp_path / "second", 1)["model"]
    assert all(torch.equal(second[k], loaded[k]) for k in partial if k.startswith("inputs."))
    assert all(not torch.equal(second[k], loaded[k]) for k in loaded if k.startswith("outputs."))
    full_init = {**cfg["init"], "weights": str(tmp_path / "first" / "model.safetensors")}
    train(validate(from_dict(TrainConfig, cfg | {"out_dir": str(tmp_path / "full"), "init": full_init})))
    full = final_state(tmp_path / "full", 1)["model"]
    assert all(torch.equal(full[k], second[k]) for k in second)  # the file's outputs.* were not loaded
    with pytest.raises(WeightsError, match="missing keys: outputs"):
        train(validate(from_dict(TrainConfig, cfg | {"out_dir": str(tmp_path / "third"),
                                                     "init": {"weights": cfg["init"]["weights"]}})))  # fmt: skip
    with pytest.raises(ConfigError, match="init.new: no parameter or buffer name starts with 'nothing.'"):
        train(validate(from_dict(TrainConfig, cfg | {"out_dir": str(tmp_path / "fourth"),
                                                     "init": {**cfg["init"], "new": ["nothing."]}})))  # fmt: skip
    with pytest.raises(ConfigError, match="new: needs init.weights"):
        from_dict(TrainConfig, cfg | {"init": {"new": ["outputs."]}})


@pytest.mark.parametrize(
    "two_object_cycles, video_cycles, mirrored_cycles", [(0, 0, 0), (1, 0, 0), (1, 2, 0), (0, 2, 2)]
)
def test_default_model_later_cycles_chain(tmp_path, monkeypatch, two_object_cycles, video_cycles, mirrored_cycles):
    """scripts/train_default_v2.py starts each later cycle from the weights the run before it ends on: the first
    from the 10000-step file the cycle config names, each next one a cycle's steps later, into joint3, joint4, ...,
    then the grown cycles into grown1, grown2, ...: the first grows the model (the grow config's init), the next
    ones load the grown weights plainly; then the two-object cycles into two1, ..., which load the grown weights
    plainly and train on the cache with the two-object clips repeated; then the video-weighted cycles into video1,
    ..., which load them plainly and weigh the video stream's loss (bf16 autocast); then the mirrored cycles into
    mirror1, ..., video-weighted too, on the cache with every clip's mirror added."""
    from avflow.config import read_yaml

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_default_v2 as script

    monkeypatch.setattr(script, "TWO_OBJECT_CYCLES", two_object_cycles)
    monkeypatch.setattr(script, "VIDEO_WEIGHTED_CYCLES", video_cycles)
    monkeypatch.setattr(script, "MIRRORED_CYCLES", mirrored_cycles)
    plan = script.cycle_plan(tmp_path)
    later = two_object_cycles + video_cycles + mirrored_cycles
    assert len(plan) == script.LATER_CYCLES + script.GROWN_CYCLES + later
    assert script.LATER_CYCLES >= 1
    named = Path(read_yaml(script.CYCLE_CONFIG)["init"]["weights"]).name
    assert plan[0].start == tmp_path / named == tmp_path / "joint_10000.safetensors"
    steps = 10000
    two_cache = f"data.train.args.file={tmp_path / 'cache_train_two.safetensors'}"
    mirror_cache = f"data.train.args.file={tmp_path / 'cache_train_mirror.safetensors'}"
    for k, cycle in enumerate(plan):
        grown = k - script.LATER_CYCLES  # index among the grown cycles, < 0 before them
        two = grown - script.GROWN_CYCLES  # index among the two-object cycles, < 0 before them
        video = two - two_object_cycles  # index among the video-weighted cycles, < 0 before them
        mirror = video - video_cycles  # index among the mirrored cycles, < 0 before them
        name = (f"joint{k + 3}" if grown < 0 else f"grown{grown + 1}" if two < 0 else f"two{two + 1}" if video < 0
                else f"video{video + 1}" if mirror < 0 else f"mirror{mirror + 1}")  # fmt: skip
        assert cycle.run == tmp_path / name
        assert cycle.config == (script.CYCLE_CONFIG if grown < 0 else script.GROW_CONFIG)
        continued = tuple(script.CONTINUE_GROWN) if grown > 0 else ()
        extra = (two_cache,) if 0 <= two < two_object_cycles else tuple(script.VIDEO_WEIGHTED) if video >= 0 else ()
        extra += (mirror_cache, *script.MIRRORED) if mirror >= 0 else ()
        assert cycle.overrides == continued + extra
        assert cycle.start.name == f"joint_{steps}.safetensors"
        steps += read_yaml(cycle.config)["train"]["steps"]
    grow_start = Path(read_yaml(script.GROW_CONFIG)["init"]["weights"]).name
    assert plan[script.LATER_CYCLES].start.name == grow_start  # the config's own start: the later cycles' end
    if video_cycles:  # the video-weighted cycles' overrides make a valid config with the video weighted
        from avflow.train.config import load_train_config

        monkeypatch.chdir(REPO)
        cache = tmp_path / "cache.safetensors"
        for file in (cache, tmp_path / "cache_train_mirror.safetensors"):
            file.write_bytes(b"")
        over = [f"data.train.args.file={cache}", f"data.val.args.file={cache}", f"init.weights={cache}"]
        config = load_train_config(plan[-1].config, [*over, *plan[-1].overrides])
        assert config.task.args["stream_weights"] == {"video": 2.0} and config.train.precision == "bf16"
        if mirrored_cycles:
            assert config.data.train.args["file"] == str(tmp_path / "cache_train_mirror.safetensors")
            assert config.train.seed == 1


def test_mirror_cache_adds_every_clip_mirrored(tmp_path, monkeypatch):
    """train_default_v2.mirror_cache: the training cache's rows, then each clip's mirror encoded by the same codecs:
    the ears' latent streams swapped exactly (the codec's two ears share their weights), the video encoded from
    the flipped frames, the caption's side words swapped."""
    from avflow.encoders.text import load_text_encoder
    from avflow.weights import read_state_dict
    from avflow.world.dataset import load_clip, make_dataset, read_manifest
    from avflow.world.mirror import mirror_caption
    from avflow.world.scene import WorldConfig

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_default_v2 as script

    world = tmp_path / "world"
    make_dataset(world, 5, seed=3, config=WorldConfig(duration=0.5, fps=8, min_objects=1, max_objects=1))
    plain = script.cache_split(world, "train", tmp_path)
    out = script.mirror_cache(tmp_path)
    rows, both = read_state_dict(plain), read_state_dict(out)
    n = rows["streams.video"].shape[0]
    assert n == len(read_manifest(world, "train")) and both["streams.video"].shape[0] == 2 * n
    for key, value in rows.items():
        assert torch.equal(both[key][:n], value)
    torch.testing.assert_close(both["streams.left"][n:], rows["streams.right"], atol=1e-5, rtol=0)
    torch.testing.assert_close(both["streams.right"][n:], rows["streams.left"], atol=1e-5, rtol=0)
    assert not torch.allclose(both["streams.video"][n:], rows["streams.video"])
    captions = [load_clip(world / "train" / r["id"]).meta["caption"] for r in read_manifest(world, "train")]
    states, _ = load_text_encoder("minilm", max_len=script.TEXT_LEN)([mirror_caption(c) for c in captions])
    torch.testing.assert_close(both["cond.text"][n:], states, atol=1e-5, rtol=1e-5)


def test_two_object_cache_repeats_the_two_object_rows_and_the_cycle_reads_it(tmp_path, monkeypatch):
    """train_default_v2.two_object_cache: every training row once, then the rows of the two-object clips again (the
    codecs' checksum kept); the two-object cycle's override of the training file wins over the plain cache's."""
    from avflow.config import apply_overrides, read_yaml
    from avflow.weights import read_state_dict, save_safetensors
    from avflow.world.dataset import make_dataset, read_manifest
    from avflow.world.scene import WorldConfig

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_default_v2 as script

    monkeypatch.setattr(script, "TWO_OBJECT_CYCLES", 1)  # the tried schedule (the shipped one has none)
    world = tmp_path / "world"
    make_dataset(world, 12, seed=5, config=WorldConfig(duration=0.5, fps=8, min_objects=1, max_objects=2))
    rows = read_manifest(world, "train")
    objects = [len(json.loads((world / "train" / f"{r['id']}.json").read_text())["objects"]) for r in rows]
    assert 1 in objects and 2 in objects  # this seed draws both
    save_safetensors({"streams.video": torch.arange(len(rows)).float()[:, None]}, tmp_path / "cache_train.safetensors")
    (tmp_path / "cache_train.json").write_text(json.dumps({"codecs_checksum": "abc"}))
    out = script.two_object_cache(tmp_path)
    twice = [i for i, n in enumerate(objects) if n == 2]
    assert read_state_dict(out)["streams.video"][:, 0].tolist() == list(range(len(rows))) + twice
    (cycle,) = [c for c in script.cycle_plan(tmp_path) if c.run.name.startswith("two")]
    raw = apply_overrides(read_yaml(cycle.config), [*script.cache_overrides(tmp_path), *cycle.overrides])
    assert raw["data"]["train"]["args"]["file"] == str(out)


def test_grow_config_grows_the_trained_video_tower(tmp_path, monkeypatch):
    """configs/default_joint_v2_grow.yaml: the stage-3 model with twice the video blocks, the trained block k at
    2k, every odd block new with its three output projections zeroed, aligners after every second layer (so after
    each trained block pair, as before); the rest of the config (task, data, schedule) as stage 3."""
    from avflow.train.config import load_train_config

    monkeypatch.chdir(REPO)
    cache = tmp_path / "cache.safetensors"
    cache.write_bytes(b"")
    over = [f"data.train.args.file={cache}", f"data.val.args.file={cache}", f"init.weights={cache}"]
    stage3 = load_train_config(REPO / "configs" / "default_joint_v2_stage3.yaml", over)
    grow = load_train_config(REPO / "configs" / "default_joint_v2_grow.yaml", over)
    old, new = stage3.model.args, grow.model.args
    blocks = old["video"]["num_layers"]
    assert new["video"] == old["video"] | {"num_layers": 2 * blocks}
    assert new["fusion_options"] == old["fusion_options"] | {"every": 2 * old["fusion_options"]["every"]}
    assert {k: v for k, v in new.items() if k not in ("video", "fusion_options")} == {
        k: v for k, v in old.items() if k not in ("video", "fusion_options")}  # fmt: skip
    assert grow.init.rename == {f"video.blocks.{k}.": f"video.blocks.{2 * k}." for k in range(1, blocks)}
    added = [f"video.blocks.{2 * k + 1}." for k in range(blocks)]
    assert grow.init.new == added
    assert sorted(grow.init.zero) == sorted(f"{b}{p}" for b in added for p in ("attn1.to_out.", "attn2.to_out.",
                                                                                 "ffn.net.2."))  # fmt: skip
    for part in ("task", "data", "train", "optim", "schedule", "ema"):
        assert getattr(grow, part) == getattr(stage3, part), part


def test_default_model_third_cycle_config_loads_and_chains(tmp_path, monkeypatch):
    """configs/default_joint_v2_stage2.yaml (an experiment) validates: the first run's config, started from its
    10000-step weights at its restart peak (the learning rate its second cycle started from) down to the same floor;
    configs/default_joint_v2_stage3.yaml (the shipped third cycle) starts from the same weights, longer and lower."""
    from avflow.train.config import load_train_config

    monkeypatch.chdir(REPO)  # the configs name repository paths
    cache = tmp_path / "cache.safetensors"
    cache.write_bytes(b"")  # the configs only check that the files exist
    caches = [f"data.train.args.file={cache}", f"data.val.args.file={cache}"]
    first = load_train_config(REPO / "configs" / "default_joint_v2.yaml", caches)
    from avflow.config import read_yaml

    for name in ("default_joint_v2_stage2.yaml", "default_joint_v2_stage3.yaml"):  # the script's 10000-step weights
        assert read_yaml(REPO / "configs" / name)["init"]["weights"] == "runs/default_v2/joint_10000.safetensors"
    start = [f"init.weights={cache}"]  # scripts/train_default_v2.py writes WORK/joint_10000.safetensors
    second = load_train_config(REPO / "configs" / "default_joint_v2_stage2.yaml", caches + start)
    assert second.model == first.model and second.task == first.task and second.train.batch_size == 16
    assert second.init.weights == str(cache) and not second.init.freeze
    peak = first.optim.lr * first.schedule.restart_peak
    assert second.optim.lr == pytest.approx(peak)
    floor = first.optim.lr * first.schedule.min_lr_ratio
    assert second.optim.lr * second.schedule.min_lr_ratio == pytest.approx(floor)
    assert lr_factor(second.train.steps - 1, second.schedule, second.train.steps) == pytest.approx(
        second.schedule.min_lr_ratio, abs=1e-3
    )
    longer = load_train_config(REPO / "configs" / "default_joint_v2_stage3.yaml", caches + start)  # shipped
    assert longer.model == first.model and longer.task == first.task and longer.init == second.init
    assert longer.train.steps > second.train.steps and longer.optim.lr < second.optim.lr


def test_init_grows_a_trained_joint_model_exactly(tmp_path):
    """`init.rename` + `init.new` + `init.zero` grow a trained joint model's video tower from 2 to 4 blocks (the
    trained ones at 0 and 2, new ones between them starting as the identity, aligners after layers 1 and 3): the
    grown model's velocity equals the trained one's, and the zeroed projections still receive gradients. A rename
    or zero prefix that matches nothing, or two names renamed onto one, is a one-line error."""
    from helpers import TEXT_DIM, joint_inputs, perturb

    from avflow.errors import ConfigError
    from avflow.models.audio_tower import AudioTowerConfig
    from avflow.models.joint import JointConfig, JointModel
    from avflow.models.wan import WanConfig
    from avflow.train.config import InitConfig
    from avflow.train.trainer import initialize
    from avflow.weights import save_safetensors

    def config(video_blocks: int, every: int) -> JointConfig:
        video = WanConfig(num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48,
                          num_layers=video_blocks)  # fmt: skip
        audio = AudioTowerConfig(text_dim=TEXT_DIM, hidden_dim=32, depth=2, fused_depth=1, num_heads=2, text_seq_len=5)
        return JointConfig(video=video, audio=audio, fusion="windowed_aligners", alignment="avsync",
                           fusion_options={"heads": 2, "every": every}, text_dim=TEXT_DIM, text_len=5)  # fmt: skip

    torch.manual_seed(0)
    trained = perturb(JointModel(config(2, 1)), 0.05).eval()  # zero-initialised aligner outputs carry signal too
    save_safetensors(trained.state_dict(), tmp_path / "trained.safetensors")
    added = ("video.blocks.1.", "video.blocks.3.")
    zero = [f"{b}{part}" for b in added for part in ("attn1.to_out.", "attn2.to_out.", "ffn.net.2.")]
    grow = {"weights": str(tmp_path / "trained.safetensors"), "rename": {"video.blocks.1.": "video.blocks.2."},
            "new": list(added), "zero": zero}  # fmt: skip
    grown = JointModel(config(4, 2)).eval()
    initialize(grown, InitConfig(**grow))
    streams, t, cond = joint_inputs(tokens=24)  # 3 latent frames at 16 fps: 0.75 s of audio latents at 31.25 Hz
    with torch.no_grad():
        want, got = trained.velocity(streams, t, cond), grown.velocity(streams, t, cond)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
    state = grown.state_dict()
    assert all(not state[k].any() for k in state if k.startswith(tuple(zero)))
    assert all(state[f"{b}attn1.to_q.weight"].abs().sum() > 0 for b in added)  # the rest of a new block is random
    sum(v.square().mean() for v in grown.velocity(streams, t, cond).values()).backward()
    zeroed = [p for n, p in grown.named_parameters() if n.startswith(tuple(zero)) and n.endswith("weight")]
    assert zeroed and all(p.grad.abs().sum() > 0 for p in zeroed)
    for bad, match in (
        ({"rename": {"video.nothing.": "video.blocks.2."}}, "init.rename: no name in the weights file starts with"),
        ({"rename": {"video.blocks.1.": "video.blocks.0."}}, "init.rename: two names of the weights file become"),
        ({"zero": ["video.nothing."]}, "init.zero: no parameter name starts with 'video.nothing.'"),
    ):
        with pytest.raises(ConfigError, match=match):
            initialize(JointModel(config(4, 2)), InitConfig(**(grow | bad)))
    with pytest.raises(ConfigError, match="rename: needs init.weights"):
        InitConfig(rename={"a.": "b."})


def test_ddp_with_cross_modal_dropout_asks_for_find_unused_parameters(tmp_path, monkeypatch):
    """Steps with the interaction off leave the fusion without gradients, which DDP only tolerates when told: a
    distributed run of such a task without `train.find_unused_parameters` is a one-line error before it wraps."""
    from avflow.errors import ConfigError
    from avflow.train.config import load_train_config, validate
    from avflow.train.distributed import DistInfo
    from avflow.train.trainer import Trainer

    monkeypatch.chdir(REPO)
    cache = tmp_path / "cache.safetensors"
    cache.write_bytes(b"")
    over = [f"data.train.args.file={cache}", f"data.val.args.file={cache}", f"out_dir={tmp_path / 'run'}",
            "init.weights=avflow/assets/default_model/joint.safetensors", "init.rename={}", "init.new=[]",
            "init.zero=[]", "task.args.cross_modal_dropout=0.2"]  # fmt: skip
    config = validate(load_train_config(REPO / "configs" / "default_joint_v2_grow.yaml", over))
    two_ranks = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(ConfigError, match="cross_modal_dropout > 0.*train.find_unused_parameters=true"):
        Trainer(config, two_ranks)
    from avflow.train.joint_task import JointFlowConfig, JointFlowTask

    assert not JointFlowTask(JointFlowConfig()).leaves_parameters_unused  # the default never skips the fusion


def test_the_joint_task_trains_every_task_by_default():
    """The joint task's default mixture is the model's one default: joint, a2v, v2a and continuation (it left
    continuation out, so a model trained on the defaults could not continue a clip)."""
    from avflow.models.tasks import TASKS, TaskMixture
    from avflow.train.joint_task import JointFlowConfig, JointFlowTask

    ratios = JointFlowConfig().ratios
    assert ratios == TaskMixture().ratios and set(ratios) == set(TASKS) and all(r > 0 for r in ratios.values())
    assert set(JointFlowTask(JointFlowConfig()).mixture.ratios) == set(TASKS)


def test_stream_weights_weigh_each_streams_loss():
    """`task.args.stream_weights`: loss = sum_s w_s L_s / sum_s w_s over the batch's streams (unnamed streams weigh 1),
    the default the plain mean; a weight for a stream the data lacks, a negative one or all zero are config errors."""
    from avflow.flow.loss import flow_matching_loss, noised_streams
    from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask

    class Constant(torch.nn.Module):
        def velocity(self, xt, t, cond):
            return {s: torch.full_like(x, 0.5) for s, x in xt.items()}

    g = torch.Generator().manual_seed(0)
    streams = {"video": torch.randn(3, 4, 5, generator=g), "left": torch.randn(3, 6, 2, generator=g),
               "right": 3 * torch.randn(3, 6, 2, generator=g)}  # fmt: skip
    batch = {"streams": streams, "cond": {}, "drop": torch.zeros(3, dtype=torch.bool),
             "t": {s: torch.rand(3, generator=g) for s in streams},
             "noise": {s: torch.randn(x.shape, generator=g) for s, x in streams.items()}}  # fmt: skip
    xt, target, mask = noised_streams(streams, batch["t"], batch["noise"])
    per = {s: float(flow_matching_loss(torch.full_like(xt[s], 0.5), target[s], mask[s]).mean()) for s in streams}

    def loss(**weights):
        return float(FlowMatchingTask(FlowMatchingConfig(cond_dropout=0.0, **weights)).loss(Constant(), batch))

    assert loss() == pytest.approx(sum(per.values()) / 3, rel=1e-6)
    expected = (2 * per["video"] + per["left"] + per["right"]) / 4
    assert loss(stream_weights={"video": 2.0}) == pytest.approx(expected, rel=1e-6)
    assert loss(stream_weights={"left": 0.0, "right": 0.0}) == pytest.approx(per["video"], rel=1e-6)
    with pytest.raises(ConfigError, match=r"names \['audio'\], not a stream of this data"):
        loss(stream_weights={"audio": 1.0})
    with pytest.raises(ConfigError, match="every stream weight 0"):
        loss(stream_weights={"video": 0.0, "left": 0.0, "right": 0.0})
    with pytest.raises(ConfigError, match="finite and >= 0"):
        FlowMatchingConfig(stream_weights={"video": -1.0})


def _train_in_process(cfg: dict, folder: Path, *overrides: str) -> int:
    from avflow.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main(["train", str(path), *overrides])


@pytest.mark.parametrize(
    "override, message",
    [("optim.grad_clip=-1", "optim.grad_clip: must be > 0"), ("optim.betas=[2, 3]", "optim.betas: each must be in"),
     ("schedule.gamma=-1", "schedule.gamma: must be > 0"), ("schedule.min_lr_ratio=5", "schedule.min_lr_ratio"),
     ("schedule.warmup_steps=-10", "schedule.warmup_steps: must be >= 0"),
     ("schedule.milestones=[-5]", "schedule.milestones: must be steps > 0"), ("log.every=0", "log.every: must be"),
     ("log.val_batches=0", "log.val_batches"), ("checkpoint.every=0", "checkpoint.every: must be >= 1"),
     ("train.threads=0", "train.threads: must be >= 1"), ("ema.snapshot_every=-1", "ema.snapshot_every"),
     ("out_dir=", "out_dir: must name a folder")],
)  # fmt: skip
def test_settings_out_of_range_are_one_line_errors(override, message, tmp_path, capsys):
    """Numbers that would train backwards (a negative clip or decay factor), divide by zero or fail deep inside
    torch are refused when the config loads, naming the key."""
    assert _train_in_process(tiny_config(tmp_path / "run"), tmp_path, override, "--print-config") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_resuming_names_the_checkpoint_and_what_changed(tmp_path, capsys):
    """A run continued with other settings says from which step and what changed, and keeps the config the earlier
    steps were trained with; a checkpoint of another network, or `checkpoint.resume=none` among another run's
    checkpoints, is refused before anything is built; a finished run says there is nothing to do."""
    cfg = tiny_config(tmp_path / "run")
    cfg["train"]["steps"] = 4
    cfg["log"]["sample_every"] = 0
    assert _train_in_process(cfg, tmp_path) == 0
    capsys.readouterr()
    assert _train_in_process(cfg, tmp_path) == 0
    assert "already trained to step 4 (train.steps 4); nothing to do" in capsys.readouterr().out

    cfg["train"]["steps"], cfg["optim"]["lr"] = 6, 5e-3
    assert _train_in_process(cfg, tmp_path) == 0
    err = capsys.readouterr().err
    assert "note: resuming" in err
    assert "from step_00000004.pt (step 4 of 6); changed since: optim.lr 0.01 -> 0.005" in err
    kept = yaml.safe_load((tmp_path / "run" / "config_until_step_00000004.yaml").read_text())
    now = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert kept["optim"]["lr"] == 1e-2 and now["optim"]["lr"] == 5e-3

    cfg["train"]["steps"] = 8
    cfg["model"]["args"]["hidden"] = 32
    assert _train_in_process(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another network than this config builds (model.args.hidden 16 -> 32)" in err
    assert _train_in_process(tiny_config(tmp_path / "run"), tmp_path, "checkpoint.resume=none") == 2
    assert "holds a run's checkpoints (up to step 6); checkpoint.resume=none" in capsys.readouterr().err
    assert max(s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")) == 6  # nothing changed


def test_a_folder_of_other_files_is_not_written_over(tmp_path, capsys):
    """A `config.yaml` (or weights) that no run wrote is not replaced; other files beside a run (a data cache) are
    fine; out_dir naming a file is refused."""
    own = tmp_path / "mine"
    own.mkdir()
    (own / "config.yaml").write_text("my precious config\n")
    cfg = tiny_config(own)
    cfg["train"]["steps"] = 2
    assert _train_in_process(cfg, tmp_path / "a") == 2
    assert "holds config.yaml, which no training run wrote" in capsys.readouterr().err
    assert (own / "config.yaml").read_text() == "my precious config\n" and len(list(own.iterdir())) == 1
    (own / "config.yaml").unlink()
    (own / "cache_train.safetensors").write_bytes(b"cache")
    assert _train_in_process(cfg, tmp_path / "a") == 0
    assert (own / "cache_train.safetensors").read_bytes() == b"cache" and (own / "model.safetensors").is_file()
    (tmp_path / "file").write_text("x")
    assert _train_in_process(tiny_config(tmp_path / "file"), tmp_path / "a") == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_model_that_does_not_fit_its_data_leaves_no_folder(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run")
    cfg["data"]["train"]["args"]["streams"] = {"audio": [8, 5], "video": [4, 6]}
    assert _train_in_process(cfg, tmp_path / "a") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the first training step failed, so the model, the task and the data" in err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_saves_the_step_and_the_same_command_goes_on_exactly(reference, tmp_path, monkeypatch, capsys):
    """Ctrl-C (SIGINT) in step 3 of a single-process run: the step finishes and is saved (the checkpoints are every
    2 steps), the command says so and exits 130; the same command then ends where an uninterrupted run does, and a
    metrics line cut short by a kill does not stop it."""
    import signal

    from avflow.train.trainer import Trainer

    step = Trainer.train_step

    def interrupted_in_step_3(self, batches):
        if self.step == 2 and not os.environ.get("SIGNALLED"):
            os.environ["SIGNALLED"] = "1"
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", interrupted_in_step_3)
    monkeypatch.delenv("SIGNALLED", raising=False)
    cfg = tiny_config(tmp_path / "run")
    cfg["log"]["tensorboard"] = True
    assert _train_in_process(cfg, tmp_path) == 130
    assert "stopped at step 3 of 6 and saved it" in capsys.readouterr().err
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [3, 2]
    assert not (tmp_path / "run" / "model.safetensors").exists()  # no export of a run that did not finish
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3')  # a line cut short
    assert _train_in_process(cfg, tmp_path) == 0
    want, got = final_state(reference), final_state(tmp_path / "run")
    for k in want["model"]:
        assert torch.equal(want["model"][k], got["model"][k]), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6


def test_a_clip_cut_short_or_a_small_validation_set_is_named(tmp_path):
    """World clips of another length are a one-line error naming the file (np.stack's traceback before); a batch
    larger than the validation set names that set, not the training set."""
    import soundfile as sf

    from avflow.train.datasets import WorldClips, WorldClipsConfig
    from avflow.world.dataset import make_dataset
    from avflow.world.scene import WorldConfig

    make_dataset(tmp_path / "w", 6, config=WorldConfig(width=16, height=16, fps=8, duration=1.0))
    assert len(WorldClips(WorldClipsConfig(root=str(tmp_path / "w")))) == 4
    cut = tmp_path / "w" / "train" / "train_000002.wav"
    audio, rate = sf.read(cut)
    sf.write(cut, audio[:100], rate, subtype="FLOAT")
    with pytest.raises(ConfigError, match=r"train_000002\.wav: audio of shape \(2, 100\), the other clips' \(2, 16"):
        WorldClips(WorldClipsConfig(root=str(tmp_path / "w")))
    with pytest.raises(ConfigError, match=r"train.batch_size: 4 is larger than the validation set data.val \(2 sampl"):
        ResumableBatchSampler(2, 4, 1, 0, 1, 0, shuffle=False, dataset="the validation set data.val")
