"""Text-to-audio+video with the joint model: `JointPipeline.generate(...)` (load the shipped one with
`avflow.pipelines.default_model.load_default_model()`).

The joint model generates a video latent and a mono audio latent; the world video AE and audio VAE (Griffin-Lim)
decode them, and the spatialiser places the mono track where the visible impacts happen (stereo [left, right]).
Tasks: `t2av` (both generated), `a2v` (audio given, video generated), `v2a` (video given, audio generated).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from avflow.errors import AvflowError, ConfigError
from avflow.flow.sampling import SamplingConfig, sample_with
from avflow.pipelines.clip import GeneratedClip
from avflow.pipelines.inputs import MAX_DURATION_S
from avflow.precision import DEFAULT_PRECISION, autocast, check_precision

if TYPE_CHECKING:
    from avflow.pipelines.default_model import DefaultModelConfig

TASKS = ("t2av", "a2v", "v2a")


class JointPipeline:
    """Joint model + world codecs + MiniLM text encoder + spatialiser."""

    def __init__(self, model, video_ae, audio_vae, text_encoder, config: DefaultModelConfig):
        self.model, self.video_ae, self.audio_vae, self.text_encoder = model, video_ae, audio_vae, text_encoder
        self.config = config
        self.fps, self.sample_rate = config.fps, config.sample_rate
        self.height, self.width = config.height, config.width
        self.sampling = config.sampling  # the model's defaults
        self.default_prompt = config.default_prompt
        self.precision = DEFAULT_PRECISION  # `avflow.precision`: auto, fp32 or bf16 (set with `to`)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device, precision: str | None = None) -> JointPipeline:
        """Move the networks to `device`, and set the precision (`avflow.precision`; with the default "auto", CUDA
        samples under bf16 autocast where the GPU supports it)."""
        for module in (self.model, self.video_ae, self.audio_vae):
            module.to(device)
        self.precision = check_precision(precision or self.precision)
        return self

    def shapes(self, duration: float) -> tuple[int, int]:
        """(pixel frames, audio latents) for `duration` s: frames a multiple of 4, audio 512 samples per latent."""
        frames = max(4, int(round(duration * self.fps / 4)) * 4)
        return frames, int(frames / self.fps * self.sample_rate) // 512

    def _read_audio(self, path: str | Path, samples: int) -> Tensor:
        from avflow.data.media import read_audio

        audio, _ = read_audio(path, sample_rate=self.sample_rate, channels=1)  # (1, N)
        audio = audio[0, :samples]
        return torch.nn.functional.pad(audio, (0, samples - audio.shape[0]))

    def _read_video(self, path: str | Path, frames: int) -> Tensor:
        from avflow.data.media import read_video

        video = read_video(path, fps=self.fps, size=(self.height, self.width), mode="resize").frames[:frames]
        if video.shape[0] < frames:  # hold the last frame
            video = torch.cat([video, video[-1:].expand(frames - video.shape[0], -1, -1, -1)])
        return video  # (T, H, W, 3) uint8

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        *,
        seed: int = 0,
        duration: float | None = None,
        sampling: SamplingConfig | None = None,
        task: str = "t2av",
        audio_path: str | Path | None = None,
        video_path: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> GeneratedClip:
        from avflow.codecs.world_video_ae import frames_to_video

        if not isinstance(prompt, str) or not prompt.strip():
            raise AvflowError("the prompt is empty: describe the scene, e.g. 'a red ball bounces on the left'")
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        duration = self.config.duration if duration is None else float(duration)
        if not duration > 0 or duration > MAX_DURATION_S:
            raise AvflowError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds, got {duration}")
        sampling = sampling or self.sampling
        if task == "a2v" and audio_path is None:
            raise AvflowError("task a2v needs an audio file (--audio-file FILE)")
        if task == "v2a" and video_path is None:
            raise AvflowError("task v2a needs a video file (--video FILE)")
        n_frames, n_audio = self.shapes(duration)
        samples = int(round(n_frames / self.fps * self.sample_rate))
        device = self.device
        clean, t_start, given_audio, given_frames = {}, {}, None, None
        if task == "a2v":
            given_audio = self._read_audio(audio_path, samples)  # (samples,)
            with autocast(self.precision, device, codec=True):
                clean["audio"] = self.audio_vae.encode(given_audio[None, : n_audio * 512].to(device)).float()
            t_start["audio"] = torch.ones(1, device=device)
        if task == "v2a":
            given_frames = self._read_video(video_path, n_frames)
            with autocast(self.precision, device, codec=True):
                clean["video"] = self.video_ae.encode(frames_to_video(given_frames).to(device)).float()
            t_start["video"] = torch.ones(1, device=device)

        g = torch.Generator().manual_seed(int(seed))
        tv, hv, wv = n_frames // 4, self.height // 8, self.width // 8
        noise = {
            "video": torch.randn(1, 16, tv, hv, wv, generator=g).to(device),
            "audio": torch.randn(1, n_audio, 20, generator=g).to(device),
        }
        text, mask = self.text_encoder([prompt])
        cond = {"text": text.to(device), "text_mask": mask.to(device)}
        with autocast(self.precision, device):
            result = sample_with(sampling, self.model, noise, cond, clean=clean or None, t_start=t_start or None,
                                 progress=progress)  # fmt: skip
        streams = {k: v.float() for k, v in result.streams.items()}

        with autocast(self.precision, device, codec=True):
            video = self.video_ae.decode(streams["video"])[0].float().cpu() if given_frames is None else None
            mono = self.audio_vae.decode(streams["audio"])[0].float().cpu() if given_audio is None else None
        if given_frames is None:
            frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()
        else:
            frames = given_frames
        if given_audio is None:  # mono (512 N,)
            mono = torch.nn.functional.pad(mono, (0, samples - mono.shape[0]))
        else:
            mono = given_audio
        stereo = to_stereo(mono.numpy(), self.sample_rate, frames.numpy(), self.fps)
        return GeneratedClip(frames=frames, audio=torch.from_numpy(stereo), sample_rate=self.sample_rate, fps=self.fps,
                             prompt=prompt)  # fmt: skip


def to_stereo(mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> np.ndarray:
    """Mono (N,) -> (2, N) float32 [left, right] placed at the visible impacts (the binaural spatialiser)."""
    from avflow.pipelines.spatialise import spatialise

    stereo = spatialise(mono, sample_rate, frames, fps)
    peak = float(np.abs(stereo).max()) if stereo.size else 0.0
    return (stereo * (0.99 / peak) if peak > 0.99 else stereo).astype(np.float32)
