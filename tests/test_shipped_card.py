"""The shipped default model's card and config.json agree with each other and with the script that made them
(scripts/train_default_v2.py): the totals the card states, its sampling settings and the run it names as shipped; the
network config.json records (every setting resolved, as the trainer builds the script's last cycle); each run's
record (what defines it: seed, precision, stream weights, training data), which the script's export writes back byte
for byte from the shipped records where the runs' logs are not at hand."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import REPO

from avflow.config import dump_yaml, from_dict, read_yaml, to_dict
from avflow.models.joint import JointConfig, JointModel
from avflow.weights import load_strict, read_state_dict, save_safetensors

ASSETS = REPO / "avflow" / "assets" / "default_model"
CARD = (ASSETS / "MODEL_CARD.md").read_text()
SHIPPED = json.loads((ASSETS / "config.json").read_text())


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_default_v2

    return train_default_v2


def flat(text: str) -> str:
    """The card's text with its line breaks as spaces (sentences wrap)."""
    return re.sub(r"\s*\n\s*", " ", text)


def config_value(path: str):
    """config.json's value at a dotted path such as training.runs[0].train_wall_minutes."""
    node = SHIPPED
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    return node


def test_the_cards_training_totals_are_config_jsons():
    training = SHIPPED["training"]
    runs = training["runs"]
    assert training["steps"] == sum(r["steps"] for r in runs)
    assert training["train_wall_minutes"] == round(sum(r["train_wall_minutes"] for r in runs), 1)
    text = flat(CARD)
    totals = re.findall(r"Total: (\d+) steps, ([\d.]+) min of training \(`config.json` `training`", text)
    assert totals, "the card states no total of config.json's training"
    for steps, minutes in totals:
        assert (int(steps), float(minutes)) == (training["steps"], training["train_wall_minutes"])
    in_all = re.findall(r"(\d+) steps and (\d+) training minutes in all, `config.json` `training`", text)
    assert in_all, "the card's Training section states no totals"
    for steps, minutes in in_all:
        assert (int(steps), int(minutes)) == (training["steps"], round(training["train_wall_minutes"]))
    quoted = re.findall(r"([\d.]+) min \(`config.json` `(training\.[\w.\[\]]+)`", text)
    assert quoted, "the card quotes no config.json training key"
    for minutes, key in quoted:
        assert float(minutes) == config_value(key), (
            f"the card says {minutes} min is {key}, config.json has {config_value(key)}"
        )


def test_the_cards_sampling_and_shipped_run_are_config_jsons_and_the_scripts(script):
    sampling = {"cfg_strength": script.CFG, "steps": script.STEPS, "solver": script.SOLVER}
    assert {k: SHIPPED["sampling"][k] for k in sampling} == sampling
    solver, steps, cfg = script.SOLVER, script.STEPS, f"{script.CFG:g}"
    text = flat(CARD)
    quality = re.search(r"^## Quality \((.*)\)$", CARD, re.M)
    assert quality, "the card has no Quality header"
    assert f"{solver} {steps} steps" in quality.group(1)
    section = flat(CARD[quality.end() :].split("\n## ")[0])
    stated = re.search(r"the model's sampling \(since [^)]*?(\w+), (\d+) steps, CFG ([\d.]+)", section)
    assert stated and stated.groups() == (solver, str(steps), cfg), stated and stated.groups()
    adopted = re.search(r"\(`config.json` `sampling`: (\w+), (\d+) steps, CFG ([\d.]+)", text)
    assert adopted and adopted.groups() == (solver, str(steps), cfg), adopted and adopted.groups()
    shipped_run = SHIPPED["training"]["runs"][-1]["run"]  # the status and the quality header name the shipped run
    status = re.search(r"the shipped weights are \*\*(\w+)\*\*", text)
    assert status and status.group(1) == shipped_run
    assert re.search(rf"\b{shipped_run}\b", quality.group(1))


