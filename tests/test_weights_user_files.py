"""Weights files as users bring them (avflow.weights): NaN or integer weights, a file of another network, wrapped
or prefixed state dicts, a format its suffix does not say, folders of other layouts. Each is read, or refused in
one line that says what the file holds and what to do."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_foley_load_checks import no_data_reads  # noqa: F401 - a fixture, used by name
from torch import nn

from avflow.errors import ConfigError, WeightsError, WeightsWarning
from avflow.weights import dequantize_int8, load_strict, quantize_int8, read_state_dict


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def loads_as(path, module: nn.Module, want: dict[str, torch.Tensor]) -> list[str]:
    """Read `path` into a fresh copy of `module`; assert it holds `want`; the notes said on the way."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        load_strict(module, read_state_dict(path), str(path))
    got = module.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), path
    return [str(w.message) for w in said if issubclass(w.category, WeightsWarning)]


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and "\x1b" not in text, text
    return text


def test_non_finite_weights_are_refused_naming_them(tmp_path):
    """NaN or infinite weights (a diverged fine-tune) are a WeightsError naming the tensors, in every dtype and
    for a module built on the meta device; the module keeps its weights."""
    sd = state_of(tiny())
    bad = dict(sd, **{"0.weight": sd["0.weight"] * float("nan"), "1.bias": torch.full((2,), float("inf"))})
    torch.save(bad, tmp_path / "nan.pth")
    module = tiny()
    with pytest.raises(WeightsError) as err:
        load_strict(module, read_state_dict(tmp_path / "nan.pth"), "nan.pth")
    assert one_line(err) == "nan.pth: non-finite values in 2 tensors (0.weight, 1.bias)"
    assert torch.equal(module.state_dict()["0.weight"], sd["0.weight"])
    half = {k: v.half() for k, v in bad.items()}
    with torch.device("meta"):
        meta = tiny()
    with pytest.raises(WeightsError, match=r"non-finite values in 2 tensors"):
        load_strict(meta, half, "half", assign=True)
    with pytest.raises(WeightsError, match=r"does not match Sequential: missing keys: 1.weight; non-finite values "
                       r"in 1 tensor \(0.weight\)"):  # fmt: skip
        load_strict(tiny(), {k: v for k, v in bad.items() if k != "1.weight"} | {"1.bias": sd["1.bias"]}, "x")


def test_integer_tensors_where_floats_are_expected(tmp_path):
    """Integer tensors where the module holds floats are a dtype mismatch (a 100-line traceback with assign, a
    silent cast without); floats of another width still load; an int8 file of quantize_int8 is named as one."""
    sd = state_of(tiny())
    ints = {k: (v * 100).to(torch.int32) for k, v in sd.items()}
    for assign in (False, True):
        with torch.device("meta" if assign else "cpu"):
            module = tiny()
        with pytest.raises(WeightsError) as err:
            load_strict(module, ints, "int.pth", assign=assign)
        assert one_line(err).startswith("int.pth: does not match Sequential: dtype mismatch: 0.bias int32 != float32")
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        module = load_strict(tiny(), {k: v.to(dtype) for k, v in sd.items()}, str(dtype))
        assert module.state_dict()["0.weight"].dtype == torch.float32
    big = nn.Linear(64, 32)
    packed = quantize_int8(big.state_dict(), min_numel=1)
    with pytest.raises(WeightsError, match=r"an int8 file of avflow's quantize_int8 .*dequantize_int8") as err:
        load_strict(nn.Linear(64, 32), packed, "codec.safetensors")
    one_line(err)
    load_strict(nn.Linear(64, 32), dequantize_int8(packed), "codec.safetensors")  # the way int8 codecs load


def test_the_shipped_int8_codecs_still_load():
    from avflow.codecs.world import load_world_codecs

    codecs = load_world_codecs()
    assert all(torch.isfinite(p).all() for p in codecs.audio.parameters())


class FakeNetwork(nn.Module):
    """An MMAudio-network-like module by its keys (audio_input_proj.*)."""

    def __init__(self):
        super().__init__()
        self.audio_input_proj = nn.Sequential(nn.Linear(2, 2))


class FakeVAE(nn.Module):
    """An audio VAE of the 16k layout by its keys and widths: data_mean (1, 80, 1), decoder.conv_in over 20
    latent channels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("data_mean", torch.zeros(1, 80, 1))
        self.decoder = nn.Module()
        self.decoder.conv_in = nn.Conv1d(20, 4, 3)


def test_identify_state_dict_names_every_kind_avflow_loads(fixtures):
    """The kind of each fixture and of the shipped joint model, from its keys."""
    from avflow.pipelines.default_model import default_model_dir
    from avflow.weights import identify_state_dict

    files = {
        "mmaudio/network_tiny_v1": "an MMAudio network",
        "mmaudio/network_tiny_v2": "an MMAudio network",
        "mmaudio/vae_tiny_16k": "an audio VAE",
        "mmaudio/vae_tiny_44k": "an audio VAE",
        "bigvgan/bigvgan_v1_tiny": "a BigVGAN vocoder",
        "bigvgan/bigvgan_v2_tiny": "a BigVGAN vocoder",
        "synchformer/synchformer_visual_tiny": "a Synchformer",
        "clip/clip_tiny": "a CLIP model",
    }
    for name, kind in files.items():
        assert identify_state_dict(load_file(fixtures / f"{name}.weights.safetensors")) == kind, name
    assert identify_state_dict(load_file(default_model_dir() / "joint.safetensors")) == "an avflow joint model"
    assert identify_state_dict(["a.weight", "b.bias"]) is None


def test_layouts_are_the_official_configs():
    from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS
    from avflow.codecs.bigvgan import BIGVGAN_CONFIGS
    from avflow.weights import BIGVGAN_LAYOUTS, VAE_LAYOUTS

    assert VAE_LAYOUTS == {(c.data_dim, c.embed_dim): name for name, c in AUDIO_VAE_CONFIGS.items()}
    assert BIGVGAN_LAYOUTS == {c.num_mels: name for name, c in BIGVGAN_CONFIGS.items()}


def test_weights_of_another_kind_are_named(fixtures, tmp_path):
    """A VAE given as the network says so (not two lists of 100 keys); a VAE of the other official layout too."""
    vae16 = fixtures / "mmaudio" / "vae_tiny_16k.weights.safetensors"
    with pytest.raises(WeightsError) as err:
        load_strict(FakeNetwork(), read_state_dict(vae16), "vae_as_net.pth")
    assert one_line(err) == ("vae_as_net.pth: holds an audio VAE of the 16k layout, not an MMAudio network (its "
                             "keys: data_mean, data_std, decoder.*, encoder.*)")  # fmt: skip
    vae44 = fixtures / "mmaudio" / "vae_tiny_44k.weights.safetensors"
    with pytest.raises(WeightsError) as err:
        load_strict(FakeVAE(), read_state_dict(vae44), "vae44")
    assert one_line(err) == "vae44: holds an audio VAE of the 44k layout, not of the 16k layout that this model reads"
    with pytest.raises(WeightsError, match=r"^x: holds an audio VAE of the 16k layout; does not match Sequential: "):
        load_strict(tiny(), read_state_dict(vae16), "x")  # a module of no known kind: the file's kind, then the keys


def test_wrapped_and_prefixed_state_dicts_load(tmp_path):
    """{ema: sd}, {model: sd}, {state_dict: sd}, Lightning's checkpoint (model.* keys beside epoch), FSDP and
    checkpoint_wrapper segments, and .ckpt files load, the wrapper said in a note; several state dicts, or
    entries that are no tensors, are refused naming them."""
    from avflow.pipelines.foley_variants import check_weights_file

    sd = state_of(tiny())
    files = {
        "ema.pth": {"ema": sd},
        "model.pth": {"model": sd},
        "state_dict.pth": {"state_dict": sd},
        "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "global_step": 9},
        "fsdp.pth": {f"_fsdp_wrapped_module.{k}": v for k, v in sd.items()},
        "checkpointed.pth": {k.replace("0.", "0._checkpoint_wrapped_module."): v for k, v in sd.items()},
        "net_prefix.pth": {f"net.{k}": v for k, v in sd.items()},
    }
    for name, saved in files.items():
        torch.save(saved, tmp_path / name)
        notes = loads_as(check_weights_file(tmp_path / name), tiny(), sd)
        under = {"ema.pth": "ema", "model.pth": "model", "state_dict.pth": "state_dict", "lightning.ckpt": "state_dict"}
        assert notes == [] if name not in under else f"the state dict under {under[name]!r} is used" in notes[0]
    assert "(beside epoch, global_step)" in loads_as(tmp_path / "lightning.ckpt", tiny(), sd)[0]

    class Owner(nn.Module):  # keys that really start with model.: kept as they are
        def __init__(self):
            super().__init__()
            self.model = nn.Linear(2, 2)

    owner = Owner()
    torch.save(owner.state_dict(), tmp_path / "owner.pth")
    loads_as(tmp_path / "owner.pth", Owner(), owner.state_dict())

    torch.save({"model": sd, "ema": sd}, tmp_path / "two.pth")
    with pytest.raises(WeightsError, match=r"holds 2 state dicts \(ema, model\); re-save the one to use") as err:
        read_state_dict(tmp_path / "two.pth")
    one_line(err)
    torch.save(dict(sd, config={"hidden": 4}), tmp_path / "with_config.pth")
    with pytest.raises(WeightsError, match=r"entries that are no tensors: config \(dict\)"):
        read_state_dict(tmp_path / "with_config.pth")


def test_the_format_is_read_from_the_content(tmp_path):
    """Safetensors named .pth, a torch file named .safetensors, torch's legacy format named .bin: read by their
    bytes, the misleading name said in a note; a pickled module: named, with how to re-save its weights; torch's
    text (colour codes, "two options") never passes through."""
    module = tiny()
    sd = state_of(module)
    save_file(sd, tmp_path / "st.pth")
    torch.save(sd, tmp_path / "zip.safetensors")
    torch.save(sd, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    assert "a safetensors file despite its .pth suffix" in loads_as(tmp_path / "st.pth", tiny(), sd)[0]
    assert "a torch checkpoint despite its .safetensors suffix" in loads_as(tmp_path / "zip.safetensors", tiny(), sd)[0]
    assert loads_as(tmp_path / "legacy.bin", tiny(), sd) == []
    for name, saved in {"module.pth": module, "in_dict.pth": {"model": module}}.items():
        torch.save(saved, tmp_path / name)
        with pytest.raises(WeightsError) as err:
            read_state_dict(tmp_path / name)
        assert one_line(err) == (f"{tmp_path / name}: holds a pickled Sequential object "
                                 "(torch.nn.modules.container.Sequential), not a state dict; re-save it with "
                                 "torch.save(model.state_dict(), PATH)")  # fmt: skip
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02junk that is no pickle")
    with pytest.raises(WeightsError, match="not a readable checkpoint") as err:
        read_state_dict(tmp_path / "junk.pth")
    assert "two options" not in one_line(err)


def test_folders_of_other_layouts_say_what_they_hold(tmp_path):
    """A Hugging Face style folder given as --weights, or a joint model folder with its weights under another name:
    the error names the weights files there and what to do."""
    from avflow.pipelines.default_model import load_default_model
    from avflow.pipelines.foley_variants import resolve_model

    sd = state_of(tiny())
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(sd, hf / "model.safetensors")
    (hf / "config.json").write_text(json.dumps({"hidden_dim": 64}))
    with pytest.raises(ConfigError) as err:
        resolve_model("small_16k", hf)
    assert one_line(err) == (f"--weights {hf}: a folder without config.yaml, not the out_dir of an `avflow train` "
                             "run; it holds model.safetensors: give that file with --weights")  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"it holds no weights file \(.pth, .pt, .safetensors, .bin, .ckpt\)"):
        resolve_model("small_16k", tmp_path / "empty")
    joint = tmp_path / "joint"
    joint.mkdir()
    (joint / "config.json").write_text("{}")
    torch.save(sd, joint / "joint.pth")
    with pytest.raises(WeightsError) as err:
        load_default_model(joint)
    assert one_line(err) == (f"{joint}: model files missing: joint.safetensors; it holds joint.pth: a model folder's "
                             "weights are read from joint.safetensors, rename the file that holds them")  # fmt: skip


def test_the_meta_read_finds_what_the_full_read_finds_without_reading_data(tmp_path, request):
    """`read_state_dict(meta=True)` (the header checks of `avflow foley` and `avflow ui`) gives the full read's keys,
    shapes and dtypes for every layout, says no notes (the full read says them) and fails with the full read's
    errors, reading no tensor data; None for the files it cannot read so cheaply. It was a second reader in
    pipelines/foley.py that took several state dicts or non-tensor entries for "cannot tell" and said other errors."""
    sd = state_of(tiny())
    lora = {"0.lora_a": torch.zeros(2, 3), "0.lora_b": torch.zeros(4, 2)}
    ema = {"sigma_rels": [0.1, 0.05], "averages": [sd, sd]}
    files = {
        "flat.safetensors": sd,
        "ema.pth": {"ema": sd},
        "ddp.pt": {f"module.{k}": v for k, v in sd.items()},
        "lightning.ckpt": {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, "epoch": 3},
        "step_9.pt": {"step": 9, "model": sd | lora, "lora_scale": 2.0, "ema": ema},  # avflow train's checkpoint
        "under.pth": {"generator": sd, "other": sd},
        "st.pth": sd,  # safetensors named .pth
        "two.pth": {"model": sd, "ema": sd},
        "config.pth": dict(sd, config={"hidden": 4}),
        "module.pth": tiny(),
        "legacy.bin": sd,
        "zip.safetensors": sd,  # a torch file named .safetensors
    }
    for name, saved in files.items():
        if name in ("flat.safetensors", "st.pth"):
            save_file(saved, tmp_path / name)
        else:
            torch.save(saved, tmp_path / name, _use_new_zipfile_serialization=name != "legacy.bin")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04junk")
    flat = tmp_path / "flat.safetensors"
    (tmp_path / "cut.safetensors").write_bytes(flat.read_bytes()[: flat.stat().st_size - 8])
    paths = {p: "generator" if p.name == "under.pth" else "" for p in sorted(tmp_path.iterdir())}
    full = {p.name: read_or_error(p, subkey)[0] for p, subkey in paths.items()}
    refused = request.getfixturevalue("no_data_reads")  # from here on, reading tensor data fails the test
    for path, subkey in paths.items():
        meta, said = read_or_error(path, subkey, meta=True)
        assert said == [], path.name
        if path.name in ("legacy.bin", "zip.safetensors"):
            assert meta is None
        elif isinstance(meta, str):
            assert meta == full[path.name]
        else:
            want = full[path.name]
            assert {k: (v.shape, v.dtype, v.is_meta) for k, v in meta.items()} == {
                k: (v.shape, v.dtype, True) for k, v in want.items()
            }, path.name
    assert refused == []
    assert sum(isinstance(v, str) for v in full.values()) == 5  # two, config, module, junk, cut


def read_or_error(path, subkey: str, meta: bool = False):
    """(state dict, or the WeightsError's text; the WeightsWarnings said) of `read_state_dict`."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            state = read_state_dict(path, subkey=subkey, meta=meta)
        except WeightsError as exc:
            state = str(exc)
    return state, [str(w.message) for w in said if issubclass(w.category, WeightsWarning)]
