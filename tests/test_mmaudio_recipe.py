"""The MMAudio recipe as MMAudio trains: epoch coverage of the mixture, joint video CFG dropout, latent statistics
from the data, the step schedule and AdamW settings, post-hoc EMA profiles."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from avflow.config import from_dict
from avflow.data.cache import FeatureCache, build_cache
from avflow.data.datasets import ClipRecord
from avflow.errors import ConfigError
from avflow.models.mmaudio import build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import MMAudioConfig
from avflow.train.config import OptimConfig, ScheduleConfig, load_train_config
from avflow.train.datasets import SeededDataset, sample_seed
from avflow.train.mmaudio_recipe import (
    MixtureConfig,
    MMAudioMixture,
    MMAudioModelConfig,
    MMAudioRecipe,
    MMAudioRecipeConfig,
    binomial_tolerance,
    build_model,
)
from avflow.train.optim import build_optimizer, lr_factor
from avflow.train.sampler import ResumableBatchSampler

REPO = Path(__file__).resolve().parents[1]
# The `network_tiny_v1` fixture network's shape (latent 50 x 20, clip 16 x 32, sync 48 x 24, text 7 x 16).
NET = dict(latent_dim=20, clip_dim=32, sync_dim=24, text_dim=16, hidden_dim=64, depth=3, fused_depth=1, num_heads=1,
           latent_seq_len=50, clip_seq_len=16, sync_seq_len=48, text_seq_len=7, v2=False)  # fmt: skip
VIDEO = {"audio": (50, 20), "clip_f": (16, 32), "sync_f": (48, 24), "text_f": (7, 16)}
TEXT_ONLY = {"audio": (50, 20), "text_f": (7, 16)}
CPU = torch.device("cpu")


def cache(folder: Path, n: int, streams: dict, prefix: str, offset: float = 0.0, scale: float = 1.0) -> Path:
    """n clips with random streams (each a fixed function of clip id and stream); `audio` = offset_c + scale * N(0, 1)
    with a per-channel offset."""

    def extract(record):
        out = {}
        for name, shape in streams.items():
            g = torch.Generator().manual_seed(zlib.crc32(f"{record.id}/{name}".encode()))
            out[name] = torch.randn(shape, generator=g)
        channels = streams["audio"][1]
        out["audio"] = offset * torch.arange(channels) / channels + scale * out["audio"]
        return out

    build_cache(folder, [ClipRecord(f"{prefix}{i:03d}", caption="c") for i in range(n)], extract, "abc")
    return folder


def clip_ids(mix: MMAudioMixture, epoch: int) -> list[tuple[int, str]]:
    """(source, clip id) of every item of `epoch`, by item index."""
    return [(s, mix.caches[s].ids[j]) for s, j in (mix.source_of(i, epoch) for i in range(len(mix)))]


# ---------------------------------------------------------------------------------------------------------------
# 1. the mixture: every clip of a source once per epoch share, new orders, exact resume


def test_mixture_visits_every_clip_of_a_source_before_any_repeats(tmp_path):
    va = cache(tmp_path / "va", 6, VIDEO, "v")
    at = cache(tmp_path / "at", 4, TEXT_ONLY, "a")
    # weights = repeats x clips (video-audio twice, audio-text once an epoch), size = their sum: MMAudio's mixing
    mix = MMAudioMixture(MixtureConfig(sources={str(va): 12.0, str(at): 4.0}, size=16, seed=3))
    assert mix.shares == [12, 4]
    epochs = [clip_ids(mix, e) for e in range(3)]
    for items in epochs:
        counts = Counter(items)
        assert {k: v for k, v in counts.items() if k[0] == 0} == {(0, c): 2 for c in mix.caches[0].ids}
        assert {k: v for k, v in counts.items() if k[0] == 1} == {(1, c): 1 for c in mix.caches[1].ids}
    assert epochs[0] != epochs[1] != epochs[2]  # a new order every epoch
    per_source = [[c for s, c in items if s == 1] for items in epochs]
    assert per_source[0] != per_source[1]  # not only the sources' slots: the clips' order within a source too

    # Fewer items than clips: the epochs go on through the permutation (all 6 clips in the first 8 items)
    small = MMAudioMixture(MixtureConfig(sources={str(va): 1.0}, size=4, seed=0))
    seen = [clip_ids(small, e) for e in range(3)]
    assert len(set(seen[0])) == 4 and len(set(seen[0] + seen[1])) == 6
    assert set(Counter(seen[0] + seen[1] + seen[2]).values()) == {2}  # 12 items = each clip twice

    # A resume (a fresh dataset, items asked in another order) gets the same clips
    again = MMAudioMixture(MixtureConfig(sources={str(va): 12.0, str(at): 4.0}, size=16, seed=3))
    assert [again.source_of(i, 2) for i in reversed(range(16))][::-1] == [mix.source_of(i, 2) for i in range(16)]
    other_seed = MMAudioMixture(MixtureConfig(sources={str(va): 12.0, str(at): 4.0}, size=16, seed=4))
    assert clip_ids(other_seed, 0) != epochs[0]


def test_weights_split_each_epoch_by_largest_remainders(tmp_path):
    va = cache(tmp_path / "va", 3, VIDEO, "v")
    at = cache(tmp_path / "at", 3, TEXT_ONLY, "a")
    mix = MMAudioMixture(MixtureConfig(sources={str(va): 3.0, str(at): 1.0}, size=2001))
    assert mix.shares == [1501, 500]  # 1500.75 and 500.25
    assert sum(mix.source_of(i, 5)[0] == 0 for i in range(len(mix))) == 1501
    with pytest.raises(ConfigError, match="size: must be >= 1"):
        MixtureConfig(sources={str(va): 1.0}, size=0)


def test_the_loader_hands_each_epoch_its_own_clips_and_resumes_exactly(tmp_path):
    """Through the trainer's pieces: ResumableBatchSampler -> SeededDataset -> DataLoader."""
    va = cache(tmp_path / "va", 5, VIDEO, "v")
    at = cache(tmp_path / "at", 3, TEXT_ONLY, "a")
    mix = MMAudioMixture(MixtureConfig(sources={str(va): 5.0, str(at): 3.0}, size=8, seed=1))
    names = {}
    for s, c in enumerate(mix.caches):
        for clip in c.ids:
            names[c.load(clip)["audio"].numpy().tobytes()] = (s, clip)
    data = SeededDataset(mix, base_seed=0)
    sampler = ResumableBatchSampler(8, 2, 1, 0, 1, seed=0)
    loader = DataLoader(data, batch_sampler=sampler)

    def run(epoch: int, position: int = 0) -> list[tuple[int, str]]:
        sampler.set_state(epoch, position)
        return [names[a.numpy().tobytes()] for batch in loader for a in batch["streams"]["audio"]]

    first, second = run(0), run(1)
    for items in (first, second):
        assert sorted(items) == sorted([(0, c) for c in mix.caches[0].ids] + [(1, c) for c in mix.caches[1].ids])
    assert first != second
    assert run(1, 2) == second[4:]  # resumed after two batches of epoch 1: the rest of that epoch


