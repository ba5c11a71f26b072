"""World codecs: latent shapes fixed by the conventions, trainability, Griffin-Lim round trip, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from avflow.codecs.world_audio_vae import WorldAudioVAE, WorldAudioVAEConfig, mel_to_wav
from avflow.codecs.world_audio_vae import reconstruction_metrics as audio_metrics
from avflow.codecs.world_video_ae import WorldVideoAE, WorldVideoAEConfig, frames_to_video
from avflow.codecs.world_video_ae import reconstruction_metrics as video_metrics
from avflow.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_video_ae_shapes():
    ae = WorldVideoAE(WorldVideoAEConfig(channels=8))
    video = torch.rand(2, 3, 8, 32, 48) * 2 - 1
    z = ae.encode(video)
    assert z.shape == (2, 16, 2, 4, 6) == (2, 16, *ae.latent_shape(8, 32, 48))
    assert ae.decode(z).shape == video.shape
    with pytest.raises(ConfigError):
        ae.encode(torch.zeros(1, 3, 6, 32, 32))


def test_video_ae_trains_and_metrics():
    torch.manual_seed(0)
    ae = WorldVideoAE(WorldVideoAEConfig(channels=8))
    frames = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    frames[:, 4:12, 4:12] = 200
    video = frames_to_video(frames)
    assert video.shape == (1, 3, 4, 16, 16) and video.min() == -1
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = ae.loss(video)[0].item()
    for _ in range(30):
        loss, _ = ae.loss(video)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    scale = ae.fit_latent_scale(video)
    with torch.no_grad():
        assert scale > 0 and abs(float(ae.encode(video).std()) - 1) < 1e-3
    m = video_metrics(video, ae.decode(ae.encode(video)))
    assert m["psnr"] == pytest.approx(10 * math.log10(4 / m["mse"]))
    assert video_metrics(video, video)["psnr"] > 100


def test_audio_vae_shapes_and_rate():
    vae = WorldAudioVAE(WorldAudioVAEConfig(channels=16))
    wav = torch.randn(2, 16000) * 0.1  # 1 s
    mel = vae.wav_to_mel(wav)
    assert mel.shape == (2, 80, 62)  # 62.5 mel frames/s, trimmed to even
    z = vae.encode(wav)
    assert z.shape == (2, 31, 20)  # 31.25 latents/s
    assert vae.decode_mel(z).shape == mel.shape


def test_audio_vae_trains():
    torch.manual_seed(0)
    vae = WorldAudioVAE(WorldAudioVAEConfig(channels=16))
    t = torch.arange(8192) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440 * t) * (t < 0.25))[None]
    mel = vae.wav_to_mel(wav)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = vae.loss(mel)[0].item()
    for _ in range(40):
        loss, _ = vae.loss(mel)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    vae.fit_latent_stats(mel)
    z = vae.encode_mel(mel)
    assert z.mean().abs() < 1e-3
    assert audio_metrics(mel, vae.decode_mel(z))["mel_l1"] < first


def test_griffin_lim_round_trip():
    """mel -> Griffin-Lim waveform -> mel stays close; the tone stays at 440 Hz and its onset stays put."""
    vae = WorldAudioVAE(WorldAudioVAEConfig(channels=8))
    t = torch.arange(16000) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440 * t) * (t > 0.5))[None]
    mel = vae.wav_to_mel(wav)
    rec = mel_to_wav(mel, vae.mel, iters=16)
    assert rec.shape == (1, mel.shape[-1] * 256)
    m = audio_metrics(mel, vae.wav_to_mel(rec), wav, rec)
    assert m["wav_mel_l1"] < 0.5
    spectrum = torch.fft.rfft(rec[0, 9000:15000]).abs()
    assert abs(int(spectrum.argmax()) * 16000 / 6000 - 440) < 40  # within one mel band (~55 Hz wide here)
    energy = rec[0].square().unfold(0, 800, 800).mean(1)  # 50 ms bins
    assert energy[:9].max() < 0.05 * energy[11:].mean()
