"""Joint generation with the default model (v2): `JointPipeline.generate(...)` (load the shipped one with
`avflow.pipelines.default_model.load_default_model()`).

The joint model generates video latents and the binaural codec's `left` and `right` latents together, and the world
codecs decode them: the stereo [left, right] track comes from the model itself (no spatialiser). Tasks:
  t2av      text -> video and audio of `duration` s
  a2v       the given audio (all of it, or its first `duration` s) -> a video for it; the clip keeps that audio
  v2a       the given video (all of it, or its first `duration` s) -> audio for it; the clip keeps those frames
  continue  the given clip (a video with audio) -> that clip followed by `duration` s more of both
What is given is encoded once and held as clean conditions (t = 1 per latent frame). Inputs of any length up to
MAX_DURATION_S are generated in windows of the model's trained length (`joint_windows.py`); nothing is cut short.
The text is encoded once, the empty conditions made once, and each window is decoded once. The given media come out
as they were read (windows are crossfaded with each other, never into them). Sampling that diverges (a guidance
strength far too large) is a one-line error at the first window with non-finite values, before anything is written.
The checks a command runs before loading the model: `prompt_tokens` / `check_prompt_tokens` (the tokenizer alone) and
`read_given_audio` (an a2v input decoded once, passed on as `given_audio`); a tensor given there from Python goes
through the same checks (`check_given_audio`), before any sampling.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from avflow.errors import AvflowError, ConfigError, MediaError, MediaWarning
from avflow.flow.sampling import SamplingConfig, check_seed, sample_with
from avflow.pipelines.clip import GeneratedClip
from avflow.pipelines.inputs import (
    FIRST_SECONDS_HINT,
    MAX_DURATION_S,
    SPAN_SLACK_S,
    WHOLE_CLIP_HINT,
    check_audio_input,
    check_duration,
    check_video_input,
    used_span,
)
from avflow.pipelines.joint_windows import crossfade_into, plan_windows
from avflow.precision import DEFAULT_PRECISION, autocast, autocast_weights, check_precision

if TYPE_CHECKING:
    from avflow.codecs.world import WorldCodecs
    from avflow.pipelines.default_model import DefaultModelConfig

TASKS = ("t2av", "a2v", "v2a", "continue")
EARS = ("left", "right")


@dataclass(frozen=True, kw_only=True)
class Given:
    """What the user gave, from the clip's start: media the clip keeps as they are, and how many latent frames of
    each stream the model sees as clean conditions."""

    frames: Tensor | None = None  # (F, H, W, 3) uint8 at the model's size and fps
    audio: Tensor | None = None  # (2, S) float32 [left, right] at the model's sample rate
    video_latents: int = 0
    audio_latents: int = 0


def prompt_tokens(prompt: str, text_encoder: str) -> int:
    """Tokens the text encoder a model's config names (`text_encoder`) takes for `prompt`, as its `count_tokens`
    counts them, from its tokenizer alone: no weights are read, so a command refuses a prompt that is too long before
    it loads the model."""
    if text_encoder == "tiny":  # `TinyTextEncoder`: one token per word
        return len(prompt.split())
    if text_encoder != "minilm":
        raise ConfigError(f"unknown text encoder {text_encoder!r} (choose from minilm, tiny)")
    from avflow.encoders.text import check_text_extra, minilm_dir

    check_text_extra(text_encoder)  # one line, not transformers' ModuleNotFoundError
    return len(_minilm_tokenizer(str(minilm_dir()))(prompt)["input_ids"])  # [CLS], [SEP] included, as `count_tokens`


@functools.cache
def _minilm_tokenizer(folder: str):
    """MiniLM's tokenizer from `folder`, read once per process (`avflow cache joint` counts every caption's tokens:
    reading it again for each took about 33 ms)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as `MiniLMTextEncoder`: nothing touches the Hub
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def check_prompt_tokens(tokens: int, most: int, what: str = "the prompt") -> None:
    """A one-line error for a prompt (`what`: e.g. "the negative prompt") of `tokens` tokens where the model reads at
    most `most` (never cut silently)."""
    if tokens > most:
        raise AvflowError(f"{what} is {tokens} tokens long and this model reads at most {most}: shorten it "
                          "(e.g. one sentence per object)")  # fmt: skip


