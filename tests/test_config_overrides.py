"""Command-line overrides and YAML values that must not change silently: untyped fields read as YAML, YAML 1.2
integers (no octal `0123`, no sexagesimal `1:30`), and `null` for a section that cannot be null."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from avflow.config import CliValue, apply_overrides, dump_yaml, from_dict, load_config, parse_yaml
from avflow.errors import ConfigError
from avflow.train.config import load_train_config


@dataclass
class Inner:
    lr: float = 1e-3
    name: str = "x"
    clip: float | None = 1.0


@dataclass
class Loose:
    steps: int = 1
    options: dict = field(default_factory=dict)
    extra: Any = None
    items: list = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None


def loose(*overrides: str, data: dict | None = None) -> Loose:
    return from_dict(Loose, apply_overrides(data or {}, list(overrides)))


def test_untyped_fields_read_command_line_values_as_yaml():
    cfg = loose("options.flag=true", "options.layers=1", "options.map={a: 1}", "options.deep.rate=2.5",
                "extra=null", "items=[1, x]", "options.off=false")  # fmt: skip
    assert cfg.options == {"flag": True, "layers": 1, "map": {"a": 1}, "deep": {"rate": 2.5}, "off": False}
    assert type(cfg.options["flag"]) is bool and type(cfg.options["layers"]) is int
    assert cfg.extra is None and cfg.items == [1, "x"]
    assert yaml.safe_load(dump_yaml(cfg))["options"]["flag"] is True  # printed as a bool, not 'true'


def test_untyped_text_stays_command_line_text_for_a_later_typed_check():
    """`none`, an empty value and plain words stay text (e.g. `alignment=none`), still typed later as from the
    command line: `none` is null for an optional field, a word for a float is the command-line error."""
    cfg = loose("options.alignment=none", "options.empty=", "options.word=abc", "options.clip=none")
    assert cfg.options == {"alignment": "none", "empty": "", "word": "abc", "clip": "none"}
    assert all(isinstance(v, CliValue) for v in cfg.options.values())
    assert from_dict(Inner, {"clip": cfg.options["clip"]}).clip is None
    with pytest.raises(ConfigError, match=r"^lr: expected float, got 'abc' \(from the command line\)$"):
        from_dict(Inner, {"lr": cfg.options["word"]})


@pytest.mark.parametrize(
    "text, value",
    [("0123", 123), ("-017", -17), ("0o17", 15), ("0x1F", 31), ("1_000", 1000), ("0", 0), ("+5", 5),
     ("1:30", "1:30"), ("1:30.5", "1:30.5"), ("1e-4", 1e-4), ("2.5", 2.5), (".5", 0.5), (".inf", float("inf")),
     ("true", True), ("yes", True), ("false", False), ("~", None), ("null", None), ("abc", "abc")],
)  # fmt: skip
def test_yaml_reads_integers_by_yaml_1_2(text, value):
    parsed = parse_yaml(f"v: {text}")["v"]
    assert parsed == value and type(parsed) is type(value)


def test_integers_from_files_and_the_command_line_are_not_octal_or_sexagesimal(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 0755\n")
    assert load_config(Loose, path).steps == 755
    assert loose("steps=0123").steps == 123
    with pytest.raises(ConfigError) as info:
        loose("steps=1:30")
    assert str(info.value) == "steps: expected int, got '1:30' (from the command line)"
    path.write_text("steps: 1:30\n")
    with pytest.raises(ConfigError) as info:
        load_config(Loose, path)
    assert str(info.value) == f"{path}: steps: expected int, got '1:30'"


def test_written_yaml_reads_back_the_same_strings():
    text = dump_yaml({"a": "0o17", "b": "0123", "c": "1:30", "d": 15})
    assert parse_yaml(text) == yaml.safe_load(text) == {"a": "0o17", "b": "0123", "c": "1:30", "d": 15}


def test_null_for_a_section_is_an_error_not_its_defaults():
    with pytest.raises(ConfigError) as info:
        loose("inner=null", data={"inner": {"lr": 0.5}})
    assert str(info.value) == "inner: expected a mapping (Inner), got null (from the command line)"
    with pytest.raises(ConfigError) as info:
        from_dict(Loose, {"inner": None})
    assert str(info.value) == "inner: expected a mapping (Inner), got null"
    assert loose("maybe=null", data={"maybe": {"lr": 0.5}}).maybe is None  # an optional section may be null


JOINT = """out_dir: {out}
model:
  name: joint
  args:
    video: {{num_attention_heads: 2, attention_head_dim: 16, ffn_dim: 32, num_layers: 2, freq_dim: 32}}
    audio: {{latent_dim: 8, hidden_dim: 32, depth: 2, fused_depth: 1, num_heads: 2}}
task: {{name: joint_flow}}
data: {{train: {{name: synthetic, args: {{size: 4, streams: {{audio: [4, 3]}}}}}}}}
optim: {{lr: 0.5}}
"""


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.args.video=null", "model.args.video: expected a mapping (WanConfig), got null"),
        ("optim=null", "optim: expected a mapping (OptimConfig), got null (from the command line)"),
    ],
)
def test_train_config_refuses_null_for_a_section(tmp_path, override, message):
    path = tmp_path / "joint.yaml"
    path.write_text(JOINT.format(out=tmp_path / "run"))
    assert load_train_config(path).model.args["video"]["num_layers"] == 2
    with pytest.raises(ConfigError) as info:
        load_train_config(path, [override])
    assert str(info.value) == f"{path}: {message}"
