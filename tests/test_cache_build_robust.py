"""`avflow cache build` with a user's own clips: clips of the wrong length, rebuilds after edits, --overwrite,
failed-clip lists, builds that extract nothing."""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_CLIP, TINY_SYNC, constructor, randomize_
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_cache_integrity import extractor, recs

from avflow.data.cache import FeatureCache, MediaExtractor, build_cache
from avflow.data.datasets import ClipRecord
from avflow.errors import AvflowError, MediaWarning, Note

D = 1.28  # seconds per clip in the media tests: 10 CLIP frames, 32 Synchformer frames (3 segments)


# ---------------------------------------------------------------------------------------------------------------
# tiny media and encoders


def write_clip(path: Path, video_s: float, audio_s: float, fps: int = 25, sr: int = 16000) -> Path:
    """An mp4 whose h264 video and AAC audio last video_s and audio_s seconds (PyAV: either may be shorter)."""
    import av

    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = out.add_stream("aac", rate=sr, layout="mono")
        for k in range(round(video_s * fps)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = k
            out.mux(v.encode(frame))
        out.mux(v.encode())
        samples = (0.1 * rng.standard_normal((1, round(audio_s * sr)))).astype(np.float32)
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i : i + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sr, i
            out.mux(a.encode(frame))
        out.mux(a.encode())
    return path


def write_wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    from avflow.data.media import write_audio

    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    return write_audio(path, (0.1 * rng.standard_normal((1, round(seconds * sr)))).astype(np.float32), sr)


def tiny_parts(fixtures: Path):
    """(Encoders, AudioVAE, MelSpectrogram) of the tiny test encoders and the 16 kHz VAE fixture."""
    from avflow.codecs.audio_vae import AudioVAE, AudioVAEConfig
    from avflow.codecs.mel import MEL_16K, MelSpectrogram
    from avflow.encoders.clip import CLIP
    from avflow.encoders.features import Encoders
    from avflow.encoders.synchformer import Synchformer

    root = fixtures / "mmaudio" / "vae_tiny_16k"
    vae = AudioVAE.from_file(
        root.with_suffix(".weights.safetensors"), AudioVAEConfig(**constructor(root.with_suffix(".json")))
    )
    encoders = Encoders(randomize_(CLIP(TINY_CLIP), 3).eval(), randomize_(Synchformer(TINY_SYNC), 2).eval())
    return encoders, vae, MelSpectrogram(MEL_16K)


# ---------------------------------------------------------------------------------------------------------------
# 1 + 5: clip lengths


def test_a_video_shorter_than_the_duration_fails_its_clip_not_the_whole_cache(fixtures, tmp_path):
    encoders, vae, mel = tiny_parts(fixtures)
    write_clip(tmp_path / "shortvideo.mp4", 0.8, 1.6)  # audio long enough: was cached with fewer clip_f/sync_f rows
    write_clip(tmp_path / "full.mp4", D + 0.04, D + 0.02)
    records = [ClipRecord(n, "x", video=tmp_path / f"{n}.mp4") for n in ("full", "shortvideo")]
    with pytest.warns(UserWarning, match="1 clips failed"):
        summary = build_cache(tmp_path / "cache", records, MediaExtractor(encoders, vae, mel, duration=D), "abc")
    assert summary.failed == [("shortvideo", f"{tmp_path / 'shortvideo.mp4'}: video shorter than {D} s (0.80 s)")]
    assert FeatureCache(tmp_path / "cache").ids == ["full"]  # the cache opens


def test_a_little_short_clip_is_padded_and_a_long_one_cut_and_counted(fixtures, tmp_path):
    from avflow.commands.cache import video_lengths

    encoders, vae, mel = tiny_parts(fixtures)
    lengths = video_lengths(encoders, D)
    assert lengths == {"clip_f": 10, "sync_f": 3 * TINY_SYNC.temporal_resolution}
    media = tmp_path / "media"
    media.mkdir()
    write_clip(media / "shortvideo.mp4", 0.8, 1.6)  # video 0.8 s, audio long enough: was cached with fewer rows
    write_clip(media / "full.mp4", D + 0.04, D + 0.02)  # frames up to D: whole
    write_clip(media / "frameshort.mp4", D - 0.04, D + 0.02)  # one frame short: a Synchformer segment short
    write_clip(media / "long.mp4", 2.0, 2.0)
    write_clip(media / "video.mp4", D + 0.04, D + 0.02)
    write_wav(media / "aacshort.wav", D - 0.03)  # 30 ms short, as AAC's end can be
    records = [
        ClipRecord("shortvideo", "a", video=media / "shortvideo.mp4"),
        ClipRecord("full", "b", video=media / "full.mp4"),
        ClipRecord("frameshort", "c", video=media / "frameshort.mp4"),
        ClipRecord("long", "d", video=media / "long.mp4"),
        ClipRecord("aacshort", "e", video=media / "video.mp4", audio=media / "aacshort.wav"),
    ]
    extract = MediaExtractor(encoders, vae, mel, duration=D, lengths=lengths)
    with pytest.warns(MediaWarning, match="1 clips failed"):
        summary = build_cache(tmp_path / "cache", records, extract, "abc")
    assert summary.failed == [("shortvideo", f"{media / 'shortvideo.mp4'}: video shorter than {D} s (0.80 s)")]
    cache = FeatureCache(tmp_path / "cache")  # every clip has the same shapes: the cache opens
    assert cache.ids == ["aacshort", "frameshort", "full", "long"]
    assert cache.streams["clip_f"] == (10, 16) and cache.streams["sync_f"] == (lengths["sync_f"], 32)
    padded = cache.load("frameshort")
    assert torch.equal(padded["clip_f"][-1], padded["clip_f"][-2])  # the last frame repeated
    per = TINY_SYNC.temporal_resolution
    assert torch.equal(padded["sync_f"][-per:], padded["sync_f"][-2 * per : -per])  # the last segment repeated
    assert sorted(extract.padded) == ["aacshort", "frameshort"] and extract.longer == ["long"]
    assert extract.notes() == (
        f"1 clips longer than {D} s: their first {D} s used; 2 clips up to 0.05 s shorter than {D} s: padded "
        "(audio with silence, video with its last frame)"
    )
    # more than the tolerance short: the clip fails, audio or video
    write_wav(media / "short.wav", D - 0.1)
    with pytest.raises(AvflowError, match=rf"short.wav: audio shorter than {D} s \(1.18 s\)"):
        extract(ClipRecord("s", None, audio=media / "short.wav"))


def _fake_weights(tmp_path: Path) -> list[str]:
    args = []
    for flag in ("--clip-weights", "--synchformer-weights", "--vae-weights"):
        p = tmp_path / f"{flag.strip('-')}.pth"
        p.write_bytes(flag.encode())
        args += [flag, str(p)]
    return args


def test_cli_build_lists_failed_clips_in_one_note_and_says_what_it_cut_or_padded(fixtures, tmp_path, capsys,
                                                                                   monkeypatch):  # fmt: skip
    from avflow.cli import main
    from avflow.codecs.audio_vae import AudioVAE
    from avflow.encoders.features import Encoders

    encoders, vae, _ = tiny_parts(fixtures)
    monkeypatch.setattr(Encoders, "from_pretrained", classmethod(lambda cls, *a, **k: encoders))
    monkeypatch.setattr(AudioVAE, "from_file", classmethod(lambda cls, *a, **k: vae))
    media = tmp_path / "media"
    media.mkdir()
    write_clip(media / "shortvideo.mp4", 0.8, 1.6)
    write_clip(media / "long.mp4", 2.0, 2.0)
    write_wav(media / "pad.wav", D - 0.03)
    write_wav(media / "tiny.wav", 0.5)
    table = tmp_path / "t.csv"
    table.write_text("file,caption\nshortvideo.mp4,a\nlong.mp4,b\npad.wav,c\ntiny.wav,d\n")
    out = tmp_path / "cache"
    args = ["cache", "build", str(out), "--source", "captions", "--table", str(table), "--media", str(media),
            *_fake_weights(tmp_path), "--duration", str(D), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    got = capsys.readouterr()
    failed = out / "failed.tsv"
    assert f"2 extracted, 0 already cached, 2 failed (listed in {failed})" in got.out
    assert f"1 clips longer than {D} s: their first {D} s used; 1 clips up to 0.05 s shorter" in got.out
    assert "Traceback" not in got.err and "UserWarning" not in got.err
    notes = [line for line in got.err.splitlines() if "failed" in line]
    assert len(notes) == 1 and notes[0].startswith("avflow cache: note: ") and f"all listed in {failed}" in notes[0]
    rows = [line.split("\t") for line in failed.read_text().splitlines()]
    assert rows[0] == ["id", "file", "reason"]
    assert [(r[0], Path(r[1]).name) for r in rows[1:]] == [("shortvideo", "shortvideo.mp4"), ("tiny", "tiny.wav")]
    assert "video shorter than" in rows[1][2] and "audio shorter than" in rows[2][2]
    assert main(["cache", "info", str(out)]) == 0  # the short video did not break the cache
    assert "2 clips" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# 2: rebuilds see edits, removed clips, --overwrite


def caption_extractor(version: float = 0.0):
    """Streams that depend on the caption and on `version` (the weights of a fake extractor)."""
    calls = []

    def extract(record) -> dict[str, torch.Tensor]:
        calls.append(record.id)
        value = zlib.crc32(f"{record.caption}".encode()) % 1000 + version
        return {"audio": torch.full((4, 2), float(value)), "text_f": torch.full((3, 2), float(value))}

    extract.calls = calls
    return extract


def value(cache: FeatureCache, clip_id: str) -> float:
    return float(cache.load(clip_id)["audio"][0, 0])


def test_rebuild_extracts_clips_whose_caption_or_file_changed(tmp_path):
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"one")
    records = [*recs(3), ClipRecord("file", "f", audio=wav)]
    build_cache(tmp_path / "c", records, caption_extractor(), "abc", shard_size=2)
    edited = [ClipRecord("c001", "a new caption"), *recs(3)[::2], ClipRecord("file", "f", audio=wav)]
    again = caption_extractor()
    summary = build_cache(tmp_path / "c", edited, again, "abc", shard_size=2)
    assert again.calls == ["c001"] and (summary.written, summary.changed, summary.skipped) == (1, 1, 3)
    assert "1 changed since cached" in summary.line()
    cache = FeatureCache(tmp_path / "c")
    assert value(cache, "c001") == zlib.crc32(b"a new caption") % 1000  # the new copy, not the old one
    assert cache.ids == ["c000", "c001", "c002", "file"]
    wav.write_bytes(b"replaced")  # another size: the source file changed
    again = caption_extractor()
    build_cache(tmp_path / "c", edited, again, "abc", shard_size=2)
    assert again.calls == ["file"]
    # a shard all of whose clips were extracted again (now or before) is deleted
    for name in ("c000", "c002"):
        edited = [ClipRecord(name, "edited") if r.id == name else r for r in edited]
        build_cache(tmp_path / "c", edited, caption_extractor(), "abc", shard_size=2)
    cache = FeatureCache(tmp_path / "c")
    assert len(cache) == 4 and value(cache, "c000") == value(cache, "c002") == zlib.crc32(b"edited") % 1000
    shards = sorted((tmp_path / "c").glob("shard_*"))
    assert len(shards) == 4 and all(any(cache.where[i] == p for i in json.loads(_meta(p)["ids"])) for p in shards)

    # a changed clip that now fails is left out: its cached features are of the old caption or file
    def broken(record):
        if record.id == "c001":
            raise AvflowError("unreadable")
        return caption_extractor()(record)

    edited = [ClipRecord("c001", "edited again") if r.id == "c001" else r for r in edited]
    with pytest.warns(MediaWarning, match="1 clips failed"):
        build_cache(tmp_path / "c", edited, broken, "abc", shard_size=2)
    assert FeatureCache(tmp_path / "c").ids == ["c000", "c002", "file"]
    edited = [ClipRecord("c000", "edited twice") if r.id == "c000" else r for r in edited]
    with pytest.warns(MediaWarning, match="1 clips failed"):  # compaction keeps the shard that drops c001
        build_cache(tmp_path / "c", edited, broken, "abc", shard_size=2)
    assert FeatureCache(tmp_path / "c").ids == ["c000", "c002", "file"]
    again = caption_extractor()
    build_cache(tmp_path / "c", edited, again, "abc", shard_size=2)
    assert again.calls == ["c001"] and len(FeatureCache(tmp_path / "c")) == 4


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_clips_removed_from_the_table_are_left_out_with_a_note(tmp_path, capsys):
    from avflow.cli import main
    from avflow.train.mmaudio_recipe import MixtureConfig, MMAudioMixture

    build_cache(tmp_path, recs(4), extractor(), "abc", shard_size=2)
    with pytest.warns(Note, match="2 cached clips are no longer in the table: left out"):
        summary = build_cache(tmp_path, recs(2), extractor(), "abc")
    assert (summary.removed, summary.written, summary.skipped) == (2, 0, 2)
    cache = FeatureCache(tmp_path)
    assert cache.ids == ["c000", "c001"] and cache.left_out == ["c002", "c003"] and len(cache) == 2
    mix = MMAudioMixture(MixtureConfig(sources={str(tmp_path): 1.0}, size=8))
    assert {mix.caches[0].ids[i] for i in range(2)} == {"c000", "c001"}  # training sees the table's clips only
    assert main(["cache", "info", str(tmp_path)]) == 0
    assert "2 clips," in (out := capsys.readouterr().out) and "2 cached clips left out" in out
    back = extractor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note: nothing is left out
        build_cache(tmp_path, recs(4), back, "abc")
    assert back.calls == [] and len(FeatureCache(tmp_path)) == 4  # back in the table: cached already


def test_overwrite_extracts_everything_and_an_interrupted_one_leaves_the_old_cache(tmp_path):
    build_cache(tmp_path, recs(4), caption_extractor(), "abc", shard_size=2)
    redo = caption_extractor(0.5)
    summary = build_cache(tmp_path, recs(4), redo, "abc", shard_size=2, overwrite=True)
    assert (summary.written, summary.skipped) == (4, 0) and len(redo.calls) == 4
    assert value(FeatureCache(tmp_path), "c000") % 1 == 0.5
    assert len(list(tmp_path.glob("shard_*"))) == 2

    # stopped after one of two shards (a crash): the cache is still the old one, whole; no mix of old and new
    build_cache(tmp_path, recs(4), caption_extractor(0.25), "abc", shard_size=2, overwrite=True, stop_after=1)
    cache = FeatureCache(tmp_path)
    assert len(cache) == 4 and {value(cache, i) % 1 for i in cache.ids} == {0.5}
    done = build_cache(tmp_path, recs(4), caption_extractor(0.25), "abc", shard_size=2, overwrite=True)
    assert (done.written, done.skipped) == (2, 2)  # the rerun goes on
    cache = FeatureCache(tmp_path)
    assert {value(cache, i) % 1 for i in cache.ids} == {0.25} and len(list(tmp_path.glob("shard_*"))) == 2
    assert not list(tmp_path.glob(".overwrite_*"))

    # other settings too, under torchrun: the cache switches once the last rank has finished
    s2 = {"duration": 2.0}
    build_cache(tmp_path, recs(5), caption_extractor(0.75), "abc", settings=s2, overwrite=True, rank=1, world_size=2)
    cache = FeatureCache(tmp_path)
    assert cache.settings == {} and {value(cache, i) % 1 for i in cache.ids} == {0.25}
    build_cache(tmp_path, recs(5), caption_extractor(0.75), "abc", settings=s2, overwrite=True, rank=0, world_size=2)
    cache = FeatureCache(tmp_path)
    assert cache.settings == s2 and len(cache) == 5 and {value(cache, i) % 1 for i in cache.ids} == {0.75}


def test_shards_of_an_older_avflow_are_kept_and_re_extracted_only_with_overwrite(tmp_path):
    build_cache(tmp_path, recs(3), caption_extractor(), "abc")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("generation", "removed"):
        del manifest[key]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for shard in tmp_path.glob("shard_*.safetensors"):  # what an older avflow wrote: no hashes, no generation
        meta = {k: v for k, v in _meta(shard).items() if k in ("ids", "weights_checksum", "extractor", "settings")}
        save_file(load_file(shard), shard, metadata=meta)
    edited = [ClipRecord("c000", "edited"), *recs(3)[1:]]
    again = caption_extractor()
    with pytest.warns(Note, match="3 cached clips were built by an older avflow.*--overwrite extracts every clip"):
        summary = build_cache(tmp_path, edited, again, "abc")
    assert again.calls == [] and summary.unknown == 3
    again = caption_extractor()
    build_cache(tmp_path, edited, again, "abc", overwrite=True)
    assert again.calls == ["c000", "c001", "c002"]
    assert value(FeatureCache(tmp_path), "c000") == zlib.crc32(b"edited") % 1000


# ---------------------------------------------------------------------------------------------------------------
# 3 + 4: failed clips, builds that extract nothing


def test_failed_clips_are_listed_in_failed_tsv_per_rank(tmp_path):
    bad = ClipRecord("bad\tid", "y", audio=tmp_path / "missing.wav")
    records = [ClipRecord("ok", "x"), bad]

    def extract(record):
        if record.audio is not None:
            raise AvflowError(f"{record.audio}: unreadable\nsecond line")
        return {"audio": torch.zeros(2, 2)}

    with pytest.warns(MediaWarning, match=r"1 clips failed and were skipped \(first: bad\tid: .*missing.wav: "
                                          r"unreadable\); all listed in .*failed.tsv$"):  # fmt: skip
        summary = build_cache(tmp_path, records, extract, "abc")
    assert summary.failed_list == tmp_path / "failed.tsv"
    rows = (tmp_path / "failed.tsv").read_text().splitlines()
    assert rows == ["id\tfile\treason", f"bad id\t{tmp_path / 'missing.wav'}\t{tmp_path / 'missing.wav'}: unreadable"]
    build_cache(tmp_path, records[:1], extract, "abc")  # a build where none failed: the old list goes
    assert not (tmp_path / "failed.tsv").exists()
    with pytest.warns(MediaWarning, match="failed_r0001.tsv"):
        build_cache(tmp_path / "r", [ClipRecord("a"), records[0], ClipRecord("b"), bad], extract, "abc", rank=1,
                    world_size=2)  # fmt: skip
    assert (tmp_path / "r" / "failed_r0001.tsv").is_file() and not (tmp_path / "r" / "failed.tsv").exists()


def test_a_build_that_extracts_nothing_leaves_no_manifest(tmp_path):
    out = tmp_path / "cache"
    with pytest.raises(AvflowError, match=r"all 3 clips failed \(first: .*all listed in .*failed.tsv\); nothing"):
        build_cache(out, recs(3), extractor(fail=True), "abc", settings={"duration": 8.0})
    assert not (out / "manifest.json").exists()
    with pytest.raises(AvflowError, match="no feature cache here"):
        FeatureCache(out)
    ok = build_cache(out, recs(3), extractor(), "abc", settings={"duration": 2.0})  # the corrected rerun
    assert ok.written == 3 and FeatureCache(out).settings == {"duration": 2.0}

    # Ctrl-C before the first shard: nothing left behind, and the folder it made is gone
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        build_cache(fresh, recs(3), extractor(interrupt_at=0), "abc", settings={"duration": 8.0})
    assert not fresh.exists()
    assert build_cache(fresh, recs(3), extractor(), "abc", settings={"duration": 2.0}).written == 3
