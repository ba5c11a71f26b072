"""Text-to-audio+video with the shipped default model: `load_default_model()` -> `JointPipeline.generate(...)`.

The joint model generates a video latent and a mono audio latent; the world video AE and audio VAE (Griffin-Lim)
decode them, and the spatialiser places the mono track where the visible impacts happen (stereo [left, right]).
Tasks: `t2av` (both generated), `a2v` (audio given, video generated), `v2a` (video given, audio generated).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow.config import from_dict
from avflow.errors import AvflowError, ConfigError, WeightsError
from avflow.flow.sampling import SamplingConfig, sample_with

TASKS = ("t2av", "a2v", "v2a")
WEIGHT_FILES = ("joint.safetensors", "video_ae.safetensors", "audio_vae.safetensors", "config.json")


def default_model_dir() -> Path:
    """The shipped weights folder inside the installed package."""
    return Path(str(resources.files("avflow") / "assets" / "default_model"))


def default_sampling(path: str | Path | None = None) -> SamplingConfig:
    """The sampling settings in the model folder's `config.json` (read without loading any weights)."""
    folder = Path(path) if path is not None else default_model_dir()
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{folder}: cannot read config.json: {str(exc).splitlines()[0]}") from None
    return from_dict(SamplingConfig, config.get("sampling"), "sampling")


@dataclass
class GeneratedClip:
    frames: Tensor  # (T, H, W, 3) uint8
    audio: Tensor  # (2, N) float32 [left, right]
    sample_rate: int
    fps: float
    prompt: str

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / self.fps

    def save(self, path: str | Path) -> Path:
        """An mp4 with h264 video and a stereo AAC track of the video's duration."""
        from avflow.data.media import write_video

        return write_video(path, self.frames, self.fps, self.audio, self.sample_rate)

    def log_mel(self) -> np.ndarray:
        """(80, F) log10 mel of the left + right mix (MMAudio 16 kHz front end; audio resampled if needed)."""
        from avflow.codecs.mel import MEL_16K, MelSpectrogram
        from avflow.data.audio import resample

        mono = self.audio.float().mean(0, keepdim=True).numpy()  # (1, N)
        if self.sample_rate != MEL_16K.sample_rate:
            mono = resample(mono, self.sample_rate, MEL_16K.sample_rate)
        with torch.no_grad():
            return MelSpectrogram(MEL_16K)(torch.from_numpy(np.ascontiguousarray(mono)))[0].numpy()

    def save_spectrogram(self, path: str | Path, scale: int = 3) -> Path:
        """The log-mel as a PNG (low frequencies at the bottom, a black-red-yellow-white colour map)."""
        from PIL import Image

        mel = self.log_mel()[::-1]  # (80, F), high frequencies first (top row)
        lo, hi = float(mel.max()) - 5.0, float(mel.max())  # 50 dB of range
        x = np.clip((mel - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], -1)
        image = Image.fromarray((rgb * 255).astype(np.uint8)).resize((mel.shape[1] * scale, mel.shape[0] * scale))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path

    def metrics(self) -> dict[str, float]:
        """Model-free checks against what is visible in the generated frames (see `clip_av_metrics`)."""
        return clip_av_metrics(self.audio.numpy(), self.sample_rate, self.frames.numpy(), self.fps)


