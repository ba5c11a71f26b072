"""The user docs (README.md, docs/*.md) against the code: every command and option is documented, examples run with
the models they download, cross-references resolve in a clone, and what the docs say about defaults matches it."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from avflow.cli import COMMANDS, HelpFormatter, Parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
USER_DOCS = [p for p in DOCS if p.name != "findings.md"]  # findings.md is a lab notebook, not a user's guide
def _text(paths) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def _parsers(name: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """(prog, parser) of a command and of each of its sub-commands (`cache build`, `world make`, ...)."""
    parser = Parser(prog=f"avflow {name}", formatter_class=HelpFormatter)
    importlib.import_module(COMMANDS[name]).add_arguments(parser)
    subs = [
        (f"avflow {name} {sub}", p) for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        for sub, p in action.choices.items()
    ]  # fmt: skip
    return [(f"avflow {name}", parser), *subs]


def _named(option: str, text: str) -> bool:
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def test_every_command_and_option_is_in_a_user_doc():
    text = _text(USER_DOCS)
    missing = [f"avflow {name}" for name in COMMANDS if f"avflow {name}" not in text]
    for name in COMMANDS:
        for prog, parser in _parsers(name):
            for action in parser._actions:
                strings = [s for s in action.option_strings if s not in ("-h", "--help")]
                if strings and not any(_named(s, text) for s in strings):  # `-o` documents `--output`
                    missing.append(f"{prog} {strings[-1]}")
    missing += [] if _named("avflow --version", text) else ["avflow --version"]  # the one top-level option
    assert not missing, f"in --help but in no user doc: {missing}"


@pytest.mark.parametrize("name", ["t2a", "i2a"])
def test_sound_duration_help_names_its_cap(name):
    from avflow.pipelines.inputs import MAX_SOUND_S

    help_text = " ".join(_parsers(name)[0][1].format_help().split())
    assert f"at most {MAX_SOUND_S:g}" in help_text


def test_foley_duration_help_has_no_sound_cap():
    help_text = " ".join(_parsers("foley")[0][1].format_help().split())
    assert "3600" not in help_text  # a video bounds it


def _bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/foley.md"])
def test_quick_start_blocks_use_the_models_they_download(doc):
    """A block that downloads official models runs its MMAudio commands with one of them (`--model` left out: the
    default), so it works as written on a fresh machine."""
    from avflow import hub

    default = next(a.default for a in _parsers("t2a")[0][1]._actions if "--model" in a.option_strings)
    for block in _bash_blocks(ROOT / doc):
        fetched = set(re.findall(r"^avflow download (\w+)", block, re.M))
        if not fetched:
            continue
        for line in re.findall(r"^avflow (?:foley|t2a|i2a) .*$", block, re.M):
            model = re.search(r"--model (\S+)", line)
            name = model[1] if model else default
            if name in hub.MODELS:
                assert name in fetched, f"{doc}: `{line}` needs {name}; the block downloads {sorted(fetched)}"


def test_conventions_are_a_file_of_the_repository():
    assert (ROOT / "docs" / "conventions.md").is_file()
    stale = [p.name for p in DOCS if "CONVENTIONS.md" in p.read_text("utf-8")]
    assert not stale, f"name docs/conventions.md, not CONVENTIONS.md (not in a clone): {stale}"


def test_the_conventions_page_states_the_signs_the_code_uses():
    text = " ".join((ROOT / "docs" / "conventions.md").read_text(encoding="utf-8").split())
    for fact in ("`t = 0` pure noise", "v = v_c + Σ_k (w_k − 1)·(v_c − v_k)", "**negative means left**",
                 "`ILD = 20·log10(rms_L / rms_R)`", "**[left, right]**", "`t_audio − t_visual`"):  # fmt: skip
        assert fact in text, fact


def test_the_weight_cache_location_is_the_real_rule():
    """`avflow.hub.home`: $AVFLOW_HOME, else $XDG_CACHE_HOME/avflow, else ~/.cache/avflow."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        if "~/.cache/avflow" in text:
            assert "XDG_CACHE_HOME" in text, f"{path.name} gives ~/.cache/avflow as the cache without $XDG_CACHE_HOME"


def test_hub_home_follows_the_documented_rule(monkeypatch, tmp_path):
    from avflow import hub

    monkeypatch.delenv("AVFLOW_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.home() == tmp_path / "xdg" / "avflow"
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "mine"))
    assert hub.home() == tmp_path / "mine"


def test_codecs_doc_names_the_commit_the_refine_config_names():
    config = (ROOT / "configs" / "codecs" / "world_video_refine.yaml").read_text(encoding="utf-8")
    named = set(re.findall(r"git show ([0-9a-f]{7,40}):", config))
    assert named
    for line in (ROOT / "docs" / "codecs.md").read_text(encoding="utf-8").splitlines():
        if "world_video_refine.yaml" in line:
            commits = {c for c in re.findall(r"\b[0-9a-f]{7}\b", line) if re.search(r"[a-f]", c)}
            assert commits <= named, f"docs/codecs.md names {commits - named} for world_video_refine.yaml: {line}"


def test_ui_example_gives_the_joint_model_a_joint_run():
    """An MMAudio fine-tune's run folder goes to --foley-weights, never to the joint model's --model."""
    finetunes = set(re.findall(r"mmaudio_finetune(?:\.yaml)? out_dir=(\S+)", _text(DOCS)))
    assert finetunes
    for block in re.findall(r"```\n(.*?)```", (ROOT / "docs" / "ui.md").read_text(encoding="utf-8"), re.S):
        for line in re.findall(r"^avflow ui .*$", block, re.M):
            model = re.search(r"--model (\S+)", line)
            assert model is None or model[1] not in finetunes, line


def _constants() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for py in (ROOT / "avflow").rglob("*.py"):
        for m in re.finditer(r"^([A-Z][A-Z0-9_]{3,})\s*[:=]", py.read_text(encoding="utf-8"), re.M):
            found.setdefault(m[1], []).append(py.relative_to(ROOT))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_module_constants_are_named_with_their_module(doc):
    """A constant a doc names (`MAX_SOUND_S`) can be found: the doc names a module that defines it."""
    text = doc.read_text(encoding="utf-8")
    defined = _constants()
    for name in sorted(set(re.findall(r"`(?:[\w.]*\.)?([A-Z][A-Z0-9_]{3,})(?:\[[^`]*\])?`", text))):
        modules = defined.get(name)
        if not modules:
            continue  # an environment variable or another program's name
        said = (p.as_posix() in text or ".".join(p.with_suffix("").parts) in text or f"{p.stem}.{name}" in text
                for p in modules)  # fmt: skip
        assert any(said), f"{doc.name} names {name} without its module ({', '.join(map(str, modules))})"
