"""Data at scale: feature caches, dataset readers, the MMAudio recipe, official-layout fine-tuning, FSDP2."""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from helpers import run_train

from avflow.data.cache import FeatureCache, StaleCacheError, build_cache, weights_checksum
from avflow.data.datasets import (
    CachedFeatures,
    ClipRecord,
    read_audiocaps,
    read_captions,
    read_vggsound,
    read_world,
)
from avflow.errors import AvflowError
from avflow.models.mmaudio import build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import MMAudioConfig
from avflow.train.mmaudio_recipe import (
    MixtureConfig,
    MMAudioMixture,
    MMAudioRecipe,
    MMAudioRecipeConfig,
    binomial_tolerance,
    export_official,
)

REPO = Path(__file__).resolve().parents[1]
# Shapes of the `network_tiny_v1` fixture network (latent 50 x 20, clip 16 x 32, sync 48 x 24, text 7 x 16).
TINY = {"audio": (50, 20), "clip_f": (16, 32), "sync_f": (48, 24), "text_f": (7, 16)}


def tiny_extractor(streams=TINY, fail: set[str] = frozenset()):
    """A random extractor: each stream a fixed function of (clip id, stream name)."""

    def extract(record) -> dict[str, torch.Tensor]:
        if record.id in fail:
            raise AvflowError(f"{record.id}: unreadable")
        out = {}
        for name, shape in streams.items():
            g = torch.Generator().manual_seed(zlib.crc32(f"{record.id}/{name}".encode()))
            out[name] = torch.randn(shape, generator=g)
        return out

    return extract


