"""Where audio latents and video latent frames meet in time: the windowed aligners' masks and interpolation, and the
joint model's check that the data's latent counts fit the configured rates."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from helpers import TEXT_DIM, joint_inputs

from avflow.errors import ConfigError
from avflow.models.audio_tower import AudioTowerConfig
from avflow.models.joint import JointConfig, JointModel, audio_token_seconds, video_frame_seconds
from avflow.models.wan import WanConfig
from avflow.nn.fusion import fusion_options
from avflow.nn.fusion.windowed_aligners import WindowedAlignerOptions, interpolation_weights, window_mask
from avflow.nn.temporal_alignment import frame_period
from avflow.pipelines.default_model import read_default_config

# (fps, stride, audio latent rate): 16/32 Hz (shipped), 31.25 Hz (MMAudio), 50 Hz, 62.5 Hz with stride 1 (the
# fixed codecs), 8 Hz (under one latent per pixel frame: ties at the frame boundaries)
GEOMETRIES = [(16, 4, 16), (16, 4, 31.25), (16, 4, 32), (16, 4, 50), (16, 1, 62.5), (16, 4, 8), (8, 4, 50)]


def masks(frames: int, tokens: int, fps: float, stride: int, rate: float, window: int) -> torch.Tensor:
    """`(T, N)` as the fusion builds it (`WindowedAlignerFusion.prepare`, one token per frame)."""
    tv, ta = video_frame_seconds(frames, fps, stride), audio_token_seconds(tokens, rate)
    period = frame_period(tv, stride / fps) if frames > 1 else float("inf")
    return window_mask(tv, ta, period, window, 1)


def nearest_frames(frames: int, tokens: int, fps: float, stride: int, rate: float) -> list[int]:
    """Each audio token's nearest latent frame in exact arithmetic (ties to the earlier frame), unclamped."""
    fps, rate = Fraction(fps), Fraction(rate)
    period, first = stride / fps, Fraction(stride - 1, 2) / fps  # frame j at first + j period
    return [math.ceil(((n + Fraction(1, 2)) / rate - first) / period - Fraction(1, 2)) for n in range(tokens)]


def lengths(fps: float, stride: int, rate: float):
    """(T, N) pairs: whole spans and ones that are no multiple of a latent frame, with a latent more and less."""
    for frames in (1, 2, 3, 4, 7):
        span = frames * stride / fps
        for tokens in {math.floor(span * rate), math.ceil(span * rate), round(span * rate) + 1}:
            if tokens > 0:
                yield frames, tokens


@pytest.mark.parametrize("fps,stride,rate", GEOMETRIES)
def test_every_audio_token_is_in_one_frames_window_0_and_window_w_is_the_frames_within_w(fps, stride, rate):
    for frames, tokens in lengths(fps, stride, rate):
        w0 = masks(frames, tokens, fps, stride, rate, 0)
        assert w0.sum(0).tolist() == [1] * tokens, (frames, tokens)  # in the clip and past its end: exactly one
        owner, ta = w0.int().argmax(0), audio_token_seconds(tokens, rate)
        tv = video_frame_seconds(frames, fps, stride)
        assert (owner[ta <= tv[0]] == 0).all() and (owner[ta >= tv[-1]] == frames - 1).all()  # to the clip's ends
        near = nearest_frames(frames, tokens, fps, stride, rate)
        assert owner.tolist() == [min(max(g, 0), frames - 1) for g in near]
        for window in (1, 2):
            got = masks(frames, tokens, fps, stride, rate, window)
            for j in range(frames):  # the frames within `window` of the token's nearest one (extended at the ends)
                want = [abs(g - j) <= window or (j == 0 and g < 0) or (j == frames - 1 and g > j) for g in near]
                assert got[j].tolist() == want, (frames, tokens, window, j)


def test_tokens_on_window_edges_and_at_the_clip_end_are_not_lost():
    """16 fps, stride 4, 1 s: at 16 Hz, four latents per frame (ties go to the earlier frame), so window 1 sees 8 at
    the ends and 12 in the middle; at 31.25 Hz (0.976 s) and 50 Hz (0.97, 0.99 s) the last latents are the last
    frame's."""
    assert masks(4, 16, 16, 4, 16, 0).sum(1).tolist() == [4, 4, 4, 4]
    assert masks(4, 16, 16, 4, 16, 1).sum(1).tolist() == [8, 12, 12, 8]
    assert masks(4, 16, 16, 4, 16, 2).sum(1).tolist() == [12, 16, 16, 12]
    assert masks(4, 31, 16, 4, 31.25, 0)[:, 30].tolist() == [False, False, False, True]
    assert masks(4, 50, 16, 4, 50, 0)[:, 48:].T.tolist() == [[False, False, False, True]] * 2


@pytest.mark.parametrize("fps,stride,rate", GEOMETRIES)
def test_video_to_audio_interpolation_reads_the_frames_whose_windows_hold_the_token(fps, stride, rate):
    for frames, tokens in lengths(fps, stride, rate):
        tv, ta = video_frame_seconds(frames, fps, stride), audio_token_seconds(tokens, rate)
        period = frame_period(tv, stride / fps) if frames > 1 else float("inf")
        weights = interpolation_weights(tv, ta, period)  # (N, T)
        owner = window_mask(tv, ta, period, 0, 1).int().argmax(0)
        assert (weights[torch.arange(tokens), owner] >= 0.5).all()  # the token's own frame weighs most (ties: half)
        assert not ((weights > 0) & ~window_mask(tv, ta, period, 1, 1).T).any()  # frames read see it at window 1


