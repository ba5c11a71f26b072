"""World clips <-> training streams for the experiments, with fixed (untrained) codecs so arms share them exactly.

- video: pixels `(3, T, H, W)` in [-1, 1] (the Wan-layout tower patchifies them; no learned autoencoder).
- audio: `(F, 2 * bands)` normalised log band energies per ear (STFT hop 256 at 16 kHz = 62.5 frames/s), decoded
  as band noise shared by both ears times each ear's band amplitudes, so onsets and the level difference survive.
- text: caption -> `(S, 384)` tokens and a mask from the tiny hashed encoder or MiniLM.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow.experiments.configs import SizeConfig

HOP = 256
N_FFT = 512
LOG_MEAN, LOG_SCALE = -9.0, 3.0  # log band energy -> roughly unit scale


def band_filters(bands: int, sample_rate: int, n_fft: int = N_FFT) -> Tensor:
    """Triangular mel-spaced filters `(bands, n_fft // 2 + 1)`."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = inv(np.linspace(mel(40.0), mel(sample_rate / 2), bands + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    fb = np.zeros((bands, freqs.size))
    for b in range(bands):
        lo, mid, hi = edges[b : b + 3]
        fb[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return torch.from_numpy(fb).float()


def audio_frames(duration: float, sample_rate: int) -> int:
    return int(round(duration * sample_rate)) // HOP


def encode_audio(wav: Tensor, bands: int, sample_rate: int) -> Tensor:
    """(2, N) stereo -> (N // HOP, 2 * bands)."""
    frames = wav.shape[-1] // HOP
    spec = torch.stft(wav.float(), N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spec.abs().square()[..., :frames]  # (2, K, F)
    energy = torch.einsum("bk,ckf->cfb", band_filters(bands, sample_rate), power)  # (2, F, bands)
    x = (torch.log(energy + 1e-8) - LOG_MEAN) / LOG_SCALE
    return torch.cat([x[0], x[1]], dim=-1)


def band_noise(bands: int, sample_rate: int, length: int, seed: int = 0) -> Tensor:
    """(bands, length) white noise filtered to each band's frequency response."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(length, generator=g)
    spec = torch.fft.rfft(noise)  # (length // 2 + 1,)
    fb = band_filters(bands, sample_rate, n_fft=2 * (spec.shape[0] - 1))  # (bands, length // 2 + 1)
    return torch.fft.irfft(spec[None] * fb.sqrt(), n=length)


def decode_audio(x: Tensor, bands: int, sample_rate: int, seed: int = 0, lag_hops: float = 0.25) -> Tensor:
    """(F, 2 * bands) -> (2, F * HOP): band noise (the same in both ears) times each ear's band amplitudes.

    Amplitudes are held constant over a hop (no smoothing), so impacts keep a sharp onset; frame k covers samples
    from (k + lag_hops) * HOP, which centres the onset error of the round trip near zero (within half a hop).
    """
    frames = x.shape[0]
    length = frames * HOP
    noise = band_noise(bands, sample_rate, length, seed)  # (bands, N)
    ref = encode_audio(torch.stack([noise.sum(0)] * 2), bands, sample_rate)[:, :bands]  # unit-noise band levels
    ref_energy = torch.exp(ref * LOG_SCALE + LOG_MEAN).mean(0)  # (bands,)
    energy = torch.exp(x.float().clamp(-4, 4) * LOG_SCALE + LOG_MEAN).view(frames, 2, bands)  # (F, 2, bands)
    gain = (energy / ref_energy).sqrt()  # (F, 2, bands)
    shift = int(round(lag_hops * HOP))
    held = gain.repeat_interleave(HOP, dim=0)  # (N, 2, bands)
    held = torch.cat([held[:1].expand(shift, -1, -1), held[: length - shift]])
    return torch.einsum("ncb,bn->cn", held, noise)


def encode_video(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).float().permute(3, 0, 1, 2) / 127.5 - 1.0


def decode_video(x: Tensor) -> np.ndarray:
    """(3, T, H, W) -> (T, H, W, 3) uint8."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def encode_text(captions: list[str], encoder: str) -> tuple[Tensor, Tensor]:
    from avflow.encoders.text import load_text_encoder

    enc = load_text_encoder(encoder, max_len=32)
    with torch.no_grad():
        return enc(captions)


def world_config(size: SizeConfig):
    from avflow.world.scene import WorldConfig

    return replace(
        WorldConfig(), width=size.width, height=size.height, duration=size.duration, fps=size.fps,
        max_objects=size.max_objects,
    )  # fmt: skip


def prepare_data(size: SizeConfig, folder: Path, data_seed: int = 0) -> dict:
    """Render the train and eval world clips once (shared by all arms) and write the stream files.

    Writes `train_video.safetensors`, `train_video_audio.safetensors` (for `tensor_file`), `eval.safetensors`
    (eval conditions) and `eval/` world clips (the references); returns the manifest (also `manifest.json`).
    """
    from avflow.weights import atomic_write, save_safetensors
    from avflow.world.dataset import make_clip, write_clip

    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        return json.loads(manifest_path.read_text())
    config = world_config(size)
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    parts: dict[str, dict[str, list]] = {}
    manifest = {"train": [], "eval": []}
    for split, n, base in (("train", size.n_train, 1_000_000), ("eval", size.n_eval, 2_000_000)):
        rows = parts[split] = {"video": [], "audio": [], "caption": []}
        for i in range(n):
            clip = make_clip(base + data_seed * 10_000 + i, config, f"{split}_{i:05d}")
            rows["video"].append(encode_video(clip.frames))
            rows["audio"].append(encode_audio(torch.from_numpy(clip.audio), size.audio_bands, config.sample_rate))
            rows["caption"].append(clip.meta["caption"])
            manifest[split].append({"id": clip.meta["id"], "n_events": len(clip.meta["events"])})
            if split == "eval":
                write_clip(clip, folder / "eval" / clip.meta["id"])
    for split, rows in parts.items():
        text, mask = encode_text(rows["caption"], size.text_encoder)
        video, audio = torch.stack(rows["video"]), torch.stack(rows["audio"])
        cond = {"cond.text": text, "cond.text_mask": mask}
        if split == "train":
            save_safetensors({"streams.video": video, **cond}, folder / "train_video.safetensors")
            save_safetensors(
                {"streams.video": video, "streams.audio": audio, **cond}, folder / "train_video_audio.safetensors"
            )
        else:
            save_safetensors({"video": video, "audio": audio, **cond}, folder / "eval.safetensors")
    manifest["sample_rate"] = config.sample_rate
    atomic_write(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest
