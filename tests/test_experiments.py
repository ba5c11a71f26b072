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
    settings = lambda arm, seed: {"steps": 3}  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        run_arms(arms, [0, 1], tmp_path, stub, settings, log=lambda *_: None)
    assert result_path(tmp_path, "a", 1).is_file() and result_path(tmp_path, "b", 0).is_file()
    assert not result_path(tmp_path, "b", 1).exists()
    first = list(calls)
    per_seed = run_arms(arms, [0, 1], tmp_path, stub, settings, log=lambda *_: None)
    assert calls[len(first) :] == [("b", 1, 1)]  # only the interrupted one ran again, from its saved step
    assert per_seed == {"a": [{"x": 0.0, "steps": 3.0}, {"x": 1.0, "steps": 3.0}],
                        "b": [{"x": 1.0, "steps": 3.0}, {"x": 2.0, "steps": 3.0}]}  # fmt: skip
    assert not list(tmp_path.rglob(".*tmp*"))  # atomic writes leave no temporaries


def test_a_result_is_reused_only_with_the_settings_it_was_made_with(tmp_path):
    """Each result records its settings; a rerun with the same ones reuses it, one with other settings (or a result
    that records none) is refused before anything runs, naming the first setting that differs."""
    from avflow.errors import ConfigError

    calls = []

    def stub(arm, seed, work):
        calls.append((arm.name, seed))
        return {"x": float(seed)}

    arms, log = _exp().arms, lambda *_: None
    settings = lambda steps: lambda arm, seed: {"steps": steps, "seed": seed, "model": {"fusion": arm.name}}  # noqa: E731
    run_arms(arms[:1], [0], tmp_path, stub, settings(2), log)
    assert json.loads(result_path(tmp_path, "a", 0).read_text())["settings"] == {"steps": 2, "seed": 0,
                                                                                "model": {"fusion": "a"}}  # fmt: skip
    assert run_arms(arms[:1], [0], tmp_path, stub, settings(2), log) == {"a": [{"x": 0.0}]} and len(calls) == 1
    for again in (settings(6), lambda arm, seed: settings(2)(arm, seed) | {"model": {"fusion": "c"}}):
        with pytest.raises(ConfigError, match="another --out") as err:
            run_arms(arms, [0, 1], tmp_path, stub, again, log)
        assert "\n" not in str(err.value) and len(calls) == 1  # refused before anything ran
    assert "seed_0.json was made with steps 2 (this run: 6);" in str(
        pytest.raises(ConfigError, run_arms, arms, [0], tmp_path, stub, settings(6), log).value
    )
    with pytest.raises(ConfigError, match='model.fusion "a" \\(this run: "c"\\)'):
        run_arms(arms, [0], tmp_path, stub, lambda arm, seed: settings(2)(arm, seed) | {"model": {"fusion": "c"}}, log)
    old = result_path(tmp_path, "a", 0)
    old.write_text(json.dumps({"arm": "a", "seed": 0, "metrics": {"x": 0.0}}))  # written before settings were
    with pytest.raises(ConfigError, match="no recorded settings"):
        run_arms(arms, [0], tmp_path, stub, settings(2), log)
    assert len(calls) == 1


def _stub_training(monkeypatch) -> list:
    """`arm.run_arm` replaced by a stub that records its calls (no training): metrics from the steps and seed."""
    calls = []

    def run_arm(exp, arm, model_cfg, size, steps, seed, *args):
        calls.append((arm.name, steps, seed))
        return {"sync_gt_abs_ms": float(steps + seed), "fd_av": 1.0}

    monkeypatch.setattr("avflow.experiments.arm.run_arm", run_arm)
    return calls


