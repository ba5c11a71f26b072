"""World clips <-> training streams for the experiments; every arm of a run shares one set of codecs exactly.

The size's `codecs` chooses them. "fixed" (untrained):
- video: pixels `(3, T, H, W)` in [-1, 1] (the Wan-layout tower patchifies them; no learned autoencoder).
- audio: `(F, 2 * bands)` normalised log band energies per ear (STFT hop 256 at 16 kHz = 62.5 frames/s), decoded
  as band noise shared by both ears times each ear's band amplitudes, so onsets and the level difference survive.
"world": the shipped world codecs (`avflow.codecs.world.load_world_codecs`), as the default model reads them:
- video: latents `(16, T/4, H/8, W/8)`; audio: one stream per ear, `left` and `right`, each `(S/500, 32)`.
Both: text: caption -> `(S, 384)` tokens and a mask from the tiny hashed encoder or MiniLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow.errors import ConfigError
from avflow.experiments.configs import SizeConfig, settings_difference

HOP = 256
N_FFT = 512
LOG_MEAN, LOG_SCALE = -9.0, 3.0  # log band energy -> roughly unit scale
WORLD_CODEC_CLIPS = (64, 64, 16)  # width, height and fps of the clips the world codecs were trained on


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


@cache
def shipped_codecs():
    """The shipped world codecs (`WorldCodecs`), loaded once per process."""
    from avflow.codecs.world import load_world_codecs

    return load_world_codecs()


def check_world_size(size: SizeConfig, codecs) -> None:
    """One-line ConfigError unless the size's clips are what the codecs were trained on and code into whole
    latents: 64x64, 16 fps, the codec's sample rate, frames and samples whole latents (a video latent frame then
    spans whole audio latents)."""
    world = world_config(size)
    frames, samples = world.n_frames, world.n_samples
    down, per_latent = codecs.video.temporal_down, codecs.audio.samples_per_latent
    per_frame = down * codecs.audio.sample_rate / (size.fps * per_latent)
    width, height, fps = WORLD_CODEC_CLIPS
    problems = [
        ((size.width, size.height) == (width, height), f"{size.width}x{size.height} pixels, not {width}x{height}"),
        (size.fps == fps, f"{size.fps} fps, not {fps}"),
        (world.sample_rate == codecs.audio.sample_rate,
         f"{world.sample_rate} Hz, not the audio codec's {codecs.audio.sample_rate}"),
        (frames % down == 0, f"{frames} frames ({size.duration:g} s), not a multiple of the video codec's {down}"),
        (samples % per_latent == 0,
         f"{samples} samples ({size.duration:g} s), not a multiple of the audio codec's {per_latent}"),
        (per_frame == round(per_frame), f"a video latent frame spans {per_frame:g} audio latents, not a whole number"),
    ]  # fmt: skip
    bad = [text for ok, text in problems if not ok]
    if bad:
        raise ConfigError(f"size with codecs 'world' does not fit the world codecs: {bad[0]}")


def world_codecs(size: SizeConfig):
    """The shipped world codecs, once the size is checked to fit them."""
    codecs = shipped_codecs()
    check_world_size(size, codecs)
    return codecs


@dataclass(frozen=True, kw_only=True)
class StreamLayout:
    """The coded streams as the joint model reads them: channels, rates and the audio streams' names."""

    video_channels: int
    video_temporal_stride: int  # pixel frames per video latent frame
    audio_streams: tuple[str, ...]  # ("audio",), or one per ear ("left", "right") side by side in channels
    audio_channels: int  # per audio stream
    audio_latent_rate: float  # audio latents per second

    def model_streams(self, streams: list[str]) -> list[str]:
        """An arm's streams (`video`, `audio`) -> the streams the model trains on and generates."""
        return [name for s in streams for name in (self.audio_streams if s == "audio" else (s,))]


def stream_layout(size: SizeConfig) -> StreamLayout:
    """The layout of the size's codecs, read from the codec objects for "world"."""
    if size.codecs == "world":
        codecs = world_codecs(size)
        return StreamLayout(
            video_channels=codecs.video.latent_channels, video_temporal_stride=codecs.video.temporal_down,
            audio_streams=tuple(codecs.audio.streams), audio_channels=codecs.audio.latent_channels,
            audio_latent_rate=codecs.audio.latent_rate,
        )  # fmt: skip
    return StreamLayout(
        video_channels=3, video_temporal_stride=1, audio_streams=("audio",), audio_channels=2 * size.audio_bands,
        audio_latent_rate=world_config(size).sample_rate / HOP,
    )  # fmt: skip


@torch.no_grad()
def encode_streams(clip, size: SizeConfig, sample_rate: int) -> dict[str, Tensor]:
    """One world clip -> its streams: `video`, `audio` (fixed codecs) or `video`, `left`, `right` (world)."""
    video = encode_video(clip.frames)  # (3, T, H, W)
    audio = torch.from_numpy(clip.audio)  # (2, S)
    if size.codecs == "fixed":
        return {"video": video, "audio": encode_audio(audio, size.audio_bands, sample_rate)}
    codecs = shipped_codecs()
    latents = codecs.video.encode(video[None])[0]  # (C, T/4, H/8, W/8)
    ears = codecs.audio.encode(audio[None])  # {ear: (1, S / samples_per_latent, C)}
    return {"video": latents, **{ear: z[0] for ear, z in ears.items()}}


