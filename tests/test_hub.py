"""Weight cache: conversion, checksums, offline errors. No network is used."""

from __future__ import annotations

import pytest
import torch

from avflow import hub
from avflow.cli import main
from avflow.errors import WeightsError
from avflow.weights import md5_file, read_state_dict


def _asset(tmp_path, name="net.pth", subkey="", payload=None):
    sd = {"a.weight": torch.randn(3, 2), "b.bias": torch.randn(3)}
    raw = tmp_path / "raw" / name
    raw.parent.mkdir(parents=True)
    torch.save({subkey: sd} if subkey else sd, raw)
    return hub.Asset(name, url="http://127.0.0.1:9/none", md5=md5_file(raw), subkey=subkey), sd


def test_convert_official_pth_to_safetensors_once(tmp_path):
    asset, sd = _asset(tmp_path, "best_netG.pt", subkey="generator")
    path = hub.fetch(asset, tmp_path)
    assert path == tmp_path / "weights" / "best_netG.safetensors"
    got = read_state_dict(path)
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    mtime = path.stat().st_mtime_ns
    assert hub.fetch(asset, tmp_path).stat().st_mtime_ns == mtime  # cached: not converted again


def test_checksum_mismatch_is_an_error(tmp_path):
    asset, _ = _asset(tmp_path)
    bad = hub.Asset(asset.name, url=asset.url, md5="0" * 32)
    with pytest.raises(WeightsError, match="MD5"):
        hub.fetch(bad, tmp_path)


def test_missing_file_offline_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    with pytest.raises(WeightsError, match="avflow download") as err:
        hub.fetch("mmaudio_small_16k", tmp_path, allow_download=True)
    assert "offline" in str(err.value) and "\n" not in str(err.value)


def test_missing_file_without_request_does_not_download(tmp_path, monkeypatch):
    monkeypatch.delenv("AVFLOW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match="only on request"):
        hub.fetch("v1-16", tmp_path)


def test_unreachable_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("AVFLOW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asset = hub.Asset("x.pth", url="http://127.0.0.1:9/x.pth", md5="0" * 32)
    with pytest.raises(WeightsError, match="could not download"):
        hub.fetch(asset, tmp_path, allow_download=True)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw" / "c.pth"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable checkpoint") as err:
        hub.fetch(hub.Asset("c.pth"), tmp_path)
    assert "\n" not in str(err.value)
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(WeightsError, match="corrupt"):
        read_state_dict(bad)


def test_wrapper_prefixes_and_containers(tmp_path):
    """Keys of a DDP- or torch.compile-wrapped model lose the wrappers' prefixes (DDP's only when every key has it);
    a dict that holds more than tensors and is no training checkpoint is refused, naming what it holds."""
    sd = {"a.weight": torch.randn(3, 2), "b.bias": torch.randn(3)}
    cases = {
        "ddp": ({f"module.{k}": v for k, v in sd.items()}, sd),
        "compiled_part": ({"a._orig_mod.weight": sd["a.weight"], "b.bias": sd["b.bias"]}, sd),
        "one_module_key": (
            {"module.weight": sd["a.weight"], "b.bias": sd["b.bias"]},
            {"module.weight": sd["a.weight"], "b.bias": sd["b.bias"]},
        ),  # fmt: skip
    }
    for name, (saved, expected) in cases.items():
        torch.save(saved, tmp_path / f"{name}.pth")
        got = read_state_dict(tmp_path / f"{name}.pth")
        assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected), name
    torch.save({"epoch": 3, "net": sd, "note": "x"}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"does not hold a flat state dict of tensors; it holds epoch, net, note"):
        read_state_dict(tmp_path / "other.pth")


