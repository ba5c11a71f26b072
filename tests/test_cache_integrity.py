"""Feature-cache integrity: streams over every clip, extraction settings in the manifest, --overwrite that cannot
destroy a cache, damaged shards, caption tables, Ctrl-C during a build."""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import pytest
import torch

from avflow.data.cache import FeatureCache, build_cache
from avflow.data.datasets import ClipRecord, read_captions
from avflow.errors import AvflowError
from avflow.train.mmaudio_recipe import MixtureConfig, MMAudioMixture

FULL = {"audio": (31, 20), "clip_f": (8, 16), "sync_f": (16, 32), "text_f": (7, 16)}
AUDIO_ONLY = {"audio": (31, 20), "text_f": (7, 16)}


def extractor(shapes=FULL, audio_only: set[str] = frozenset(), fail: bool = False, interrupt_at: int | None = None):
    calls = []

    def extract(record) -> dict[str, torch.Tensor]:
        calls.append(record.id)
        if interrupt_at is not None and len(calls) > interrupt_at:
            raise KeyboardInterrupt
        if fail:
            raise AvflowError(f"{record.id}: shorter than 8.0 s")
        out = {}
        for name, shape in (AUDIO_ONLY if record.id in audio_only else shapes).items():
            g = torch.Generator().manual_seed(zlib.crc32(f"{record.id}/{name}".encode()))
            out[name] = torch.randn(shape, generator=g)
        return out

    extract.calls = calls
    return extract


def recs(n: int, prefix: str = "c") -> list[ClipRecord]:
    return [ClipRecord(f"{prefix}{i:03d}", caption=f"caption {i}") for i in range(n)]


