"""Winograd's measured choices kept per machine, so that only a machine's first process pays for them.

`winograd_convolutions(..., measured=True)` times each convolution shape both ways at its first call in a process
(`WINOGRAD_PAYS_OFF`); for MMAudio large that is about 5 s of a call's time (docs/foley.md), paid again by every
`avflow foley` run. `kept_winograd_choices` fills the table from `$AVFLOW_HOME/winograd_choices.json` before
sampling and stores the new choices after it, under a key for the machine (CPU model, logical CPUs, torch version):
later processes on the machine skip the timing and take the same ways, so the same inputs give the same bits from
run to run (where a fresh timing could pick the other way for a shape whose two ways are close). Delete the file
to measure again (e.g. after a change of load that the first measurement ran under).
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch

from avflow import hub
from avflow.nn import mmaudio_blocks
from avflow.weights import atomic_write

STORE_NAME = "winograd_choices.json"


@cache
def machine() -> str:
    """What choices measured here hold for: the CPU model, the logical CPUs and the torch version."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} | {os.cpu_count()} CPUs | torch {torch.__version__}"


def key_text(key: tuple) -> str:
    """(input shape, weight shape, threads, cached) -> '2,250,896 | 1792,896,3 | 2 threads | cached'."""
    x_shape, w_shape, threads, cached = key
    way = "cached" if cached else "per call"
    return f"{','.join(map(str, x_shape))} | {','.join(map(str, w_shape))} | {threads} threads | {way}"


def parse_key(text: str) -> tuple:
    x_shape, w_shape, threads, cached = (part.strip() for part in text.split("|"))
    return (
        tuple(int(n) for n in x_shape.split(",")),
        tuple(int(n) for n in w_shape.split(",")),
        int(threads.split()[0]),
        cached == "cached",
    )


def read_store(path: Path) -> dict[str, dict[str, bool]]:
    """{machine: {key text: Winograd faster}}; an unreadable or foreign file, or a machine's entry that is not a
    table, reads as empty (measured again)."""
    try:
        store = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(store, dict):
        return {}
    return {name: choices for name, choices in store.items() if isinstance(choices, dict)}


@contextmanager
def kept_winograd_choices(path: Path | None = None) -> Iterator[None]:
    """Inside: `mmaudio_blocks.WINOGRAD_PAYS_OFF` holds this machine's stored choices (a choice measured in this
    process wins); on exit the process's choices are merged into the store (written atomically). A store that cannot
    be written costs only the next process's timing: a warning, not an error."""
    path = hub.home() / STORE_NAME if path is None else path
    here = machine()
    for text, faster in read_store(path).get(here, {}).items():
        try:
            mmaudio_blocks.WINOGRAD_PAYS_OFF.setdefault(parse_key(text), bool(faster))
        except ValueError:
            continue  # a key this version does not read
    try:
        yield
    finally:
        store = read_store(path)  # again: another process may have stored choices meanwhile
        mine = {key_text(key): faster for key, faster in mmaudio_blocks.WINOGRAD_PAYS_OFF.items()}
        if mine and any(store.get(here, {}).get(text) != faster for text, faster in mine.items()):
            store[here] = store.get(here, {}) | mine
            data = (json.dumps(store, indent=1, sort_keys=True) + "\n").encode()
            try:
                atomic_write(path, lambda f: f.write(data))
            except OSError as error:
                warnings.warn(f"Winograd choices not stored in {path}: {error}", stacklevel=3)