def last_cycle_args(script, tmp_path: Path, monkeypatch) -> dict:
    """model.args as the trainer resolves the script's last cycle (its YAML with the cycle's overrides)."""
    from avflow.train.config import load_train_config

    monkeypatch.chdir(REPO)
    cycle = script.cycle_plan(tmp_path)[-1]
    files = [cycle.start, *(tmp_path / f"cache_{s}.safetensors" for s in ("train", "val", "train_mirror"))]
    for file in files:
        file.write_bytes(b"")  # the config only checks that they exist
    config = load_train_config(cycle.config, [f"init.weights={cycle.start}", *script.cache_overrides(tmp_path),
                                              *cycle.overrides])  # fmt: skip
    return config.model.args


def test_config_json_joint_is_the_resolved_config_of_the_last_cycle(script, tmp_path, monkeypatch):
    """config.json's joint is the JointConfig the trainer builds from the last cycle's YAML with every code default
    written out (the fusion's typed options too); it loads to the same network: every field equal, the fusion
    options equal as the fusion reads them."""
    args = last_cycle_args(script, tmp_path, monkeypatch)
    built = from_dict(JointConfig, args)
    resolved = to_dict(built) | {"fusion_options": to_dict(built.fusion_config)}
    assert SHIPPED["joint"] == resolved
    shipped = from_dict(JointConfig, SHIPPED["joint"])
    assert to_dict(shipped) == SHIPPED["joint"]  # nothing left to a default
    assert shipped.fusion_config == built.fusion_config
    assert {k: v for k, v in vars(shipped).items() if k != "fusion_options"} == {
        k: v for k, v in vars(built).items() if k != "fusion_options"}  # fmt: skip
    yaml_args = read_yaml(script.cycle_plan(tmp_path)[-1].config)["model"]["args"]
    assert from_dict(JointConfig, yaml_args) == built  # the YAML's keys alone build the same config


