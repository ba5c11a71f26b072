"""`avflow cache joint` on awkward inputs: a caption longer than the text encoder reads, rows `read_captions` drops
(a bad row, a missing file), two files of one name in different folders, a 5.1 track, and the progress it shows.
Every row not written is skipped, listed in OUT.failed.tsv and counted in the summary."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tiny_default_model
from test_joint_cache import SR, clip

from avflow.cli import main
from avflow.weights import read_state_dict

LONG = " ".join(["word"] * 20)  # the tiny text encoder: one token a word; the tiny model reads at most 16


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny model folder; clips `dog/001`, `cat/001` (one name, two folders), `ok`, `wordy` (a long caption)."""
    work = tmp_path_factory.mktemp("joint_inputs")
    write_tiny_default_model(work / "model")
    media = work / "media"
    for name in ("dog/001", "cat/001", "ok", "wordy"):
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        clip(media / f"{name}.mp4", seconds=2.0, width=32)
    rows = ["file,caption", "dog/001.mp4,a dog barks", "cat/001.mp4,a cat meows", "ok.mp4,a bell rings",
            f"wordy.mp4,{LONG}", "gone.mp4,a file that is not there", "ok.mp4,a bell,extra cell"]  # fmt: skip
    (work / "table.csv").write_text("\n".join(rows) + "\n")
    return work


def cache_joint(work: Path, out: Path, table: str = "table.csv") -> list[str]:
    return ["cache", "joint", str(out), "--table", str(work / table), "--media", str(work / "media"),
            "--model", str(work / "model")]  # fmt: skip


@pytest.fixture(scope="module")
def built(work) -> tuple[Path, str, str]:
    """The file built from the table, and what the command printed on stdout and on stderr."""
    out, stdout, stderr = work / "train.safetensors", io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(cache_joint(work, out)) == 0
    return out, stdout.getvalue(), stderr.getvalue()


def failed_rows(out: Path) -> list[list[str]]:
    rows = [r.split("\t") for r in out.with_suffix(".failed.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "file", "reason"]
    return rows[1:]


def test_a_caption_longer_than_the_model_reads_is_skipped_and_listed(built):
    out, printed, _ = built
    wordy = [r for r in failed_rows(out) if r[0] == "wordy"]
    assert len(wordy) == 1 and "the caption is 20 tokens long and this model reads at most 16" in wordy[0][2]
    assert "3 clips written, 3 skipped" in printed


def test_a_long_caption_is_refused_before_any_codec_loads(work, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("codecs loaded before the captions were checked")

    monkeypatch.setattr("avflow.codecs.world.load_world_codecs", refuse)
    (work / "long.csv").write_text(f"wordy.mp4,{LONG}\n")
    out = tmp_path / "o.safetensors"
    assert main(cache_joint(work, out, "long.csv")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no usable clip" in err and "the caption is 20 tokens long" in err and not out.exists()


def test_files_of_one_name_in_two_folders_are_both_written(built):
    out, _, _ = built
    tensors = read_state_dict(out)
    assert tensors["streams.video"].shape[0] == 3  # dog/001, cat/001, ok
    from avflow.encoders.text import load_text_encoder

    states, _ = load_text_encoder("tiny", max_len=16)(["a dog barks", "a cat meows", "a bell rings"])
    torch.testing.assert_close(tensors["cond.text"], states)


def test_rows_the_table_reader_drops_are_skipped_listed_and_counted(built, work):
    out, printed, _ = built
    rows = {r[0] or r[1]: r for r in failed_rows(out)}
    assert rows["gone"][1].endswith("gone.mp4") and "not found" in rows["gone"][2]
    bad = rows[f"{work / 'table.csv'}:7"]
    assert "3 fields" in bad[2]
    assert len(rows) == 3 and "3 skipped" in printed


def test_read_captions_drops_a_repeated_id_unless_asked_not_to(work):
    import warnings

    from avflow.data.datasets import read_captions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unique, report = read_captions(work / "table.csv", work / "media")
        rows, _ = read_captions(work / "table.csv", work / "media", unique_ids=False)
    assert [r.id for r in unique] == ["001", "ok", "wordy"] and "already used on line 2" in report.bad_rows[0][1]
    assert [r.video.parent.name for r in rows[:2]] == ["dog", "cat"] and len(rows) == 4


def test_progress_is_shown_on_stderr(built):
    out, printed, stderr = built
    assert "3/3" in stderr and "clip" in stderr
    assert len(printed.strip().splitlines()) == 1  # stdout: the summary line alone


def test_a_surround_track_is_downmixed_so_its_centre_is_heard(tmp_path):
    import soundfile as sf

    from avflow.pipelines.joint_cache import ClipFormat, JointCacheSummary, read_sound

    t = np.arange(SR * 2) / SR
    six = np.zeros((6, t.size), np.float32)
    six[2] = 0.5 * np.sin(2 * np.pi * 440 * t)  # 5.1 (FL FR FC LFE BL BR): the centre alone, as speech often is
    sf.write(tmp_path / "six.wav", six.T, SR, subtype="FLOAT")
    fmt = ClipFormat(duration=2.0, fps=16, height=32, width=32, sample_rate=SR)
    ears, channels = read_sound(tmp_path / "six.wav", fmt)
    assert channels == 6 and ears.shape == (2, SR * 2)
    assert ears.pow(2).mean(1).sqrt().min() > 0.1  # not silent: the first two channels are
    summary = JointCacheSummary(out=tmp_path / "o.safetensors", fmt=fmt, written=1, downmixed=1)
    assert "1 of more than 2 channels downmixed to stereo" in summary.line()