def test_streams_are_the_union_over_all_clips_and_shapes_must_agree(tmp_path, capsys):
    from avflow.cli import main

    # the first clip (sorted) has no video: its streams must not decide those of the cache
    build_cache(tmp_path / "c", recs(4), extractor(audio_only={"c000"}), "abc", shard_size=2)
    cache = FeatureCache(tmp_path / "c")
    assert cache.streams == {"audio": (31, 20), "clip_f": (8, 16), "sync_f": (16, 32), "text_f": (7, 16)}
    mix = MMAudioMixture(MixtureConfig(sources={str(tmp_path / "c"): 1.0}, size=40))
    items = [mix[i] for i in range(40)]
    video = [it for it in items if it["cond"]["has_video"] == 1]
    assert video and all(it["cond"]["clip_f"].abs().sum() > 0 for it in video)
    assert all(it["cond"]["clip_f"].shape == (8, 16) for it in items)  # the audio-only clip gets empty features
    assert main(["cache", "info", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "4 clips, streams audio, clip_f, sync_f, text_f, weights abc" in out and "clip_f 3/4" in out

    # clips of other shapes (another --duration) in one cache: one line at load, naming a clip and both shapes
    build_cache(tmp_path / "m", recs(2), extractor(), "abc")
    build_cache(tmp_path / "m", recs(4), extractor({**FULL, "audio": (62, 20)}), "abc")
    with pytest.raises(AvflowError, match=r"stream 'audio' of clip 'c00[23]' has shape \(62, 20\).*\(31, 20\)"):
        MMAudioMixture(MixtureConfig(sources={str(tmp_path / "m"): 1.0}, size=4))
    assert main(["cache", "info", str(tmp_path / "m")]) == 2
    assert "(62, 20)" in capsys.readouterr().err
    # and across two caches of a mixture
    build_cache(tmp_path / "d", recs(2, "d"), extractor({**FULL, "audio": (62, 20)}), "abc")
    with pytest.raises(AvflowError, match=r"stream 'audio' of clip 'd000'.*\(62, 20\).*\(31, 20\)"):
        MMAudioMixture(MixtureConfig(sources={str(tmp_path / "c"): 1.0, str(tmp_path / "d"): 1.0}, size=4))


def test_manifest_records_extraction_settings_and_extractor(tmp_path):
    s8 = {"mode": "16k", "duration": 8.0}
    build_cache(tmp_path, recs(2), extractor(), "abc", extractor_name="mmaudio-16k", settings=s8)
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"] == s8
    with pytest.raises(AvflowError, match="duration 8.0.*duration 4.0.*--overwrite"):
        build_cache(tmp_path, recs(2), extractor(), "abc", extractor_name="mmaudio-16k",
                    settings={"mode": "16k", "duration": 4.0})  # fmt: skip
    with pytest.raises(AvflowError, match="extractor 'mmaudio-16k'.*'mmaudio-44k'.*--overwrite"):
        build_cache(tmp_path, recs(2), extractor(), "abc", extractor_name="mmaudio-44k", settings=s8)
    again = build_cache(tmp_path, recs(3), extractor(), "abc", extractor_name="mmaudio-16k", settings=s8)
    assert (again.written, again.skipped) == (1, 2)
    s4 = {"mode": "16k", "duration": 4.0}
    redo = build_cache(tmp_path, recs(3), extractor({**FULL, "audio": (16, 20)}), "abc", extractor_name="mmaudio-16k",
                       settings=s4, overwrite=True)  # fmt: skip
    assert (redo.written, redo.skipped) == (3, 0)
    cache = FeatureCache(tmp_path)
    assert cache.settings == s4 and cache.streams["audio"] == (16, 20) and len(cache) == 3

    # a manifest from an older avflow (no settings): accepted with a note
    old = tmp_path / "old"
    build_cache(old, recs(2), extractor(), "abc", extractor_name="mmaudio-16k")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["settings"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for shard in old.glob("shard_*.safetensors"):  # and shards with only ids and checksum in their metadata
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(shard), framework="pt") as f:
            meta = f.metadata()
        save_file(load_file(shard), shard, metadata={k: meta[k] for k in ("ids", "weights_checksum")})
    with pytest.warns(UserWarning, match="does not record its extraction settings"):
        more = build_cache(old, recs(3), extractor(), "abc", extractor_name="mmaudio-16k", settings=s8)
    assert (more.written, more.skipped) == (1, 2) and len(FeatureCache(old)) == 3


def test_overwrite_keeps_the_old_cache_until_the_new_one_is_written(tmp_path):
    build_cache(tmp_path, recs(4), extractor(), "old", shard_size=2)
    # every clip fails (e.g. shorter than --duration): an error, the old cache untouched
    with pytest.raises(AvflowError, match="all 4 clips failed.*old cache is kept"):
        build_cache(tmp_path, recs(4), extractor(fail=True), "new", overwrite=True)
    assert len(FeatureCache(tmp_path, "old")) == 4
    # no records at all: an error before anything is touched
    with pytest.raises(AvflowError, match="no clips to extract"):
        build_cache(tmp_path, [], extractor(), "new", overwrite=True)
    assert len(FeatureCache(tmp_path, "old")) == 4
    # a rebuild stopped half-way (a crash) keeps the old shards; the rerun finishes and removes them
    build_cache(tmp_path, recs(4), extractor(), "new", shard_size=2, overwrite=True, stop_after=1)
    assert len(list(tmp_path.glob("shard_*.safetensors"))) == 3
    done = build_cache(tmp_path, recs(4), extractor(), "new", shard_size=2, overwrite=True)
    assert (done.written, done.skipped) == (2, 2)
    assert FeatureCache(tmp_path, "new").ids == [r.id for r in recs(4)]
    assert len(list(tmp_path.glob("shard_*.safetensors"))) == 2


def _fake_weights(tmp_path: Path) -> list[str]:
    args = []
    for flag in ("--clip-weights", "--synchformer-weights", "--vae-weights"):
        p = tmp_path / f"{flag.strip('-')}.pth"
        p.write_bytes(b"not really weights")
        args += [flag, str(p)]
    return args


def test_cli_build_checks_records_and_settings_before_loading_models(tmp_path, capsys, monkeypatch):
    from avflow.cli import main
    from avflow.data.cache import weights_checksum
    from avflow.encoders import features

    def no_models(*a, **k):
        raise AssertionError("models loaded")

    monkeypatch.setattr(features.Encoders, "from_pretrained", no_models)
    weights = _fake_weights(tmp_path)
    out = tmp_path / "cache"
    checksum = weights_checksum(*weights[1::2])
    build_cache(out, recs(2), extractor(), checksum, extractor_name="mmaudio-16k",
                settings={"mode": "16k", "duration": 8.0})  # fmt: skip
    media = tmp_path / "media"
    media.mkdir()
    (media / "x.wav").write_bytes(b"\0")
    table = tmp_path / "t.tsv"
    table.write_text("missing.wav\tdog\n")  # a typo: no usable row
    base = ["cache", "build", str(out), "--source", "captions", "--table", str(table), "--media", str(media)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*base, *weights, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "no usable clips" in err and "unchanged" in err and "Traceback" not in err
    assert len(FeatureCache(out, checksum)) == 2
    table.write_text("x.wav\tdog\n")
    assert main([*base, *weights, "--duration", "4"]) == 2
    err = capsys.readouterr().err
    assert "duration 8.0" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_damaged_shard_is_one_line_and_a_rebuild_recovers(tmp_path, capsys):
    from avflow.cli import main

    build_cache(tmp_path, recs(4), extractor(), "abc", shard_size=2)
    shard = sorted(tmp_path.glob("shard_*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated (disk full, killed copy)
    with pytest.raises(AvflowError, match=f"{shard.name}: damaged cache shard.*delete it and rerun"):
        FeatureCache(tmp_path)
    assert main(["cache", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "damaged cache shard" in err and len(err.strip().splitlines()) == 1
    with pytest.warns(UserWarning, match="moved aside"):
        again = build_cache(tmp_path, recs(4), extractor(), "abc", shard_size=2)
    assert (again.written, again.skipped) == (2, 2)
    assert FeatureCache(tmp_path).ids == [r.id for r in recs(4)]
    assert (tmp_path / f"{shard.name}.damaged").is_file()


def test_captions_tsv_keeps_quotes_and_reports_duplicate_ids(tmp_path):
    media = tmp_path / "media"
    for sub in ("a", "b"):
        (media / sub).mkdir(parents=True)
        (media / sub / "x.wav").write_bytes(b"\0")
    for name in ("q.wav", "r.wav"):
        (media / name).write_bytes(b"\0")
    table = tmp_path / "caps.tsv"
    table.write_text('q.wav\t"Quoted" dog barks\nr.wav\train\na/x.wav\tbird\nb/x.wav\tcat\n')
    with pytest.warns(UserWarning, match="1 bad rows"):
        got, report = read_captions(table, media)
    assert [(r.id, r.caption) for r in got] == [("q", '"Quoted" dog barks'), ("r", "rain"), ("x", "bird")]
    assert report.bad_rows[0][0] == 4 and "already used on line 3" in report.bad_rows[0][1]


def test_ctrl_c_during_a_build_keeps_the_clips_extracted_so_far(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build_cache(tmp_path, recs(10), extractor(interrupt_at=3), "abc", shard_size=100)
    assert FeatureCache(tmp_path).ids == ["c000", "c001", "c002"]
    rest = build_cache(tmp_path, recs(10), extractor(), "abc", shard_size=100)
    assert (rest.written, rest.skipped) == (7, 3)
