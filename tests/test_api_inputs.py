"""Bad input to the Python API is a one-line error naming the argument, before any sampling: the joint pipeline's
given audio, duration and seed; the spatialiser's mono; the sampler's settings, strengths and start times; the foley
model and pipeline; the binaural pipeline's seed; the joint model's shapes (tiny random models throughout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TEXT_DIM, perturb, tiny_foley_model, write_tiny_default_model

from avflow.errors import ConfigError, MediaError
from avflow.flow import GuidanceBranch, cfg, sample, shift_time
from avflow.pipelines import generate as generate_module

SR = 16000
BAD_SEEDS = ((1.7, "whole number"), ("5", "whole number"), (2**70, "integer from"))


def one_line(error: pytest.ExceptionInfo, *words: str, case: str = "") -> None:
    """The error's message is one line holding every one of `words`."""
    text = str(error.value)
    assert "\n" not in text and all(w in text for w in words), (case, text)


# ------------------------------------------------------------------------------------------------ joint pipeline


class Sampled(Exception):
    """Raised in place of sampling: the checks let the call through."""


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from avflow.pipelines.default_model import load_default_model

    return load_default_model(write_tiny_default_model(tmp_path_factory.mktemp("tiny_v2")))


@pytest.fixture
def no_sampling(monkeypatch):
    def refuse(*args, **kwargs):
        raise Sampled

    monkeypatch.setattr(generate_module, "sample_with", refuse)


def test_given_audio_tensor_gets_the_checks_of_a_file(pipe, no_sampling):
    """Shape, dtype, type, NaN, emptiness and length: one-line errors before sampling, as `read_given_audio` and the
    command's checks give for a file; float64 is cast (it reaches sampling)."""
    audio = torch.randn(2, SR) * 0.1
    cases = {
        "(S, 2)": (audio.T.contiguous(), ConfigError, ("given_audio must be (2, S)", "(16000, 2)")),
        "(S,)": (audio[0], ConfigError, ("given_audio must be (2, S)", "(16000,)")),
        "numpy": (audio.numpy(), ConfigError, ("given_audio must be a torch.Tensor", "ndarray")),
        "int16": ((audio * 3000).to(torch.int16), ConfigError, ("float samples", "torch.int16")),
        "NaN": (audio * float("nan"), MediaError, ("given_audio holds NaN",)),
        "empty": (audio[:, :0], ConfigError, ("given_audio must be at least 0.5 s", "got 0")),
        "too short": (audio[:, :1000], ConfigError, ("given_audio must be at least 0.5 s", "got 0.0625")),
        "70 s": (torch.zeros(2, 70 * SR), ConfigError, ("given_audio is 70.0 s long", "at most 60 s")),
    }
    for name, (given, kind, words) in cases.items():
        with pytest.raises(kind) as err:
            pipe.generate("a ball", task="a2v", given_audio=given)
        one_line(err, *words, case=name)
    with pytest.raises(ConfigError) as err:
        pipe.generate("a ball", task="a2v", given_audio=audio, duration=2.0)
    one_line(err, "given_audio is 1.000 s long, shorter than the asked duration of 2 s")
    with pytest.raises(ConfigError) as err:
        pipe.generate("a ball", given_audio=audio)  # t2av never reads it
    one_line(err, "given_audio is read by task a2v only")
    with pytest.raises(Sampled):
        pipe.generate("a ball", task="a2v", given_audio=audio.double())


