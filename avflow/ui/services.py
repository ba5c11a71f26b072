"""What the web UI's tabs do, without Gradio: plain functions that take file paths and numbers and return file paths.

`generate_joint`, `generate_foley` and `generate_binaural` raise `AvflowError` for bad input (the page shows it as one
line); the models are loaded once per process and shared by the requests. The page itself is `avflow.ui.app`.
"""

from __future__ import annotations

import functools
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from avflow import hub
from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO
from avflow.data.file_kinds import VIDEO_FILE_SUFFIXES
from avflow.errors import AvflowError, MediaError

VIDEO_TYPES = list(VIDEO_FILE_SUFFIXES)
OUTPUT_VIDEO = Path("result.mp4")  # the container every tab writes (the name is not used)
FOLEY_MODEL = "small_16k"  # the foley tab's model unless `avflow ui --foley-model` names another
Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class UISettings:
    """Server-side limits and defaults of the app."""

    steps: int | None = None  # sampling steps every tab starts with (`avflow ui --steps`; None: each model's own)
    duration: float = 2.0  # default clip length (s)
    max_duration: float = 10.0  # longest clip the Generate tab makes from text, or adds to a clip (s)
    max_joint_input: float = 60.0  # longest audio or video the Generate tab takes (a2v, v2a, continue; never cut)
    max_foley_duration: float = 30.0  # longest upload the foley tab takes (longer ones are refused, never cut)
    max_binaural_duration: float = 60.0
    max_file_size: str = "200mb"  # uploads above this are refused by the server
    concurrency: int = 2  # requests generating at once; the rest wait in the queue
    max_queue: int = 16
    output_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "avflow-ui")
    model: str | None = None  # the Generate tab's joint model: a model folder or training run (None: the shipped one)
    foley_model: str = FOLEY_MODEL  # an official MMAudio name or a model config .json (`avflow foley --model`)
    foley_weights: str | None = None  # a network checkpoint on top of it (`avflow foley --weights`)


@dataclass
class Result:
    """What a tab shows: a video with sound, its spectrogram and a line of numbers."""

    video: Path
    spectrogram: Path
    summary: str = ""
    extra_files: list[Path] = field(default_factory=list)  # offered for download beside the video


def _job_dir(settings: UISettings) -> Path:
    path = settings.output_dir / uuid.uuid4().hex[:12]
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_video_upload(path: str | Path | None) -> Path:
    """An uploaded file that has a video stream, else a one-line MediaError."""
    from avflow.data.media import probe

    if not path:
        raise MediaError("upload a video first")
    path = Path(path)
    if path.suffix.lower() not in VIDEO_TYPES:
        raise MediaError(f"{path.name}: not a video file (accepted: {', '.join(VIDEO_TYPES)})")
    try:
        info = probe(path)
    except AvflowError:
        raise MediaError(f"{path.name}: not a readable video file") from None
    if not info.has_video or info.n_frames == 0:
        raise MediaError(f"{path.name}: has no video stream")
    from avflow.data.mux import check_copyable

    check_copyable(path, OUTPUT_VIDEO, "replace", suggest_mov=False)  # its video goes into the result's mp4 as is
    return path


# ---------------------------------------------------------------------------------------------------- joint


_joint_lock = threading.Lock()


@functools.cache
def _joint_model(path: str | None):
    from avflow.pipelines.default_model import load_default_model

    return load_default_model(path)


def joint_model(settings: UISettings):
    """The Generate tab's joint model (the shipped one unless `settings.model`), loaded once per process
    (thread-safe)."""
    with _joint_lock:
        return _joint_model(settings.model)


def joint_cfg_strength(settings: UISettings) -> float:
    """The joint model's guidance strength (its config), shown as the page's default."""
    from avflow.pipelines.default_model import read_default_config

    return read_default_config(settings.model).sampling.cfg_strength


def joint_steps(settings: UISettings) -> int:
    """The steps the Generate tab starts with: `settings.steps`, else the joint model's own (its config)."""
    from avflow.pipelines.default_model import read_default_config

    return settings.steps or read_default_config(settings.model).sampling.steps


