"""Binaural audio for a video: the shipped dual-branch model (`BinauralPipeline`) or the spatialiser, and
`binaural_track`, the one entry point `avflow binaural` and the UI share.

Two tasks, one model: from the silent video alone (the generated left/right codec latents decoded), or from the video
and a given mono (the mono's codec latents condition the model, and the generated pair's interaural cues are carried
onto the mono by `avflow.pipelines.cue_transfer`, so the output's mix is the mono, sample for sample).
With a mono, the model reads the video on the mono's clock, as the spatialiser places sounds
(`avflow.pipelines.spatialise.audio_clock`: the mono's onsets matched to the video's flashes and appearances move the
frames by their lag and hold each event's brightest frame while its sound lasts; contacts alone move nothing), since
it was trained on clips whose sounds are in sync with what it sees.
A model of the `cues` representation generates each ear's level and lead relative to a mono
(`avflow.data.interaural_cues`) and renders them onto it, so it always needs a mono: from the silent video, the
sound is the default joint model's v2a output for the video (mixed to mono), which the model then places.
Assets: `avflow.models.binaural.MODEL_FILE` (fp16, config and world codecs' checksum in its metadata; trained by
`scripts/train_binaural_v2.py`) and the shipped world codecs (`avflow.codecs.world`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from avflow.data import interaural_cues
from avflow.errors import ConfigError, MediaError, MediaWarning, WeightsError
from avflow.flow.sampling import SamplingConfig, check_seed, sample_with
from avflow.flow.solvers import FIXED_STEP, Progress
from avflow.models.binaural import (
    CUE_STREAM,
    MODEL_FILE,
    SAMPLING,
    binaural_draws,
    binaural_sampling,
    load_binaural,
    mono_conditions,
    video_conditions,
)
from avflow.pipelines.cue_transfer import transfer_cues
from avflow.pipelines.inputs import MAX_DURATION_S, SPAN_SLACK_S, check_audio_input, check_video_input
from avflow.pipelines.spatialise import (
    Anchoring,
    audio_clock,
    frames_on_audio_clock,
    spatialise,
    under_full_scale,
)

SAMPLE_RATE = 16000  # the model's rate (the world's)
SPATIALISE_RATES = (16000, 48000)  # the spatialiser renders a sound at its own rate, brought within these
MODES = ("auto", "model", "spatialise")
SILENT_PEAK = 10 ** (-90 / 20)  # a sound whose peak is below -90 dBFS is taken as silence (a note says so)
AUDIO_CLOCK = Anchoring()  # a given mono's onsets move the video onto its clock, as for the spatialiser
V2A_PROMPT = "objects bounce and collide"  # the default model's v2a prompt for a cue model's sound: no side named
READ_WINDOW_S = 2.0  # the video's frames are read this many seconds at a time (`read_frames`: progress, cancel)


class BinauralPipeline:
    """Video frames (+ an optional mono) -> binaural (2, S) audio with a trained `BinauralFlow` and the world's audio
    codec (`avflow.codecs.world_audio_codec.WorldAudioCodec`; None for a cue-stream model, which needs no codec)."""

    def __init__(self, model, codec=None, sampling: SamplingConfig = SAMPLING, draws: int = 1,
                 anchoring: Anchoring = AUDIO_CLOCK):  # fmt: skip
        if codec is None and not model.config.representation == "cues":
            raise WeightsError("a binaural model of codec latents needs the world audio codec")
        if draws < 1 or (draws > 1 and model.config.representation != "cues"):
            raise WeightsError(f"draws must be >= 1 and only a cue model averages draws, got {draws}")
        self.model, self.codec, self.sampling = model.eval(), codec.eval() if codec is not None else None, sampling
        self.draws = draws  # a cue model's output: the mean of this many draws' cue streams
        self.anchoring = anchoring  # how a given mono's onsets move the video onto its clock (enabled=False: never)

    @property
    def needs_mono(self) -> bool:
        """A cue-stream model places a given sound; it cannot make one."""
        return self.model.config.representation == "cues"

    @classmethod
    def from_assets(cls, model_file: str | Path = MODEL_FILE, codec_dir: str | Path | None = None,
                    sampling: SamplingConfig | None = None):  # fmt: skip
        """The model in `model_file` and the world codecs it was trained with (default: the shipped ones; none for a
        cue-stream model); `sampling`: default, the settings the export records (`binaural_sampling`)."""
        from avflow.codecs.world import load_world_codecs

        if not Path(model_file).is_file():
            raise WeightsError(f"{model_file}: no trained binaural model weights (scripts/train_binaural_v2.py of the "
                               "avflow source repository trains one)")  # fmt: skip
        model, checksum = load_binaural(model_file)
        sampling = sampling or binaural_sampling(model_file)
        if model.config.representation == "cues":
            return cls(model, None, sampling, binaural_draws(model_file))
        codecs = load_world_codecs(codec_dir)
        codecs.check_trained_with(checksum, f"the binaural model {model_file}")
        return cls(model, codecs.audio, sampling)

    def n_tokens(self, n_samples: int) -> int:
        if self.needs_mono:
            return CUE_STREAM.tokens(n_samples)
        return max(1, math.ceil(n_samples / self.codec.samples_per_latent))

    def conditions(self, frames: np.ndarray, fps: float, n_tokens: int, mono: np.ndarray | None,
                   prior: torch.Tensor | None = None) -> dict:  # fmt: skip
        """Batched (1, ...) conditions: the video's features and, when given, the mono's codec latents (or, for a
        cue-stream model, its band levels; `prior` (2, N, C): the prior cue streams a model with a prior reads)."""
        if self.needs_mono:
            feats = torch.from_numpy(interaural_cues.mono_features(np.asarray(mono), CUE_STREAM, n_tokens))
            cond = video_conditions(frames, fps, n_tokens, CUE_STREAM.token_rate, self.model.config.bins)
            cond |= mono_conditions(feats, n_tokens, self.model.config.latent_dim)
            if self.model.config.prior != "none":
                if prior is None:
                    raise MediaError("this binaural model reads the spatialiser's cues: give conditions() its prior")
                cond["prior"] = prior
            return {k: v[None] for k, v in cond.items()}
        latents = None
        if mono is not None:
            spl = self.codec.samples_per_latent
            padded = torch.zeros(1, 2, n_tokens * spl)
            m = torch.as_tensor(np.asarray(mono, dtype=np.float32))[: n_tokens * spl]
            padded[:, :, : m.shape[0]] = m
            latents = self.codec.encode(padded)["left"][0]  # (N, C)
        rate, c = self.codec.latent_rate, self.model.config
        cond = video_conditions(frames, fps, n_tokens, rate, c.bins) | mono_conditions(latents, n_tokens, c.latent_dim)
        return {k: v[None] for k, v in cond.items()}

    @torch.no_grad()
    def generate(
        self,
        frames: np.ndarray,
        fps: float,
        n_samples: int,
        *,
        mono: np.ndarray | None = None,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """(T, H, W, 3) uint8 frames (+ mono (S,) at 16 kHz) -> (2, n_samples) float32 [left, right] at 16 kHz;
        `progress(done, steps)` after every sampling step (it may raise to stop, e.g. the UI's `Cancelled`).

        Guidance's negative branch: no video and no mono (video only), or no video with the same mono (with a
        mono), so guidance pushes towards what the video says about the sides."""
        sampling, seed = sampling or self.sampling, check_seed(seed)
        if mono is None and self.needs_mono:
            raise MediaError("this binaural model (interaural cue streams) places a given sound: give it a mono")
        m, prior = None, None
        n = self.n_tokens(n_samples)
        if mono is not None:
            m = np.zeros(n_samples, dtype=np.float32)
            m[: min(n_samples, len(mono))] = np.asarray(mono, dtype=np.float32)[:n_samples]
            clock = audio_clock(m, SAMPLE_RATE, frames, fps, self.anchoring)  # measured once, used twice
            if self.model.config.prior == "spatialiser":  # on the video's own frames, moved by the same clock
                render = partial(spatialise, anchoring=self.anchoring, clock=clock)
                prior = interaural_cues.rendered_streams(render, m, frames, fps, CUE_STREAM, n)
            frames = frames_on_audio_clock(frames, fps, clock, self.anchoring)  # the video as the sound has it
        cond = self.conditions(frames, fps, n, m, prior)
        if mono is None:
            negative = self.model.empty_conditions(1, n)
        else:
            negative = cond | {"video_on": torch.zeros(1)}
        g = torch.Generator().manual_seed(seed)
        b = self.draws  # one batch of draws (1 but for a cue model)
        noise = {s: torch.randn(b, n, self.model.config.latent_dim, generator=g) for s in ("left", "right")}
        if b > 1:
            cond, negative = ({k: v.expand(b, *v.shape[1:]) for k, v in c.items()} for c in (cond, negative))
        result = sample_with(sampling, self.model, noise, cond, negative=negative, progress=progress)
        if self.needs_mono:
            cues = torch.stack([result.streams["left"], result.streams["right"]]).float().mean(1)  # (2, N, C)
            return interaural_cues.decode(m, cues.numpy(), CUE_STREAM)
        pair = self.codec.decode(result.streams, n_samples)[0].numpy().astype(np.float32)  # (2, n_samples)
        return pair if m is None else transfer_cues(m, pair)


def v2a_mono(video: str | Path, n_samples: int, seed: int = 0, joint=None, progress: Progress | None = None
              ) -> np.ndarray:  # fmt: skip
    """The default joint model's v2a sound for `video` (`V2A_PROMPT`), mixed to mono: (n_samples,) float32 at
    16 kHz, zero-padded or cut to n_samples. `joint`: a loaded `JointPipeline` (default: the shipped model)."""
    from avflow.pipelines.default_model import load_default_model

    joint = joint or load_default_model()
    clip = joint.generate(V2A_PROMPT, task="v2a", video_path=video, seed=seed, progress=progress)
    a = clip.audio.float().mean(0).numpy()[:n_samples]
    out = np.zeros(n_samples, dtype=np.float32)
    out[: len(a)] = a
    return out


@dataclass(frozen=True, kw_only=True)
class BinauralTrack:
    audio: np.ndarray  # (2, N) float32 [left, right], peak <= 0.99 (`under_full_scale`)
    sample_rate: int
    mode: str  # "model" or "spatialise"
    duration: float  # seconds of the video
    mono: bool  # made from a given mono (--mono)
    gain: float = 1.0  # the gain that kept the peak under 0 dBFS (< 1: the track was turned down; say so)


def check_mono(path: str | Path, video_duration: float):
    """The `MediaInfo` of a mono file usable for a video `video_duration` s long: any sample rate (resampled to
    the track's rate) and channel count (mixed to mono), at least as long as the video (its first `video_duration` s are
    used, as the track is the video's length); else a one-line MediaError. Reads headers only."""
    info = check_audio_input(path)
    seconds = mono_seconds(info)
    if seconds < video_duration - SPAN_SLACK_S:
        raise MediaError(f"{path}: the mono is {seconds:.3f} s long, shorter than the video "
                         f"({video_duration:.3f} s)")  # fmt: skip
    return info


def mono_seconds(info) -> float:
    """A mono file's length: its audio stream's (`MediaInfo.audio_duration`), not its container's or its video's (a
    still frame with 9 s of sound is 9 s of sound)."""
    return info.audio_duration if info.audio_duration is not None else info.duration


def spatialise_rate(source_rate: int | None) -> int:
    """The rate the spatialiser renders a sound of `source_rate` Hz at: its own, within `SPATIALISE_RATES` (a user's
    48 kHz track keeps its top octaves; a telephone-rate file is brought up to the world's 16 kHz)."""
    lo, hi = SPATIALISE_RATES
    return int(min(max(source_rate or SAMPLE_RATE, lo), hi))


def read_mono(path: str | Path, n_samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_samples,) float32 at `sample_rate`: the file's audio mixed to mono, its first n_samples (zero-padded by at
    most the length slack of `check_mono`)."""
    from avflow.data.media import read_audio

    track, _ = read_audio(path, sample_rate=sample_rate, channels=1, seconds=n_samples / sample_rate)
    mono = np.zeros(n_samples, dtype=np.float32)
    mono[: min(n_samples, track.shape[-1])] = track[0, :n_samples].numpy()
    return mono


def nothing_to_spatialise(name: str, give_mono: str, use_model: str, *, installed: bool) -> MediaError:
    """The one-line error for a silent video and no mono to spatialise: what to do instead (`use_model` only where the
    model's weights are `installed`)."""
    ways = [give_mono] + ([use_model] if installed else [])
    return MediaError(f"{name}: has no audio track to spatialise; {' or '.join(ways)}")


def check_mix(video: str | Path, mono: str | Path | None, *, mode: str, existing_audio: str, has_audio: bool,
              mix: str = "--audio mix", instead: str = "use --audio keep or replace") -> None:  # fmt: skip
    """A one-line ConfigError where `existing_audio` "mix" would add the video's own sound to its binaural copy (one
    sound at two interaural delays: a comb filter, not a place): the spatialiser's sound without `mono`, and in either
    `mode` ("model" or "spatialise", auto resolved) a `mono` that is the video's own file. Reads no media; a copy of
    that audio in another file is not recognised (the --help says so). `mix`, `instead`: the setting as the caller
    names it."""
    if existing_audio != "mix" or not has_audio:
        return
    if (mode == "spatialise") if mono is None else _same_file(mono, video):
        raise ConfigError(f"{mix} would add the video's sound to its own spatialised copy (one sound at two "
                          f"interaural delays, a comb filter, not a place): {instead}")  # fmt: skip


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is not there: not the same file
        return False


def _two_stages(progress: Progress | None, second_steps: int) -> tuple[Progress | None, Progress | None]:
    """`progress` as one monotone count over two stages, each reporting its own (done, total): the first's steps
    counted with `second_steps` (the second's, known before it runs) still to come, then the second's after the
    first's. A second stage alone (the first never reports) counts as itself."""
    if progress is None:
        return None, None
    first_total = 0

    def first(done: int, total: int) -> None:
        nonlocal first_total
        first_total = total
        progress(done, total + second_steps)

    def second(done: int, total: int) -> None:
        progress(first_total + done, first_total + total)

    return first, second


def read_frames(video: str | Path, width: int = 64, progress: Progress | None = None
                ) -> tuple[np.ndarray, float, float]:  # fmt: skip
    """`avflow.data.media.video_frames(video, width)`, the same frames, read `READ_WINDOW_S` s of the video at a
    time: `progress(done, windows)` after each (it may raise to stop between them, e.g. the UI's `Cancelled`;
    `windows` is counted ahead from the duration, and `done` never passes it)."""
    from avflow.data.media import iter_video_windows, probe, scaled_height

    info = probe(video)
    if not info.has_video:
        raise MediaError(f"{video}: has no video stream")
    height = scaled_height(info, width)  # as video_frames sizes them
    windows = max(1, math.ceil(info.duration / READ_WINDOW_S - 1e-9))
    parts, fps = [], info.fps
    for clip in iter_video_windows(video, READ_WINDOW_S, size=(height, width)):
        parts.append(clip.frames.numpy())
        fps = clip.fps
        if progress is not None:
            progress(min(len(parts), windows), windows)
    if not parts:
        raise MediaError(f"{video}: no frames could be decoded (empty or corrupt video)")
    return np.concatenate(parts), fps, info.duration


def binaural_track(
    video: str | Path,
    *,
    mode: str = "auto",
    mono: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    cfg: float | None = None,
    pipeline: BinauralPipeline | None = None,
    progress: Progress | None = None,
    joint=None,
) -> BinauralTrack:
    """A binaural track as long as `video`: generated by the shipped model (`mode="model"`; from the video alone, or
    with `mono` (a file) keeping that sound's content and timing), or spatialised from where things move
    (`"spatialise"`: `mono`, else the video's own audio mixed to mono); `"auto"`: the model when its weights are
    installed. `steps`, `cfg`: override the model's own sampling settings (None keeps them). The model's track is at
    16 kHz; a spatialised one at the sound's own rate (:func:`spatialise_rate`); either way its peak is kept under
    0 dBFS (:func:`under_full_scale`; `gain` says by how much it was turned down). `progress(done, total)`, one
    monotone count (it may raise to stop): after every sampling step of the model (a cue model's v2a sound first, then
    its placing), or after each window of the video the spatialiser reads and then its placing. `joint`: a loaded
    shipped `JointPipeline` for a cue model's v2a sound (a server's, loaded once; default: loaded for this call)."""
    from avflow.data.media import probe

    if mode not in MODES:
        raise MediaError(f"unknown binaural mode {mode!r} (choose from {', '.join(MODES)})")
    seed = check_seed(seed)  # before any model is loaded
    info = check_video_input(video)  # the same minimum length as every other command
    sound = check_mono(mono, info.duration) if mono is not None else None
    if mode == "auto":
        mode = "model" if MODEL_FILE.is_file() else "spatialise"
    if mode == "spatialise" and mono is None:
        sound = probe(video)
        if not sound.has_audio:
            raise nothing_to_spatialise(str(video), "give `mono`, a sound file made for it", "use the binaural model",
                                        installed=MODEL_FILE.is_file())  # fmt: skip
    if mode == "model":
        pipeline = pipeline or BinauralPipeline.from_assets()
        if sound is None and pipeline.needs_mono and info.duration > MAX_DURATION_S + SPAN_SLACK_S:
            raise MediaError(f"{video}: the video is {info.duration:.1f} s long, and this binaural model makes "
                             f"its sound with the default model's v2a, at most {MAX_DURATION_S:g} s: give --mono "
                             "FILE (a sound made for it, e.g. by `avflow foley`), or cut the video")  # fmt: skip
    rate = spatialise_rate(sound.audio_sample_rate) if mode == "spatialise" else SAMPLE_RATE
    reading, placed = _two_stages(progress, 1) if mode == "spatialise" else (None, None)  # the model's: its steps
    frames, fps, duration = read_frames(video, progress=reading)
    n = int(round(duration * rate))
    given = read_mono(mono if mono is not None else video, n, rate) if sound is not None else None
    if given is not None and not np.abs(given).max(initial=0.0) > SILENT_PEAK:
        source = f"{mono}: the sound" if mono is not None else f"{video}: its own audio"
        warnings.warn(MediaWarning(f"{source} is silent (peak below -90 dBFS), and so is its binaural track"),
                      stacklevel=2)  # fmt: skip
    if mode == "model":
        sampling = pipeline.sampling.override(steps=steps, cfg_strength=cfg)
        making, placing = _two_stages(progress, sampling.steps if sampling.solver in FIXED_STEP else 0)
        if given is None and pipeline.needs_mono:
            given = v2a_mono(video, n, seed, joint=joint, progress=making)
        audio = pipeline.generate(frames, fps, n, mono=given, seed=seed, sampling=sampling, progress=placing)
    else:
        audio = spatialise(given, rate, frames, fps)
        if placed is not None:
            placed(1, 1)  # placing and rendering: one step after the video's windows
    audio, gain = under_full_scale(audio)
    return BinauralTrack(audio=audio, sample_rate=rate, mode=mode, duration=duration, mono=mono is not None,
                         gain=gain)  # fmt: skip