def records(n: int, prefix: str = "clip") -> list[ClipRecord]:
    return [ClipRecord(f"{prefix}{i:03d}", caption=f"caption {i}") for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# caches


def test_cache_round_trip_and_staleness(tmp_path):
    model = torch.nn.Linear(3, 2)
    checksum = weights_checksum(model)
    summary = build_cache(tmp_path, records(5), tiny_extractor(), checksum, shard_size=2)
    assert (summary.written, summary.skipped, summary.shards) == (5, 0, 3)
    cache = FeatureCache(tmp_path, expected_checksum=checksum)
    assert cache.ids == [r.id for r in records(5)]
    expected = tiny_extractor()(records(5)[3])
    got = cache.load("clip003")
    assert set(got) == set(TINY)
    for name in TINY:
        assert torch.equal(got[name], expected[name])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["weights_checksum"] == checksum

    with torch.no_grad():
        model.weight.add_(1e-3)  # other encoder weights: another checksum
    stale = weights_checksum(model)
    assert stale != checksum
    with pytest.raises(StaleCacheError, match="stale feature cache") as err:
        FeatureCache(tmp_path, expected_checksum=stale)
    assert "\n" not in str(err.value)
    with pytest.raises(StaleCacheError):
        build_cache(tmp_path, records(5), tiny_extractor(), stale)
    rebuilt = build_cache(tmp_path, records(2), tiny_extractor(), stale, overwrite=True)
    assert rebuilt.written == 2 and FeatureCache(tmp_path, stale).ids == ["clip000", "clip001"]


def test_extraction_resumes_and_splits_across_ranks(tmp_path):
    calls = []
    extract = tiny_extractor(fail={"clip004"})

    def counting(record):
        calls.append(record.id)
        return extract(record)

    # A run "killed" after its first shard, then resumed: only the remaining ids are extracted.
    first = build_cache(tmp_path, records(7), counting, "abc", shard_size=2, stop_after=1)
    assert first.written == 2 and len(list(tmp_path.glob("shard_*"))) == 1
    calls.clear()
    with pytest.warns(UserWarning, match="1 clips failed"):
        second = build_cache(tmp_path, records(7), counting, "abc", shard_size=2)
    assert calls == ["clip002", "clip003", "clip004", "clip005", "clip006"]
    assert (second.skipped, second.written, [i for i, _ in second.failed]) == (2, 4, ["clip004"])
    assert len(FeatureCache(tmp_path)) == 6

    # Two ranks of a torchrun extraction take disjoint slices and together cover every id.
    par = tmp_path / "parallel"
    for rank in (1, 0):
        build_cache(par, records(9), tiny_extractor(), "abc", shard_size=4, rank=rank, world_size=2)
    names = sorted(p.name for p in par.glob("shard_*"))
    assert any(n.startswith("shard_r0000_") for n in names) and any(n.startswith("shard_r0001_") for n in names)
    assert FeatureCache(par).ids == [r.id for r in records(9)]
    assert not list(par.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_cached_features_dataset_and_cli_info(tmp_path, capsys):
    from avflow.cli import main

    build_cache(tmp_path, records(3), tiny_extractor(), "abc")
    assert main(["cache", "info", str(tmp_path)]) == 0
    assert "3 clips, streams audio, clip_f, sync_f, text_f, weights abc" in capsys.readouterr().out
    assert main(["cache", "info", str(tmp_path / "none")]) == 2
    assert "no feature cache here" in capsys.readouterr().err
    ds = CachedFeatures(tmp_path)
    item = ds[1]
    assert set(item["streams"]) == {"audio"} and set(item["cond"]) == {"clip_f", "sync_f", "text_f"}
    assert item["streams"]["audio"].shape == TINY["audio"]


# ---------------------------------------------------------------------------------------------------------------
# readers


def test_vggsound_reader_reports_bad_rows_and_missing_files(tmp_path):
    media = tmp_path / "video"
    media.mkdir()
    for name in ("aaa_000010.mp4", "bbb_000000.mp4"):
        (media / name).write_bytes(b"\0")
    table = tmp_path / "vggsound.csv"
    table.write_text(
        "aaa,10,dog barking,train\n"
        "bbb,0,rain,test\n"
        "ccc,30,missing clip,train\n"  # no file
        "ddd,abc,bad start,train\n"  # bad number
        "eee\n"  # too few fields
    )
    with pytest.warns(UserWarning, match="2 bad rows, 1 missing files"):
        recs, report = read_vggsound(table, media)
    assert [r.id for r in recs] == ["aaa_000010", "bbb_000000"] and recs[0].caption == "dog barking"
    assert (report.rows, report.kept, len(report.bad_rows), len(report.missing)) == (5, 2, 2, 1)
    assert [line for line, _ in report.bad_rows] == [4, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _ = read_vggsound(table, media, split="train")
    assert [r.id for r in train] == ["aaa_000010"]
    with pytest.raises(AvflowError, match="media folder not found"):
        read_vggsound(table, tmp_path / "nope")


def test_audiocaps_caption_and_world_readers(tmp_path):
    media = tmp_path / "audio"
    media.mkdir()
    (media / "91.wav").write_bytes(b"\0")
    (media / "Yxyz.wav").write_bytes(b"\0")
    table = tmp_path / "audiocaps.csv"
    table.write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "91,abc,30,A dog barks\n"
        "92,xyz,0,Wind blows\n"
        "93,nope,0,Missing file\n"
        "94,qqq,-5,Bad start\n"
    )
    with pytest.warns(UserWarning):
        recs, report = read_audiocaps(table, media)
    assert [(r.id, r.audio.name) for r in recs] == [("91", "91.wav"), ("92", "Yxyz.wav")]
    assert (report.kept, len(report.bad_rows), len(report.missing)) == (2, 1, 1)
    assert "2/4 rows kept" in report.summary()

    tsv = tmp_path / "captions.tsv"
    tsv.write_text("file\tcaption\n91.wav\tdog\nmissing.wav\tcat\nonlyone\n")
    with pytest.warns(UserWarning):
        recs, report = read_captions(tsv, media)
    assert [r.id for r in recs] == ["91"] and (len(report.bad_rows), len(report.missing)) == (1, 1)

    world = tmp_path / "world" / "train"
    world.mkdir(parents=True)
    for s in (".wav", ".npz", ".json"):
        (world / f"c0{s}").write_bytes(b"\0")
    (world / "c1.wav").write_bytes(b"\0")  # npz/json missing
    (world / "manifest.jsonl").write_text('{"id": "c0", "caption": "a ball"}\n{"id": "c1"}\nnot json\n')
    with pytest.warns(UserWarning):
        recs, report = read_world(tmp_path / "world", "train")
    assert [r.id for r in recs] == ["c0"] and recs[0].world == world / "c0"
    assert (report.rows, len(report.bad_rows), len(report.missing)) == (3, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# the recipe


def test_recipe_dropout_rates_are_independent_and_missing_modalities_are_empty():
    rates = {"clip": 0.1, "sync": 0.3, "text": 0.5}
    recipe = MMAudioRecipe(MMAudioRecipeConfig(clip_dropout=0.1, sync_dropout=0.3, text_dropout=0.5, video_dropout=0.0))
    n, b = 4000, 200
    drops = {k: [] for k in rates}
    ts = []
    for start in range(0, n, b):
        batch = {
            "streams": {"audio": torch.zeros(b, 2, 2)},
            "cond": {"has_video": torch.ones(b), "has_text": torch.ones(b)},
            "seed": torch.arange(start, start + b) * 7919 + 11,
        }
        out = recipe.prepare(batch, torch.device("cpu"))
        for k in rates:
            drops[k].append(out["drop"][k])
        ts.append(out["t"]["audio"])
    d = {k: torch.cat(v).float() for k, v in drops.items()}
    # Tolerance: 4 binomial standard deviations of a rate over n draws (false failure probability ~6e-5 each).
    for k, p in rates.items():
        assert abs(d[k].mean().item() - p) <= binomial_tolerance(n, p), (k, d[k].mean().item())
    both = (d["clip"] * d["text"]).mean().item()  # independence: P(clip and text) = 0.1 * 0.5
    assert abs(both - 0.05) <= binomial_tolerance(n, 0.05)
    t = torch.cat(ts)
    logit = torch.log(t / (1 - t))  # logit-normal(0, 1)
    assert abs(logit.mean().item()) < 0.1 and abs(logit.std().item() - 1.0) < 0.1

    batch = {
        "streams": {"audio": torch.zeros(4, 2, 2)},
        "cond": {"has_video": torch.tensor([0.0, 1, 1, 0]), "has_text": torch.tensor([1.0, 0, 1, 1])},
        "seed": torch.arange(4),
    }
    zero = MMAudioRecipe(MMAudioRecipeConfig(clip_dropout=0.0, sync_dropout=0.0, text_dropout=0.0, video_dropout=0.0))
    out = zero.prepare(batch, torch.device("cpu"))
    assert out["drop"]["clip"].tolist() == [True, False, False, True] == out["drop"]["sync"].tolist()
    assert out["drop"]["text"].tolist() == [False, True, False, False]


def test_mixture_follows_sampling_ratios_and_fills_missing_modalities(tmp_path):
    video = {k: v for k, v in TINY.items()}
    text_only = {"audio": TINY["audio"], "text_f": TINY["text_f"]}
    build_cache(tmp_path / "va", records(4, "v"), tiny_extractor(video), "abc")
    build_cache(tmp_path / "at", records(3, "a"), tiny_extractor(text_only), "abc")
    mix = MMAudioMixture(MixtureConfig(sources={str(tmp_path / "va"): 3.0, str(tmp_path / "at"): 1.0}, size=2000))
    n = len(mix)
    share = sum(mix.source_of(i)[0] == 0 for i in range(n)) / n
    assert abs(share - 0.75) <= binomial_tolerance(n, 0.75)
    i = next(i for i in range(n) if mix.source_of(i)[0] == 1)
    item = mix[i]
    assert item["cond"]["has_video"] == 0 and item["cond"]["has_text"] == 1
    assert item["cond"]["clip_f"].shape == TINY["clip_f"] and not item["cond"]["clip_f"].any()


def test_recipe_samples_the_vae_posterior_when_the_cache_has_its_std():
    recipe = MMAudioRecipe(MMAudioRecipeConfig())
    mean, std = torch.zeros(2, 3, 4), torch.full((2, 3, 4), 0.5)
    batch = {"streams": {"audio": mean}, "cond": {"audio_std": std}, "seed": torch.tensor([1, 2])}
    x = recipe.prepare(batch, torch.device("cpu"))["streams"]["audio"]
    assert 0.3 < x.std().item() < 0.7 and not torch.equal(x[0], x[1])
    batch["cond"]["audio_std"] = torch.zeros_like(std)
    assert torch.equal(recipe.prepare(batch, torch.device("cpu"))["streams"]["audio"], mean)


# ---------------------------------------------------------------------------------------------------------------
# fine-tuning an official checkpoint


def tiny_net(fixtures: Path):
    meta = json.loads((fixtures / "mmaudio" / "network_tiny_v1.json").read_text())
    return build_mmaudio(MMAudioConfig(**meta["constructor"])), meta["constructor"]


def test_finetune_from_official_layout_and_reload_strictly(fixtures, tmp_path):
    from avflow.train.config import load_train_config
    from avflow.train.trainer import train

    weights = fixtures / "mmaudio" / "network_tiny_v1.weights.safetensors"
    original, constructor = tiny_net(fixtures)
    load_official_state_dict(original, weights)
    build_cache(tmp_path / "va", records(8, "v"), tiny_extractor(), "abc")
    build_cache(
        tmp_path / "at", records(4, "a"), tiny_extractor({"audio": TINY["audio"], "text_f": TINY["text_f"]}), "abc"
    )
    overrides = [
        f"out_dir={tmp_path / 'run'}",
        f"model.args.init={weights}",
        f"model.args.overrides={json.dumps(constructor)}",
        f"data.train.args.sources={json.dumps({str(tmp_path / 'va'): 1.0, str(tmp_path / 'at'): 1.0})}",
        "data.train.args.size=16",
        "data.num_workers=0",
        "train.steps=3",
        "train.batch_size=4",
        "train.device=cpu",
        "optim.lr=1e-3",
        "task.args.clip_dropout=0.5",
        "log.tensorboard=false",
        "log.progress=false",
        "checkpoint.every=3",
    ]
    with pytest.raises(AvflowError, match="cache folder not found: caches/vggsound_train"):
        load_train_config(REPO / "configs" / "mmaudio_finetune.yaml")  # one line, before any work
    cfg = load_train_config(REPO / "configs" / "mmaudio_finetune.yaml", overrides)
    result = train(cfg)
    assert result.step == 3 and result.loss is not None and torch.isfinite(torch.tensor(result.loss))

    from safetensors.torch import load_file

    trained, _ = tiny_net(fixtures)
    load_official_state_dict(trained, load_file(tmp_path / "run" / "model.safetensors"))
    pth, st = export_official(trained, tmp_path / "finetuned")
    for path in (pth, st):
        reloaded, _ = tiny_net(fixtures)
        load_official_state_dict(reloaded, path)  # strict: every official key, nothing else
        for k, v in trained.state_dict().items():
            assert torch.equal(reloaded.state_dict()[k], v), k
    # The .pth holds exactly the official keys (the official `load_weights` does a strict load_state_dict).
    official_keys = set(load_file(weights))
    assert set(torch.load(pth, weights_only=True)) == official_keys
    changed = [k for k, v in original.state_dict().items() if not torch.equal(v, trained.state_dict()[k])]
    assert "empty_clip_feat" in changed and "audio_input_proj.0.weight" in changed
    assert "latent_mean" not in changed and "empty_string_feat" not in changed  # frozen, as in MMAudio


def test_official_key_layout_of_full_size_variant(fixtures):
    """Every exported key of small_16k is a key of the official checkpoint with the official shape."""
    spec = json.loads((fixtures / "mmaudio" / "official_state_dicts.json").read_text())["small_16k"]
    model = build_mmaudio("small_16k", device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = {k: v for k, v in spec["state_dict"].items() if k not in spec["config"]["ignorable_checkpoint_keys"]}
    assert ours == official


# ---------------------------------------------------------------------------------------------------------------
# FSDP2


FSDP_TOL = 1e-5  # max |param difference| between FSDP2 on 2 processes and 1 process after 4 AdamW steps


@pytest.mark.slow
def test_fsdp_two_cpu_processes_match_one_and_resume(tmp_path):
    streams = {"audio": [4, 3], "video": [2, 5]}
    cfg = {
        "out_dir": str(tmp_path / "one" / "run"),
        "model": {"name": "toy_flow", "args": {"streams": streams, "hidden": 16, "depth": 1, "num_classes": 3}},
        "task": {"name": "flow_matching", "args": {"cond_dropout": 0.25}},
        "data": {"train": {"name": "synthetic", "args": {"size": 40, "streams": streams, "num_classes": 3}}},
        "train": {"steps": 4, "batch_size": 8, "seed": 3, "device": "cpu", "threads": 1},
        "optim": {"lr": 1e-2, "grad_clip": 0.5},
        "ema": {"sigma_rels": [0.05]},
        "log": {"every": 2, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 2, "keep_last": 3},
    }
    one = run_train(cfg, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    cfg["out_dir"] = str(tmp_path / "two" / "run")
    cfg["distributed"] = {"strategy": "fsdp"}
    two = run_train(cfg, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one/run/checkpoints/step_00000004.pt", weights_only=True)
    b = torch.load(tmp_path / "two/run/checkpoints/step_00000004.pt", weights_only=True)
    worst = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    print(f"max |param difference| FSDP2 x2 vs 1 process: {worst:.3g}")
    assert worst <= FSDP_TOL
    ema_a, ema_b = a["ema"]["averages"][0], b["ema"]["averages"][0]
    assert max((ema_a[k] - ema_b[k]).abs().max().item() for k in ema_a) <= FSDP_TOL

    # Resume the sharded run from its step-2 checkpoint: ends where the uninterrupted sharded run did.
    ckpts = tmp_path / "two/run/checkpoints"
    (ckpts / "step_00000004.pt").rename(tmp_path / "full.pt")
    (ckpts / "step_00000004.json").unlink()
    again = run_train(cfg, tmp_path / "two", 2)
    assert again.returncode == 0, again.stderr[-3000:]
    c = torch.load(ckpts / "step_00000004.pt", weights_only=True)
    ref = torch.load(tmp_path / "full.pt", weights_only=True)
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], c["model"][k]), k


def test_media_extractor_builds_a_cache_from_mp4_and_wav(fixtures, tmp_path):
    """The real extractor path (read audio -> mel -> VAE; CLIP/Synchformer/text) on a tiny mp4 and a wav."""
    import numpy as np

    from avflow.codecs.audio_vae import AudioVAE, AudioVAEConfig
    from avflow.codecs.mel import MEL_16K, MelSpectrogram
    from avflow.data.cache import MediaExtractor
    from avflow.data.media import write_audio, write_video
    from avflow.encoders.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
    from avflow.encoders.features import Encoders
    from avflow.encoders.synchformer import Synchformer, SynchformerConfig

    gen = torch.Generator().manual_seed(0)
    clip = CLIP(
        CLIPConfig(
            embed_dim=16,
            vision=CLIPVisionConfig(width=32, layers=1, head_width=16),
            text=CLIPTextConfig(width=16, heads=1, layers=1),
        )
    )
    sync = Synchformer(SynchformerConfig(embed_dim=32, num_heads=2, depth=1))
    for p in [*clip.parameters(), *sync.parameters()]:
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    encoders = Encoders(clip.eval(), sync.eval(), window_s=0.5)
    root = fixtures / "mmaudio" / "vae_tiny_16k"
    vae = AudioVAE.from_file(
        root.with_suffix(".weights.safetensors"),
        AudioVAEConfig(**json.loads(root.with_suffix(".json").read_text())["constructor"]),
    )
    extractor = MediaExtractor(encoders, vae, MelSpectrogram(MEL_16K), duration=1.0)

    media = tmp_path / "media"
    media.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (26, 64, 64, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((1, 16000 * 26 // 25))).astype(np.float32)
    write_video(media / "vid_000000.mp4", frames, 25, audio, 16000)
    write_audio(media / "snd.wav", torch.from_numpy(audio[:, : 16000 + 800]), 16000)
    recs = [
        ClipRecord("vid", "a beep", video=media / "vid_000000.mp4"),
        ClipRecord("snd", "rain", audio=media / "snd.wav"),
        ClipRecord("bad", "x", audio=media / "missing.wav"),
    ]
    checksum = weights_checksum(vae, clip, sync)
    with pytest.warns(UserWarning, match="1 clips failed"):
        summary = build_cache(tmp_path / "cache", recs, extractor, checksum)
    assert summary.written == 2 and summary.failed[0][0] == "bad"
    cache = FeatureCache(tmp_path / "cache", checksum)
    vid, snd = cache.load("vid"), cache.load("snd")
    assert vid["audio"].shape == (31, 20) and vid["audio_std"].shape == (31, 20)  # 1 s: 62 mel frames -> 31 latents
    assert vid["clip_f"].shape == (8, 16) and vid["sync_f"].shape[1] == 32 and vid["text_f"].shape == (77, 16)
    assert set(snd) == {"audio", "audio_std", "text_f"}