JOINT_TASKS = {
    "t2av": "text -> video with sound",
    "a2v": "a video for an uploaded sound",
    "v2a": "sound for an uploaded video",
    "continue": "continue an uploaded clip",
}


def _joint_input(path: str | Path | None, task: str, settings: UISettings) -> Path:
    """The upload a task needs: a readable file with audio (a2v) or video (v2a; continue: video and audio), at most
    `max_joint_input` s long (longer inputs are refused, never cut)."""
    from avflow.pipelines.inputs import check_audio_input, check_video_input

    if task == "a2v":
        if not path:
            raise MediaError("upload a sound first (a2v makes a video for it)")
        info = check_audio_input(path)
    else:
        path = check_video_upload(path)
        info = check_video_input(path)
        if task == "continue" and not info.has_audio:
            raise MediaError(f"{Path(path).name}: has no audio track; continuing a clip needs its video and its audio")
    if info.duration > settings.max_joint_input:
        raise MediaError(f"{Path(path).name}: {info.duration:.1f} s is longer than {settings.max_joint_input:g} s")
    return Path(path)


def generate_joint(
    prompt: str,
    settings: UISettings,
    *,
    task: str = "t2av",
    audio_path: str | Path | None = None,
    video_path: str | Path | None = None,
    seed: int = 0,
    duration: float | None = None,
    steps: int | None = None,
    cfg_strength: float | None = None,
    existing_audio: str = DEFAULT_EXISTING_AUDIO,
    progress: Progress | None = None,
) -> Result:
    """One of the default model's tasks (`cfg_strength` None: the model's): text -> video with sound, a video for an
    uploaded sound (a2v), sound for an uploaded video (v2a: that video with the new track, its own audio kept,
    replaced or mixed in as `existing_audio` says) or an uploaded clip continued by `duration` s. Uploads are used
    whole (windows of the model's length); `duration` is the t2av length or what continue adds."""
    if not prompt or not prompt.strip():
        raise AvflowError("write a prompt first")
    if task not in JOINT_TASKS:
        raise AvflowError(f"unknown task {task!r} (choose from {', '.join(JOINT_TASKS)})")
    from avflow.flow.sampling import check_seed

    seed = check_seed(seed)  # one line before any model, not torch's overflow traceback
    duration = settings.duration if duration is None else float(duration)
    if task in ("t2av", "continue") and not 0.5 <= duration <= settings.max_duration:
        raise AvflowError(f"duration must be between 0.5 and {settings.max_duration} s, not {duration}")
    steps = settings.steps if steps is None else int(steps)  # None: the model's own
    if steps is not None and not 1 <= steps <= 200:
        raise AvflowError(f"steps must be between 1 and 200, not {steps}")
    given = None if task == "t2av" else _joint_input(audio_path if task == "a2v" else video_path, task, settings)
    model = joint_model(settings)
    sampling = model.sampling.override(steps=steps, cfg_strength=cfg_strength)
    clip = model.generate(
        prompt.strip(), seed=seed, duration=duration if task in ("t2av", "continue") else None, sampling=sampling,
        task=task, audio_path=given if task == "a2v" else None, video_path=given if task != "a2v" else None,
        progress=progress,
    )  # fmt: skip
    out = _job_dir(settings)
    video, spectrogram = out / "generated.mp4", out / "spectrogram.png"
    dropped = ""
    if task == "v2a":
        _, dropped = _write_onto(given, clip.audio, clip.sample_rate, video, existing_audio)
    else:
        clip.save(video)
    clip.save_spectrogram(spectrogram)
    windows = f" in {clip.windows} windows" if clip.windows > 1 else ""
    metrics = clip.metrics()  # each a value, or no score and the reason (a blank video)
    measures = ", ".join(f"{k}: {m.value:.3g}" if m.defined else f"{k}: - ({m.reason})" for k, m in metrics.items())
    return Result(video, spectrogram, f"{task}, {clip.duration:.2f} s{windows}{dropped}. {measures}")


