"""What a run's validation, sampling metrics and resumed data position do not depend on: `val_loss` and the
`sample/*` metrics are the same for 1 and 2 processes and any `train.grad_accum`, and a run resumed with another
`train.batch_size` goes on with exactly the samples of the epoch it has not seen (up to one batch's rounding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import _train_in_process, final_state, run_train, tiny_config
from torch.utils.data import default_collate

from avflow.train.datasets import SeededDataset
from avflow.train.sampler import ResumableBatchSampler

STEPS = 4


def _metrics(out_dir: Path) -> dict:
    """The last logged value of every metric."""
    values = {}
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        values.update({k: v for k, v in json.loads(line).items() if k not in ("time", "step")})
    return values


def _direct_val_loss(out_dir: Path, count: int) -> float:
    """The task's loss per sample over the first `count` validation samples with the run's final weights, in one
    batch, as the validation loader gives them (epoch 0, seeds from `train.seed + 1`)."""
    from avflow.train.components import DATASETS, MODELS, TASKS
    from avflow.train.config import load_train_config, resolve_component

    config = load_train_config(out_dir / "config.yaml")
    model = MODELS[config.model.name].build(resolve_component(MODELS, config.model, "model"))
    model.load_state_dict(final_state(out_dir, STEPS)["model"])
    model.eval()
    task = TASKS[config.task.name].build(resolve_component(TASKS, config.task, "task"))
    val = SeededDataset(DATASETS[config.data.val.name].build(resolve_component(DATASETS, config.data.val, "data.val")),
                        config.train.seed + 1)  # fmt: skip
    batch = task.prepare(default_collate([val[(i, 0)] for i in range(count)]), torch.device("cpu"))
    with torch.no_grad():
        return float(task.loss(model, batch))


def test_val_loss_and_sample_metrics_do_not_depend_on_processes_or_accumulation(tmp_path):
    """`log.val_batches` global batches of `train.batch_size` samples (16 of the 24 here), the loss per sample, for
    1 process, 1 process with grad_accum 2 and 2 processes with grad_accum 2 (the weights equal to float rounding);
    the sampling metrics on the first batch_size // grad_accum samples, whatever the process count. Before, the
    validation batch was batch_size / grad_accum samples (val_loss over 8 samples with accumulation, 16 without)
    and rank 0 sampled on its own shard (2 samples with 2 processes, 4 with 1)."""
    cfg = tiny_config(tmp_path / "one")
    cfg["data"]["val"]["args"]["size"] = 24
    cfg["train"]["steps"] = STEPS
    cfg["log"].update(every=STEPS, val_every=STEPS, val_batches=2, sample_every=STEPS)
    cfg["checkpoint"]["every"] = STEPS
    runs = {}
    for name, accum, nproc in (("one", 1, 1), ("accum", 2, 1), ("two_accum", 2, 2)):
        run_cfg = {**cfg, "out_dir": str(tmp_path / name), "train": {**cfg["train"], "grad_accum": accum}}
        if nproc == 1:
            assert _train_in_process(run_cfg, tmp_path / f"{name}_cwd") == 0
        else:
            proc = run_train(run_cfg, tmp_path / f"{name}_cwd", nproc=nproc)
            assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = _metrics(tmp_path / name)
    weights = {name: final_state(tmp_path / name, STEPS)["model"] for name in runs}
    worst = max((weights["one"][k] - w[k]).abs().max().item() for w in weights.values() for k in w)
    assert worst < 1e-6  # the same weights: what differs below is what validation and sampling measure
    direct = _direct_val_loss(tmp_path / "one", 16)
    print("val_loss:", {name: m["val_loss"] for name, m in runs.items()}, "direct:", direct)
    sampled = {name: {k: v for k, v in m.items() if k.startswith("sample/")} for name, m in runs.items()}
    assert sampled["accum"] and sampled["accum"].keys() == sampled["two_accum"].keys()
    for key, value in sampled["accum"].items():
        assert sampled["two_accum"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, m in runs.items():
        assert m["val_loss"] == pytest.approx(direct, rel=1e-5, abs=1e-7), name


def test_a_validation_set_smaller_than_a_global_batch_is_named(tmp_path, capsys):
    """Validation takes whole global batches, so data.val must hold train.batch_size samples, with accumulation
    too (half as many were enough with grad_accum 2 before)."""
    cfg = tiny_config(tmp_path / "run")
    cfg["data"]["val"]["args"]["size"] = 6
    cfg["train"].update(steps=1, grad_accum=2)
    assert _train_in_process(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "train.batch_size: 8 is larger than the validation set data.val (6 samples)" in err, err


def test_resumed_position_converts_by_samples():
    sampler = ResumableBatchSampler(320, 64, 1, 0, 1, seed=0)  # 5 batches per epoch
    assert sampler.resumed_position(0, 10, 32) == (1, 0)  # every sample of epoch 0 seen: epoch 1 from its start
    assert sampler.resumed_position(0, 2, 32) == (0, 1)  # 64 seen: from sample 64
    assert sampler.resumed_position(0, 3, 32) == (0, 1)  # 96 seen: from sample 64, 32 of them seen twice
    assert sampler.resumed_position(0, 9, 32) == (0, 4)  # 288 seen: the last batch, 256..319
    assert sampler.resumed_position(3, 4, 64) == (3, 4)  # the same batch size: the same position
    assert ResumableBatchSampler(100, 64, 1, 0, 1, seed=0).resumed_position(0, 2, 32) == (1, 0)  # 36 left < 64


@pytest.mark.parametrize("first_steps", [2, 3])
def test_a_resume_with_another_batch_size_goes_on_with_the_unseen_samples(first_steps, tmp_path, capsys, monkeypatch):
    """32 -> 64 after 2 or 3 steps of 32 (64 or 96 of the epoch's 320 samples seen): the resumed run sees the rest
    of the epoch's permutation from sample 64, so no sample is skipped and at most 32 are seen twice, then epoch 1
    from its start; the resume note says how the data goes on. Before, the position (2 or 3 global batches) was
    read in batches of 64: samples 64..127 (or 96..191) of the epoch were never seen."""
    seen: list[tuple[int, int]] = []
    getitem = SeededDataset.__getitem__

    def recorded(self, key):
        if self.base_seed == 3:  # the training set's (train.seed 3; the validation set's is 4)
            seen.append(tuple(key))
        return getitem(self, key)

    monkeypatch.setattr(SeededDataset, "__getitem__", recorded)
    cfg = tiny_config(tmp_path / "run")
    cfg["data"]["train"]["args"]["size"] = 320
    cfg["data"]["val"]["args"]["size"] = 64
    cfg["train"].update(steps=first_steps, batch_size=32, threads=None)
    cfg["log"].update(every=1, val_every=0, sample_every=0)
    assert _train_in_process(cfg, tmp_path) == 0
    before = list(seen)
    assert len(before) == 32 * first_steps
    seen.clear()
    capsys.readouterr()
    cfg["train"].update(steps=first_steps + 5, batch_size=64)  # 4 batches to the end of epoch 0, 1 of epoch 1
    assert _train_in_process(cfg, tmp_path) == 0
    err = capsys.readouterr().err
    perm = ResumableBatchSampler(320, 32, 1, 0, 1, seed=3).permutation(0).tolist()
    assert before == [(i, 0) for i in perm[: 32 * first_steps]]
    epoch0 = [i for i, e in seen if e == 0]
    assert epoch0 == perm[64:]  # the epoch's rest, in its order
    assert set(i for i, _ in before) | set(epoch0) == set(range(320))  # none skipped
    assert len(set(i for i, _ in before) & set(epoch0)) == 32 * first_steps - 64 < 64  # the rounding only
    epoch1 = ResumableBatchSampler(320, 64, 1, 0, 1, seed=3).permutation(1).tolist()
    assert [i for i, e in seen if e == 1] == epoch1[:64]
    state = final_state(tmp_path / "run", first_steps + 5)
    assert (state["epoch"], state["position"]) == (1, 1)
    again = ", after the 64 seen" if first_steps == 2 else ", 32 of the 96 seen again"
    assert f"train.batch_size 32 -> 64 (the data goes on by samples: epoch 0 from its sample 64{again})" in err, err
