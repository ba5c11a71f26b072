"""Fine-tuning on one's own feature caches: a mixture of caches built with other encoder weights, extractor or
settings is refused naming both; a cache of another duration, mode or encoders than the network is refused in one
line naming the cache and what to do, not at the first step in tensor-shape text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cache_integrity import extractor, recs

from avflow.data.cache import FeatureCache, build_cache
from avflow.errors import ConfigError
from avflow.models.mmaudio import build_mmaudio
from avflow.models.mmaudio_config import MMAudioConfig
from avflow.train import mmaudio_recipe as recipe_module
from avflow.train.config import load_train_config
from avflow.train.mmaudio_recipe import MixtureConfig, MMAudioMixture, MMAudioRecipe, MMAudioRecipeConfig

REPO = Path(__file__).resolve().parents[1]
# A tiny network at MMAudio's 8 s sequence lengths (250 latents, 64 CLIP, 192 sync frames at 16 kHz).
NET_8S = dict(latent_dim=20, clip_dim=16, sync_dim=32, text_dim=16, hidden_dim=64, depth=3, fused_depth=1,
              num_heads=1, text_seq_len=7)  # fmt: skip
TWO_S = {"audio": (62, 20), "clip_f": (16, 16), "sync_f": (40, 32), "text_f": (7, 16)}  # a --duration 2.0 cache
S16 = {"mode": "16k", "duration": 2.0}


def built(folder: Path, checksum: str = "abc", name: str = "mmaudio-16k", settings: dict = S16, shapes=TWO_S) -> str:
    build_cache(folder, recs(3, folder.name), extractor(shapes), checksum, extractor_name=name, settings=settings)
    return str(folder)


def mixture(*folders: str) -> MMAudioMixture:
    return MMAudioMixture(MixtureConfig(sources=dict.fromkeys(folders, 1.0), size=4))


def test_a_mixture_of_caches_of_other_encoder_weights_extractor_or_mode_is_refused_naming_both(tmp_path):
    a = built(tmp_path / "a")
    assert len(mixture(a, built(tmp_path / "same"))) == 4  # one build: fine
    assert len(mixture(a, built(tmp_path / "old", name="", settings=None))) == 4  # unrecorded: not a difference

    b = built(tmp_path / "b", checksum="def")  # other CLIP weights, same shapes
    with pytest.raises(ConfigError, match=rf"^data.args.sources: {a} and {b} were built with different encoder "
                                          r"weights \(checksum abc vs def\): .*rebuild .*b like"):  # fmt: skip
        mixture(a, b)
    e = built(tmp_path / "e", name="mmaudio-44k", settings={"mode": "44k", "duration": 2.0})  # same shapes here
    with pytest.raises(ConfigError, match=rf"{a} and {e} .*extractor mmaudio-16k vs mmaudio-44k; --mode 16k vs 44k"):
        mixture(a, e)
    with pytest.raises(ConfigError) as info:
        mixture(a, b)
    assert "\n" not in str(info.value)


def test_a_cache_of_another_duration_is_refused_before_training_naming_it(tmp_path):
    a = built(tmp_path / "cache_a")
    net = build_mmaudio(MMAudioConfig(**NET_8S))
    recipe = MMAudioRecipe(MMAudioRecipeConfig())
    with pytest.raises(ConfigError) as info:
        recipe.check_data(net, mixture(a))
    assert str(info.value) == (
        f"{a}: built with --duration 2.0 (62 latents, 16 CLIP, 40 sync frames); the network trains on 8.0 s "
        "(250, 64, 192): rebuild the cache with --duration 8 or set the network's sequence lengths "
        "(model.args.overrides {latent_seq_len: 62, clip_seq_len: 16, sync_seq_len: 40})"
    )
    # the network set to the cache's lengths trains on it
    fits = MMAudioConfig(**NET_8S, latent_seq_len=62, clip_seq_len=16, sync_seq_len=40)
    recipe_module.check_caches_fit(fits, [FeatureCache(a)])
    # lengths that are no duration's: said as they are
    odd = MMAudioConfig(**NET_8S, latent_seq_len=50, clip_seq_len=16, sync_seq_len=48)
    with pytest.raises(ConfigError, match=r"the network's sequence lengths are \(50, 16, 48\): rebuild the cache "
                                          "with the network's duration or set"):  # fmt: skip
        recipe_module.check_caches_fit(odd, [FeatureCache(a)])


def test_a_cache_of_another_mode_or_encoders_is_refused_naming_it(tmp_path):
    a = built(tmp_path / "a", settings={"mode": "44k", "duration": 2.0})
    fits = MMAudioConfig(**NET_8S, latent_seq_len=62, clip_seq_len=16, sync_seq_len=40)
    with pytest.raises(ConfigError, match=rf"^{a}: built with --mode 44k \(44100 Hz audio\); the network takes "
                                          "16000 Hz audio: rebuild the cache with --mode 16k"):  # fmt: skip
        recipe_module.check_caches_fit(fits, [FeatureCache(a)])
    wide = {**TWO_S, "clip_f": (16, 1024)}  # another CLIP
    assert recipe_module.fit_problem(fits, wide, S16, "c") == (
        "c: stream 'clip_f' has shape (16, 1024) per clip, the network takes (16, 16): features of other encoders "
        "(or --mode) than the network's"
    )
    assert recipe_module.fit_problem(fits, TWO_S, S16, "c") is None
    audio_text = {"audio": (62, 20), "text_f": (7, 16)}
    assert recipe_module.fit_problem(fits, audio_text, S16, "c") is None


def test_training_on_a_cache_of_another_duration_stops_in_one_line_before_the_first_step(tmp_path):
    from avflow.train.trainer import train

    a = built(tmp_path / "cache_a")
    cfg = load_train_config(REPO / "configs" / "mmaudio_train.yaml", [
        f"out_dir={tmp_path / 'run'}",
        f"model.args.overrides={json.dumps(NET_8S)}",
        "model.args.latent_stats=none",
        f"data.train.args.sources={json.dumps({a: 1.0})}",
        "data.train.args.size=4",
        "data.num_workers=0",
        "train.steps=2",
        "train.batch_size=2",
        "train.device=cpu",
        "log.tensorboard=false",
        "log.progress=false",
    ])  # fmt: skip
    with pytest.raises(ConfigError, match=r"cache_a: built with --duration 2.0 \(62 latents, 16 CLIP, 40 sync "
                                          r"frames\); the network trains on 8.0 s \(250, 64, 192\): rebuild the "
                                          "cache with --duration 8 or set"):  # fmt: skip
        train(cfg)
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))
