"""Experiments: the results writer (mean/std, the 2σ rule, Markdown/JSON/PNG) and the runner's resume bookkeeping
(with a stub arm runner standing in for training); slow: a tiny smoke run of every experiment."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from avflow.experiments import results as res
from avflow.experiments.configs import ArmConfig, ExperimentConfig, load_experiment
from avflow.experiments.runner import finish, result_path, run_arms


def _exp(arms=("a", "b")) -> ExperimentConfig:
    return ExperimentConfig(
        name="demo", description="demo experiment", arms=[ArmConfig(n) for n in arms], metrics=["x", "y"], baseline="a"
    )


def test_summary_mean_and_sample_std():
    s = res.summarize([1.0, 2.0, 4.0, float("nan")])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(7 / 3)
    assert s["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert math.isnan(res.summarize([3.0])["std"])


def test_two_sigma_rule():
    a = res.summarize([1.0, 1.2, 0.8])  # std 0.2
    far = res.summarize([2.0, 2.2, 1.8])  # diff 1.0 > 2 * 0.2
    near = res.summarize([1.3, 1.5, 1.1])  # diff 0.3 < 0.4
    e = res.effect(a, far)
    assert e["diff"] == pytest.approx(1.0) and e["threshold"] == pytest.approx(0.4) and e["counts"]
    assert not res.effect(a, near)["counts"]
    assert not res.effect(res.summarize([1.0]), res.summarize([5.0]))["counts"]  # one seed: never counts


def _per_seed():
    return {"a": [{"x": 1.0, "y": 5.0}, {"x": 1.2, "y": 5.5}], "b": [{"x": 3.0, "y": 5.1}, {"x": 3.2, "y": 5.6}]}


def test_writer_markdown_json_png(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    result = finish(_exp(), _per_seed(), out, {"seeds": 2, "size": "tiny", "steps": 3, "params": {"a": 10, "b": 10},
                                               "unavailable": {"c": "fusion 'c' does not exist"}})  # fmt: skip
    md = (out / "results.md").read_text()
    assert "| a | 10 | 1.1 ± 0.1414 | 5.25 ± 0.3536 |" in md
    assert "| c | – | not available | not available |" in md
    assert "2 x pooled seed std" in md
    assert "| b | x | 2 | 0.2828 | yes |" in md and "| b | y | 0.1 | 0.7071 | no |" in md
    data = json.loads((out / "results.json").read_text())
    assert data["table"]["b"]["x"]["mean"] == pytest.approx(3.1)
    assert data["effects"]["b"]["x"]["counts"] is True and data["effects"]["b"]["y"]["counts"] is False
    assert data == json.loads(res.to_json(result))
    with Image.open(out / "results.png") as img:
        img.load()
        assert img.format == "PNG" and img.size[0] > 100
        px = np.asarray(img.convert("RGB"))
    assert (px == res.PALETTE[0]).all(-1).sum() > 50 and (px == res.PALETTE[1]).all(-1).sum() > 50  # both bars


def test_nan_becomes_null_in_json():
    data = json.loads(res.to_json({"v": float("nan"), "w": [1.0, float("inf")]}))
    assert data == {"v": None, "w": [1.0, None]}


def test_resume_skips_finished_and_continues_interrupted(tmp_path):
    calls = []

    def stub(arm, seed, work):
        """Stands in for training: counts 3 'steps' in a progress file, dies once after step 1 of (b, 1)."""
        progress = work / f"{arm.name}_{seed}.txt"
        progress.parent.mkdir(parents=True, exist_ok=True)
        done = int(progress.read_text()) if progress.exists() else 0
        calls.append((arm.name, seed, done))
        for step in range(done + 1, 4):
            progress.write_text(str(step))
            if (arm.name, seed) == ("b", 1) and step == 1 and len([c for c in calls if c[:2] == ("b", 1)]) == 1:
                raise KeyboardInterrupt
        return {"x": float(seed + (arm.name == "b")), "steps": float(int(progress.read_text()))}

    arms = _exp().arms
    with pytest.raises(KeyboardInterrupt):
        run_arms(arms, [0, 1], tmp_path, stub, log=lambda *_: None)
    assert result_path(tmp_path, "a", 1).is_file() and result_path(tmp_path, "b", 0).is_file()
    assert not result_path(tmp_path, "b", 1).exists()
    first = list(calls)
    per_seed = run_arms(arms, [0, 1], tmp_path, stub, log=lambda *_: None)
    assert calls[len(first) :] == [("b", 1, 1)]  # only the interrupted one ran again, from its saved step
    assert per_seed == {"a": [{"x": 0.0, "steps": 3.0}, {"x": 1.0, "steps": 3.0}],
                        "b": [{"x": 1.0, "steps": 3.0}, {"x": 2.0, "steps": 3.0}]}  # fmt: skip
    assert not list(tmp_path.rglob(".*tmp*"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("name", ["t2v_vs_joint", "fusion", "alignment", "guidance"])
def test_experiment_configs_load(name):
    exp = load_experiment(name)
    assert exp.baseline in [a.name for a in exp.arms] and exp.metrics


def test_parameter_budgets_within_5_percent():
    from avflow.experiments.configs import SIZES
    from avflow.experiments.runner import plan_arms

    for name in ("t2v_vs_joint", "fusion", "guidance"):
        _, counts, _ = plan_arms(load_experiment(name), SIZES["tiny"])
        assert max(counts.values()) <= 1.05 * min(counts.values()), (name, counts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["t2v_vs_joint", "fusion", "alignment", "guidance"])
def test_smoke_run(name, tmp_path):
    from dataclasses import replace

    from avflow.experiments.configs import SIZES
    from avflow.experiments.runner import run_experiment

    size = replace(SIZES["tiny"], n_train=8, n_eval=3, nfe=6, batch_size=4)
    result = run_experiment(load_experiment(name), "tiny", size, tmp_path, seeds=2, steps=2, log=lambda *_: None)
    assert (tmp_path / "results.md").is_file() and (tmp_path / "results.png").is_file()
    assert set(result["table"]) | set(result["unavailable"]) == {a.name for a in load_experiment(name).arms}
    for arm in result["table"].values():  # every arm reports every metric; n counts the seeds where it is defined
        assert set(result["metrics"]) <= set(arm) and all(0 <= arm[k]["n"] <= 2 for k in result["metrics"])
    again = run_experiment(load_experiment(name), "tiny", size, tmp_path, seeds=2, steps=2, log=lambda *_: None)
    assert res.to_json(again["table"]) == res.to_json(result["table"])  # the rerun reads the finished results
