"""`avflow world make`: previews of kept clips, a full disk, and the --n that extends a dataset."""

from __future__ import annotations

import errno
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from avflow.errors import OutputError
from avflow.world import dataset as world_dataset
from avflow.world.dataset import SETTINGS_FILE, check_existing, make_dataset, preview_available
from avflow.world.scene import WorldConfig

TINY = WorldConfig(height=16, width=16, fps=4, duration=0.5, sample_rate=8000)


@pytest.mark.skipif(not preview_available(), reason="no mp4 writer")
def test_preview_rerun_writes_the_mp4_of_kept_clips(tmp_path):
    make_dataset(tmp_path / "d", 3, config=TINY)
    made = []
    make_dataset(tmp_path / "d", 3, config=TINY, preview=True, progress=lambda row, new: made.append(new))
    assert made == [False, False, False]  # kept, not made again
    assert sorted(p.name for p in (tmp_path / "d").rglob("*.mp4")) == ["test_000000.mp4", "train_000000.mp4",
                                                                       "val_000000.mp4"]  # fmt: skip


@pytest.mark.skipif(not preview_available(), reason="no mp4 writer")
def test_preview_interrupted_leaves_no_json(tmp_path, monkeypatch):
    real = world_dataset.write_preview

    def cut(clip, stem):
        Path(stem).with_suffix(".mp4").write_bytes(b"\0" * 10)  # a preview cut short
        raise KeyboardInterrupt

    monkeypatch.setattr(world_dataset, "write_preview", cut)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(tmp_path / "d", 3, config=TINY, preview=True)
    assert not (tmp_path / "d" / "train" / "train_000000.json").exists()  # not whole: made again on the rerun
    monkeypatch.setattr(world_dataset, "write_preview", real)
    made = []
    make_dataset(tmp_path / "d", 3, config=TINY, preview=True, progress=lambda row, new: made.append(new))
    assert made == [True, True, True]
    assert (tmp_path / "d" / "train" / "train_000000.mp4").stat().st_size > 10


def test_disk_full_is_one_line_and_leaves_no_partial_wav(tmp_path, monkeypatch):
    real, calls = world_dataset.wavfile.write, []

    def full(target, rate, data):
        calls.append(target)
        if len(calls) < 2:
            return real(target, rate, data)
        if isinstance(target, (str, Path)):
            Path(target).write_bytes(b"RIFF....")
        else:
            target.write(b"RIFF....")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(world_dataset.wavfile, "write", full)
    out = tmp_path / "d"
    with pytest.raises(OutputError) as info:
        make_dataset(out, 3, config=TINY)
    msg = str(info.value)
    assert "\n" not in msg and "No space left on device" in msg and "val_000000.wav" in msg
    assert str(out) in msg and "keeps the 1 whole clips" in msg and "rerun to resume" in msg
    assert not (out / "val" / "val_000000.wav").exists()
    assert not [p for p in (out / "val").iterdir()]  # no temporary file left either
    monkeypatch.setattr(world_dataset.wavfile, "write", real)
    made = []
    make_dataset(out, 3, config=TINY, progress=lambda row, new: made.append(new))
    assert made == [False, True, True]


def _fake_dataset(out: Path, sizes: dict[str, int], config: WorldConfig) -> None:
    """The files `check_existing` looks at: the settings and one json name per clip."""
    out.mkdir()
    (out / SETTINGS_FILE).write_text(json.dumps({"seed": 0, "config": asdict(config)}))
    for split, n in sizes.items():
        (out / split).mkdir()
        for i in range(n):
            (out / split / f"{split}_{i:06d}.json").write_text("{}")


def test_bigger_n_that_does_not_extend_names_one_that_does(tmp_path):
    _fake_dataset(tmp_path / "d", {"train": 12, "val": 1, "test": 1}, TINY)  # --n 14
    check_existing(tmp_path / "d", 16, 0, TINY)  # 12/2/2: extends
    with pytest.raises(OutputError) as info:
        check_existing(tmp_path / "d", 15, 0, TINY)  # 11/2/2: train gets smaller
    msg = str(info.value)
    assert "--n 14 to keep them" in msg and "--n 16 (the smallest above 15" in msg


@pytest.mark.skipif(not preview_available(), reason="no mp4 writer")
def test_cli_says_how_many_previews_it_added_to_kept_clips(tmp_path, capsys):
    from avflow.cli import main as cli_main

    args = ["world", "make", "--n", "3", "--out", str(tmp_path / "w"), "--size", "16", "16", "--fps", "4",
            "--duration", "0.5", "--sample-rate", "8000"]  # fmt: skip
    assert cli_main(args) == 0
    capsys.readouterr()
    assert cli_main(args + ["--preview"]) == 0
    said = capsys.readouterr().out
    assert "wrote 0 clips" in said and "kept the 3 already there and wrote the 3 mp4 previews they lacked" in said
    assert cli_main(args + ["--preview"]) == 0  # nothing left to add: not said
    assert "previews" not in capsys.readouterr().out


def test_a_rerun_makes_again_a_clip_whose_json_is_not_a_meta(tmp_path):
    # before: a clip json holding a list crashed the rerun with an AttributeError ('list' object has no attribute 'get')
    make_dataset(tmp_path / "d", 3, config=TINY)
    (tmp_path / "d" / "train" / "train_000000.json").write_text("[]")
    made = []
    make_dataset(tmp_path / "d", 3, config=TINY, progress=lambda row, new: made.append((row["id"], new)))
    assert sorted(made) == [("test_000000", False), ("train_000000", True), ("val_000000", False)]
    assert isinstance(json.loads((tmp_path / "d" / "train" / "train_000000.json").read_text()), dict)