def test_given_audio_and_duration_use_its_first_seconds_as_the_command_does(pipe):
    audio = torch.randn(2, SR) * 0.1
    clip = pipe.generate(
        "a ball", task="a2v", given_audio=audio, duration=0.5, sampling=pipe.sampling.override(steps=1)
    )
    assert clip.audio.shape == (2, SR // 2) and torch.equal(clip.audio, audio[:, : SR // 2])
    assert clip.frames.shape[0] == 8 and clip.duration == 0.5


def test_joint_duration_minimum_and_seed_are_checked_for_every_task(pipe, no_sampling):
    for value in (0.01, 0.0, float("nan")):
        with pytest.raises(ConfigError) as err:
            pipe.generate("a ball", duration=value)
        one_line(err, "duration must be at least 0.5 s")
    with pytest.raises(ConfigError) as err:
        pipe.generate("a ball", duration=61)
    one_line(err, "duration must be at most 60 s")
    for seed, words in BAD_SEEDS:
        with pytest.raises(ConfigError) as err:
            pipe.generate("a ball", seed=seed, duration=0.5)
        one_line(err, "seed must be", words)
    with pytest.raises(Sampled):
        pipe.generate("a ball", seed=5.0, duration=0.5)  # a whole float counts, as check_seed takes it


# ------------------------------------------------------------------------------------------------- spatialiser


def test_spatialise_takes_a_mono_track_only():
    from avflow.pipelines.spatialise import amplitude_pan, spatialise

    frames = np.full((8, 16, 32, 3), 60, dtype=np.uint8)
    mono = (np.random.default_rng(0).standard_normal(SR // 2) * 0.1).astype(np.float32)
    for render in (spatialise, amplitude_pan):
        assert render(mono, SR, frames, 16.0).shape == (2, SR // 2)
        assert render(mono[None], SR, frames, 16.0).shape == (2, SR // 2)
        for stereo in (np.stack([mono, mono]), np.stack([mono, mono]).T):
            with pytest.raises(MediaError) as err:
                render(stereo, SR, frames, 16.0)
            one_line(err, "mono must be (N,) or (1, N)", str(stereo.shape))


# ------------------------------------------------------------------------------------------------------ sampler


class Toy:
    def velocity(self, x, t, cond, *, cross_modal=True):
        return {s: cond["c"] - v for s, v in x.items()}

    def empty_conditions(self, b):
        return {"c": torch.zeros(b, 1, 1)}


def toy_problem():
    return Toy(), {"audio": torch.randn(2, 4, 3)}, {"c": torch.ones(2, 1, 1)}


def test_sampler_refuses_strengths_and_shifts_sampling_config_refuses():
    model, noise, cond = toy_problem()
    for w in (-2.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError) as err:
            sample(model, noise, cond, steps=2, guidance=cfg(w))
        one_line(err, "cfg_strength must be a finite number > 0")
    with pytest.raises(ConfigError) as err:
        sample(model, noise, cond, steps=2, guidance=[GuidanceBranch(cfg_strength={"audio": -1.0})])
    one_line(err, "audio must be a finite number > 0")
    for shift in (float("nan"), float("inf"), 0.5):
        with pytest.raises(ConfigError) as err:
            sample(model, noise, cond, steps=2, shift=shift)
        one_line(err, "shift must be a finite number >= 1")
    with pytest.raises(ValueError, match="finite"):
        shift_time(torch.linspace(0, 1, 3), float("nan"))
    assert torch.isfinite(sample(model, noise, cond, steps=2, shift=2.0, guidance=cfg(3.0)).streams["audio"]).all()


def test_sampler_refuses_unknown_streams_and_start_times_it_would_ignore():
    model, noise, cond = toy_problem()
    clean = {"audio": torch.zeros(2, 4, 3)}
    first = torch.tensor([[1.0, 0, 0, 0]] * 2)
    cases = {
        "t_start typo": (dict(t_start={"Audio": torch.ones(2)}, clean=clean), ("t_start names 'Audio'", "'audio'")),
        "clean typo": (dict(t_start={"audio": first}, clean={"Audio": clean["audio"]}), ("clean names 'Audio'",)),
        "t_start 0.5": (dict(t_start={"audio": torch.full((2,), 0.5)}), ("t_start['audio']", "0 (", "got 0.5")),
        "t_start batch": (dict(t_start={"audio": torch.ones(3)}, clean=clean), ("t_start['audio'] must be (2,)",)),
        "clean shape": (
            dict(t_start={"audio": first}, clean={"audio": torch.zeros(1, 4, 3)}),
            ("clean['audio'] must have the shape of its noise, (2, 4, 3)",),
        ),
    }
    for name, (options, words) in cases.items():
        with pytest.raises(ConfigError) as err:
            sample(model, noise, cond, steps=2, **options)
        one_line(err, *words, case=name)
    out = sample(model, noise, cond, steps=2, t_start={"audio": first}, clean=clean).streams["audio"]
    assert torch.equal(out[:, :1], clean["audio"][:, :1]) and not torch.equal(out[:, 1:], noise["audio"][:, 1:])


# ---------------------------------------------------------------------------------------------------------- foley


@pytest.fixture
def foley(fixtures):
    """The tiny fixture network with the VAE fixture of the same latent width and the 16 kHz vocoder, one step."""
    return tiny_foley_model(fixtures, steps=1)


def test_foley_model_refuses_bad_features_batch_duration_and_seed(foley):
    c = foley.network.config
    text = torch.randn(1, c.text_seq_len, c.text_dim)
    cases = {
        "NaN text": (dict(text_f=text * float("nan")), ("text features hold NaN",)),
        "2-D text": (
            dict(text_f=text[0]),
            ("text features must be a tensor (B, tokens, dim)", f"({c.text_seq_len}, {c.text_dim})"),
        ),
        "batch 0": (dict(batch=0), ("batch must be a whole number >= 1, got 0",)),
        "batch -1": (dict(batch=-1), ("batch must be a whole number >= 1, got -1",)),
        **{f"seed {s!r}": (dict(seed=s), ("seed must be", words)) for s, words in BAD_SEEDS},
    }
    for name, (options, words) in cases.items():
        with pytest.raises(ConfigError) as err:
            foley.generate(1.0, **options)
        one_line(err, *words, case=name)
    with pytest.raises(ConfigError) as err:
        foley.generate(float("nan"))
    one_line(err, "duration must be a finite number of seconds, got nan")
    with pytest.raises(ConfigError) as err:
        foley.generate(1e9)
    one_line(err, "duration must be at most 3600 s (one hour), got 1e+09")


def test_foley_pipeline_checks_seed_and_sound_length_before_planning_windows(foley, monkeypatch, tmp_path):
    from avflow.pipelines import foley as foley_module

    def planned(*args, **kwargs):
        raise AssertionError("windows planned before the checks")

    monkeypatch.setattr(foley_module, "plan_windows", planned)
    pipeline = foley_module.FoleyPipeline(foley, encoders=None)
    image, video = tmp_path / "none.png", tmp_path / "none.mp4"
    for call in (
        lambda **o: pipeline.generate_text("a dog barks", **o),
        lambda **o: pipeline.generate_image(image, **o),
    ):
        with pytest.raises(ConfigError) as err:
            call(duration=1e9)
        one_line(err, "duration must be at most 3600 s", "got 1e+09")
        assert "--duration" not in str(err.value)  # the Python argument is named, not the CLI's option
        with pytest.raises(ConfigError) as err:
            call(duration=0.1)
        one_line(err, "duration must be at least 0.5 s")
        assert "--duration" not in str(err.value)
        for seed, words in BAD_SEEDS:
            with pytest.raises(ConfigError) as err:
                call(duration=1.0, seed=seed)
            one_line(err, "seed must be", words)
    for seed, words in BAD_SEEDS:
        with pytest.raises(ConfigError) as err:
            pipeline.generate_video(video, seed=seed)
        one_line(err, "seed must be", words)


# ------------------------------------------------------------------------------------------------------- binaural


def test_binaural_pipeline_checks_its_seed():
    from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
    from avflow.models.binaural import SAMPLING, BinauralConfig, BinauralFlow
    from avflow.pipelines.binaural import BinauralPipeline

    torch.manual_seed(0)
    model = BinauralFlow(BinauralConfig(latent_dim=8, dim=32, depth=2, heads=2, bins=8))
    codec = WorldAudioCodec(WorldAudioCodecConfig(latent_channels=8, width=16, frame_blocks=1, latent_blocks=1))
    pipeline = BinauralPipeline(model, codec.requires_grad_(False), SAMPLING.override(steps=1))
    frames = np.full((8, 16, 32, 3), 60, dtype=np.uint8)
    for seed, words in BAD_SEEDS:
        with pytest.raises(ConfigError) as err:
            pipeline.generate(frames, 16.0, SR // 2, seed=seed)
        one_line(err, "seed must be", words)


# ---------------------------------------------------------------------------------------------------- joint model


def tiny_binaural_joint():
    from avflow.models.audio_tower import AudioTowerConfig
    from avflow.models.joint import JointConfig, JointModel
    from avflow.models.wan import WanConfig

    config = JointConfig(
        video=WanConfig(
            num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=2
        ),
        audio=AudioTowerConfig(
            latent_dim=8, text_dim=TEXT_DIM, hidden_dim=32, depth=3, fused_depth=1, num_heads=2, text_seq_len=5
        ),
        fusion="bidirectional",
        fusion_options={"heads": 2},
        text_dim=TEXT_DIM,
        text_len=5,
        audio_streams=("left", "right"),
    )
    return perturb(JointModel(config).eval(), 0.05)


def test_joint_velocity_names_the_stream_and_the_shape_it_expects():
    model = tiny_binaural_joint()
    b = 2
    x = {"video": torch.randn(b, 16, 3, 4, 4), "left": torch.randn(b, 12, 4), "right": torch.randn(b, 12, 4)}
    t = {k: torch.full((b,), 0.3) for k in x}
    cond = {"text": torch.randn(b, 5, TEXT_DIM), "text_mask": torch.ones(b, 5, dtype=torch.bool)}
    cases = {
        "float t": (x, {k: 0.3 for k in x}, cond, ("stream 'video': t must be a tensor (2,) or (2, 3), got 0.3",)),
        "t batch": (x, {k: torch.full((3,), 0.3) for k in x}, cond, ("t must be a tensor (2,)", "shape (3,)")),
        "t frames": (x, t | {"left": torch.full((b, 5), 0.3)}, cond, ("'left': t must be", "got shape (2, 5)")),
        "left channels": (
            x | {"left": x["left"][..., :3]},
            t,
            cond,
            ("stream 'left': latents must be (B, 12, 4)", "got (2, 12, 3)"),
        ),
        "right length": (
            x | {"right": x["right"][:, :8]},
            t,
            cond,
            ("stream 'right': latents must be (B, 12, 4)", "got (2, 8, 4)"),
        ),
        "right batch": (x | {"right": x["right"][:1]}, t, cond, ("stream 'right': a batch of 1, where 'video' has 2",)),
        "video 4-D": (
            x | {"video": x["video"][0]},
            t,
            cond,
            ("stream 'video': latents must be (B, 16, T, H, W)", "got (16, 3, 4, 4)"),
        ),
        "video channels": (x | {"video": x["video"][:, :8]}, t, cond, ("latents must be (B, 16, T, H, W)",)),
        "no text": (x, t, {}, ("cond['text'] must be a tensor (2, S, 24), got None",)),
        "text batch": (x, t, {k: v[:1] for k, v in cond.items()}, ("cond['text']", "got shape (1, 5, 24)")),
    }
    for name, (streams, times, c, words) in cases.items():
        with pytest.raises(ConfigError) as err:
            model.velocity(streams, times, c)
        one_line(err, *words, case=name)
    with torch.no_grad():  # valid calls unchanged: the sampler's per-frame times and batched guidance
        first = {"video": torch.tensor([[1.0, 0, 0]] * b), "left": torch.zeros(b, 12), "right": torch.zeros(b, 12)}
        out = sample(
            model,
            {k: torch.randn_like(v) for k, v in x.items()},
            cond,
            steps=1,
            guidance=cfg(2.0),
            clean=x,
            t_start=first,
        ).streams
    assert all(out[k].shape == v.shape for k, v in x.items())
    assert torch.equal(out["video"][:, :, :1], x["video"][:, :, :1])
