"""The training scripts (scripts/train_default_v2.py, train_binaural_v2.py, bench_probe.py) keep what Ctrl-C lets the
trainer save, refuse caches and start weights that are not what they claim to be, and say bad input in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO

from avflow.errors import ConfigError

SCRIPTS = REPO / "scripts"

# a stand-in for the trainer: it says it is up, and on SIGINT takes 1 s to "save" (subprocess.run kills after 0.25 s)
TRAPPING_CHILD = """\
import os, signal, sys, time
from pathlib import Path
folder = Path(os.environ["TRAP_DIR"])
def stop(signum, frame):
    time.sleep(1.0)
    (folder / "saved").write_text("saved")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
(folder / "ready").write_text("ready")
time.sleep(60)
sys.exit(0)
"""


def interrupt_group(cmd: list[str], folder: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` in a process group of its own, send SIGINT to the whole group (as a terminal's Ctrl-C does) once the
    trapping child is up, and return how it ended."""
    env = {**os.environ, "TRAP_DIR": str(folder), **(env or {})}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 30
        while not (folder / "ready").is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the child never started"
            time.sleep(0.05)
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_run_child_waits_for_the_child_to_save_after_ctrl_c(tmp_path):
    """avflow.train.child.run_child: Ctrl-C reaches the child too; the parent waits for it to save, then says in one
    line where the run stopped and exits 130."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000040.pt").write_bytes(b"")
    parent = (f"import sys\nfrom avflow.train.child import run_child\n"
              f"run_child([sys.executable, '-c', {TRAPPING_CHILD!r}], {str(run)!r})\n")  # fmt: skip
    done = interrupt_group([sys.executable, "-c", parent], tmp_path)
    assert (tmp_path / "saved").is_file(), done.stderr
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"interrupted at step 40 ({run}); rerun the same command to resume"


def test_run_child_raises_on_a_failing_child():
    from avflow.train.child import run_child

    run_child([sys.executable, "-c", "pass"])
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_child([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed.value.returncode == 3
    with pytest.raises(SystemExit) as stopped:  # stopped on a Ctrl-C that reached only it: interrupted, not failed
        run_child([sys.executable, "-c", "import sys; sys.exit(130)"])
    assert stopped.value.code == 130


PARENTS = {
    "train_default_v2": "script.train_joint(work, [])",
    "train_binaural_v2": "script.train(work, 0, [], script.CONFIGS['codec'])",
    "bench_probe": (
        "import types\nscript.train(types.SimpleNamespace(work=work, start=work / 's', fusion='f', "
        "options={}, alignment='none', steps=10), work / 'out')"
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(PARENTS))
def test_a_script_interrupted_lets_its_trainer_save(tmp_path, name):
    """Each script's trainer child (here a stand-in run as the script's `sys.executable`) is not killed by Ctrl-C
    before it saves."""
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\n" + TRAPPING_CHILD)
    fake.chmod(0o755)
    parent = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(SCRIPTS)!r})
        import {name} as script
        sys.executable = {str(fake)!r}
        work = Path({str(tmp_path)!r})
    """) + PARENTS[name] + "\n"  # fmt: skip
    done = interrupt_group([sys.executable, "-c", parent], tmp_path)
    assert (tmp_path / "saved").is_file(), done.stderr[-3000:]
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].endswith("rerun the same command to resume")


# ------------------------------------------------------------------------------------------------------------------
# scripts/train_default_v2.py


@pytest.fixture
def default_script(monkeypatch):
    """train_default_v2 with a tiny world (0.5 s, 8 fps, 32x32, 1-2 objects)."""
    from avflow.world.scene import WorldConfig

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import train_default_v2 as script

    monkeypatch.setattr(script, "world_config", lambda: WorldConfig(width=32, height=32, duration=0.5, fps=8,
                                                                    min_objects=1, max_objects=2))  # fmt: skip
    return script


def run_main(script, monkeypatch, *argv: str) -> str:
    """script.main() with `argv`; the message it exits with ('' when it returns)."""
    monkeypatch.setattr("sys.argv", ["train_default_v2.py", *argv])
    try:
        script.main()
    except SystemExit as exc:
        return str(exc.code)
    return ""


def test_make_world_goes_through_make_dataset(tmp_path, default_script):
    """A world of another --clips is refused (it was taken as it was); a bigger --clips extends it."""
    from avflow.errors import OutputError
    from avflow.world.dataset import read_manifest

    world = default_script.make_world(tmp_path, 6, 1)
    with pytest.raises(OutputError, match="beyond what --n 4 makes"):
        default_script.make_world(tmp_path, 4, 1)
    default_script.make_world(tmp_path, 8, 1)
    assert sum(len(read_manifest(world, s)) for s in ("train", "val", "test")) == 8