def clip_av_metrics(audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> dict[str, float]:
    """sync_ms: audio onsets minus contacts detected in the frames (median, positive = audio late);
    follows_object: correlation over detected contacts of the ILD just after the contact with the leftness of the
    object that made it; phys_residual_px: ballistic-fit residual of the tracked objects; plus onset/contact counts.
    """
    from avflow.eval import physics, spatial, sync

    tracks = physics.track_objects(frames)
    onsets = sync.detect_onsets(audio, sample_rate)
    contacts = sync.visual_contacts(tracks, fps)
    m = sync.match_offset(onsets, contacts)
    fit = physics.trajectory_residual(tracks, fps, None)
    times, azimuths = [], []
    width = frames.shape[2]
    for k in range(tracks.centers.shape[1]):
        one = physics.Tracks(tracks.centers[:, k : k + 1], tracks.areas[:, k : k + 1], tracks.frame_size)
        for tc in sync.visual_contacts(one, fps):
            x = np.interp(tc * fps, np.arange(len(frames)), tracks.centers[:, k, 0])
            if np.isfinite(x):
                times.append(tc)
                azimuths.append((x / width - 0.5) * 90.0)
    follows = spatial.follows_events(audio, sample_rate, np.array(times), np.array(azimuths)) if times else np.nan
    return {
        "sync_ms": float(m["offset_ms"]),
        "sync_abs_ms": abs(float(m["offset_ms"])),
        "sync_matched": float(m["matched"]),
        "follows_object": float(follows),
        "phys_residual_px": float(fit["residual_px"]),
        "n_onsets": float(onsets.size),
        "n_contacts": float(contacts.size),
    }


class _ProgressModel:
    """Wraps a generator so each velocity call (one per solver step with batched guidance) reports progress."""

    def __init__(self, model, total: int, progress: Callable[[int, int], None] | None):
        self.model, self.total, self.progress, self.done = model, total, progress, 0

    def empty_conditions(self, batch: int):
        return self.model.empty_conditions(batch)

    def velocity(self, streams, t, cond, *, cross_modal: bool = True):
        out = self.model.velocity(streams, t, cond, cross_modal=cross_modal)
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
        return out


class JointPipeline:
    """Joint model + world codecs + MiniLM text encoder + spatialiser."""

    def __init__(self, model, video_ae, audio_vae, text_encoder, config: dict):
        self.model, self.video_ae, self.audio_vae, self.text_encoder = model, video_ae, audio_vae, text_encoder
        self.config = config
        self.fps = float(config["fps"])
        self.height, self.width = int(config["height"]), int(config["width"])
        self.sample_rate = int(config["sample_rate"])
        self.default_duration = float(config["duration"])
        self.sampling = from_dict(SamplingConfig, config["sampling"], "sampling")  # the model's defaults
        self.default_prompt = str(config.get("default_prompt", "a ball bounces on the floor"))

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
        duration = self.default_duration if duration is None else float(duration)
        if not duration > 0 or duration > 60:
            raise AvflowError(f"duration must be in (0, 60] seconds, got {duration}")
        sampling = sampling or self.sampling
        if task == "a2v" and audio_path is None:
            raise AvflowError("task a2v needs an audio file (--audio FILE)")
        if task == "v2a" and video_path is None:
            raise AvflowError("task v2a needs a video file (--video FILE)")
        n_frames, n_audio = self.shapes(duration)
        samples = int(round(n_frames / self.fps * self.sample_rate))
        clean, t_start, given_audio, given_frames = {}, {}, None, None
        if task == "a2v":
            given_audio = self._read_audio(audio_path, samples)  # (samples,)
            clean["audio"] = self.audio_vae.encode(given_audio[None, : n_audio * 512])
            t_start["audio"] = torch.ones(1)
        if task == "v2a":
            given_frames = self._read_video(video_path, n_frames)
            clean["video"] = self.video_ae.encode(frames_to_video(given_frames))
            t_start["video"] = torch.ones(1)

        g = torch.Generator().manual_seed(int(seed))
        tv, hv, wv = n_frames // 4, self.height // 8, self.width // 8
        noise = {
            "video": torch.randn(1, 16, tv, hv, wv, generator=g),
            "audio": torch.randn(1, n_audio, 20, generator=g),
        }
        text, mask = self.text_encoder([prompt])
        cond = {"text": text, "text_mask": mask}
        model = _ProgressModel(self.model, sampling.steps, progress)
        result = sample_with(sampling, model, noise, cond, clean=clean or None, t_start=t_start or None)

        if given_frames is None:
            video = self.video_ae.decode(result.streams["video"])[0]  # (3, T, H, W)
            frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()
        else:
            frames = given_frames
        if given_audio is None:
            mono = self.audio_vae.decode(result.streams["audio"])[0]  # (512 N,)
            mono = torch.nn.functional.pad(mono, (0, samples - mono.shape[0]))
        else:
            mono = given_audio
        stereo = to_stereo(mono.numpy(), self.sample_rate, frames.numpy(), self.fps)
        return GeneratedClip(frames, torch.from_numpy(stereo), self.sample_rate, self.fps, prompt)


def to_stereo(mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> np.ndarray:
    """Mono (N,) -> (2, N) float32 [left, right] placed at the visible impacts (the binaural spatialiser)."""
    from avflow.pipelines.spatialise import spatialise

    stereo = spatialise(mono, sample_rate, frames, fps)
    peak = float(np.abs(stereo).max()) if stereo.size else 0.0
    return (stereo * (0.99 / peak) if peak > 0.99 else stereo).astype(np.float32)


def without_output_norms(codec: torch.nn.Module) -> torch.nn.Module:
    """Drop the GroupNorm right before each codec's output conv (encoder latents and decoder pixels / mels).

    Workaround: a per-sample GroupNorm there removes each clip's absolute level (the world's per-clip background
    colour). Used for the audio VAE of the shipped model; must match how the weights were trained.
    """
    for seq in (codec.encoder, codec.decoder):
        idx = [i for i, m in enumerate(seq) if isinstance(m, torch.nn.GroupNorm)]
        if idx:
            seq[idx[-1]] = torch.nn.Identity()
    return codec


def _half_to_float(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_default_model(path: str | Path | None = None) -> JointPipeline:
    """The shipped default model (or one exported the same way to `path`) on the CPU, in eval mode."""
    from avflow.codecs.world_audio_vae import WorldAudioVAE, WorldAudioVAEConfig
    from avflow.codecs.world_video_ae import WorldVideoAE, WorldVideoAEConfig
    from avflow.encoders.text import load_text_encoder
    from avflow.models.joint import JointConfig, JointModel
    from avflow.weights import load_strict, read_state_dict

    folder = Path(path) if path is not None else default_model_dir()
    missing = [f for f in WEIGHT_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsError(f"{folder}: default model files missing: {', '.join(missing)}")
    try:
        config = json.loads((folder / "config.json").read_text())
        model = JointModel(from_dict(JointConfig, config["joint"]))
        video_ae = WorldVideoAE(from_dict(WorldVideoAEConfig, config["video_ae"]))
        audio_vae = WorldAudioVAE(from_dict(WorldAudioVAEConfig, config["audio_vae"]))
        if config.get("video_ae_without_output_norms", False):
            video_ae = without_output_norms(video_ae)
        if config.get("audio_vae_without_output_norms", False):
            audio_vae = without_output_norms(audio_vae)
        for module, name in ((model, "joint"), (video_ae, "video_ae"), (audio_vae, "audio_vae")):
            file = folder / f"{name}.safetensors"
            load_strict(module, _half_to_float(read_state_dict(file)), str(file))
            module.eval().requires_grad_(False)
    except (KeyError, ValueError, RuntimeError, OSError, WeightsError) as exc:
        raise WeightsError(f"{folder}: cannot load the default model: {str(exc).splitlines()[0]}") from None
    text_encoder = load_text_encoder(config.get("text_encoder", "minilm"), max_len=model.config.text_len)
    return JointPipeline(model, video_ae, audio_vae, text_encoder, config)


__all__ = ["GeneratedClip", "JointPipeline", "clip_av_metrics", "load_default_model"]