def test_seeded_dataset_gives_the_epoch_to_epoch_aware_datasets_only():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"streams": {"x": torch.tensor([i])}, "cond": {}}

    class ByEpoch(Plain):
        def item_at_epoch(self, i, epoch):
            return {"streams": {"x": torch.tensor([10 * epoch + i])}, "cond": {}}

    assert SeededDataset(Plain(), 5)[(2, 7)]["streams"]["x"].item() == 2
    item = SeededDataset(ByEpoch(), 5)[(2, 7)]
    assert item["streams"]["x"].item() == 72 and item["seed"] == sample_seed(5, 7, 2)


# ---------------------------------------------------------------------------------------------------------------
# 2. CFG dropout: CLIP and sync together, text on its own draw


def dropped(config: MMAudioRecipeConfig, n: int = 20000) -> dict[str, torch.Tensor]:
    batch = {
        "streams": {"audio": torch.zeros(n, 2, 2)},
        "cond": {"has_video": torch.ones(n), "has_text": torch.ones(n)},
        "seed": torch.arange(n) * 7919 + 13,
    }
    return {k: v.float() for k, v in MMAudioRecipe(config).prepare(batch, CPU)["drop"].items()}


def test_default_dropout_is_mmaudios_null_video_and_null_text():
    d = dropped(MMAudioRecipeConfig())
    clip, sync, text = d["clip"], d["sync"], d["text"]
    assert torch.equal(clip, sync)  # one draw for the video: never CLIP without sync or sync without CLIP
    n = len(clip)
    rates = (("video", clip.mean(), 0.1), ("text", text.mean(), 0.1), ("both", (clip * text).mean(), 0.01))
    for what, rate, p in rates:
        assert abs(rate.item() - p) <= binomial_tolerance(n, p), (what, rate.item())