def read_given_audio(path: str | Path, sample_rate: int, duration: float | None) -> Tensor:
    """(2, S) [left, right] at `sample_rate` (mono used for both): all of the file's audio, or its first `duration`
    s (the rest is not decoded); NaN or infinite samples are a one-line MediaError. A command reads an a2v input
    with this in its checks and passes it on (`given_audio`), so it is decoded once and refused before any weights."""
    from avflow.data.media import read_audio

    audio, _ = read_audio(path, sample_rate=sample_rate, channels=2, seconds=duration)
    return first_seconds(audio, sample_rate, duration, f"{path}: its audio")


def first_seconds(audio: Tensor, sample_rate: int, duration: float | None, what: str) -> Tensor:
    """All of (C, S) audio or its first `duration` s, as `used_span` allows (at most MAX_DURATION_S taken whole, never
    shorter than asked; else a one-line ConfigError naming `what`)."""
    span = used_span(audio.shape[1] / sample_rate, what, duration)
    return audio[:, : round(span * sample_rate)]


def check_given_audio(audio, sample_rate: int, duration: float | None) -> Tensor:
    """a2v's audio given as a tensor, through `read_given_audio`'s checks: float (2, S) [left, right] at
    `sample_rate` (cast to float32), all of it or its first `duration` s (`first_seconds`), at least MIN_DURATION_S,
    finite; else a one-line error. Integer PCM and numpy arrays are refused (their scale is the caller's to say)."""
    if not isinstance(audio, Tensor):
        raise ConfigError(f"given_audio must be a torch.Tensor (2, S), got {type(audio).__name__} "
                          "(torch.from_numpy converts an array)")  # fmt: skip
    if not audio.is_floating_point():
        raise ConfigError(f"given_audio must hold float samples in [-1, 1], got {audio.dtype} (divide integer PCM "
                          "by its full scale, e.g. 32768)")  # fmt: skip
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ConfigError(f"given_audio must be (2, S) [left, right] at {sample_rate} Hz, got shape "
                          f"{tuple(audio.shape)}")  # fmt: skip
    audio = first_seconds(audio, sample_rate, duration, "given_audio")
    check_duration(audio.shape[1] / sample_rate, "given_audio")  # as `check_audio_input` for a file
    if not bool(torch.isfinite(audio).all()):
        raise MediaError("given_audio holds NaN or infinite samples")
    return audio.float()


def check_clip_duration(duration: float | None) -> float | None:
    """`duration` as `avflow generate --duration` takes it: None, or MIN_DURATION_S to MAX_DURATION_S seconds; else
    a one-line ConfigError."""
    duration = check_duration(None if duration is None else float(duration), "duration")
    if duration is not None and duration > MAX_DURATION_S:
        raise ConfigError(f"duration must be at most {MAX_DURATION_S:g} s, got {duration:g}")
    return duration


def check_unused(task: str, audio_path, video_path, given_audio) -> None:
    """An input `task` would not read is a one-line error, not silently dropped (as the command's own check)."""
    used_by = {"audio_path": (audio_path, ("a2v",)), "given_audio": (given_audio, ("a2v",)),
               "video_path": (video_path, ("v2a", "continue"))}  # fmt: skip
    for name, (value, tasks) in used_by.items():
        if value is not None and task not in tasks:
            raise ConfigError(f"{name} is read by task {' or '.join(tasks)} only (task is {task})")


