"""Foley models and joint model folders are checked before their weights are read: the parts' configs against each
other (naming the model config .json), every part's file against its module from the file's header alone (keys and
shapes, no tensor data), a network of other sizes than its config named by those sizes; audio that came out NaN is
a one-line error before anything is written; `avflow ui` runs the same checks before it serves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from helpers import (
    fixtures_root,
    sweep_video_frames,
    tiny_foley_raw_files,
    write_tiny_default_model,
    write_tiny_model_config,
)

from avflow.cli import main
from avflow.commands import ui as ui_command
from avflow.data.media import write_video
from avflow.errors import AvflowError, ConfigError, WeightsError
from avflow.models.mmaudio import MMAudio, load_official_state_dict
from avflow.models.mmaudio_config import MMAudioConfig
from avflow.pipelines.foley import FoleyPipeline
from avflow.weights import save_safetensors


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A `--model` config .json of the tiny foley model beside its official-format files."""
    folder = tmp_path_factory.mktemp("tiny_model")
    files, spec = tiny_foley_raw_files(folder, fixtures_root())
    return write_tiny_model_config(folder, files, spec)


def edited(model: Path, folder: Path, name: str, **changes) -> Path:
    """A copy of the model config .json (weight files made absolute) with `changes`: {field: value}, or for a
    nested config {"network_config": {field: value}}."""
    data = json.loads(model.read_text())
    for part in ("network", "vae", "vocoder", "synchformer", "clip"):
        data[part] = str(model.parent / data[part])
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = folder / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def no_data_reads(monkeypatch) -> list[str]:
    """Reading tensor data refused (torch.load without mmap, safetensors' loaders and get_tensor); headers and
    torch.load(mmap=True)'s lazy index allowed. Returns the refused calls."""
    refused: list[str] = []
    load, safe_open = torch.load, safetensors.safe_open

    def refuse(name):
        def call(*args, **kwargs):
            refused.append(name)
            raise AssertionError(f"tensor data read: {name}")

        return call

    def lazy_load(*args, mmap=None, **kwargs):
        if not mmap:
            return refuse("torch.load")()
        return load(*args, mmap=mmap, **kwargs)

    class HeaderOnly:
        def __init__(self, *args, **kwargs):
            self.file = safe_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def metadata(self):
            return self.inner.metadata()

        def get_slice(self, key):
            return self.inner.get_slice(key)

        def get_tensor(self, key):
            return refuse("safe_open.get_tensor")()

    monkeypatch.setattr(torch, "load", lazy_load)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse("safetensors.torch.load_file"))
    monkeypatch.setattr(safetensors.torch, "load", refuse("safetensors.torch.load"))
    monkeypatch.setattr(safetensors, "safe_open", HeaderOnly)
    return refused


def test_components_that_do_not_fit_are_named_with_the_config_before_any_weights_are_read(
    tiny_model, tmp_path, no_data_reads
):
    """A vocoder rate or a network rate that disagrees with the rest: the model config .json named, no weights read
    (it was found only after the network, VAE and vocoder were read in full, naming no file)."""
    for name, changes, problem in [
        ("vocsr.json", {"vocoder_config": {"sample_rate": 22050}}, "vocoder rate 22050 Hz != network rate 16000 Hz"),
        ("net44.json", {"network_config": {"sample_rate": 44100}}, "vocoder rate 16000 Hz != network rate 44100 Hz"),
        ("latent.json", {"vae_config": {"embed_dim": 40}}, "VAE latents have 40 channels, the network 20"),
    ]:
        model = edited(tiny_model, tmp_path, name, **changes)
        with pytest.raises(ConfigError) as error:
            FoleyPipeline.load(str(model))
        assert str(error.value) == f"{model}: foley model components do not fit: {problem}"
    assert no_data_reads == []