def test_independent_clip_and_sync_dropout_stay_available_and_rates_are_checked():
    d = dropped(MMAudioRecipeConfig(video_dropout=0.0, clip_dropout=0.2, sync_dropout=0.3, text_dropout=0.0))
    n = len(d["clip"])
    for rate, p in ((d["clip"].mean(), 0.2), (d["sync"].mean(), 0.3), ((d["clip"] * d["sync"]).mean(), 0.06)):
        assert abs(rate.item() - p) <= binomial_tolerance(n, p)
    assert not d["text"].any()
    both = dropped(MMAudioRecipeConfig(video_dropout=0.1, clip_dropout=0.2, text_dropout=0.0))
    p = 1 - 0.9 * 0.8  # CLIP dropped with the video or on its own
    assert abs(both["clip"].mean().item() - p) <= binomial_tolerance(n, p)
    for name in ("video_dropout", "text_dropout", "clip_dropout", "sync_dropout"):
        with pytest.raises(ConfigError, match=f"{name}: must be in"):
            MMAudioRecipeConfig(**{name: 1.5})


def test_every_trainable_parameter_gets_a_gradient_so_ddp_needs_no_unused_search():
    torch.manual_seed(0)
    net = build_mmaudio(MMAudioConfig(**NET))
    with torch.no_grad():
        net.latent_mean.zero_()
        net.latent_std.fill_(1.0)
    recipe = MMAudioRecipe(MMAudioRecipeConfig())
    b = 4
    batch = {
        "streams": {"audio": torch.randn(b, 50, 20)},
        "cond": {"clip_f": torch.randn(b, 16, 32), "sync_f": torch.randn(b, 48, 24), "text_f": torch.randn(b, 7, 16),
                 "has_video": torch.ones(b), "has_text": torch.ones(b)},
        "seed": torch.arange(b),
    }  # fmt: skip
    recipe.loss(net, recipe.prepare(batch, CPU)).backward()
    assert recipe.leaves_parameters_unused is False
    assert [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None] == []


# ---------------------------------------------------------------------------------------------------------------
# 3. latent statistics: from the first video-audio cache from scratch, the checkpoint's when fine-tuning


def overrides(tmp_path: Path, sources: dict, *extra: str) -> list[str]:
    return [
        f"out_dir={tmp_path / 'run'}",
        f"model.args.overrides={json.dumps(NET)}",
        f"data.train.args.sources={json.dumps({str(k): v for k, v in sources.items()})}",
        "data.train.args.size=8",
        "data.num_workers=0",
        "train.steps=2",
        "train.batch_size=4",
        "train.device=cpu",
        "log.tensorboard=false",
        "log.progress=false",
        *extra,
    ]