def check_finite(tensors: dict[str, Tensor], sampling: SamplingConfig) -> None:
    """A one-line error where sampling diverged (non-finite latents or media, from a guidance strength far too
    large): written, NaN would be a black video or refused by the audio encoder."""
    bad = [name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        strengths = ", ".join([f"cfg_strength {sampling.cfg_strength:g}",
                               *(f"{k} {w:g}" for k, w in sampling.stream_cfg_strength.items())])  # fmt: skip
        raise ConfigError(f"sampling diverged (non-finite values in {', '.join(bad)}) with {strengths}; use a "
                          "smaller --cfg / --stream-cfg")  # fmt: skip


def start_times(known: Tensor, device: torch.device) -> Tensor:
    """A window's start times of one stream from its known frames: (1, T) with 1 on the clean ones, or a single time
    (1,) when every frame is known or none is (the same for the model, and cheaper)."""
    if bool(known.all()) or not bool(known.any()):
        return torch.full((1,), float(known[0]), device=device)
    return known.float()[None].to(device)


class JointPipeline:
    """Joint model + world codecs (video autoencoder, binaural audio codec) + text encoder."""

    def __init__(self, model, codecs: WorldCodecs, text_encoder, config: DefaultModelConfig):
        self.model, self.codecs, self.text_encoder, self.config = model, codecs, text_encoder, config
        self.fps, self.sample_rate = config.fps, config.sample_rate
        self.height, self.width = config.height, config.width
        self.sampling = config.sampling  # the model's defaults
        self.default_prompt = config.default_prompt
        self.precision = DEFAULT_PRECISION  # `avflow.precision`: auto, fp32 or bf16 (set with `to`)
        self.stride = model.config.video_temporal_stride  # pixel frames per video latent frame
        self.frame_samples = round(self.stride * self.sample_rate / self.fps)  # audio samples per video latent frame
        self.audio_per_frame = self.frame_samples // codecs.audio.samples_per_latent  # audio latents per latent frame
        self.window = round(config.duration * self.fps / self.stride)  # latent frames per window
        self.overlap = max(1, round(config.overlap * self.fps / self.stride))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device, precision: str | None = None) -> JointPipeline:
        """Move the networks to `device`, and set the precision (`avflow.precision`; with the default "auto", CUDA
        samples under bf16 autocast where the GPU supports it)."""
        for module in (self.model, self.codecs.video, self.codecs.audio):
            module.to(device)
        self.precision = check_precision(precision or self.precision)
        return self

    def _codec_precision(self) -> AbstractContextManager:
        """The autocast context of the codecs (media to latents and back) in this pipeline's precision."""
        return autocast(self.precision, self.device, codec=True)

    # -- inputs ------------------------------------------------------------------------------------------------------

    def _read_audio(self, path: str | Path, duration: float | None) -> Tensor:
        """(2, S) [left, right] (mono used for both): all of the file's audio, or its first `duration` s (the rest is
        not decoded); a file without audio or shorter than MIN_DURATION_S is a one-line MediaError, as in commands."""
        check_audio_input(path)
        return read_given_audio(path, self.sample_rate, duration)

    def _read_video(self, path: str | Path, duration: float | None, whole: bool = False) -> tuple[Tensor, float]:
        """Frames (F, H, W, 3) at the model's fps and size over all of the video or its first `duration` s, and that
        span in seconds (`whole`: a clip to continue, which is read whole)."""
        from avflow.data.media import read_video

        what, hint = (f"{path}: the clip", WHOLE_CLIP_HINT) if whole else (f"{path}: the video", FIRST_SECONDS_HINT)
        info = check_video_input(path, duration=None if whole else duration)  # no video, too short: one line
        span = used_span(info.duration, what, duration, hint=hint)
        frames = read_video(path, fps=self.fps, size=(self.height, self.width), mode="resize", duration=span).frames
        return frames, span

    def latent_frames(self, frames: int, samples: int) -> int:
        """Video latent frames of a clip of `frames` pixel frames and `samples` audio samples (covering both)."""
        return max(math.ceil(frames / self.stride), math.ceil(samples / self.frame_samples))

    def _inputs(self, task: str, duration: float | None, audio_path, video_path,
                given_audio: Tensor | None = None) -> tuple[Given, int, int]:  # fmt: skip
        """What is given and the clip's length in frames and in audio samples (`given_audio`: a2v's audio already
        read)."""
        samples = lambda frames: round(frames * self.sample_rate / self.fps)  # noqa: E731
        if task == "t2av":
            n = max(self.stride, round((self.config.duration if duration is None else duration) * self.fps))
            return Given(), n, samples(n)
        if task == "a2v":  # all of the audio latents are given (silence after the sound's end)
            audio = self._read_audio(audio_path, duration) if given_audio is None else given_audio
            n, s = max(1, math.ceil(audio.shape[1] * self.fps / self.sample_rate - 1e-6)), audio.shape[1]
            return Given(audio=audio, audio_latents=self.latent_frames(n, s) * self.audio_per_frame), n, s
        frames, span = (self._read_video(video_path, duration) if task == "v2a" else
                        self._read_video(video_path, None, whole=True))  # fmt: skip
        if task == "v2a":  # all of the video latent frames are given (the last frame held after the video's end)
            n, s = frames.shape[0], round(span * self.sample_rate)
            return Given(frames=frames, video_latents=self.latent_frames(n, s)), n, s
        from avflow.data.media import probe

        if not probe(video_path).has_audio:
            raise MediaError(f"{video_path}: has no audio track; continuing a clip needs its video and its audio")
        n_in = frames.shape[0]
        audio = read_given_audio(video_path, self.sample_rate, None)  # no minimum: fitted to the video's span below
        past = (audio.shape[1] - samples(n_in)) / self.sample_rate
        if past > SPAN_SLACK_S:  # more than timestamp rounding: say what is left out
            note = (f"{video_path}: its audio runs {past:.2f} s past its video's end; that part is not used (the "
                    "continuation starts after the clip's last frame)")  # fmt: skip
            warnings.warn(MediaWarning(note), stacklevel=3)
        audio = audio[:, : samples(n_in)]  # the clip's audio over its video's span
        audio = torch.nn.functional.pad(audio, (0, samples(n_in) - audio.shape[1]))
        n_add = max(1, round((self.config.duration if duration is None else duration) * self.fps))
        given = Given(frames=frames, audio=audio, video_latents=n_in // self.stride,
                      audio_latents=audio.shape[1] // self.codecs.audio.samples_per_latent)  # fmt: skip
        return given, n_in + n_add, samples(n_in + n_add)

    def _encode_video(self, frames: Tensor, latents: int) -> Tensor:
        """The first `latents` latent frames of (F, H, W, 3) uint8 frames (the last frame held where F is short),
        encoded a window at a time (the encoder works per latent frame, so this equals one pass)."""
        need = latents * self.stride
        if frames.shape[0] < need:
            frames = torch.cat([frames, frames[-1:].expand(need - frames.shape[0], -1, -1, -1)])
        video = frames[:need].permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0  # (1, 3, T, H, W)
        step = self.window * self.stride
        with self._codec_precision():
            parts = [self.codecs.video.encode(video[:, :, i : i + step].to(self.device)) for i in range(0, need, step)]
        return torch.cat(parts, dim=2).float()  # (1, C, latents, h, w)

    def _encode_audio(self, audio: Tensor, latents: int) -> dict[str, Tensor]:
        """The first `latents` audio latents of (2, S) audio (silence after its end), `left` and `right`."""
        need = latents * self.codecs.audio.samples_per_latent
        audio = torch.nn.functional.pad(audio[:, :need], (0, max(0, need - audio.shape[1])))
        with self._codec_precision():
            coded = self.codecs.audio.encode(audio[None].to(self.device))
        return {ear: z.float() for ear, z in coded.items()}

    def _decode_video(self, latents: Tensor) -> Tensor:
        """Latents (1, C, T', h, w) -> frames (4 T', H, W, 3) float in [0, 255] on the CPU."""
        with self._codec_precision():
            video = self.codecs.video.decode(latents)[0].float().cpu()  # (3, T, H, W) in [-1, 1]
        return ((video + 1.0) * 127.5).permute(1, 2, 3, 0)

    # -- generation ----------------------------------------------------------------------------------------------

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
        cut_prompt: bool = False,
        given_audio: Tensor | None = None,
    ) -> GeneratedClip:
        """One clip. `duration`: t2av the clip's length, continue the length added (default: the model's), a2v / v2a
        how much of the input to use (default: all of it). A prompt longer than the model reads (`text_len` tokens)
        is an error unless `cut_prompt` (then its first `text_len` tokens are used, as training cut its captions).
        `given_audio`: a2v's audio as a float (2, S) [left, right] tensor at `self.sample_rate`, e.g. as
        `read_given_audio(audio_path, self.sample_rate, duration)` returned it (read in a command's checks; not
        decoded again): checked as a file's audio is (`check_given_audio`), and `duration` uses its first seconds;
        giving both `audio_path` and `given_audio` is a ConfigError."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise AvflowError("the prompt is empty: describe the scene, e.g. 'a red ball bounces on the left'")
        if not cut_prompt:
            check_prompt_tokens(self.text_encoder.count_tokens(prompt), self.config.joint.text_len)
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        seed, duration = check_seed(seed), check_clip_duration(duration)
        if task == "a2v" and audio_path is None and given_audio is None:
            raise AvflowError("task a2v needs an audio file (--audio-file FILE)")
        if audio_path is not None and given_audio is not None:  # one sound: neither is silently the one left unused
            raise ConfigError("give a2v's sound once: audio_path or given_audio, not both")
        if task in ("v2a", "continue") and video_path is None:
            raise AvflowError(f"task {task} needs a video file (--video FILE)")
        check_unused(task, audio_path, video_path, given_audio)
        if sampling is not None:
            sampling.check_streams(self.config.streams)
        if given_audio is not None:
            given_audio = check_given_audio(given_audio, self.sample_rate, duration)
        given, n_frames, n_samples = self._inputs(task, duration, audio_path, video_path, given_audio)
        return self._generate(prompt, given, n_frames, n_samples, seed, sampling or self.sampling, task, progress)

    def _generate(self, prompt, given: Given, n_frames: int, n_samples: int, seed: int, sampling: SamplingConfig,
                  task: str, progress) -> GeneratedClip:  # fmt: skip
        device, per_frame = self.device, self.audio_per_frame
        n_latent = self.latent_frames(n_frames, n_samples)
        kv, ka = given.video_latents, given.audio_latents
        hv, wv, c = self.height // 8, self.width // 8, self.codecs.audio.latent_channels
        video = torch.zeros(1, self.codecs.video.latent_channels, n_latent, hv, wv, device=device)
        audio = {ear: torch.zeros(1, n_latent * per_frame, c, device=device) for ear in EARS}
        known_video, known_audio = torch.arange(n_latent) < kv, torch.arange(n_latent * per_frame) < ka
        if kv:
            video[:, :, :kv] = self._encode_video(given.frames, kv)
        if ka:
            for ear, z in self._encode_audio(given.audio, ka).items():
                audio[ear][:, :ka] = z

        # the clip's media: what is given, then each window's decoded media crossfaded in
        frames_out, filled_frames = torch.zeros(n_frames, self.height, self.width, 3), 0
        audio_out, filled_audio = torch.zeros(n_samples, 2), 0  # (S, 2): time first for crossfade_into
        if given.frames is not None:
            filled_frames = min(given.frames.shape[0], n_frames)
            frames_out[:filled_frames] = given.frames[:filled_frames].float()
        if given.audio is not None:
            filled_audio = min(given.audio.shape[1], n_samples)
            audio_out[:filled_audio] = given.audio[:, :filled_audio].T
        kept_frames, kept_audio = filled_frames, filled_audio  # the user's media: never crossfaded into
        decode_video, decode_audio = filled_frames < n_frames, filled_audio < n_samples
        fade_frames = round(self.config.crossfade * self.fps)
        fade_samples = round(self.config.crossfade * self.sample_rate)

        text, mask = self.text_encoder([prompt])
        cond = {"text": text.to(device), "text_mask": mask.to(device)}
        negative = self.model.empty_conditions(1)  # made once for every step of every window
        generator = torch.Generator().manual_seed(seed)
        starts = plan_windows(n_latent, self.window, self.overlap, first_unknown=min(kv, ka // per_frame))
        for i, s in enumerate(starts):
            e = min(s + self.window, n_latent)
            a, b = s * per_frame, e * per_frame
            noise = {"video": torch.randn(video[:, :, s:e].shape, generator=generator).to(device)}
            noise |= {ear: torch.randn(audio[ear][:, a:b].shape, generator=generator).to(device) for ear in EARS}
            clean = {"video": video[:, :, s:e]} | {ear: audio[ear][:, a:b] for ear in EARS}
            t_audio = start_times(known_audio[a:b], device)  # the two ears share their times
            t_start = {"video": start_times(known_video[s:e], device), "left": t_audio, "right": t_audio}
            report = None
            if progress is not None:

                def report(step: int, total: int, done: int = i * sampling.steps) -> None:  # over all windows
                    progress(done + step, len(starts) * total)

            with autocast(self.precision, device), autocast_weights(self.model):
                out = sample_with(sampling, self.model, noise, cond, negative=negative, clean=clean, t_start=t_start,
                                  progress=report).streams  # fmt: skip
            check_finite(out, sampling)
            video[:, :, s:e] = out["video"].float()
            for ear in EARS:
                audio[ear][:, a:b] = out[ear].float()
            known_video[s:e], known_audio[a:b] = True, True
            if decode_video:
                piece = self._decode_video(video[:, :, s:e])
                check_finite({"decoded video": piece}, sampling)
                filled_frames = crossfade_into(frames_out, filled_frames, s * self.stride, piece, fade_frames,
                                               keep=kept_frames)  # fmt: skip
            if decode_audio:
                with self._codec_precision():
                    wave = self.codecs.audio.decode({ear: audio[ear][:, a:b] for ear in EARS})[0]  # (2, samples)
                check_finite({"decoded audio": wave}, sampling)
                piece = wave.float().clamp(-1.0, 1.0).cpu().T
                filled_audio = crossfade_into(audio_out, filled_audio, s * self.frame_samples, piece, fade_samples,
                                              keep=kept_audio)  # fmt: skip
        frames = frames_out.round().clamp(0, 255).to(torch.uint8)
        return GeneratedClip(frames=frames, audio=audio_out.T.contiguous(), sample_rate=self.sample_rate, fps=self.fps,
                             prompt=prompt, task=task, windows=len(starts))  # fmt: skip