def test_an_existing_cache_must_open_and_hold_one_row_per_clip(tmp_path, default_script):
    from avflow.weights import save_safetensors

    world = default_script.make_world(tmp_path, 6, 1)
    cache = tmp_path / "cache_train.safetensors"
    cache.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"{cache}: a damaged cache .*delete {cache}"):
        default_script.cache_split(world, "train", tmp_path)
    save_safetensors({"streams.video": torch.zeros(2, 1)}, cache, metadata={"codecs_checksum": "x"})
    with pytest.raises(ConfigError, match=r"2 rows, not the 4 of .*another world or --clips.*delete"):
        default_script.cache_split(world, "train", tmp_path)
    save_safetensors({"streams.video": torch.zeros(4, 1)}, cache, metadata={"codecs_checksum": "other"})
    with pytest.raises(ConfigError, match="made with world codecs other"):
        default_script.cache_split(world, "train", tmp_path)
    (tmp_path / "cache_train.json").write_text(json.dumps({"codecs_checksum": "x"}))
    for name, fn in (("two", default_script.two_object_cache), ("mirror", default_script.mirror_cache)):
        (tmp_path / f"cache_train_{name}.safetensors").write_bytes(b"")
        with pytest.raises(ConfigError, match=f"cache_train_{name}.safetensors: a damaged cache"):
            fn(tmp_path)
    save_safetensors({"streams.video": torch.zeros(3, 1)}, tmp_path / "cache_train_mirror.safetensors")
    with pytest.raises(ConfigError, match="3 rows, not the 8 of"):
        default_script.mirror_cache(tmp_path)


def test_export_is_refused_on_a_world_of_another_size(tmp_path, default_script, monkeypatch):
    """`--clips 4 --stage export` on a world of 6 clips: one line, nothing exported (it recorded clips: 4)."""
    default_script.make_world(tmp_path, 6, 1)
    monkeypatch.setattr(default_script, "export", lambda *a: pytest.fail("exported"))
    message = run_main(default_script, monkeypatch, "--work", str(tmp_path), "--clips", "4", "--stage", "export",
                       "--workers", "1")  # fmt: skip
    assert message.startswith("error: ") and "beyond what --n 4 makes" in message and "\n" not in message


def test_a_failing_trainer_is_one_line(tmp_path, default_script, monkeypatch):
    def fail(cmd, *args, **kwargs):
        raise subprocess.CalledProcessError(2, cmd)

    monkeypatch.setattr(default_script, "make_world", lambda work, clips, workers: work / "world")
    monkeypatch.setattr(default_script, "run_child", fail, raising=False)
    monkeypatch.setattr(subprocess, "run", fail)  # what the script ran before
    message = run_main(default_script, monkeypatch, "--work", str(tmp_path), "--stage", "joint")
    assert message == "error: training failed (exit status 2; its output is above)"


@pytest.mark.parametrize(
    "argv, message",
    [(["--clips", "0"], "--clips must be between 1 and"), (["--work", "/proc/nope"], "--work /proc/nope: ")],
)
def test_bad_arguments_are_one_line_before_any_work(argv, message):
    done = subprocess.run([sys.executable, str(SCRIPTS / "train_default_v2.py"), *argv], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not Path("/proc/nope").exists()


@pytest.fixture
def one_cycle(tmp_path, default_script, monkeypatch):
    """WORK with a finished joint run (config.yaml: 10 steps, its step-10 checkpoint, an EMA) and a plan of one
    later cycle; training stubbed out."""
    from avflow.weights import save_safetensors

    for name, count in (("LATER_CYCLES", 1), ("GROWN_CYCLES", 0), ("TWO_OBJECT_CYCLES", 0),
                        ("VIDEO_WEIGHTED_CYCLES", 0), ("MIRRORED_CYCLES", 0)):  # fmt: skip
        monkeypatch.setattr(default_script, name, count)
    calls = []
    monkeypatch.setattr(default_script, "run_child", lambda cmd, run=None: calls.append(cmd), raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))  # what the script ran before
    joint = tmp_path / "joint"
    (joint / "checkpoints").mkdir(parents=True)
    (joint / "config.yaml").write_text("train:\n  steps: 10\n")
    (joint / "checkpoints" / "step_00000010.pt").write_bytes(b"")
    save_safetensors({"w": torch.full((3,), 1.0)}, joint / "ema_0.05.safetensors")
    (cycle,) = default_script.cycle_plan(tmp_path)
    return cycle, calls


def start_weights(cycle) -> float:
    from avflow.weights import read_state_dict

    return read_state_dict(cycle.start)["w"][0].item()