def test_a_part_file_of_another_kind_or_shape_fails_from_its_header_alone(tiny_model, tmp_path, no_data_reads):
    """A wrong CLIP, Synchformer, VAE or vocoder file fails before any part's tensors are read (the CLIP file was
    found wrong only after every other part, gigabytes for the official models, had been read)."""
    files = {p: str(tiny_model.parent / f) for p, f in json.loads(tiny_model.read_text()).items() if isinstance(f, str)}
    fixtures = fixtures_root()
    cases = [
        ("clip_is_net.json", {"clip": files["network"]}, f"{files['network']}: holds an MMAudio network"),
        ("sync_is_clip.json", {"synchformer": files["clip"]}, "no 'vfeat_extractor.*' keys; not a Synchformer"),
        ("vae44.json", {"vae": str(fixtures / "mmaudio" / "vae_tiny_44k.weights.safetensors")}, "44k layout"),
        ("voc_is_vae.json", {"vocoder": files["vae"]}, "holds an audio VAE"),
        ("clip_fx.json", {"clip": str(fixtures / "clip" / "clip_tiny.weights.safetensors")}, "does not match CLIP"),
    ]
    for name, changes, message in cases:
        model = edited(tiny_model, tmp_path, name, **changes)
        with pytest.raises(WeightsError, match=message) as error:
            FoleyPipeline.load(str(model))
        assert "\n" not in str(error.value), name
    assert no_data_reads == []


def test_a_network_of_other_sizes_than_its_config_is_named_by_those_sizes(tiny_model, tmp_path):
    """Config hidden_dim 128, depth 4 against a checkpoint of 64, 3: one line with both sizes (it was two lists of
    missing keys and tensor shapes)."""
    net = tiny_model.parent / json.loads(tiny_model.read_text())["network"]
    model = edited(tiny_model, tmp_path, "hidden.json", network_config={"hidden_dim": 128, "depth": 4})
    with pytest.raises(WeightsError) as error:
        FoleyPipeline.load(str(model))
    assert str(error.value) == (f"checkpoint {net}: hidden_dim 64, depth 3 (fused 1); model config {model}: "
                                "hidden_dim 128, depth 4")  # fmt: skip
    model = edited(tiny_model, tmp_path, "v2.json", network_config={"v2": True, "num_heads": 2})
    with pytest.raises(WeightsError) as error:
        FoleyPipeline.load(str(model))
    assert str(error.value) == f"checkpoint {net}: num_heads 1, v2 false; model config {model}: num_heads 2, v2 true"


