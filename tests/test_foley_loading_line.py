"""On a terminal, foley/t2a/i2a say the model is loading before the (possibly long) read; in a pipe they say nothing
(their stderr stays the one-line error or nothing)."""

from __future__ import annotations

import argparse
import sys

import pytest
from test_foley_load_checks import tiny_model  # noqa: F401 (a fixture)

from avflow.commands.foley import load_pipeline


def args_for(model) -> argparse.Namespace:
    return argparse.Namespace(model=str(model), weights=None, window=None, overlap=None, precision="fp32",
                              compile=False)  # fmt: skip


@pytest.mark.parametrize("terminal", [True, False])
def test_loading_line_on_a_terminal_only(tiny_model, terminal, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    load_pipeline(args_for(tiny_model), None, "cpu")
    err = capsys.readouterr().err
    assert (err == f"loading the model {tiny_model} ...\n") if terminal else err == "", err
