"""World codec inputs: floating inputs are cast to the weights' dtype, everything else that has no latent (integer
samples, 0..255 video, empty batches or clips, a negative length) is a one-line ConfigError before any work."""

from __future__ import annotations

import pytest
import torch

from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
from avflow.codecs.world_video_codec import WorldVideoCodec, WorldVideoCodecConfig
from avflow.errors import ConfigError

SMALL_VIDEO = WorldVideoCodecConfig(channels=(8, 16, 16), blocks=(1, 1, 1), latent_blocks=1)
SMALL_AUDIO = WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4)


@pytest.fixture(scope="module")
def audio_codec():
    torch.manual_seed(0)
    return WorldAudioCodec(SMALL_AUDIO).eval()


@pytest.fixture(scope="module")
def video_codec():
    torch.manual_seed(0)
    return WorldVideoCodec(SMALL_VIDEO).eval()


def _one_line(fn, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


@torch.no_grad()
def test_audio_codec_casts_floats_and_refuses_what_has_no_latent(audio_codec):
    c, spl = audio_codec, audio_codec.samples_per_latent
    wav = 0.1 * torch.randn(2, 2, 4 * spl, generator=torch.Generator().manual_seed(0))  # (B, 2, samples)
    z = c.encode(wav)
    assert all(torch.equal(c.encode(wav.double())[k], z[k]) for k in z)  # float64 codes as the fp32 weights would
    half = wav.bfloat16()
    assert all(torch.equal(c.encode(half)[k], c.encode(half.float())[k]) for k in z)
    _one_line(lambda: c.encode((wav * 32767).to(torch.int16)), r"float samples in \[-1, 1\].*int16")
    _one_line(lambda: c.encode(wav[:0]), "B >= 1")
    _one_line(lambda: c.encode(wav * float("nan")), "NaN")
    rec = c.decode(z)
    assert torch.equal(c.decode({k: v.double() for k, v in z.items()}), rec)
    _one_line(lambda: c.decode({k: v.to(torch.int32) for k, v in z.items()}), "float")
    _one_line(lambda: c.decode({k: v[:0] for k, v in z.items()}), "B, N >= 1")
    _one_line(lambda: c.decode({k: v[:, :0] for k, v in z.items()}), "B, N >= 1")
    _one_line(lambda: c.decode({k: v[..., :2] for k, v in z.items()}), r"\(B, N, 4\)")
    _one_line(lambda: c.decode(z, length=-5), "length must be an int >= 0")  # was 5 samples short
    assert c.decode(z, length=0).shape == (2, 2, 0)
    assert torch.equal(c.decode(z, length=3 * spl), rec[..., : 3 * spl])


@torch.no_grad()
def test_video_codec_casts_floats_and_refuses_what_has_no_latent(video_codec):
    c = video_codec
    video = torch.rand(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, 3, T, H, W)
    z = c.encode(video)
    assert torch.equal(c.encode(video.double()), z)
    _one_line(lambda: c.encode(((video + 1) * 127.5).to(torch.uint8)), "float in")
    _one_line(lambda: c.encode((video + 1) * 127.5), r"expects \[-1, 1\]; got values up to 25\d.*divide by 127.5")
    _one_line(lambda: c.encode(video[:, :, :0]), f"T a positive multiple of {c.temporal_down}")
    _one_line(lambda: c.encode(video[..., :0, :]), f"H, W positive multiples of {c.spatial_down}")
    _one_line(lambda: c.encode(video[:0]), "B >= 1")
    _one_line(lambda: c.encode(video * float("nan")), "NaN")
    rec = c.decode(z)
    assert torch.equal(c.decode(z.double()), rec) and torch.equal(c.decode_unscaled(z.double()), c.decode_unscaled(z))
    _one_line(lambda: c.decode(z.to(torch.int32)), "float")
    _one_line(lambda: c.decode_unscaled(z[:, :, :0]), "T', h, w >= 1")
    _one_line(lambda: c.decode(z[0]), r"\(B, 16, T', h, w\)")