def test_an_experiment_rerun_with_other_steps_size_or_arms_refuses_its_old_results(tmp_path, monkeypatch):
    """`avflow experiment` twice in one --out: the same settings reuse the results; other steps, another size or an
    arm defined otherwise are a one-line error before any training (they were reused under the new labels); the
    data folder refuses another size as well."""
    from dataclasses import replace

    from avflow.errors import ConfigError
    from avflow.experiments.configs import SIZES
    from avflow.experiments.runner import run_experiment
    from avflow.experiments.world_data import prepare_data

    calls = _stub_training(monkeypatch)
    exp = ExperimentConfig(name="e", description="d", arms=[ArmConfig("a"), ArmConfig("b", guidance="modality")],
                           metrics=["sync_gt_abs_ms", "fd_av"], baseline="a", seeds=1)  # fmt: skip
    size = replace(SIZES["tiny"], n_train=2, n_eval=1)
    run = lambda exp=exp, size=size, steps=2: run_experiment(exp, "tiny", size, tmp_path, 1, steps, log=lambda *_: None)  # noqa: E731
    first = run()
    assert first["table"]["a"]["sync_gt_abs_ms"]["mean"] == 2.0 and len(calls) == 2
    assert run()["table"] == first["table"] and len(calls) == 2  # the same settings: reused
    other_arm = replace(exp, arms=[ArmConfig("a"), ArmConfig("b", guidance="plain")])
    for kwargs, why in (
        ({"steps": 6}, "steps 2 (this run: 6)"),
        ({"size": replace(size, n_train=3)}, "size.n_train 2 (this run: 3)"),
        ({"size": replace(size, lr=1e-3)}, "size.lr 0.002 (this run: 0.001)"),
        ({"exp": other_arm}, 'b/seed_0.json was made with guidance "modality" (this run: "plain")'),
    ):
        with pytest.raises(ConfigError, match="use another --out") as err:
            run(**kwargs)
        assert why in str(err.value) and "\n" not in str(err.value)
        assert len(calls) == 2  # refused before any training
    with pytest.raises(ConfigError, match=r"n_train 2 \(this run: 3\); use another --out"):
        prepare_data(replace(size, n_train=3), tmp_path / "data")
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "settings"}))
    with pytest.raises(ConfigError, match="no recorded settings"):
        prepare_data(size, tmp_path / "data")


def _write_experiment(tmp_path, arms: str, metrics: str = "[sync_gt_abs_ms, fd_av]", baseline: str = "bidirectional"):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: e\ndescription: d\nbaseline: {baseline}\nmetrics: {metrics}\narms:\n{arms}")
    return path