def test_from_scratch_the_latent_statistics_come_from_the_video_cache(tmp_path):
    from avflow.train.trainer import train

    va = cache(tmp_path / "va", 6, VIDEO, "v", offset=3.0, scale=5.0)
    at = cache(tmp_path / "at", 2, TEXT_ONLY, "a", offset=-7.0, scale=0.5)
    c = FeatureCache(va)
    latents = torch.stack([c.load(i)["audio"] for i in c.ids])  # (clips, N, C)
    mean, std = latents.mean((0, 1)), latents.std((0, 1))  # MMAudio's compute_latent_stats
    assert mean.std() > 0.5 and (std > 4).all()  # not 0 / 1

    cfg = load_train_config(REPO / "configs" / "mmaudio_train.yaml",
                            overrides(tmp_path, {va: 6, at: 2}, f"model.args.latent_stats={va}"))  # fmt: skip
    train(cfg)
    for name in ("model.safetensors", "ema_0.05.safetensors", "ema_0.1.safetensors"):
        state = load_file(tmp_path / "run" / name)
        torch.testing.assert_close(state["latent_mean"].flatten(), mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state["latent_std"].flatten(), std, atol=1e-5, rtol=1e-5)

    # A file holding statistics, or none (mean 0, std 1)
    save_file({"latent_mean": torch.full((1, 1, 20), 2.0), "latent_std": torch.full((1, 1, 20), 3.0)},
              tmp_path / "stats.safetensors")  # fmt: skip
    net = build_model(MMAudioModelConfig(overrides=NET, latent_stats=str(tmp_path / "stats.safetensors")))
    assert (net.latent_mean == 2).all() and (net.latent_std == 3).all()
    net = build_model(MMAudioModelConfig(overrides=NET, latent_stats="none"))
    assert (net.latent_mean == 0).all() and (net.latent_std == 1).all()
    # No init and no statistics named: one line saying what to give, not a silent mean 0 / std 1
    with pytest.raises(ConfigError, match="latent_stats: a network trained from scratch .*=caches/vggsound_train"):
        build_model(MMAudioModelConfig(overrides=NET))
    with pytest.raises(ConfigError, match="no such feature cache folder or weights file"):
        MMAudioModelConfig(overrides=NET, latent_stats=str(tmp_path / "nowhere"))


def test_fine_tuning_keeps_the_checkpoints_latent_statistics_bit_exact(fixtures, tmp_path):
    from avflow.train.trainer import train

    weights = fixtures / "mmaudio" / "network_tiny_v1.weights.safetensors"
    official = load_file(weights)
    va = cache(tmp_path / "va", 6, VIDEO, "v", offset=3.0, scale=5.0)  # statistics far from the checkpoint's
    cfg = load_train_config(REPO / "configs" / "mmaudio_finetune.yaml",
                            overrides(tmp_path, {va: 1.0}, f"model.args.init={weights}"))  # fmt: skip
    assert cfg.model.args["latent_stats"] == "auto"
    train(cfg)
    for name in ("model.safetensors", "ema_0.05.safetensors", "ema_0.1.safetensors"):
        state = load_file(tmp_path / "run" / name)
        for key in ("latent_mean", "latent_std"):
            assert torch.equal(state[key], official[key]), (name, key)
    with pytest.raises(ConfigError, match="latent_stats: .* with init: a fine-tune keeps the checkpoint's"):
        MMAudioModelConfig(overrides=NET, init=str(weights), latent_stats=str(va))


# ---------------------------------------------------------------------------------------------------------------
# 4. schedule and optimizer


