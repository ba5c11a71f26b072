"""avflow.heap: freed tensors' pages are reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from avflow import heap

# A chain of 40 tensors of 1-48 MiB, each made from the last (two alive at a time), 8 times over. Under glibc's
# defaults the heap is trimmed and mapped again as the sizes change, so every round faults pages in; with freed memory
# kept, only the first round does.
CYCLES = """
import json, resource, sys, torch
from avflow import heap
kept = heap.keep_freed_memory() if sys.argv[1] == "keep" else None
torch.ones(1)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(2**18)
    for i in range(40):
        x = torch.empty(((7 * i * i + 3 * i) % 48 + 1) * 2**18).fill_(1.0)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
PAGES_PER_ROUND = sum(((7 * i * i + 3 * i) % 48 + 1) * 256 for i in range(40))  # 4 KiB pages written per round


def run_cycles(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not heap.sets_malloc(k) and k != heap.SWITCH}
    out = subprocess.run([sys.executable, "-c", CYCLES, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_page_faults_of_reused_tensors():
    default, kept = run_cycles("default"), run_cycles("keep")
    assert kept["kept"] is True
    later_default, later_kept = sum(default["faults"][1:]), sum(kept["faults"][1:])  # after the first round
    assert later_default > 7 * PAGES_PER_ROUND // 10, default  # the defaults: about two thirds of them a round
    assert later_kept < 7 * PAGES_PER_ROUND // 100, (kept, default)  # kept: under 1 % of them


def test_environment_settings_win(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert heap.environment_sets_malloc() and heap.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv(heap.SWITCH, "0")
    assert heap.keep_freed_memory() is False


def test_a_bad_switch_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    from avflow import cli

    monkeypatch.setenv(heap.SWITCH, "yes")
    assert cli.main(["info", str(tmp_path / "missing.wav")]) == 2
    assert capsys.readouterr().err.strip() == f"avflow info: error: {heap.SWITCH} must be 0 or 1, got 'yes'"


def test_the_avflow_command_keeps_freed_memory_before_a_command_runs(monkeypatch, capsys, tmp_path):
    from avflow import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept") or True)
    assert cli.main(["world", "--n", "2"]) == 2 and calls == []  # an argument error: nothing runs, nothing set
    cli.main(["info", str(tmp_path / "missing.wav")])  # runs (and reports the missing file)
    assert calls == ["kept"]
