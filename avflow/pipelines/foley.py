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

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow.codecs.audio_vae import AudioVAE
from avflow.codecs.bigvgan import BigVGAN
from avflow.data.media import probe
from avflow.encoders.features import Encoders, load_clip, load_synchformer
from avflow.encoders.preprocess import clip_frames_transform
from avflow.errors import ConfigError, MediaError
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio import build_mmaudio, load_official_state_dict
from avflow.pipelines.foley_frames import iter_window_frames
from avflow.pipelines.foley_model import FoleyModel
from avflow.pipelines.foley_overlap import OverlapInpainting, ramp
from avflow.pipelines.foley_variants import VARIANTS, model_paths
from avflow.pipelines.foley_windows import EPS, Window, plan_windows
from avflow.precision import autocast, check_precision

MIN_VIDEO_S = 0.5  # shortest video accepted


@dataclass
class FoleyOutput:
    audio: np.ndarray  # (samples,) float32 mono
    sample_rate: int
    duration: float
    windows: int

    def channels_first(self) -> np.ndarray:
        """(C, samples), as the audio writers and the muxer take it."""
        return self.audio if self.audio.ndim == 2 else self.audio[None]


def in_own_precision(method: Callable) -> Callable:
    """Run a pipeline method (every stage in it) under the pipeline's precision."""

    @functools.wraps(method)
    def run(self: FoleyPipeline, *args, **kwargs):
        with self.in_precision():
            return method(self, *args, **kwargs)

    return run


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
        precision: str = "fp32",
    ) -> None:
        self.model, self.encoders = model, encoders
        self.window_s, self.overlap_s, self.read_s = window_s, overlap_s, read_s
        self.precision = check_precision(precision)  # every stage runs under `avflow.precision.autocast`
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
        defaults to the variant's; `kwargs` go to the constructor (window_s, overlap_s, read_s, precision)."""
        paths = model_paths(model, root)
        spec = VARIANTS[model]
        network = load_official_state_dict(build_mmaudio(spec.network_config, device="meta"), paths[spec.network])
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
        config = self.model.network.config
        return config.sample_rate / config.hop_length / 2

    def in_precision(self) -> AbstractContextManager:
        """The autocast context of this pipeline's precision on its device."""
        return autocast(self.precision, self.model.device)

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
    @in_own_precision
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
        if total < MIN_VIDEO_S - EPS:
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
    @in_own_precision
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
    @in_own_precision
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
                    generator_net = OverlapInpainting(net, p_lat[:, offset : offset + n], x0, ramp(n))
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