def _write_onto(source: Path, audio, sample_rate: int, result: Path, existing_audio: str) -> tuple[Path, str]:
    """The upload with the new track written to `result`, and a note for the summary: '; its srt subtitles left out
    (...)' for the streams the result could not hold, and what was handled rather than refused (a damaged packet
    skipped); '' where there is nothing to say."""
    from avflow.data.media import mux_audio
    from avflow.data.mux import left_out

    notes: list[str] = []
    mux_audio(source, audio, sample_rate, result, existing_audio=existing_audio, notes=notes)
    dropped = left_out(source, result)
    note = f"; its {', '.join(dropped)} left out (an mp4 cannot hold them)" if dropped else ""
    return result, note + "".join(f"; {n}" for n in notes)


# ---------------------------------------------------------------------------------------------------- foley


def _foley_spec(settings: UISettings):
    from avflow.pipelines.foley_variants import resolve_model

    return resolve_model(settings.foley_model, settings.foley_weights)


def foley_cfg_strength(settings: UISettings) -> float:
    """The foley model's guidance strength (its sampling settings), shown as the page's default."""
    return _foley_spec(settings).sampling.cfg_strength


def foley_steps(settings: UISettings) -> int:
    """The steps the Foley tab starts with: `settings.steps`, else the foley model's own."""
    return settings.steps or _foley_spec(settings).sampling.steps


def binaural_steps(settings: UISettings) -> int:
    """The steps the Binaural tab starts with: `settings.steps`, else those the installed binaural model records
    (the default ones when none is installed: the tab then spatialises, which takes no steps)."""
    from avflow.models.binaural import MODEL_FILE, SAMPLING, binaural_sampling

    return settings.steps or (binaural_sampling(MODEL_FILE) if MODEL_FILE.is_file() else SAMPLING).steps


def missing_foley_weights(settings: UISettings) -> list[str]:
    """The weight-cache files the foley model needs that are not in the cache yet (files a model config or
    `foley_weights` names are checked when the server starts)."""
    from avflow.pipelines.foley_variants import PARTS, is_cache_asset

    spec = _foley_spec(settings)
    stems = [getattr(spec, part) for part in PARTS if is_cache_asset(getattr(spec, part))]
    return [hub.ASSETS[s].name for s in stems
            if not (hub.converted_path(hub.ASSETS[s]).exists() or hub.raw_path(hub.ASSETS[s]).exists())]  # fmt: skip


def foley_weights_message(settings: UISettings) -> str:
    model, missing = settings.foley_model, missing_foley_weights(settings)
    own = f" with the network {settings.foley_weights}" if settings.foley_weights else ""
    if not missing:
        return f"Foley model `{model}`{own}: its weights are at hand (cache {hub.home()})."
    fetch = f"`avflow download {model}`" if model in hub.MODELS else "`avflow download` of the official model"
    return (
        f"The foley tab needs the weights of `{model}`{own}, which are not in the cache {hub.home()} (missing: "
        f"{', '.join(missing)}). Get them once with {fetch} on a machine with network access (or `--from DIR` "
        "where you have them); they work offline afterwards."
    )


def generate_foley(
    video_path: str | Path | None,
    prompt: str,
    settings: UISettings,
    *,
    negative_prompt: str = "",
    seed: int = 0,
    steps: int | None = None,
    cfg_strength: float | None = None,
    existing_audio: str = DEFAULT_EXISTING_AUDIO,
    progress: Progress | None = None,
) -> Result:
    """Video -> the same video with a generated foley track (official MMAudio weights; `cfg_strength` None: the
    model's); the video's own audio is kept, replaced or mixed in as `existing_audio` says."""
    from avflow.flow.sampling import check_seed

    seed = check_seed(seed)  # one line before any model, not torch's overflow traceback
    video = check_video_upload(video_path)
    from avflow.pipelines.inputs import check_video_input

    info = check_video_input(video)
    if info.duration > settings.max_foley_duration:  # refused, never cut
        raise MediaError(f"{video.name}: {info.duration:.1f} s is longer than {settings.max_foley_duration:g} s")
    if missing_foley_weights(settings):
        raise AvflowError(foley_weights_message(settings))
    from avflow.data.media import write_audio

    steps = settings.steps if steps is None else int(steps)  # None: the model's own
    sampling = _foley_spec(settings).sampling.override(steps=steps, cfg_strength=cfg_strength)
    output = foley_pipeline(settings).generate_video(
        video, prompt or None, negative_prompt or None, seed=seed,
        sampling=sampling, progress=progress,
    )  # fmt: skip
    out = _job_dir(settings)
    result, note = _write_onto(video, output.audio[None], output.sample_rate, out / "foley.mp4", existing_audio)
    write_audio(out / "foley.wav", output.audio[None], output.sample_rate)
    summary = f"{output.duration:.2f} s in {output.windows} window(s) at {output.sample_rate} Hz"
    summary += note
    return Result(result, _spectrogram_of(result, out), summary, [out / "foley.wav"])


