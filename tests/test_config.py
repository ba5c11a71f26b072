"""Strict configs: YAML/dicts onto dataclasses, typed `key=value` overrides, one-line errors naming the key path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from avflow.cli import main
from avflow.config import apply_overrides, data_path, dump_yaml, from_dict, load_config, parse_yaml
from avflow.errors import ConfigError
from avflow.train.config import TrainConfig, load_train_config

STREAMS = {"audio": [4, 3]}


@dataclass
class Inner:
    lr: float = 1e-3
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    clip: float | None = 1.0


@dataclass
class Outer:
    steps: int
    inner: Inner = field(default_factory=Inner)
    flags: list[bool] = field(default_factory=list)
    betas: tuple[float, float] = (0.9, 0.99)
    table: dict[str, int] = field(default_factory=dict)
    root: Path | None = data_path(None, kind="dir")


def test_from_dict_builds_nested_and_converts():
    cfg = from_dict(
        Outer, {"steps": 3, "inner": {"lr": 1, "mode": "b", "clip": None}, "betas": [1, 2], "flags": [True]}
    )
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float) and cfg.inner.clip is None
    assert cfg.betas == (1.0, 2.0) and cfg.flags == [True] and cfg.root is None
    assert from_dict(Outer, yaml.safe_load(dump_yaml(cfg))) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"steps": 1, "inner": {"lrr": 1}}, "inner.lrr: unknown key (expected one of: lr, name, mode, clip)"),
        ({"steps": 1, "inner": {"lr": "abc"}}, "inner.lr: expected float, got 'abc'"),
        ({"steps": True}, "steps: expected int, got True"),
        ({"steps": 1.5}, "steps: expected int, got 1.5"),
        ({}, "steps: missing required field"),
        ({"steps": 1, "inner": {"mode": "c"}}, "inner.mode: expected one of 'a', 'b', got 'c'"),
        ({"steps": 1, "inner": {"clip": "no"}}, "inner.clip: expected float or null, got 'no'"),
        ({"steps": 1, "flags": [True, 1]}, "flags[1]: expected bool, got 1"),
        ({"steps": 1, "betas": [0.9]}, "betas: expected 2 items, got 1"),
        ({"steps": 1, "table": {"a": "1"}}, "table.a: expected int, got '1'"),
        ({"steps": 1, "inner": 3}, "inner: expected a mapping (Inner), got 3"),
        ({"steps": 1, "root": "/no/such/folder"}, "root: no such folder: '/no/such/folder'"),
    ],
)
def test_from_dict_errors_are_one_line_with_the_key_path(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data)
    assert str(info.value) == message


def test_overrides_are_parsed_by_the_field_type(tmp_path):
    raw = apply_overrides(
        {"steps": 1},
        ["steps=7", "inner.lr=3e-4", "inner.name=123", "inner.clip=null", "betas=[0.5, 0.6]", "table.k=2", "flags=[]"],
    )
    cfg = from_dict(Outer, raw)
    assert cfg.steps == 7 and cfg.inner.lr == 3e-4 and cfg.inner.name == "123" and cfg.inner.clip is None
    assert cfg.betas == (0.5, 0.6) and cfg.table == {"k": 2}
    with pytest.raises(ConfigError, match=r"^inner\.lr: expected float, got 'abc' \(from the command line\)$"):
        from_dict(Outer, apply_overrides({"steps": 1}, ["inner.lr=abc"]))
    with pytest.raises(ConfigError, match=r"^override 'steps': expected key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match=r"^steps: cannot set 'steps.x'"):
        apply_overrides({"steps": 1}, ["steps.x=1"])


def test_yaml_reads_exponent_floats_and_reports_syntax_errors(tmp_path):
    assert parse_yaml("lr: 1e-4\nn: 10\ns: abc") == {"lr": 1e-4, "n": 10, "s": "abc"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 1\ninner: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, bad)
    assert str(info.value).startswith(f"{bad}: invalid YAML at line 3") and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys, so a second `optim:` section at the end of a file would silently
    replace the first; here it is an error naming both lines. YAML merge keys still override what they merge."""
    path = tmp_path / "dup.yaml"
    path.write_text("steps: 1\noptim:\n  lr: 0.001\n  betas: [0.9, 0.99]\nlog: {every: 5}\noptim: {decay: 0.5}\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    assert str(info.value) == f"{path}: invalid YAML at line 6: duplicate key 'optim' (first at line 2)"
    with pytest.raises(ConfigError, match="line 2: duplicate key 'lr' \\(first at line 1\\)"):
        parse_yaml("lr: 1\nlr: 2\n")
    assert parse_yaml("base: &b {x: 1, y: 2}\nd: {<<: *b, y: 5}\n")["d"] == {"x": 1, "y": 5}


def train_yaml(tmp_path: Path) -> Path:
    cfg = {
        "out_dir": str(tmp_path / "run"),
        "model": {"name": "toy_flow", "args": {"streams": STREAMS, "hidden": 8}},
        "task": {"name": "flow_matching"},
        "data": {"train": {"name": "synthetic", "args": {"size": 16, "streams": STREAMS}}},
        "optim": {"lr": 1e-3},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_config_loads_and_validates_component_args(tmp_path):
    cfg = load_train_config(train_yaml(tmp_path), ["model.args.depth=3", "train.steps=5", "schedule.kind=cosine"])
    assert isinstance(cfg, TrainConfig) and cfg.model.args["depth"] == 3 and cfg.train.steps == 5
    assert cfg.model.args["hidden"] == 8 and cfg.model.args["num_classes"] == 4  # filled from the model's dataclass
    assert cfg.schedule.kind == "cosine" and cfg.task.args["timesteps"] == "logit_normal"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lr=abc"], "optim.lr: expected float, got 'abc' (from the command line)"),
        (["optim.lrr=1"],
         "optim.lrr: unknown key (expected one of: lr, betas, eps, weight_decay, decay_all, grad_clip)"),
        (["model.args.hidden=abc"], "model.args.hidden: expected int, got 'abc' (from the command line)"),
        (["model.args.width=3"], "model.args.width: unknown key (expected one of: streams, hidden, depth, "),
        (["model.name=nope"], "model.name: unknown model 'nope' (choose from toy_flow"),
        (["train.precision=fp16"], "train.precision: expected one of 'auto', 'fp32', 'bf16', got 'fp16'"),
        (["train.steps=0"], "train.steps: must be >= 1, got 0"),
        (["train.batch_size=10", "train.grad_accum=3"], "train.batch_size: 10 is not divisible by train.grad_accum=3"),
        (["checkpoint.resume=/no/ckpt.pt"], "checkpoint.resume: no such checkpoint file: '/no/ckpt.pt'"),
        (
            ["data.train.name=tensor_file", "data.train.args={file: /no/data.safetensors}"],
            "data.train.args.file: no such file: '/no/data.safetensors'",
        ),
        (["data.train.args.file=x"], "data.train.args.file: unknown key (expected one of: size, streams, "),
        (["data.val.name=synthetic", "data.val.args.size=0"], "data.val.args.size: must be >= 1, got 0"),
    ],
)
def test_train_config_errors(tmp_path, overrides, message):
    path = train_yaml(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_train_config(path, overrides)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


def test_missing_required_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("out_dir: x\nmodel: {name: toy_flow}\ntask: {name: flow_matching}\n")
    with pytest.raises(ConfigError, match=r": data: missing required field$"):
        load_train_config(path)


def test_print_config_may_come_before_the_overrides(tmp_path, capsys):
    """`avflow train CONFIG --print-config key=value`: the override applies (it was "unrecognized arguments")."""
    assert main(["train", str(train_yaml(tmp_path)), "--print-config", "optim.lr=0.5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["lr"] == 0.5


def test_cli_prints_a_single_line_and_exits_2(tmp_path, capsys):
    assert main(["train", str(train_yaml(tmp_path)), "optim.lr=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("optim.lr: expected float, got 'abc' (from the command line)") and "\n" not in err
    assert not (tmp_path / "run").exists()  # no work started


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_a_config_that_is_not_utf8_text_is_one_line(tmp_path, capsys, command):
    path = tmp_path / "clip.yaml"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe binary, not YAML")  # e.g. a video renamed .yaml
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{path}: not a UTF-8 text file (a YAML config is expected)") and "\n" not in err