def test_a_network_of_this_shape_with_bad_values_keeps_the_value_error(monkeypatch):
    """A checkpoint of exactly the model's shape whose values are wrong (NaN) is named for its values, not as "holds a
    <variant> network, not one of this model's shape" (which an official-size model got: its own variant matched)."""
    import avflow.models.mmaudio as mmaudio

    mm = fixtures_root() / "mmaudio"
    recorded = json.loads((mm / "network_tiny_v1.json").read_text())["constructor"]
    state = safetensors.torch.load_file(str(mm / "network_tiny_v1.weights.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    monkeypatch.setattr(mmaudio, "official_variants_of", lambda state: ["small_16k"])  # as for an official size
    with pytest.raises(WeightsError, match=r"non-finite values in 1 tensor") as error:
        load_official_state_dict(MMAudio(MMAudioConfig(**recorded)), state, name="net")
    assert "small_16k" not in str(error.value)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_checkpoint_sizes_are_read_off_the_fixture_networks(version):
    """The sizes read off the tensor shapes are the fixture's recorded constructor: loaded into a config that differs
    in the fused depth and the input widths, those are named."""
    mm = fixtures_root() / "mmaudio"
    recorded = json.loads((mm / f"network_tiny_{version}.json").read_text())["constructor"]
    other = MMAudioConfig(**{**recorded, "fused_depth": 0, "clip_dim": 8, "text_seq_len": 9})
    with pytest.raises(WeightsError) as error:
        load_official_state_dict(MMAudio(other), mm / f"network_tiny_{version}.weights.safetensors", name="net",
                                 config_name="its config")  # fmt: skip
    assert str(error.value) == (f"checkpoint net: depth 3 (fused 1), clip_dim {recorded['clip_dim']}, text_seq_len "
                                f"{recorded['text_seq_len']}; its config: depth 3 (fused 0), clip_dim 8, "
                                "text_seq_len 9")  # fmt: skip


def _nan_network(pipe: FoleyPipeline) -> FoleyPipeline:
    with torch.no_grad():
        pipe.model.network.final_layer.conv.weight.fill_(float("nan"))
    return pipe


class NaNVocoder(torch.nn.Module):
    """Stands in for a vocoder whose output overflowed: NaN samples of the right length."""

    def __init__(self, vocoder):
        super().__init__()
        self.hop = vocoder.hop_length

    def forward(self, mel):
        return torch.full((mel.shape[0], 1, mel.shape[-1] * self.hop), float("nan"))


def test_non_finite_audio_is_one_line_error_naming_the_cause(tiny_model):
    """NaN latents (the network's weights or the settings) or NaN samples from finite latents (the VAE or the
    vocoder): a one-line error, not NaN audio handed to the writers."""
    pipe = FoleyPipeline.load(str(tiny_model), window_s=1.0, overlap_s=0.25)
    pipe.model.sampling = pipe.model.sampling.override(steps=1)
    vocoder = pipe.model.vocoder
    pipe.model.vocoder = NaNVocoder(vocoder)
    with pytest.raises(ConfigError) as error:
        pipe.generate_text("rain", duration=0.7)
    assert str(error.value).startswith("the model produced non-finite audio (window 1 of 1: its VAE or vocoder")
    assert "likely cause: the VAE or vocoder weights, or the precision" in str(error.value)
    pipe.model.vocoder = vocoder
    _nan_network(pipe)
    with pytest.raises(ConfigError) as error:
        pipe.generate_text("rain", duration=0.7)
    assert str(error.value) == ("the model produced non-finite audio (window 1 of 1: the network's sampling gave "
                                "NaN or infinite latents); likely cause: the network weights, or the settings "
                                "(steps 1, cfg_strength 4.5, precision auto)")  # fmt: skip


def test_foley_with_nan_audio_writes_nothing(tiny_model, tmp_path, monkeypatch, capsys):
    """`avflow foley --wav`: NaN audio was muxed silently or crashed the AAC encoder with a traceback; now one line,
    and neither the video nor the audio file is written."""
    video = write_video(tmp_path / "in.mp4", sweep_video_frames(16, 1.5), 16)
    load = FoleyPipeline.load.__func__
    monkeypatch.setattr(FoleyPipeline, "load", classmethod(lambda cls, *a, **k: _nan_network(load(cls, *a, **k))))
    out, wav = tmp_path / "out.mp4", tmp_path / "out.wav"
    argv = ["foley", str(video), "--model", str(tiny_model), "--steps", "1", "--window", "1", "--overlap", "0.25"]
    assert main([*argv, "--device", "cpu", "-o", str(out), "--wav", str(wav)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("avflow foley: error: the model produced non-finite audio") and "Traceback" not in err
    assert not out.exists() and not wav.exists()


def test_foley_names_a_bad_model_config_before_it_opens_any_video(tiny_model, tmp_path, monkeypatch, capsys):
    """`avflow foley VIDEO --model BAD.json` (and a folder of videos): the components' mismatch, naming the .json,
    before any video is opened (the single video was probed first, a folder's every video)."""
    import av

    video = write_video(tmp_path / "in.mp4", sweep_video_frames(16, 1.0), 16)
    bad = edited(tiny_model, tmp_path, "vocsr.json", vocoder_config={"sample_rate": 22050})
    opened: list[str] = []

    def no_video(*args, **kwargs):
        opened.append(str(args[0]) if args else "?")
        raise AssertionError("a video was opened")

    monkeypatch.setattr(av, "open", no_video)
    want = f"{bad}: foley model components do not fit: vocoder rate 22050 Hz != network rate 16000 Hz"
    for source in (video, tmp_path):  # one video; a folder (batch)
        argv = ["foley", str(source), "--model", str(bad), "--device", "cpu", "-o", str(tmp_path / "out" / "o.mp4")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(want) and "\n" not in err, err
    assert opened == []
    assert not (tmp_path / "out").exists()


def ui_args(*argv: str, out: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ui_command.add_arguments(parser)
    return parser.parse_args([*argv, "--output-dir", str(out)])


def test_ui_refuses_foley_weights_that_do_not_fit_before_it_serves(tiny_model, tmp_path, no_data_reads):
    """`avflow ui --foley-model X --foley-weights BROKEN` started the server and failed each request; now the same
    header checks as the foley command run at start, and fitting files pass."""
    out = tmp_path / "ui"
    wide = MMAudio(MMAudioConfig(**{**json.loads(tiny_model.read_text())["network_config"], "hidden_dim": 32}))
    other = save_safetensors(wide.state_dict(), tmp_path / "wide.safetensors")
    with pytest.raises(AvflowError) as error:
        ui_command.check_arguments(ui_args("--foley-model", str(tiny_model), "--foley-weights", str(other), out=out))
    assert str(error.value) == (f"checkpoint {other}: hidden_dim 32; model config {tiny_model}: hidden_dim 64")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(other.read_bytes()[: other.stat().st_size // 2])
    with pytest.raises(WeightsError, match=f"^{truncated}: not a readable safetensors file"):
        ui_command.check_arguments(ui_args("--foley-model", str(tiny_model), "--foley-weights", str(truncated),
                                           out=out))  # fmt: skip
    bad_rate = edited(tiny_model, tmp_path, "vocsr.json", vocoder_config={"sample_rate": 22050})
    with pytest.raises(ConfigError, match=f"^{bad_rate}: foley model components do not fit"):
        ui_command.check_arguments(ui_args("--foley-model", str(bad_rate), out=out))
    ui_command.check_arguments(ui_args("--foley-model", str(tiny_model), out=out))  # the fitting model passes
    assert no_data_reads == []


def test_ui_refuses_a_broken_joint_model_folder_before_it_serves(tmp_path, monkeypatch):
    """`avflow ui --model FOLDER` with a joint.safetensors of another network, a truncated one or none: one line
    before gradio (it served and failed each request); a good folder passes."""
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))  # the default foley model: not installed
    good = write_tiny_default_model(tmp_path / "good")
    out = tmp_path / "ui"
    ui_command.check_arguments(ui_args("--model", str(good), out=out))
    state = safetensors.torch.load_file(str(good / "joint.safetensors"))
    broken = write_tiny_default_model(tmp_path / "broken")
    dropped = sorted(state)[0]
    save_safetensors({k: v for k, v in state.items() if k != dropped}, broken / "joint.safetensors")
    with pytest.raises(WeightsError) as error:  # (not `main`: before the fix, that served until stopped)
        ui_command.check_arguments(ui_args("--model", str(broken), out=out))
    assert str(error.value) == (f"{broken}: cannot load its model: {broken / 'joint.safetensors'}: does not match "
                                f"JointModel: missing keys: {dropped}")  # fmt: skip
    data = (good / "joint.safetensors").read_bytes()
    (broken / "joint.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=f"^{broken}: cannot load its model: .*not a readable safetensors file"):
        ui_command.check_arguments(ui_args("--model", str(broken), out=out))
    (broken / "joint.safetensors").unlink()
    with pytest.raises(WeightsError, match=f"^{broken}: model files missing: joint.safetensors"):
        ui_command.check_arguments(ui_args("--model", str(broken), out=out))