def test_download_cli_lists_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path))
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "small_16k" in out and "mmaudio_small_16k.pth" in out and "missing" in out
    # a converted file cut short was listed as "cached" (only its existence was looked at)
    asset = hub.ASSETS["mmaudio_small_16k"]
    hub.converted_path(asset).parent.mkdir(parents=True, exist_ok=True)
    hub.converted_path(asset).write_bytes(b"\x10\x00\x00")
    assert main(["download", "--list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if asset.name in x)
    assert "damaged (run `avflow download MODEL` again)" in line and "cached" not in line
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    assert main(["download", "small_16k"]) == 2
    assert "offline" in capsys.readouterr().err


def test_download_from_a_folder_one_already_has(tmp_path, monkeypatch, capsys):
    """`avflow download MODEL --from DIR` takes the files an MMAudio checkout (weights/, ext_weights/) or a Hugging
    Face cache (models--ORG--NAME/snapshots/*/FILE) already holds: MD5-checked, linked into the cache (no second
    copy), converted; what is not there is downloaded as usual (offline: the one-line error names it). A file with
    another MD5 is refused and nothing enters the cache."""
    home, checkout = tmp_path / "home", tmp_path / "MMAudio"
    monkeypatch.setenv("AVFLOW_HOME", str(home))
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    states = {name: {"w": torch.randn(4, 3), "b": torch.randn(4)} for name in ("net", "vae", "voc")}
    (checkout / "weights").mkdir(parents=True)
    (checkout / "ext_weights").mkdir()
    torch.save(states["net"], checkout / "weights" / "tiny_net.pth")
    torch.save({"generator": states["voc"]}, checkout / "ext_weights" / "tiny_voc.pt")
    snapshot = checkout / "hf" / "models--org--tiny-vae" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "blobs").mkdir()
    torch.save(states["vae"], snapshot.parents[1] / "blobs" / "deadbeef")
    (snapshot / "model.pth").symlink_to("../../blobs/deadbeef")  # as huggingface_hub keeps its files
    torch.save({"w": torch.zeros(1)}, checkout / "model.pth")  # the same file name outside the repo's folder
    assets = {
        "tiny_net": hub.Asset("tiny_net.pth", md5=md5_file(checkout / "weights" / "tiny_net.pth")),
        "tiny_voc": hub.Asset(
            "tiny_voc.pt", md5=md5_file(checkout / "ext_weights" / "tiny_voc.pt"), subkey="generator"
        ),
        "tiny_vae": hub.Asset("tiny_vae.pth", hf_repo="org/tiny-vae", hf_file="model.pth"),
        "tiny_clip": hub.Asset("tiny_clip.pth", url="http://127.0.0.1:9/none", md5="0" * 32),
    }
    for stem, asset in assets.items():
        monkeypatch.setitem(hub.ASSETS, stem, asset)
    monkeypatch.setitem(hub.MODELS, "tiny", list(assets))

    assert main(["download", "tiny", "--from", str(checkout)]) == 2  # tiny_clip is nowhere: offline, named
    captured = capsys.readouterr()
    assert "tiny_clip.pth is not in the cache" in captured.err and "--from DIR" in captured.err
    for stem, name in (("tiny_net", "net"), ("tiny_voc", "voc"), ("tiny_vae", "vae")):
        got = read_state_dict(hub.converted_path(assets[stem]))
        assert all(torch.equal(got[k], states[name][k]) for k in states[name]), stem
    assert "MD5 checked" in captured.out and "no published MD5 to check" in captured.out
    assert hub.raw_path(assets["tiny_net"]).stat().st_ino == (checkout / "weights" / "tiny_net.pth").stat().st_ino

    monkeypatch.setitem(hub.ASSETS, "tiny_clip", hub.Asset("tiny_clip.pth", md5="0" * 32))
    torch.save({"w": torch.ones(2)}, checkout / "tiny_clip.pth")  # not the published file
    assert main(["download", "tiny", "--from", str(checkout)]) == 2
    err = capsys.readouterr().err.strip()
    assert "tiny_clip.pth: MD5" in err and "is not the published 000000" in err and "\n" not in err
    assert not hub.raw_path(assets["tiny_clip"]).exists() and not hub.converted_path(assets["tiny_clip"]).exists()
    (snapshot.parents[1] / "blobs" / "deadbeef").write_bytes(b"<html>not a checkpoint</html>")  # no MD5 to tell
    hub.converted_path(assets["tiny_vae"]).unlink()
    hub.raw_path(assets["tiny_vae"]).unlink()
    assert main(["download", "tiny", "--from", str(checkout)]) == 2
    assert "not taken" in capsys.readouterr().err and not hub.raw_path(assets["tiny_vae"]).exists()
    for bad, message in ((tmp_path / "nowhere", "no such folder"), (checkout / "model.pth", "is a file")):
        assert main(["download", "tiny", "--from", str(bad)]) == 2
        assert message in capsys.readouterr().err