@torch.no_grad()
def decode_streams(
    streams: dict[str, Tensor], size: SizeConfig, sample_rate: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Generated streams `(B, ...)` -> (video `(B, T, H, W, 3)` uint8, audio `(B, 2, S)` float32), each None when
    its modality was not generated."""
    video = audio = None
    if size.codecs == "fixed":
        if "video" in streams:
            video = np.stack([decode_video(x) for x in streams["video"]])
        if "audio" in streams:
            audio = np.stack([decode_audio(x, size.audio_bands, sample_rate).numpy() for x in streams["audio"]])
        return video, audio
    codecs = shipped_codecs()
    if "video" in streams:
        video = np.stack([decode_video(codecs.video.decode(z[None].float())[0]) for z in streams["video"]])
    ears = codecs.audio.streams
    if all(ear in streams for ear in ears):
        samples = world_config(size).n_samples
        audio = np.stack([
            codecs.audio.decode({ear: streams[ear][i : i + 1].float() for ear in ears}, samples)[0].numpy()
            for i in range(streams[ears[0]].shape[0])
        ])  # fmt: skip
    return video, audio


def codecs_name(checksum: str | None) -> str:
    return f"world codecs {checksum[:12]}..." if checksum else "the fixed codecs"


def check_data_codecs(manifest: dict, checksum: str | None, folder: Path) -> None:
    """One-line ConfigError when the data folder's streams were made with other codecs than the size's."""
    made = manifest.get("codecs_checksum")
    if made != checksum:
        raise ConfigError(f"{folder} holds streams made with {codecs_name(made)}, but this size codes with "
                          f"{codecs_name(checksum)}; use another output folder")  # fmt: skip


def codecs_checksum(size: SizeConfig) -> str | None:
    """The world codecs' checksum for a size that codes with them (checked to fit), None for the fixed codecs."""
    return world_codecs(size).checksum if size.codecs == "world" else None


def data_settings(size: SizeConfig, data_seed: int = 0) -> dict:
    """What the clips and streams of a data folder depend on (besides the codecs' checksum), recorded in its
    manifest: the world, the clip counts, the audio bands, the text encoder, the codecs and the data seed."""
    fields = ("width", "height", "duration", "fps", "max_objects", "n_train", "n_eval", "audio_bands", "text_encoder",
              "codecs")  # fmt: skip
    return {name: getattr(size, name) for name in fields} | {"data_seed": data_seed}


def check_data_settings(manifest: dict, settings: dict, folder: Path) -> None:
    """One-line ConfigError when the data folder was made for other settings (or recorded none)."""
    if diff := settings_difference(manifest.get("settings"), settings):
        raise ConfigError(f"{folder} holds streams made with {diff}; use another --out (or delete {folder})")


def prepare_data(size: SizeConfig, folder: Path, data_seed: int = 0) -> dict:
    """Render the train and eval world clips once (shared by all arms) and write the stream files.

    Writes `train_video.safetensors`, `train_video_audio.safetensors` (`streams.*` and `cond.*` for `tensor_file`),
    `eval.safetensors` (eval streams, for their shapes, and conditions) and `eval/` world clips (the references);
    returns the manifest (also `manifest.json`; it records the `data_settings`, and with world codecs it and the
    files record the codecs' checksum). A folder made for other settings or codecs is a one-line ConfigError.
    """
    from avflow.weights import atomic_write, save_safetensors
    from avflow.world.dataset import make_clip, write_clip

    folder = Path(folder)
    checksum = codecs_checksum(size)  # checks the size before rendering
    settings = data_settings(size, data_seed)
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        check_data_codecs(manifest, checksum, folder)
        check_data_settings(manifest, settings, folder)
        return manifest
    config = world_config(size)
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    parts: dict[str, tuple[dict[str, list[Tensor]], list[str]]] = {}
    manifest = {"train": [], "eval": []}
    for split, n, base in (("train", size.n_train, 1_000_000), ("eval", size.n_eval, 2_000_000)):
        streams, captions = parts[split] = {}, []
        for i in range(n):
            clip = make_clip(base + data_seed * 10_000 + i, config, f"{split}_{i:05d}")
            for name, x in encode_streams(clip, size, config.sample_rate).items():
                streams.setdefault(name, []).append(x)
            captions.append(clip.meta["caption"])
            manifest[split].append({"id": clip.meta["id"], "n_events": len(clip.meta["events"])})
            if split == "eval":
                write_clip(clip, folder / "eval" / clip.meta["id"])
    meta = {"codecs_checksum": checksum} if checksum else None
    for split, (streams, captions) in parts.items():
        text, mask = encode_text(captions, size.text_encoder)
        stacked = {name: torch.stack(xs) for name, xs in streams.items()}  # (N, ...) per stream
        cond = {"cond.text": text, "cond.text_mask": mask}
        if split == "train":
            save_safetensors({"streams.video": stacked["video"], **cond}, folder / "train_video.safetensors", meta)
            every = {f"streams.{name}": x for name, x in stacked.items()}
            save_safetensors({**every, **cond}, folder / "train_video_audio.safetensors", meta)
        else:
            save_safetensors({**stacked, **cond}, folder / "eval.safetensors", meta)
    manifest["sample_rate"] = config.sample_rate
    manifest["settings"] = settings
    if checksum:
        manifest["codecs_checksum"] = checksum
    atomic_write(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest
