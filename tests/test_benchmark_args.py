"""Bad input to the benchmarks and their helper scripts ends in one line on stderr, nonzero, before any slow work:
one invocation per shared mechanism of benchmarks/common.py (a positive-int argparse type, the avflow-error
wrapper `run_main`, the up-front --json check) plus sync_accuracy's --sets and make_real_sound_set's --n and --out;
and benchmarks/data.py runs to its table at its tiniest settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60  # each case fails in a few seconds (imports); the defects took 40-90 s or ran to the end
SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=TIMEOUT_S)  # fmt: skip


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stdout + done.stderr
    assert len(lines) == 1 and "error" in lines[0], done.stderr
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.mark.parametrize(
    ("script", "args", "needles"),
    [
        ("benchmarks/eval.py", ["--clips", "0"], ["--clips", ">= 1"]),  # positive_int (was an IndexError)
        ("benchmarks/joint.py", ["--fusion", "nope"], ["unknown fusion"]),  # run_main (was a ConfigError traceback)
        ("benchmarks/audio_decoding.py", ["--device", "nope"], ["--device"]),  # device_type
        # check_output: refused before the 40 s run whose table it lost
        ("benchmarks/foley_stages.py", ["--quick", "--tiny", "--json", "/nonexistent/dir/x.json"], ["--json"]),
        ("benchmarks/fast_sampler.py", ["--fixture", "--candidates", "bogus"], ["--candidates"]),  # was after dopri5
        ("benchmarks/sync_accuracy.py", ["--sets", "bogus"], ["--sets"]),  # printed a title, rc 0
        ("benchmarks/sync_accuracy.py", ["--sets", "world", "--world", "/nonexistent"], ["--world"]),
        ("scripts/make_real_sound_set.py", ["--out", "/nonexistent/real", "--n", "0"], ["--n"]),  # "wrote 0 clips"
        ("scripts/export_codecs.py", ["video", "/nonexistent"], ["config.yaml"]),  # was a ConfigError traceback
    ],
)
def test_bad_input_is_one_line_and_quick(script, args, needles):
    start = time.perf_counter()
    done = run(script, *args)
    assert_one_line_error(done, *needles)
    assert time.perf_counter() - start < TIMEOUT_S


def test_real_sound_set_refuses_a_folder_of_another_seed(tmp_path):
    """Two seeds into one --out mixed two sets; now the folder's set.json refuses the second (one line), while the
    same settings again rebuild in place."""
    if not SOUNDS.is_dir() or shutil.which("espeak-ng") is None:
        pytest.skip("needs sound-theme-freedesktop and espeak-ng (`make real-sound-deps`)")
    out = tmp_path / "real"
    first = run("scripts/make_real_sound_set.py", "--out", str(out), "--n", "1", "--seed", "1")
    assert first.returncode == 0, first.stderr
    assert_one_line_error(run("scripts/make_real_sound_set.py", "--out", str(out), "--n", "1", "--seed", "2"), "seed")
    assert sorted(p.name for p in out.glob("*.json")) == ["real_001_0000.json", "set.json"]
    again = run("scripts/make_real_sound_set.py", "--out", str(out), "--n", "1", "--seed", "1")
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_data_benchmark_runs_to_its_table():
    """benchmarks/data.py failed at any settings once latent_stats became required from scratch; tiniest settings
    (about a minute on 2 loaded cores, most of it one training step of small_16k)."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data.py"), "--clips", "4", "--batch", "2",
                           "--workers", "0", "--steps", "1", "--device", "cpu"], capture_output=True, text=True,
                          cwd=REPO, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loader, 0 workers" in done.stdout and "load " in done.stdout and "best loader / step" in done.stdout


def test_a_failed_real_sound_build_ends_in_one_line_of_its_own(tmp_path):
    """sync_accuracy builds a missing --real set with scripts/make_real_sound_set.py; where that fails (here: --real
    under a file, so the folder cannot be made) the builder's one line is followed by the benchmark's, not by a
    CalledProcessError traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run("benchmarks/sync_accuracy.py", "--sets", "real", "--real", str(blocker / "real"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("sync_accuracy.py: error: building the real-sound set") and len(lines) <= 2, lines