def mmaudio_lr(steps: int, warmup: int, milestones: list[int], gamma: float) -> list[float]:
    """The learning-rate factors of MMAudio's runner: SequentialLR(LambdaLR((s + 1) / (w + 1)), MultiStepLR)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / (warmup + 1))
    step = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, step], [warmup])
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_mmaudio_train_config_has_mmaudios_step_schedule_and_adamw(tmp_path):
    # avflow's milestones count optimizer steps from the start: MMAudio's (counted after the warm-up) + warm-up
    ref = mmaudio_lr(40, 10, [24, 27], 0.1)
    ours = [lr_factor(s, ScheduleConfig(kind="step", warmup_steps=10, milestones=[34, 37]), 40) for s in range(40)]
    for s in range(10, 40):
        assert ours[s] == pytest.approx(ref[s], rel=1e-12), s
    assert max(abs(a - b) for a, b in zip(ours[:10], ref[:10])) < 0.1  # warm-up: (s + 1) / 10 vs (s + 1) / 11

    va = cache(tmp_path / "va", 2, VIDEO, "v")
    cfg = load_train_config(REPO / "configs" / "mmaudio_train.yaml",
                            overrides(tmp_path, {va: 1.0}, f"model.args.latent_stats={va}"))  # fmt: skip
    sc = cfg.schedule
    assert (sc.kind, sc.warmup_steps, sc.milestones, sc.gamma) == ("step", 1000, [241000, 271000], 0.1)
    for step, factor in ((999, 1.0), (1000, 1.0), (240999, 1.0), (241000, 0.1), (270999, 0.1), (271000, 0.01)):
        assert lr_factor(step, sc, 300000) == pytest.approx(factor), step  # MMAudio: x0.1 at 240k, 270k after warm-up
    raw = load_train_config(REPO / "configs" / "mmaudio_train.yaml", [f"model.args.latent_stats={va}",
                            f"data.train.args.sources={json.dumps({str(va): 1.0})}"])  # fmt: skip
    assert (raw.train.steps, raw.train.batch_size, raw.optim.lr) == (300000, 512, 1e-4)
    for c in (cfg, load_train_config(REPO / "configs" / "mmaudio_finetune.yaml", overrides(tmp_path, {va: 1.0}))):
        o = c.optim
        assert (o.eps, o.weight_decay, o.decay_all, tuple(o.betas), o.grad_clip) == (1e-6, 1e-6, True, (0.9, 0.95), 1.0)
        args = c.task.args
        assert (args["video_dropout"], args["text_dropout"], args["clip_dropout"], args["sync_dropout"]) == (
            0.1, 0.1, 0.0, 0.0)  # fmt: skip
        assert tuple(c.ema.sigma_rels) == (0.05, 0.1) and c.ema.snapshot_every > 0
    assert cfg.ema.snapshot_every == 5000


def test_decay_all_puts_weight_decay_on_every_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    n_params = len(list(model.parameters()))

    def decays(**kw) -> list[float]:
        opt = build_optimizer(model, OptimConfig(weight_decay=0.01, **kw))
        assert sum(len(g["params"]) for g in opt.param_groups) == n_params
        return [g["weight_decay"] for g in opt.param_groups for _ in g["params"]]

    assert sorted(decays()) == [0.0] * 4 + [0.01] * 2  # default: biases and norm gains get none
    assert decays(decay_all=True) == [0.01] * n_params
    assert len(build_optimizer(model, OptimConfig(decay_all=True)).param_groups) == 2  # resumes either way
    with pytest.raises(ConfigError, match="decay_all"):
        from_dict(OptimConfig, {"decay_all": "sometimes"})


# ---------------------------------------------------------------------------------------------------------------
# 5. post-hoc EMA: MMAudio's profiles and snapshots, another sigma_rel synthesised afterwards


def test_snapshots_synthesise_the_exported_ema(tmp_path):
    from avflow.train.ema import reconstruct
    from avflow.train.trainer import train

    va = cache(tmp_path / "va", 6, VIDEO, "v")
    cfg = load_train_config(REPO / "configs" / "mmaudio_train.yaml", overrides(
        tmp_path, {va: 1.0}, f"model.args.latent_stats={va}", "train.steps=4", "ema.snapshot_every=2",
        "optim.lr=1e-2"))  # fmt: skip
    train(cfg)
    run = tmp_path / "run"
    snapshots = sorted((run / "ema_snapshots").glob("step_*.safetensors"))
    assert [p.name for p in snapshots] == ["step_00000002.safetensors", "step_00000004.safetensors"]
    # as docs/training.md says: the synthesised averages over model.safetensors, less the frozen tensors
    frozen = ("latent_mean", "latent_std", "empty_string_feat")
    model = load_file(run / "model.safetensors")

    def synthesise(sigma_rel: float) -> dict[str, torch.Tensor]:
        return model | {k: v for k, v in reconstruct(snapshots, sigma_rel).items() if k not in frozen}

    exported = load_file(run / "ema_0.1.safetensors")
    synthesised = synthesise(0.1)
    assert set(synthesised) == set(exported)
    for k, v in exported.items():
        torch.testing.assert_close(synthesised[k], v, atol=1e-5, rtol=1e-5, msg=k)
    other = synthesise(0.07)
    assert not torch.equal(other["audio_input_proj.0.weight"], exported["audio_input_proj.0.weight"])
    load_official_state_dict(build_mmaudio(MMAudioConfig(**NET)), other)  # a strict load