_foley_lock = threading.Lock()


@functools.cache
def _foley_pipeline(model: str, weights: str | None):
    import torch

    from avflow.pipelines.foley import FoleyPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return FoleyPipeline.load(model, weights=weights, device=device)


def foley_pipeline(settings: UISettings):
    """The foley tab's pipeline (`settings.foley_model`, with `foley_weights`), loaded once per process
    (thread-safe)."""
    with _foley_lock:
        return _foley_pipeline(settings.foley_model, settings.foley_weights)


# ---------------------------------------------------------------------------------------------------- binaural


def generate_binaural(
    video_path: str | Path | None,
    settings: UISettings,
    *,
    mode: str = "auto",
    seed: int = 0,
    steps: int | None = None,
    existing_audio: str = DEFAULT_EXISTING_AUDIO,
    progress: Progress | None = None,
) -> Result:
    """Video -> the same video with a binaural [left, right] track: generated by an installed binaural model, or the
    video's own audio spatialised from where things move ("auto": the model when its weights are installed)."""
    from avflow.data.media import probe, write_audio
    from avflow.flow.sampling import check_seed
    from avflow.models.binaural import MODEL_FILE
    from avflow.pipelines.binaural import binaural_track, nothing_to_spatialise

    seed = check_seed(seed)  # one line before any model, not torch's overflow traceback
    video = check_video_upload(video_path)
    info = probe(video)
    if info.duration > settings.max_binaural_duration:
        raise MediaError(f"{video.name}: {info.duration:.1f} s is longer than {settings.max_binaural_duration:g} s")
    if mode == "auto":
        mode = "model" if MODEL_FILE.is_file() else "spatialise"
    if mode == "spatialise" and not info.has_audio:
        raise nothing_to_spatialise(video.name, "upload it with a sound track (e.g. the Foley tab's result)",
                                    "choose the binaural model", installed=MODEL_FILE.is_file())  # fmt: skip
    if progress is not None:
        progress(0, 1)
    pipeline = binaural_pipeline() if mode == "model" else None
    track = binaural_track(video, mode=mode, seed=seed, steps=steps, pipeline=pipeline)
    if progress is not None:
        progress(1, 1)
    out = _job_dir(settings)
    result, note = _write_onto(video, track.audio, track.sample_rate, out / "binaural.mp4", existing_audio)
    write_audio(out / "binaural.wav", track.audio, track.sample_rate)
    summary = f"{track.duration:.2f} s, {track.mode}" + note
    return Result(result, _spectrogram_of(result, out), summary, [out / "binaural.wav"])


_binaural_lock = threading.Lock()


@functools.cache
def _binaural_pipeline():
    from avflow.pipelines.binaural import BinauralPipeline

    return BinauralPipeline.from_assets()


def binaural_pipeline():
    """The shipped binaural model, loaded once per process (thread-safe)."""
    with _binaural_lock:
        return _binaural_pipeline()


def _spectrogram_of(media: Path, out: Path) -> Path:
    from avflow.data.spectrogram import save_file_spectrogram

    return save_file_spectrogram(media, out / "spectrogram.png")