def test_a_start_file_follows_the_run_it_was_made_from(tmp_path, default_script, one_cycle):
    """The start of a cycle records the EMA file it came from: the run before trained again (another EMA), the start
    is written again while its cycle has not trained from it, and refused in one line once it has."""
    from avflow.weights import save_safetensors

    cycle, calls = one_cycle
    default_script.train_cycles(tmp_path)
    assert start_weights(cycle) == 1.0 and len(calls) == 1
    save_safetensors({"w": torch.full((3,), 2.0)}, tmp_path / "joint" / "ema_0.05.safetensors")  # trained again
    default_script.train_cycles(tmp_path)
    assert start_weights(cycle) == 2.0
    (cycle.run / "checkpoints").mkdir(parents=True)
    (cycle.run / "checkpoints" / "step_00000004.pt").write_bytes(b"")
    save_safetensors({"w": torch.full((3,), 3.0)}, tmp_path / "joint" / "ema_0.05.safetensors")
    with pytest.raises(ConfigError, match=f"{cycle.run} has trained from it: delete {cycle.run} and {cycle.start}"):
        default_script.train_cycles(tmp_path)
    assert start_weights(cycle) == 2.0 and len(calls) == 2


def test_a_start_file_is_not_made_from_an_unfinished_run(tmp_path, default_script, one_cycle):
    cycle, calls = one_cycle
    (tmp_path / "joint" / "config.yaml").write_text("train:\n  steps: 20\n")  # retrained longer, stopped at step 10
    with pytest.raises(ConfigError, match="joint is at step 10 of its train.steps 20"):
        default_script.train_cycles(tmp_path)
    assert not cycle.start.exists() and not calls


def test_a_start_file_written_before_it_recorded_its_source_is_kept_when_it_matches(tmp_path, default_script,
                                                                                    one_cycle):  # fmt: skip
    from avflow.weights import save_safetensors

    cycle, calls = one_cycle
    save_safetensors({"w": torch.full((3,), 1.0).half()}, cycle.start)  # as the script wrote it before
    before = cycle.start.read_bytes()
    default_script.train_cycles(tmp_path)
    assert cycle.start.read_bytes() == before and len(calls) == 1


# ------------------------------------------------------------------------------------------------------------------
# scripts/train_binaural_v2.py and avflow/train/binaural_cache.py


@pytest.fixture
def binaural_script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import train_binaural_v2 as script

    return script


def test_a_binaural_cache_of_another_world_or_limit_is_refused(tmp_path, binaural_script):
    """The cache stage on an existing cache: another world folder, another --limit (another number of clips) or a
    damaged file are each one line naming the file to delete; the same settings take it as it is."""
    import shutil

    from test_binaural import tiny_world

    world = tiny_world(tmp_path / "world", seconds=0.5, clips=3)
    shutil.copytree(world / "train", world / "val")
    work = tmp_path / "work"
    work.mkdir()
    config = binaural_script.CONFIGS["cues"]

    def cache(world: Path, limit: int) -> None:
        binaural_script.cache(world, work, limit, "cues", config, [], 1)

    cache(world, 2)
    out = work / "cache_train.safetensors"
    made = out.stat().st_mtime_ns
    cache(world, 2)  # the same: kept
    assert out.stat().st_mtime_ns == made
    with pytest.raises(ConfigError, match=f"{out}: holds 2 clips, .* --limit 0 gives 3 .*delete {out}"):
        cache(world, 0)
    other = Path(shutil.copytree(world, tmp_path / "other"))
    with pytest.raises(ConfigError, match=f"{out}: made from another world \\(world '{world.resolve()}', now"):
        cache(other, 2)
    out.write_bytes(out.read_bytes()[:100])  # truncated
    with pytest.raises(ConfigError, match=f"{out}: a damaged cache .*delete {out}"):
        cache(world, 2)


def test_a_negative_limit_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "train_binaural_v2.py"), "--limit", "-3", "--world",
                           str(tmp_path), "--work", str(tmp_path / "w")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "--limit must be >= 0" in done.stderr, done.stderr
    from avflow.train.binaural_cache import cache_world_split

    with pytest.raises(ConfigError, match="must be >= 0"):
        cache_world_split(tmp_path, "train", tmp_path / "c.safetensors", None, limit=-3, representation="cues")


def test_make_world_of_the_binaural_script_refuses_a_world_of_other_settings(tmp_path, binaural_script, monkeypatch):
    """--make-world on a folder holding another world (here the default model's seed, 0, not the script's 1): one
    line (it was taken as it was, whatever its head, seed or size)."""
    import train_default_v2

    from avflow.errors import OutputError
    from avflow.world.dataset import make_dataset
    from avflow.world.scene import WorldConfig

    tiny = WorldConfig(width=32, height=32, duration=0.5, fps=8, min_objects=1, max_objects=1)
    monkeypatch.setattr(train_default_v2, "world_config", lambda: tiny)
    monkeypatch.setattr(binaural_script, "WORLD_CLIPS", 4)
    make_dataset(tmp_path / "world", 4, seed=0, config=tiny)
    with pytest.raises(OutputError, match="made with other settings"):
        binaural_script.make_world(tmp_path / "world", "sphere", 1)
    binaural_script.make_world(tmp_path / "own", "sphere", 1)
    binaural_script.make_world(tmp_path / "own", "sphere", 1)  # the same again: kept