def test_the_resolved_joint_config_gives_the_shipped_weights_bit_identical_velocities(script, tmp_path):
    yaml_args = read_yaml(script.cycle_plan(tmp_path)[-1].config)["model"]["args"]
    state = read_state_dict(ASSETS / "joint.safetensors")
    models = []
    for args in (yaml_args, SHIPPED["joint"]):
        model = JointModel(from_dict(JointConfig, args))
        models.append(load_strict(model, state, "joint.safetensors").eval())
    j = models[1].config
    g = torch.Generator().manual_seed(0)
    n_audio = int(SHIPPED["duration"] * j.audio_latent_rate)
    streams = {"video": torch.randn(1, j.video.in_channels, 8, 8, 8, generator=g),
               "left": torch.randn(1, n_audio, j.audio.latent_dim // 2, generator=g),
               "right": torch.randn(1, n_audio, j.audio.latent_dim // 2, generator=g)}  # fmt: skip
    t = {k: torch.full((1,), 0.4) for k in streams}
    cond = {"text": torch.randn(1, j.text_len, j.text_dim, generator=g), "text_mask": torch.ones(1, j.text_len)}
    with torch.no_grad():
        a, b = (m.velocity(streams, t, cond) for m in models)
    assert all(torch.equal(a[k], b[k]) for k in streams)


def fake_work(script, tmp_path: Path, monkeypatch) -> tuple[Path, list[Path], Path]:
    """WORK with the cache's codecs record and the last run's EMA only (every run trained elsewhere), and the assets
    folder the export writes into (a copy of the shipped config.json, whose records it falls back to)."""
    from avflow.codecs.world import load_world_codecs

    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(ASSETS / "config.json", assets / "config.json")
    monkeypatch.setattr(script, "ASSETS", assets)
    work = tmp_path / "work"
    runs = [work / "joint"] + [c.run for c in script.cycle_plan(work)]
    runs[-1].mkdir(parents=True)
    save_safetensors({"w": torch.ones(2)}, runs[-1] / "ema_0.05.safetensors")
    (work / "cache_train.json").write_text(json.dumps({"codecs_checksum": load_world_codecs().checksum}))
    return work, runs, assets


def test_export_writes_the_shipped_config_json_and_says_what_it_took_from_it(script, tmp_path, monkeypatch, capsys):
    work, runs, assets = fake_work(script, tmp_path, monkeypatch)
    info = {k: SHIPPED["training"][k] for k in ("clips", "objects", "wall_minutes_this_run")}
    script.export(work, runs, info)
    assert (assets / "config.json").read_text() == (ASSETS / "config.json").read_text()
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "note: " in line and "no metrics.jsonl in WORK" in line]
    assert len(notes) == len(runs), out
    assert f"{runs[-1]}: no metrics.jsonl in WORK" in notes[-1] and "'mirror1b'" in notes[-1]
    record = SHIPPED["training"]["runs"][-1]  # the shipped cycle: mirror1's cycle with training seed 1
    assert (record["run"], record["dir"], record["seed"], record["precision"]) == ("mirror1b", "mirror1", 1, "bf16")
    assert record["stream_weights"] == {"video": 2.0}
    assert record["train_data"] == "WORK/cache_train_mirror.safetensors"
    assert record["start"] == "WORK/joint_62000.safetensors"


def test_a_run_in_work_is_recorded_as_it_trained(script, tmp_path, monkeypatch):
    """A run whose log and config.yaml are in WORK: its settings from its config.yaml (another seed: another name),
    its steps and minutes from its log."""
    from avflow.train.config import load_train_config

    work, runs, _ = fake_work(script, tmp_path, monkeypatch)
    monkeypatch.chdir(REPO)
    cycle = script.cycle_plan(work)[-1]
    for file in (cycle.start, work / "cache_train_mirror.safetensors", work / "cache_val.safetensors"):
        file.write_bytes(b"")
    overrides = [f"out_dir={cycle.run}", f"init.weights={cycle.start}", *script.cache_overrides(work)]
    config = load_train_config(cycle.config, [*overrides, *cycle.overrides, "train.seed=2"])
    (cycle.run / "config.yaml").write_text(dump_yaml(config))
    rows = [{"step": 25, "time": 1000.0}, {"step": 50, "time": 1060.0}, {"step": 4000, "time": 1180.0}]
    (cycle.run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = script.run_record(work, cycle.run)
    assert (record["run"], record["dir"], record["seed"], record["precision"]) == ("mirror1c", "mirror1", 2, "bf16")
    assert record["train_data"] == "WORK/cache_train_mirror.safetensors" and record["stream_weights"] == {"video": 2.0}
    assert (record["steps"], record["train_wall_minutes"], record["resumed"]) == (4000, 3.0, 0)


def test_a_shipped_record_of_a_run_trained_otherwise_is_refused(script, tmp_path, monkeypatch):
    work, runs, _ = fake_work(script, tmp_path, monkeypatch)
    monkeypatch.setattr(script, "MIRRORED", [*script.MIRRORED, "train.precision=fp32"])
    with pytest.raises(SystemExit, match=r"precision 'bf16' -> 'fp32'.*train it again"):
        script.run_record(work, runs[-1])
    monkeypatch.setattr(script, "MIRRORED", ["train.seed=3"])  # mirror1d: no record of it
    with pytest.raises(SystemExit, match="keeps no record of a run named 'mirror1d'"):
        script.run_record(work, runs[-1])


def test_the_plan_reads_as_the_records_say(script, tmp_path):
    """Each shipped record's settings are those the script's plan gives its run (config, start, overrides)."""
    work = tmp_path / "work"
    runs = [work / "joint"] + [c.run for c in script.cycle_plan(work)]
    assert [r["dir"] for r in SHIPPED["training"]["runs"]] == [r.name for r in runs]
    for run, record in zip(runs, SHIPPED["training"]["runs"]):
        assert script.run_settings(work, run) == {k: v for k, v in record.items()
                                                  if k not in ("steps", "train_wall_minutes", "resumed")}  # fmt: skip