def test_an_experiment_under_torchrun_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    """Under torchrun every process ran every arm and wrote the same results: one line from rank 0, nothing made."""
    from avflow.cli import main

    monkeypatch.chdir(tmp_path)
    for rank in ("0", "1"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        assert main(["experiment", "fusion", "--seeds", "1", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == ("" if rank == "1" else "avflow experiment: error: avflow experiment runs in one process (its "
                       "arms train one after the other, with --threads); run it without torchrun"), err  # fmt: skip
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()


def test_typos_in_an_experiment_are_one_line_errors_at_load(tmp_path, monkeypatch):
    """A misspelt model key (in the baseline or any arm) or metric name is a one-line error naming its key path
    when the experiment loads; only a fusion or alignment that is not implemented makes an arm "not available",
    and never the baseline. The baseline is never replaced by another arm."""
    from avflow.errors import ConfigError
    from avflow.experiments.configs import SIZES
    from avflow.experiments.runner import plan_arms

    full = "  - {name: full_attention, model: {fusion: full_attention, fusion_options: {heads: 2, layers: 2}}}\n"
    bidir = "  - {name: bidirectional, model: {fusion: bidirectional, fusion_options: {heads: 2}}}\n"
    metrics = "[sync_gt_abs_ms, fd_av]"
    missing_baseline = bidir.replace("fusion: bidirectional", "fusion: cross_attention")  # not implemented
    for arms, names, why in (
        (full + bidir.replace("fusion:", "fusoin:"), metrics, "arms[1].model.fusoin: unknown key (expected one of:"),
        (full.replace("layers", "layrs") + bidir, metrics, "arms[0].model.fusion_options.layrs: unknown key"),
        (full + bidir.replace("heads: 2", "heads: two"), metrics, "arms[1].model.fusion_options.heads: expected int"),
        (full + bidir.replace("{fusion", "{video: {num_layer: 3}, fusion"), metrics, "arms[1].model.video.num_layer"),
        (full + bidir, "[fd_av, sync_gt_abs_msx]", "metrics[1]: unknown metric 'sync_gt_abs_msx' (did you mean"),
        (full + missing_baseline, metrics, "baseline: arm bidirectional is not available (fusion 'cross_attention' is"),
        ("  - {name: bidirectional, streams: [video]}\n", "[sync_gt_abs_ms]", "no arm generates audio"),
    ):
        with pytest.raises(ConfigError) as err:
            load_experiment(str(_write_experiment(tmp_path, arms, names)))
        assert why in str(err.value) and "exp.yaml: " in str(err.value) and "\n" not in str(err.value), err.value

    missing = _write_experiment(tmp_path, full.replace("fusion: full_attention", "fusion: cross_attention") + bidir)
    models, _, unavailable = plan_arms(load_experiment(str(missing)), SIZES["tiny"])
    assert list(models) == ["bidirectional"] and list(unavailable) == ["full_attention"]
    assert unavailable["full_attention"].startswith("fusion 'cross_attention' is not implemented")
    too_deep = full.replace("full_attention, fusion_options: {heads: 2, layers: 2}",
                            "windowed_aligners, fusion_options: {every: 3}")  # fmt: skip
    exp = load_experiment(str(_write_experiment(tmp_path, too_deep + bidir)))  # fits the default widths
    with pytest.raises(ConfigError, match=r"arm full_attention: model.fusion_options.every: .* 2 layers"):
        plan_arms(exp, SIZES["tiny"])  # not at tiny's: an error, not "not available"
    with pytest.raises(ConfigError, match="baseline a has no results"):
        finish(_exp(), {"b": _per_seed()["b"]}, tmp_path, {"seeds": 2, "size": "tiny", "steps": 3})


def test_the_metric_names_are_those_the_evaluation_reports(tmp_path):
    """`EVAL_METRICS` (what an experiment's `metrics` are checked against) is what `arm.evaluate_samples` reports
    on world clips, with the sampling budget; arms without audio report the video ones."""
    from dataclasses import replace

    from avflow.experiments import world_data as wd
    from avflow.experiments.arm import evaluate_samples
    from avflow.experiments.configs import EVAL_METRICS, SIZES, metric_names
    from avflow.weights import read_state_dict

    size = replace(SIZES["tiny"], n_train=1, n_eval=2)
    manifest = wd.prepare_data(size, tmp_path)
    ev = read_state_dict(tmp_path / "eval.safetensors")
    video, audio = wd.decode_streams({"video": ev["video"], "audio": ev["audio"]}, size, manifest["sample_rate"])
    budget = {"nfe", "sampling_steps"}  # added by run_arm
    assert set(evaluate_samples(video, audio, tmp_path, manifest, size)) | budget == set(EVAL_METRICS)
    assert set(evaluate_samples(video, None, tmp_path, manifest, size)) | budget == set(metric_names(["video"]))


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


# -- guidance experiments on one trained model (avflow.experiments.trained) --------------------------------------------


def _world_clips(n: int, base: int = 20_000):
    from avflow.world.dataset import make_clip
    from avflow.world.scene import WorldConfig

    world = WorldConfig(width=64, height=64, fps=16, duration=2.0, sample_rate=16000, min_objects=1, max_objects=1)
    clips = [make_clip(base + i, world) for i in range(n)]
    rows = [{"id": f"c{i}", "prompt": c.meta["caption"], "seed": i} for i, c in enumerate(clips)]
    return rows, [(c.frames, 16.0, c.audio, 16000) for c in clips]


def test_ground_truth_learns_and_shuffled_audio_sets_the_chance_level():
    """World clips scored as generated clips: the object shown, sync within a few ms, while each clip's video
    against the next clip's audio is far off; the bench criterion holds. With the audio 150 ms late it fails."""
    from avflow.experiments.trained import score_clips

    rows, clips = _world_clips(6)
    values = score_clips(rows, clips)
    assert values["object"] == 100.0 and values["sync_ms"] < 10
    assert values["sync_chance_ms"] > 4 * values["sync_ms"] and values["sync_chance_ms"] > 40
    assert values["learns"] == 1.0
    late = [(f, fps, np.concatenate([np.zeros((2, 2400), a.dtype), a[:, :-2400]], axis=1), sr)
            for f, fps, a, sr in clips]  # fmt: skip
    values = score_clips(rows, late)
    assert values["sync_ms"] > 62 and values["learns"] == 0.0


def test_trained_model_runs_only_guidance_arms_and_checks_its_inputs(tmp_path):
    from avflow.errors import ConfigError
    from avflow.experiments.trained import check_guidance_only, read_prompt_rows

    check_guidance_only(load_experiment("guidance"))
    for name in ("fusion", "t2v_vs_joint", "alignment"):
        with pytest.raises(ConfigError, match="only arms that differ in guidance"):
            check_guidance_only(load_experiment(name))
    bad = tmp_path / "bad.json"
    for text in ("not json", '{"prompts": []}', '{"prompts": [{"id": "a"}]}'):
        bad.write_text(text)
        with pytest.raises(ConfigError, match="bad.json"):
            read_prompt_rows(bad)


def test_guidance_arms_on_a_tiny_model_match_nfe_resume_and_keep_one_setup(tmp_path):
    """Three guidance arms x two sampling seeds on a tiny random model: each arm within the NFE budget with the steps
    it allows, every metric reported, the rerun reads the saved results, another setup in the same folder is an
    error."""
    from helpers import write_tiny_default_model

    from avflow.errors import ConfigError
    from avflow.experiments.trained import METRICS, run_on_model

    model = write_tiny_default_model(tmp_path / "model")
    prompts = tmp_path / "prompts.json"
    rows = [{"id": "p0", "prompt": "a red ball bounces twice on the left", "seed": 0},
            {"id": "p1", "prompt": "a blue cube hops once", "seed": 1}]  # fmt: skip
    prompts.write_text(json.dumps({"prompts": rows}))
    exp = load_experiment("guidance")
    out = tmp_path / "out"
    result = run_on_model(exp, str(model), prompts, out, seeds=2, nfe=6, log=lambda *_: None)
    table = result["table"]
    assert set(table) == {"plain_cfg", "modality_cfg", "modality_text_cfg"} and result["metrics"] == METRICS
    assert table["plain_cfg"]["steps"]["mean"] == 3 and table["modality_text_cfg"]["steps"]["mean"] == 2
    assert all(row["nfe"]["mean"] <= 6 for row in table.values())
    assert all(set(METRICS) <= set(row) for row in table.values())
    assert (out / "results.md").is_file() and "sampling seeds" in (out / "results.md").read_text()
    again = run_on_model(exp, str(model), prompts, out, seeds=2, nfe=6, log=lambda *_: None)
    assert res.to_json(again["table"]) == res.to_json(table)
    with pytest.raises(ConfigError, match="another setup"):
        run_on_model(exp, str(model), prompts, out, seeds=2, nfe=4, log=lambda *_: None)
    with pytest.raises(ConfigError, match="another setup"):  # the solver is part of the setup
        run_on_model(exp, str(model), prompts, out, seeds=2, nfe=6, log=lambda *_: None, solver="midpoint")
    mid = run_on_model(exp, str(model), prompts, tmp_path / "mid", seeds=1, nfe=8, log=lambda *_: None,
                       solver="midpoint")["table"]  # fmt: skip
    assert mid["plain_cfg"]["steps"]["mean"] == 2 and mid["modality_text_cfg"]["steps"]["mean"] == 1
    assert all(row["nfe"]["mean"] <= 8 for row in mid.values()) and mid["plain_cfg"]["nfe"]["mean"] == 8


def test_guidance_arms_on_several_models_take_one_training_seed_each(tmp_path, monkeypatch):
    """Models of one recipe as training seeds: seed s samples with model s and the prompts' own seeds (the same
    clips as that model alone at sampling seed 0), the setup names every model; the same model twice, or models
    that sample differently, are one-line errors."""
    from dataclasses import replace
    from pathlib import Path

    from helpers import write_tiny_default_model

    import avflow.pipelines.default_model as dm
    from avflow.errors import ConfigError
    from avflow.experiments.trained import run_on_model, run_on_models

    a, b = (write_tiny_default_model(tmp_path / name, seed=i) for i, name in enumerate(("a", "b")))
    prompts = tmp_path / "prompts.json"
    rows = [{"id": "p0", "prompt": "a red ball bounces twice on the left", "seed": 5},
            {"id": "p1", "prompt": "a blue cube hops once", "seed": 6}]  # fmt: skip
    prompts.write_text(json.dumps({"prompts": rows}))
    full = load_experiment("guidance")
    exp = replace(full, arms=[a for a in full.arms if a.name == full.baseline])  # one arm: the seeds are the point
    calls, load = [], dm.load_default_model

    def spying_load(folder=None):
        pipe = load(folder)
        generate = pipe.generate
        pipe.generate = lambda *args, **kw: calls.append((Path(folder).name, kw["seed"])) or generate(*args, **kw)
        return pipe

    monkeypatch.setattr(dm, "load_default_model", spying_load)
    out = tmp_path / "out"
    result = run_on_models(exp, [str(a), str(b)], prompts, out, nfe=3, log=lambda *_: None)
    assert sorted(set(calls)) == [("a", 5), ("a", 6), ("b", 5), ("b", 6)]
    assert json.loads((out / "setup.json").read_text())["models"] == [str(a), str(b)]
    assert result["seeds"] == 2 and "training noise" in (out / "results.md").read_text()
    alone = run_on_model(exp, str(b), prompts, tmp_path / "b_alone", seeds=1, nfe=3, log=lambda *_: None)
    for arm in result["table"]:
        seed_b = json.loads((out / "runs" / arm / "seed_1.json").read_text())["metrics"]
        b_alone = json.loads((tmp_path / "b_alone" / "runs" / arm / "seed_0.json").read_text())["metrics"]
        assert res.to_json(seed_b) == res.to_json(b_alone)
    with pytest.raises(ConfigError, match="two or more different models"):
        run_on_models(exp, [str(a), str(a)], prompts, tmp_path / "x", nfe=3)
    config = json.loads((b / "config.json").read_text())
    config["sampling"]["steps"] += 1
    (b / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="sample differently"):
        run_on_models(exp, [str(a), str(b)], prompts, tmp_path / "y", nfe=3)
    assert alone["seeds"] == 1


def test_sampling_steps_match_the_nfe_for_every_fixed_step_solver():
    """Steps x (1 + branches) x the solver's velocity evaluations per step stay within the NFE budget (midpoint and
    Heun take two per step); an adaptive solver has no step count to match: a one-line error."""
    from avflow.errors import ConfigError
    from avflow.experiments.configs import evaluations_per_step, sampling_steps

    assert [sampling_steps("plain", 50, s) for s in ("euler", "midpoint", "heun")] == [25, 12, 12]
    assert sampling_steps("plain", 52, "midpoint") == 13 and sampling_steps("modality_text", 52, "midpoint") == 8
    assert evaluations_per_step("midpoint") == 2 and evaluations_per_step("euler") == 1
    with pytest.raises(ConfigError, match="dopri5.: matching the NFE needs a fixed-step solver"):
        sampling_steps("plain", 50, "dopri5")


# -- experiments on the world codecs (SizeConfig.codecs = "world") -----------------------------------------------------


def test_world_codecs_prepare_data_writes_their_latents_checksum_and_a_model_that_fits(tmp_path, monkeypatch):
    """Train and eval clips coded by the shipped world codecs, in the joint model's layout (`streams.video`,
    `streams.left`, `streams.right`; video only for video-only arms), the checksum in the manifest and the files;
    a rerun with other codecs and a size the codecs cannot code are one-line errors, the latter before any clip."""
    from dataclasses import replace

    import torch

    from avflow.codecs.world import load_world_codecs
    from avflow.errors import ConfigError
    from avflow.experiments.arm import base_model
    from avflow.experiments.configs import SIZES
    from avflow.experiments.world_data import prepare_data
    from avflow.weights import read_safetensors
    from avflow.world.dataset import load_clip

    codecs = load_world_codecs()
    size = replace(SIZES["world_smoke"], n_train=2, n_eval=1)
    data = tmp_path / "data"
    manifest = prepare_data(size, data)
    assert manifest["codecs_checksum"] == codecs.checksum and len(manifest["train"]) == 2
    frames, samples = round(size.duration * size.fps), round(size.duration * manifest["sample_rate"])
    video = (codecs.video.latent_channels, *codecs.video.latent_shape(frames, size.height, size.width))  # (C, T', h, w)
    ear = (codecs.audio.latent_length(samples), codecs.audio.latent_channels)  # (N, C)
    train, meta = read_safetensors(data / "train_video_audio.safetensors")
    assert meta["codecs_checksum"] == codecs.checksum
    assert {k: tuple(v.shape) for k, v in train.items()} == {
        "streams.video": (2, *video), "streams.left": (2, *ear), "streams.right": (2, *ear),
        "cond.text": (2, 32, 384), "cond.text_mask": (2, 32),
    }  # fmt: skip
    video_only, _ = read_safetensors(data / "train_video.safetensors")
    assert sorted(k for k in video_only if k.startswith("streams.")) == ["streams.video"]
    ev, meta = read_safetensors(data / "eval.safetensors")
    assert meta["codecs_checksum"] == codecs.checksum
    ref = load_clip(data / "eval" / manifest["eval"][0]["id"])  # the latents are the codecs' coding of the clip
    with torch.no_grad():
        frames_in = torch.from_numpy(ref.frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0  # (1, 3, T, H, W)
        torch.testing.assert_close(ev["video"], codecs.video.encode(frames_in), rtol=1e-4, atol=1e-4)
        ears = codecs.audio.encode(torch.from_numpy(ref.audio)[None])
    for name in codecs.audio.streams:
        torch.testing.assert_close(ev[name], ears[name], rtol=1e-4, atol=1e-4)

    model = base_model(size)  # read from the codec objects
    assert model["video"]["in_channels"] == model["video"]["out_channels"] == codecs.video.latent_channels
    assert model["video_temporal_stride"] == codecs.video.temporal_down
    assert model["audio"]["latent_dim"] == 2 * codecs.audio.latent_channels
    assert model["audio_latent_rate"] == codecs.audio.latent_rate
    assert model["audio_streams"] == list(codecs.audio.streams) == ["left", "right"]

    assert prepare_data(size, data) == manifest  # the rerun reads the manifest
    for other in (replace(SIZES["tiny"], n_train=2, n_eval=1), size):
        if other is size:
            (data / "manifest.json").write_text(json.dumps(manifest | {"codecs_checksum": "0" * 64}))
        with pytest.raises(ConfigError, match="made with") as err:
            prepare_data(other, data)
        assert "\n" not in str(err.value)

    def no_render(*args, **kwargs):
        raise AssertionError("a clip was rendered before the size was checked")

    monkeypatch.setattr("avflow.world.dataset.make_clip", no_render)
    for bad, why in ((dict(width=32, height=32), "32x32 pixels"), (dict(duration=2.1), "34 frames")):
        with pytest.raises(ConfigError, match=why) as err:
            prepare_data(replace(size, **bad), tmp_path / "bad")
        assert "\n" not in str(err.value) and not (tmp_path / "bad").exists()
        with pytest.raises(ConfigError, match=why):
            base_model(replace(size, **bad))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["guidance", "t2v_vs_joint"])
def test_world_codecs_smoke_run(name, tmp_path):
    """One experiment at "world_smoke": trained on the codecs' latents, decoded through them, scored as before."""
    from avflow.codecs.world import load_world_codecs
    from avflow.experiments.configs import SIZES
    from avflow.experiments.runner import run_experiment

    size = SIZES["world_smoke"]
    result = run_experiment(load_experiment(name), "world_smoke", size, tmp_path, seeds=2, steps=2,
                            log=lambda *_: None)  # fmt: skip
    assert (tmp_path / "results.md").is_file() and (tmp_path / "results.png").is_file()
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["codecs_checksum"] == load_world_codecs().checksum
    assert set(result["table"]) | set(result["unavailable"]) == {a.name for a in load_experiment(name).arms}
    assert not result["unavailable"]
    for arm in result["table"].values():  # every arm reports every metric; n counts the seeds where it is defined
        assert set(result["metrics"]) <= set(arm) and all(0 <= arm[k]["n"] <= 2 for k in result["metrics"])
    again = run_experiment(load_experiment(name), "world_smoke", size, tmp_path, seeds=2, steps=2,
                           log=lambda *_: None)  # fmt: skip
    assert res.to_json(again["table"]) == res.to_json(result["table"])  # the rerun reads the finished results
