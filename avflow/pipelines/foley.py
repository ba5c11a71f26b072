"""Video (or text, or an image) to audio with an MMAudio variant, for videos of any frame rate and any length.

Long videos are generated in overlapping windows of `window_s` seconds (the model's training length, 8 s).

Seam policy (soft inpainting + crossfade):
  * Window k starts `window_s - overlap_s` seconds after window k-1, snapped to the latent grid; its first
    `n` latent frames overlap the previous window's last `n`.
  * While window k is sampled, the overlap follows the previous window's final latents re-noised to the current t
    (RePaint-style replacement, done through the velocity so that every solver step stays on that path), weighted by
    a linear ramp a = 1 -> 0 across the overlap: v = a v_known + (1 - a) v_network with
    v_known = x1_prev - (1 - sigma_min) x0. The network therefore sees the previous audio as context at every step,
    and the final overlap latents are a linear latent crossfade from the previous window to the new one. The MMAudio
    network takes one t per sample, so clean-frame conditioning (t = 1 per frame) is not available to it.
  * Each window is decoded (VAE + vocoder) on its own; the decoded overlap is crossfaded linearly in the waveform,
    which also hides the decoder's edge effects at window borders.
Memory: the video is streamed once; only the encoder frames of the (at most two) windows that overlap the current
time are held; features, latents and decoded audio exist for one window (plus the previous window's latents and
undecided audio tail) at a time. Only the final waveform is accumulated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow import hub
from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAE, AudioVAEConfig
from avflow.codecs.bigvgan import BIGVGAN_CONFIGS, BigVGAN, BigVGANConfig
from avflow.data.media import iter_video_windows, probe
from avflow.encoders.clip import CLIPConfig
from avflow.encoders.features import Encoders, load_clip, load_synchformer
from avflow.encoders.preprocess import clip_frames_transform, frame_counts, sync_frames_transform
from avflow.encoders.synchformer import SynchformerConfig
from avflow.errors import ConfigError, MediaError, WeightsError
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio import CONFIGS, SAMPLING, MMAudio, MMAudioConfig, build_mmaudio, load_official_state_dict
from avflow.pipelines.foley_model import FoleyModel

MIN_VIDEO_S = 0.5  # shortest video accepted
MIN_MODEL_S = 0.64  # shortest clip the network takes (one 16-frame Synchformer segment); shorter clips are padded
_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------------------
# Variants: which cached files and which constructor arguments make up a model


@dataclass
class FoleySpec:
    """Asset stems (see `avflow.hub.ASSETS`) and configs of one model variant."""

    network: str
    vae: str
    vocoder: str
    synchformer: str
    clip: str
    network_config: MMAudioConfig
    vae_config: AudioVAEConfig
    vocoder_config: BigVGANConfig
    clip_config: CLIPConfig = field(default_factory=CLIPConfig)
    synchformer_config: SynchformerConfig = field(default_factory=SynchformerConfig)
    sampling: SamplingConfig = SAMPLING  # the variant's default sampling settings


def _official(name: str) -> FoleySpec:
    mode = "16k" if CONFIGS[name].sample_rate == 16000 else "44k"
    vocoder = "best_netG" if mode == "16k" else "bigvgan_v2_44khz_128band_512x"
    return FoleySpec(
        network=f"mmaudio_{name}",
        vae="v1-16" if mode == "16k" else "v1-44",
        vocoder=vocoder,
        synchformer="synchformer_state_dict",
        clip="dfn5b_clip_vit_h_14_384",
        network_config=replace(CONFIGS[name]),
        vae_config=AUDIO_VAE_CONFIGS[mode],
        vocoder_config=BIGVGAN_CONFIGS[mode],
    )


# Model name (as in `avflow.hub.MODELS`) -> spec. Plain dict: tests register tiny variants here.
VARIANTS: dict[str, FoleySpec] = {name: _official(name) for name in CONFIGS}


def check_model(model: str) -> FoleySpec:
    """The spec of a model that can be fetched, or a one-line WeightsError listing the known ones."""
    if model not in VARIANTS or model not in hub.MODELS:
        raise WeightsError(f"unknown model {model!r}; choose from {', '.join(m for m in VARIANTS if m in hub.MODELS)}")
    return VARIANTS[model]


def model_paths(model: str, root: Path | None = None) -> dict[str, Path]:
    """Converted weight files of a model, or a one-line WeightsError naming `avflow download MODEL`."""
    check_model(model)
    try:
        return hub.fetch_model(model, root)
    except WeightsError as exc:
        message = str(exc).strip().splitlines()[0].replace("avflow download MODEL", f"avflow download {model}")
        message = message if len(message) <= 300 else message[:300] + "..."  # torch errors can run long
        raise WeightsError(f"model {model} is not ready: {message}") from None


# ----------------------------------------------------------------------------------------------------------------
# Windows


@dataclass
class Window:
    """One generation window: starts at latent frame `start` (global grid), lasts `duration` seconds."""

    index: int
    start: int  # latent frames from the video start
    start_s: float
    duration: float  # seconds the window's video features and audio cover (>= MIN_MODEL_S)


def plan_windows(total_s: float, window_s: float, overlap_s: float, latent_rate: float) -> list[Window]:
    """Windows of `window_s` (the last one may be shorter) covering [0, total_s), starts on the latent grid."""
    if not window_s >= MIN_MODEL_S or not 0 <= overlap_s < window_s / 2:
        raise ConfigError(f"need window >= {MIN_MODEL_S} s and 0 <= overlap < window / 2, got {window_s}, {overlap_s}")
    if total_s <= window_s + _EPS:
        return [Window(0, 0, 0.0, max(total_s, MIN_MODEL_S))]
    stride = max(1, round((window_s - overlap_s) * latent_rate))
    starts = []
    m = 0
    while m / latent_rate + window_s < total_s - _EPS:
        starts.append(m)
        m += stride
    starts.append(max(starts[-1] + 1, math.ceil((total_s - window_s) * latent_rate - _EPS)))
    windows = []
    for i, m in enumerate(starts):
        s = m / latent_rate
        windows.append(Window(i, m, s, max(min(window_s, total_s - s), MIN_MODEL_S)))
    return windows


@dataclass
class WindowFrames:
    window: Window
    clip: Tensor  # (n_clip, 3, 384, 384) uint8
    sync: Tensor  # (n_sync, 3, 224, 224) uint8


class _Targets:
    """Frame targets start + k / fps, k < count; each takes the first source frame at or after it."""

    def __init__(self, start: float, fps: float, count: int, transform: Callable[[Tensor], Tensor]):
        self.start, self.fps, self.count, self.transform = start, fps, count, transform
        self.frames: list[Tensor] = []

    def take(self, t: float, frame: Tensor, cache: dict) -> None:
        while len(self.frames) < self.count and self.start + len(self.frames) / self.fps <= t + _EPS:
            key = id(self.transform)
            if key not in cache:
                cache[key] = self.transform(frame[None])[0]
            self.frames.append(cache[key])

    def finish(self, last: Tensor | None, cache: dict) -> Tensor:
        """Targets past the last source frame repeat it."""
        while len(self.frames) < self.count and last is not None:
            self.take(math.inf, last, cache)
        return torch.stack(self.frames)

    @property
    def done(self) -> bool:
        return len(self.frames) >= self.count


def iter_window_frames(path: str | Path, windows: list[Window], read_s: float = 0.5) -> Iterator[WindowFrames]:
    """Stream the video once; yield each window's CLIP (8 fps) and Synchformer (25 fps) frames when complete.

    Only windows overlapping the current read position hold frames, so memory is bounded by about two windows of
    encoder-sized frames plus `read_s` seconds of source frames.
    """
    pending = list(windows)
    active: list[tuple[Window, _Targets, _Targets]] = []

    def open_until(t: float) -> None:
        while pending and pending[0].start_s <= t + _EPS:
            w = pending.pop(0)
            n_clip, n_sync = frame_counts(w.duration)
            active.append(
                (
                    w,
                    _Targets(w.start_s, 8.0, n_clip, clip_frames_transform),
                    _Targets(w.start_s, 25.0, n_sync, sync_frames_transform),
                )
            )

    last = None
    for chunk in iter_video_windows(path, window_s=read_s, overlap_s=0.0, fps=None, size=None):
        frames = chunk.frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        for frame, t in zip(frames, chunk.times.tolist()):
            open_until(t)
            cache: dict = {}
            for _, clip_t, sync_t in active:
                clip_t.take(t, frame, cache)
                sync_t.take(t, frame, cache)
            last = frame
            while active and active[0][1].done and active[0][2].done:
                w, clip_t, sync_t = active.pop(0)
                yield WindowFrames(w, torch.stack(clip_t.frames), torch.stack(sync_t.frames))
        if not active and not pending:
            return
    open_until(math.inf)
    for w, clip_t, sync_t in active:
        cache = {}
        yield WindowFrames(w, clip_t.finish(last, cache), sync_t.finish(last, cache))


# ----------------------------------------------------------------------------------------------------------------
# Overlap conditioning


class OverlapInpainting:
    """Generator wrapper: the first frames follow a known latent path, blended by `weight` (1 = fully known)."""

    def __init__(self, network: MMAudio, known: Tensor, noise: Tensor, weight: Tensor, sigma_min: float = 0.0):
        self.network = network
        n = known.shape[1]
        self.n = n
        self.weight = weight.view(1, n, 1).to(known)  # (1, n, 1)
        self.v_known = known - (1.0 - sigma_min) * noise[:, :n]  # (B, n, C): constant velocity of the known path

    def empty_conditions(self, batch: int, negative_text_f: Tensor | None = None):
        return self.network.empty_conditions(batch, negative_text_f)

    def velocity(self, streams: dict, t: dict, cond, *, cross_modal: bool = True) -> dict:
        v = self.network.velocity(streams, t, cond, cross_modal=cross_modal)["audio"]  # (B', N, C)
        known = self.v_known.repeat(v.shape[0] // self.v_known.shape[0], 1, 1).to(v.dtype)
        head = self.weight * known + (1 - self.weight) * v[:, : self.n]
        return {"audio": torch.cat([head, v[:, self.n :]], dim=1)}


def _ramp(n: int) -> Tensor:
    """Linear weights 1 -> 0 over n frames, excluding the end points."""
    return 1.0 - torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)


# ----------------------------------------------------------------------------------------------------------------
# Pipeline


@dataclass
class FoleyOutput:
    audio: np.ndarray  # (samples,) float32 mono
    sample_rate: int
    duration: float
    windows: int

    def channels_first(self) -> np.ndarray:
        """(C, samples), as the audio writers and the muxer take it."""
        return self.audio if self.audio.ndim == 2 else self.audio[None]


class FoleyPipeline:
    """Encoders + FoleyModel + windowing. `trace`, when a list, receives (name, seconds spanned) per tensor."""

    def __init__(
        self,
        model: FoleyModel,
        encoders: Encoders,
        *,
        window_s: float = 8.0,
        overlap_s: float = 1.0,
        read_s: float = 0.5,
    ) -> None:
        self.model, self.encoders = model, encoders
        self.window_s, self.overlap_s, self.read_s = window_s, overlap_s, read_s
        self.trace: list[tuple[str, float]] | None = None
        self.timings: dict[str, float] = {}  # wall seconds per stage (features, sampling, decoding), accumulated

    @classmethod
    def from_cache(
        cls,
        model: str = "large_44k_v2",
        root: Path | None = None,
        *,
        device: str | torch.device = "cpu",
        sampling: SamplingConfig | None = None,
        **kwargs,
    ) -> FoleyPipeline:
        """Load every part of `model` from the weight cache (official files converted to safetensors); `sampling`
        defaults to the variant's."""
        paths = model_paths(model, root)
        spec = VARIANTS[model]
        network = load_official_state_dict(
            build_mmaudio(replace(spec.network_config), device="meta"), paths[spec.network]
        )
        network = network.to(device).eval()
        vae = AudioVAE.from_file(paths[spec.vae], spec.vae_config).to(device).eval()
        vocoder = BigVGAN.from_file(paths[spec.vocoder], spec.vocoder_config).to(device).eval()
        foley = FoleyModel(network, vae, vocoder, sampling or spec.sampling)
        clip = load_clip(paths[spec.clip], spec.clip_config)
        sync = load_synchformer(paths[spec.synchformer], spec.synchformer_config)
        return cls(foley, Encoders(clip, sync).to(device), **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def latent_rate(self) -> float:
        cfg = self.model.network.config
        return cfg.sample_rate / cfg.hop_length / 2

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def _note(self, name: str, seconds: float) -> None:
        if self.trace is not None:
            self.trace.append((name, float(seconds)))

    def _text(self, prompt: str | None) -> Tensor | None:
        return None if prompt is None else self.encoders.encode_text([prompt])

    # -- video ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_video(
        self,
        path: str | Path,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        *,
        duration: float | None = None,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> FoleyOutput:
        """Audio for the video's first `duration` seconds (default: all of it), window by window."""
        info = probe(path)
        if not info.has_video or info.n_frames == 0:
            raise MediaError(f"{path}: no video stream")
        total = info.duration if duration is None else min(float(duration), info.duration)
        if total < MIN_VIDEO_S - _EPS:
            raise MediaError(f"{path}: video is too short ({total:.3f} s); at least {MIN_VIDEO_S} s is needed")
        windows = plan_windows(total, self.window_s, self.overlap_s, self.latent_rate)
        text_f, negative_f = self._text(prompt), self._text(negative_prompt)

        def features() -> Iterator[tuple[Window, Tensor, Tensor]]:
            frames = iter_window_frames(path, windows, self.read_s)
            while True:
                with self._timed("features"):
                    wf = next(frames, None)
                    if wf is None:
                        return
                    self._note("clip_frames", len(wf.clip) / 8.0)
                    self._note("sync_frames", len(wf.sync) / 25.0)
                    clip_f = self.encoders.encode_clip(wf.clip[None])  # (1, n_clip, D)
                    sync_f = self.encoders.encode_sync(wf.sync[None])  # (1, n_sync_tokens, D)
                yield wf.window, clip_f, sync_f

        audio = self._generate_windows(features(), text_f, negative_f, total, seed, sampling)
        return FoleyOutput(audio, self.sample_rate, total, len(windows))

    # -- text and image -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_text(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        duration: float = 8.0,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> FoleyOutput:
        """Text-to-audio: empty CLIP and sync features, windowed like video when longer than a window."""
        if not duration >= MIN_VIDEO_S:
            raise ConfigError(f"duration must be >= {MIN_VIDEO_S} s, got {duration}")
        windows = plan_windows(duration, self.window_s, self.overlap_s, self.latent_rate)
        audio = self._generate_windows(
            ((w, None, None) for w in windows),
            self._text(prompt),
            self._text(negative_prompt),
            duration,
            seed,
            sampling,
        )
        return FoleyOutput(audio, self.sample_rate, duration, len(windows))

    @torch.no_grad()
    def generate_image(
        self,
        path: str | Path,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        *,
        duration: float = 8.0,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> FoleyOutput:
        """Image-to-audio (MMAudio's image mode): the image as every CLIP frame, empty Synchformer features."""
        from PIL import Image, UnidentifiedImageError

        if not duration >= MIN_VIDEO_S:
            raise ConfigError(f"duration must be >= {MIN_VIDEO_S} s, got {duration}")
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise MediaError(f"{path}: cannot read as an image ({type(exc).__name__})") from None
        frame = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]  # (1, 3, H, W)
        image_f = self.encoders.encode_clip(clip_frames_transform(frame)[None])  # (1, 1, D)
        windows = plan_windows(duration, self.window_s, self.overlap_s, self.latent_rate)

        def feats():
            for w in windows:
                n_clip = self.model.network.set_duration(w.duration).clip
                yield w, image_f.expand(1, n_clip, -1), None

        audio = self._generate_windows(
            feats(), self._text(prompt), self._text(negative_prompt), duration, seed, sampling
        )
        return FoleyOutput(audio, self.sample_rate, duration, len(windows))

    # -- the windowed core ----------------------------------------------------------------------------------------

    def _fit(self, feats: Tensor | None, length: int) -> Tensor | None:
        """Cut or repeat-pad features along time to `length` (guards one-frame rounding differences)."""
        if feats is None or feats.shape[1] == length:
            return feats
        if feats.shape[1] > length:
            return feats[:, :length]
        pad = feats[:, -1:].expand(-1, length - feats.shape[1], -1)
        return torch.cat([feats, pad], dim=1)

    def _generate_windows(
        self,
        windows: Iterator[tuple[Window, Tensor | None, Tensor | None]],
        text_f: Tensor | None,
        negative_f: Tensor | None,
        total_s: float,
        seed: int,
        sampling: SamplingConfig | None,
    ) -> np.ndarray:
        net, model = self.model.network, self.model
        sr, per_latent = self.sample_rate, 2 * net.config.hop_length
        generator = torch.Generator().manual_seed(seed)
        out: list[np.ndarray] = []
        prev: tuple[int, Tensor] | None = None  # (start latent, normalized latents (1, N, C)) of the last window
        tail: tuple[int, Tensor] | None = None  # (start sample, decoded audio not yet final)
        for w, clip_f, sync_f in windows:
            lengths = net.set_duration(w.duration)
            clip_f, sync_f = self._fit(clip_f, lengths.clip), self._fit(sync_f, lengths.sync)
            x0 = torch.randn((1, lengths.latent, net.config.latent_dim), generator=generator).to(
                model.device, net.latent_mean.dtype
            )
            generator_net = net
            if prev is not None:
                p_start, p_lat = prev
                offset = w.start - p_start
                n = min(p_lat.shape[1] - offset, lengths.latent)
                if n > 0:
                    generator_net = OverlapInpainting(net, p_lat[:, offset : offset + n], x0, _ramp(n))
            with self._timed("sampling"):
                latents = self.model.sample_normalized(
                    x0, clip_f, sync_f, text_f, negative_text_f=negative_f, sampling=sampling, generator=generator_net
                )
            self._note("latents", latents.shape[1] / self.latent_rate)
            with self._timed("decoding"):
                wav = model.decode(net.unnormalize(latents), round(w.duration * sr))[0].float().cpu()  # (samples,)
            self._note("window_audio", len(wav) / sr)
            start = w.start * per_latent
            if tail is None:
                tail = (start, wav)
            else:
                t_start, t_wav = tail
                keep = start - t_start
                out.append(t_wav[:keep].numpy())
                overlap = min(len(t_wav) - keep, len(wav))
                if overlap > 0:
                    fade = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
                    wav = wav.clone()
                    wav[:overlap] = (1 - fade) * t_wav[keep : keep + overlap] + fade * wav[:overlap]
                tail = (start, wav)
            self._note("audio_tail", len(tail[1]) / sr)
            prev = (w.start, latents)
            self._note("kept_latents", latents.shape[1] / self.latent_rate)
        out.append(tail[1].numpy())
        audio = np.concatenate(out)
        n_total = round(total_s * sr)
        audio = audio[:n_total] if len(audio) >= n_total else np.pad(audio, (0, n_total - len(audio)))
        audio = audio.astype(np.float32)
        return audio
