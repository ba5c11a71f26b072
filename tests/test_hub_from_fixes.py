"""`avflow download MODEL --from DIR` with a bad copy, and Hugging Face files without network. No network is used."""

from __future__ import annotations

import logging
import socket
import time

import pytest
import torch
from safetensors.torch import save_file

from avflow import hub
from avflow.cli import main
from avflow.errors import WeightsError
from avflow.weights import read_state_dict

VOC = "bigvgan_v2_44khz_128band_512x"


def _official_vocoder(path):
    """A file with the official BigVGAN v2 44k signature (the tensors that `hub.SIGNATURES` names)."""
    state = {"conv_pre.weight_v": torch.zeros(1536, 128, 7), "conv_post.weight": torch.zeros(1, 8, 7),
             "resblocks.0.x": torch.zeros(2)}  # fmt: skip
    torch.save({"generator": state}, path)


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """A model of one file, the published vocoder (no MD5), with the cache in tmp_path/home."""
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    monkeypatch.setitem(hub.MODELS, "tiny", [VOC])
    return hub.ASSETS[VOC]


def test_bad_copy_never_deletes_the_published_file_in_the_cache(tmp_path, tiny_model, capsys):
    raw = hub.raw_path(tiny_model)
    raw.parent.mkdir(parents=True)
    _official_vocoder(raw)
    before = raw.read_bytes()
    (tmp_path / "from").mkdir()
    (tmp_path / "from" / tiny_model.name).write_bytes(b"\x07" * 5000)  # random bytes
    assert main(["download", "tiny", "--from", str(tmp_path / "from")]) == 0  # the cached published file is used
    assert raw.read_bytes() == before and hub.converted_path(tiny_model).exists()
    assert "conv_pre.weight_v" in read_state_dict(hub.converted_path(tiny_model))


def test_bad_copy_is_refused_in_one_line_naming_it(tmp_path, tiny_model, capsys):
    (tmp_path / "from").mkdir()
    given = tmp_path / "from" / tiny_model.name
    given.write_bytes(b"\x07" * 5000)
    assert main(["download", "tiny", "--from", str(tmp_path / "from")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"avflow download: error: {given}: not a usable copy of {tiny_model.name} (")
    assert err.endswith("); not taken") and "\n" not in err and "raw" not in err
    assert not hub.raw_path(tiny_model).exists() and not hub.converted_path(tiny_model).exists()
    raw = tmp_path / "home" / "raw"
    assert not raw.exists() or not list(raw.iterdir())  # no temporary file left


def test_other_weights_are_not_taken_for_a_file_without_md5(tmp_path, tiny_model, capsys):
    (tmp_path / "from").mkdir()
    given = tmp_path / "from" / tiny_model.name
    torch.save({"generator": {"w": torch.zeros(1000)}}, given)  # readable, but some other weights
    assert main(["download", "tiny", "--from", str(tmp_path / "from")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{given}: not a usable copy of {tiny_model.name}" in err and "conv_pre." in err and "\n" not in err
    assert not hub.raw_path(tiny_model).exists() and not hub.converted_path(tiny_model).exists()


def test_official_layout_copy_is_taken(tmp_path, tiny_model, capsys):
    (tmp_path / "from").mkdir()
    _official_vocoder(tmp_path / "from" / tiny_model.name)
    assert main(["download", "tiny", "--from", str(tmp_path / "from")]) == 0
    assert "keys and shapes checked" in capsys.readouterr().out
    assert hub.raw_path(tiny_model).exists() and hub.converted_path(tiny_model).exists()


def test_clip_copy_is_checked_from_its_header(tmp_path):
    path = tmp_path / "clip.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(8, 3, 14, 14), "token_embedding.weight": torch.zeros(4, 2)}, path)
    with pytest.raises(WeightsError, match="not a usable copy of dfn5b"):
        hub.import_local(hub.ASSETS["dfn5b_clip_vit_h_14_384"], path, tmp_path / "home")
    assert not (tmp_path / "home" / "weights").exists() or not list((tmp_path / "home" / "weights").iterdir())


def _no_dns(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")


def test_hub_without_network_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AVFLOW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(socket, "getaddrinfo", _no_dns)
    for proxy in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):  # a proxy resolves names itself
        monkeypatch.delenv(proxy, raising=False)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"no network \(cannot resolve huggingface.co\).*--from DIR"):
        hub.fetch("dfn5b_clip_vit_h_14_384", tmp_path / "home", allow_download=True)
    with pytest.raises(WeightsError, match=r"no network \(cannot resolve huggingface.co\)"):
        hub.hub_file("hf://someorg/somerepo/w.safetensors")
    assert time.perf_counter() - start < 5


def test_hub_retry_warnings_are_quiet(monkeypatch, caplog):
    import huggingface_hub

    def noisy(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", noisy)
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])
    with caplog.at_level(logging.WARNING), pytest.raises(WeightsError, match="could not download"):
        hub.hub_file("hf://someorg/somerepo/w.safetensors")
    assert "Retrying" not in caplog.text