def test_the_shipped_models_masks_are_unchanged():
    """The shipped geometry (every window length the pipeline makes, and longer) has no audio latent on a window's
    edge, and its window gives the masks of |t_n − t_j| < (window + ½)·Δt the model was trained with."""
    config = read_default_config()
    joint = config.joint
    assert joint.fusion == "windowed_aligners" and config.fps == joint.video_fps
    fps, stride, rate = joint.video_fps, joint.video_temporal_stride, joint.audio_latent_rate
    window = WindowedAlignerOptions(**joint.fusion_options).window
    per_frame = stride * rate / fps
    assert per_frame == round(per_frame)
    for frames in range(1, 3 * round(config.duration * fps / stride) + 1):
        tv, ta = video_frame_seconds(frames, fps, stride), audio_token_seconds(frames * int(per_frame), rate)
        period = frame_period(tv, stride / fps) if frames > 1 else float("inf")
        distance = (ta[None, :] - tv[:, None]).abs()
        if frames > 1:
            assert ((distance - (window + 0.5) * period).abs() > 1e-3 * period).all()  # no ties
        trained = distance < (window + 0.5) * period
        assert torch.equal(window_mask(tv, ta, period, window, 3), trained.repeat_interleave(3, dim=0)), frames


def test_window_option_errors_name_the_wrong_key():
    with pytest.raises(ConfigError, match=r"^fusion_options\.window: windowed_aligners needs window >= 0, got -1$"):
        fusion_options("windowed_aligners", {"window": -1})
    with pytest.raises(ConfigError, match=r"^every: windowed_aligners needs every >= 1, got 0$"):
        WindowedAlignerOptions(every=0)


def tiny(fusion: str = "windowed_aligners", alignment: str = "avsync", latent_dim: int = 20, **kw) -> JointModel:
    return JointModel(JointConfig(
        video=WanConfig(num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48,
                        num_layers=1),
        audio=AudioTowerConfig(text_dim=TEXT_DIM, hidden_dim=32, depth=1, fused_depth=1, num_heads=2, text_seq_len=5,
                               latent_dim=latent_dim),
        fusion=fusion, fusion_options={} if fusion == "none" else {"heads": 2}, alignment=alignment,
        text_dim=TEXT_DIM, text_len=5, **kw,
    ))  # fmt: skip


def test_audio_and_video_lengths_that_disagree_with_the_rates_are_a_one_line_error():
    """3 video latent frames at 16 fps / stride 4 are 0.75 s = 23.4 latents at 31.25 Hz: 12 is refused, the
    lengths rounding gives pass; so do the shipped pipeline's (8 per frame) and the fixed codecs' (62.5 Hz, stride 1,
    a floored hop)."""
    model = tiny().eval()
    with pytest.raises(ConfigError) as error:
        model.velocity(*joint_inputs(1, 3, 12))
    message = str(error.value)
    assert "\n" not in message and message.startswith("stream 'audio': 12 latents at 31.25/s span 0.384 s")
    assert "23.44 audio latents" in message and "audio_latent_rate" in message
    with torch.no_grad():
        for tokens in (15, 23, 24, 32):
            assert model.velocity(*joint_inputs(1, 3, tokens))["audio"].shape == (1, tokens, 20)
    for bad in (14, 33):
        with pytest.raises(ConfigError, match="may differ by less than one video latent frame plus one audio latent"):
            model.velocity(*joint_inputs(1, 3, bad))
    from avflow.models.joint import check_rates

    shipped = JointConfig(audio_latent_rate=32.0, fusion="windowed_aligners", alignment="avsync")
    for frames in range(1, 17):
        check_rates(shipped, frames, 8 * frames)
    fixed = JointConfig(video_fps=16.0, video_temporal_stride=1, audio_latent_rate=62.5)
    check_rates(fixed, round(1.99 * 16), round(1.99 * 16000) // 256)  # 32 frames, 124 latents
    check_rates(JointConfig(), 8, 62)  # MMAudio's VAE on 2 s: 62 latents for 62.5
    binaural = tiny(latent_dim=8, audio_streams=("left", "right"))
    streams, t, cond = joint_inputs(1, 3, 12)
    streams = {"video": streams["video"], "left": torch.zeros(1, 12, 4), "right": torch.zeros(1, 12, 4)}
    with pytest.raises(ConfigError, match="^streams 'left' and 'right': 12 latents at 31.25/s"):
        binaural.velocity(streams, {"video": t["video"], "left": t["audio"], "right": t["audio"]}, cond)


def test_fusions_that_read_no_rate_take_any_lengths():
    """Bidirectional fusion and no fusion place no token in time by the rates: their lengths are not compared."""
    with torch.no_grad():
        for fusion in ("bidirectional", "none"):
            assert tiny(fusion, "none").velocity(*joint_inputs(1, 3, 12))["audio"].shape == (1, 12, 20)
