"""Winograd's measured choices kept per machine: a second process skips the timing and takes the same ways."""

from __future__ import annotations

import json

import pytest
import torch

from avflow.nn import mmaudio_blocks, winograd
from avflow.nn.mmaudio_blocks import ConvMLP, winograd_convolutions
from avflow.pipelines import winograd_store
from avflow.pipelines.winograd_store import kept_winograd_choices, key_text, machine, parse_key


def test_key_text_round_trip():
    for key in [((2, 250, 896), (1792, 896, 3), 2, True), ((1, 7, 5), (3, 5, 3), 16, False)]:
        assert parse_key(key_text(key)) == key


@pytest.fixture
def timings(monkeypatch):
    """A fresh process's table and a pays_off that records what it times; Winograd wins for wide outputs only."""
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    timed = []

    def fake_pays_off(x, weight, transformed):
        timed.append(tuple(weight.shape))
        return weight.shape[0] > weight.shape[1]

    monkeypatch.setattr(winograd, "pays_off", fake_pays_off)
    return timed


def run(mlp: ConvMLP, x: torch.Tensor, path) -> torch.Tensor:
    with torch.no_grad(), kept_winograd_choices(path), winograd_convolutions(mlp):
        return mlp(x)


def test_a_second_process_takes_the_stored_choices(tmp_path, monkeypatch, timings):
    mlp, x = ConvMLP(12, 40, multiple_of=8), torch.randn(2, 21, 12)
    path = tmp_path / "home" / "winograd_choices.json"
    first = run(mlp, x, path)
    assert len(timings) == 2  # 12 -> hidden (w1, w3) and hidden -> 12 (w2)
    stored = json.loads(path.read_text())
    assert list(stored) == [machine()]
    assert sorted(stored[machine()].values()) == [False, True]
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})  # the next process
    second = run(mlp, x, path)
    assert len(timings) == 2  # nothing timed again
    assert torch.equal(first, second)


def test_choices_of_another_machine_or_an_unreadable_store_are_measured_again(tmp_path, monkeypatch, timings):
    mlp, x = ConvMLP(12, 40, multiple_of=8), torch.randn(2, 21, 12)
    path = tmp_path / "winograd_choices.json"
    run(mlp, x, path)
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({"another CPU | 64 CPUs | torch 0.0": stored[machine()]}))
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    run(mlp, x, path)
    assert len(timings) == 4
    assert set(json.loads(path.read_text())) == {"another CPU | 64 CPUs | torch 0.0", machine()}  # both kept
    path.write_text("{ not json")
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    run(mlp, x, path)
    assert len(timings) == 6
    assert json.loads(path.read_text()) == {machine(): stored[machine()]}
    path.write_text(json.dumps({machine(): ["not", "a", "table"]}))
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    run(mlp, x, path)
    assert len(timings) == 8
    assert json.loads(path.read_text()) == {machine(): stored[machine()]}


def test_a_store_that_cannot_be_written_warns(tmp_path, timings):
    mlp, x = ConvMLP(12, 40, multiple_of=8), torch.randn(2, 21, 12)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="not stored"):
        out = run(mlp, x, blocked / "winograd_choices.json")  # its folder is a file
    assert out.shape == (2, 21, 12)


def test_the_default_store_is_in_avflow_home(tmp_path, monkeypatch, timings):
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path))
    mlp, x = ConvMLP(12, 40, multiple_of=8), torch.randn(2, 21, 12)
    run(mlp, x, None)
    assert (tmp_path / winograd_store.STORE_NAME).is_file()
