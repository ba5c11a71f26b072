"""What the web UI's tabs do, without Gradio: plain functions that take file paths and numbers and return file paths.

`generate_joint`, `generate_foley` and `generate_binaural` raise `AvflowError` for bad input (the page shows it as one
line, naming uploads by their own names) and `Cancelled` where their progress callback says the request is no longer
wanted (`cancellable`); the notes raised while they run end the result's summary. Job folders older than
`UISettings.keep_hours` are removed as new ones are made; results are named after the upload (`holiday_foley.mp4`).
The models are loaded once per process and shared by the requests, one request at a time on each (`model_turn`: their
networks keep per-call state); a request waiting for its turn says so through its progress (`WAITING`). The page
itself is `avflow.ui.app`.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import avflow
from avflow import hub
from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO
from avflow.data.file_kinds import VIDEO_FILE_SUFFIXES
from avflow.errors import AvflowError, MediaError, Note

VIDEO_TYPES = list(VIDEO_FILE_SUFFIXES)
OUTPUT_VIDEO = Path("result.mp4")  # the container every tab writes (the name is not used)
FOLEY_MODEL = "small_16k"  # the foley tab's model unless `avflow ui --foley-model` names another
STEPS_RANGE = (1, 200)  # sampling steps a request may ask for: the page's sliders, `avflow ui --steps`, every tab
CFG_RANGE = (1.0, 10.0)  # the page's guidance sliders; a request above the top is refused (below: each model's check)
KEEP_HOURS = 24.0  # results (job folders, gradio's copies) are removed this many hours after they were made
JOB_NAME = re.compile(r"[0-9a-f]{12}")  # a job folder's name (`_job_dir`): the only folders the cleanup removes
Progress = Callable[[int, int], None]  # (done, total); WAITING: waiting for its turn on a model
WAITING = (0, 0)  # what a request's progress hears while another request has its model (`model_turn`)
WAIT_POLL_S = 1.0  # a waiting request's progress hears WAITING this often (a cancelled one then stops waiting)
RESULT_STEM_CHARS = 60  # longest name (before its suffix) a result is given from an upload's name or a prompt


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
    # where job folders are made (`avflow ui --output-dir`; `app.launch` makes it that folder's own `avflow-ui-jobs`)
    output_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "avflow-ui")
    keep_hours: float = KEEP_HOURS  # job folders older than this are removed (`avflow ui --keep-hours`)
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


class Cancelled(Exception):
    """A request no longer wanted (its tab closed or reloaded, its API client gone): raised by its progress callback
    (`cancellable`) at the next sampling step; the tab's call then stops and leaves no job folder."""


def cancellable(progress: Progress | None, cancelled: Callable[[], bool]) -> Progress:
    """`progress` that first raises `Cancelled` once `cancelled()` says that the request is no longer wanted."""

    def report(done: int, total: int) -> None:
        if cancelled():
            raise Cancelled(f"cancelled at step {done} of {total}")
        if progress is not None:
            progress(done, total)

    return report


def _number(value, what: str) -> float:
    """`value` as a float, else a one-line error naming `what`."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise AvflowError(f"{what} must be a number, not {value!r}") from None


def _shown(value: float) -> str:
    """A number as a message quotes it: 7, 2.7, 1e+30, nan."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


def check_steps(steps: float | None) -> int | None:
    """`steps` as a whole number within STEPS_RANGE (None stays None: the model's own), else a one-line error: 2.7
    is refused, not cut to 2."""
    if steps is None:
        return None
    low, high = STEPS_RANGE
    value = _number(steps, f"steps (a whole number between {low} and {high})")
    if not value.is_integer():  # 2.7, nan, inf
        raise AvflowError(f"steps must be a whole number between {low} and {high}, not {_shown(value)}")
    if not low <= value <= high:
        raise AvflowError(f"steps must be between {low} and {high}, not {_shown(value)}")
    return int(value)


def check_cfg_strength(cfg_strength: float | None) -> float | None:
    """`cfg_strength` up to the top of CFG_RANGE (None stays None: the model's own), else a one-line error before any
    model (1e30 ran the whole job into NaN); the low end is each model's own check (the foley model's says why)."""
    if cfg_strength is None:
        return None
    high = CFG_RANGE[1]
    value = _number(cfg_strength, f"cfg_strength (at most {high:g})")
    if value > high:
        raise AvflowError(f"cfg_strength must be at most {high:g}, not {_shown(value)}")
    return value


def safe_stem(name: str | Path | None, fallback: str) -> str:
    """An upload's name without its folder and suffix, fit to name a download: letters and digits of any script, '-'
    and '.' kept, each other run of characters one '_', at most RESULT_STEM_CHARS; `fallback` where none is left."""
    stem = re.sub(r"[^\w.-]+", "_", Path(str(name)).stem if name else "").strip("._-")
    return stem[:RESULT_STEM_CHARS].rstrip("._-") or fallback


def prompt_stem(prompt: str, fallback: str = "generated") -> str:
    """A short name for a result made from text: the prompt's first words, "a_red_ball_bounces_on"."""
    words = re.findall(r"[^\W_]+", prompt.lower())[:5]
    return "_".join(words)[:RESULT_STEM_CHARS].rstrip("_") or fallback


_turns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a lock per shared model (`model_turn`)
_turns_lock = threading.Lock()


@contextmanager
def model_turn(model, progress: Progress | None) -> Iterator[None]:
    """Inside: this request alone runs `model` (a pipeline shared by the requests). Pipelines keep per-call state in
    their networks (MMAudio's clip length and rotary tables: two Foley requests at once failed with "MMAudio expects
    208 latents for this duration, got 94"; the joint model's Linear weights held cast for a run under autocast).
    While another request has it, `progress` hears WAITING every WAIT_POLL_S (the page shows that the request waits;
    a cancelled one stops waiting there)."""
    with _turns_lock:
        turn = _turns.setdefault(model, threading.Lock())
    if not turn.acquire(blocking=False):
        while True:
            if progress is not None:
                progress(*WAITING)
            if turn.acquire(timeout=WAIT_POLL_S):
                break
    try:
        yield
    finally:
        turn.release()


_calls = threading.local()  # the tab call running in this thread: its job folders and its notes


def _job_dir(settings: UISettings) -> Path:
    """A new job folder in `settings.output_dir`, after removing those older than `settings.keep_hours`."""
    remove_old_jobs(settings)
    path = settings.output_dir / uuid.uuid4().hex[:12]
    path.mkdir(parents=True, exist_ok=True)
    jobs = getattr(_calls, "jobs", None)
    if jobs is not None:  # removed again if the call fails or is cancelled
        jobs.append(path)
    return path


def remove_old_jobs(settings: UISettings, now: float | None = None) -> list[Path]:
    """Remove the job folders in `settings.output_dir` last written more than `settings.keep_hours` ago (only folders
    named as `_job_dir` names them, nothing else an --output-dir holds); returns those removed."""
    cutoff = (time.time() if now is None else now) - settings.keep_hours * 3600
    removed: list[Path] = []
    try:
        entries = list(settings.output_dir.iterdir())
    except OSError:  # not made yet
        return removed
    for entry in entries:
        try:
            old = JOB_NAME.fullmatch(entry.name) and not entry.is_symlink() and entry.is_dir()
            old = old and entry.stat().st_mtime < cutoff
        except OSError:  # removed meanwhile by another request
            continue
        if old:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def public_text(text: str, uploads: Iterable[str | Path | None] = (), settings: UISettings | None = None) -> str:
    """`text` (a message or note for the page) naming each upload by its own file name and no folder of this server:
    a path in the temp folder (gradio's uploads), the output folder or avflow's install folder keeps its name only."""
    for upload in uploads:
        if upload:
            path = Path(upload)
            for full in sorted({str(path), str(path.absolute()), os.path.realpath(path)}, key=len, reverse=True):
                text = text.replace(full, path.name)
    roots = [tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR"), str(Path(avflow.__file__).parent)]
    roots += [str(settings.output_dir.absolute())] if settings is not None else []
    for root in {os.path.realpath(r) for r in roots if r} | {os.path.abspath(r) for r in roots if r}:
        if root.rstrip("/"):
            text = re.sub(rf"(?<![\w.~/-]){re.escape(root.rstrip('/'))}/(?:[^\s/'\"]+/)*", "", text)
    return text


_notes_lock = threading.Lock()
_shown_before: list[Callable] = []  # the warnings printer `_show_note` passes other warnings on to


def _show_note(message, category, filename, lineno, file=None, line=None) -> None:
    notes = getattr(_calls, "notes", None)
    if notes is not None and issubclass(category, Note):
        notes.append(str(message))
    elif _shown_before and not getattr(_calls, "showing", False):
        _calls.showing = True  # a printer put in front of this one later must not come back here for ever
        try:
            _shown_before[-1](message, category, filename, lineno, file, line)
        finally:
            _calls.showing = False


@contextmanager
def collecting_notes() -> Iterator[list[str]]:
    """The `Note` warnings (input handled rather than refused: a silent video, a damaged packet skipped) raised in this
    thread while inside, every one of them; other threads' and other warnings go to the printer in place as before."""
    with _notes_lock:
        if warnings.showwarning is not _show_note:  # in front of the printer in place (the CLI's, a test runner's)
            _shown_before[:] = [warnings.showwarning]
            warnings.showwarning = _show_note
        if ("always", None, Note, None, 0) not in warnings.filters:  # not only the first at each place
            warnings.simplefilter("always", Note)
    notes: list[str] = []
    _calls.notes = notes
    try:
        yield notes
    finally:
        _calls.notes = None


def _remove(folders: Iterable[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _tab_call(fn):
    """A tab's service: the notes raised while it runs end its result's summary; its messages and notes name uploads
    by their own names (never a folder of this server); a call that fails or is cancelled leaves no job folder."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        settings = bound.arguments.get("settings")
        uploads = [bound.arguments.get(name) for name in ("video_path", "audio_path")]
        jobs: list[Path] = []
        _calls.jobs = jobs
        try:
            with collecting_notes() as notes:
                result = fn(*args, **kwargs)
        except AvflowError as exc:
            exc.args = (public_text(str(exc), uploads, settings),)
            _remove(jobs)
            raise
        except BaseException:
            _remove(jobs)
            raise
        finally:
            _calls.jobs = None
        said = dict.fromkeys(public_text(note, uploads, settings) for note in notes)
        result.summary += "".join(f"\n\nNote: {note}" for note in said if note not in result.summary)
        return result

    return call


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
    length = info.audio_duration if task == "a2v" else info.duration  # a2v: the sound's own, not a video's beside it
    if length > settings.max_joint_input:
        raise MediaError(f"{Path(path).name}: {length:.1f} s is longer than {settings.max_joint_input:g} s")
    return Path(path)


def check_existing_audio(video: Path, existing_audio: str) -> None:
    """What a tab that writes onto an upload does with its own audio (`existing_audio`), checked before any model:
    one of the choices, and one the result can hold (an AVI's ADPCM cannot be kept in an mp4: a one-line error in
    the page's words, not after all the sampling)."""
    from avflow.data.audio_tracks import EXISTING_AUDIO
    from avflow.data.mux import check_copyable

    if not isinstance(existing_audio, str) or existing_audio not in EXISTING_AUDIO:
        raise AvflowError(f"existing audio must be one of {', '.join(EXISTING_AUDIO)}, not {existing_audio!r}")
    check_copyable(video, OUTPUT_VIDEO, existing_audio, suggest_mov=False,
                   audio_hint="choose replace or mix for its existing audio")  # fmt: skip


@_tab_call
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
    if not isinstance(task, str) or task not in JOINT_TASKS:  # the page's radio passes what it gets (a list too)
        raise AvflowError(f"unknown task {task!r} (choose from {', '.join(JOINT_TASKS)})")
    for box, upload, readers in (("sound", audio_path, ("a2v",)), ("video", video_path, ("v2a", "continue"))):
        if upload and task not in readers:  # refused, not silently ignored
            raise MediaError(f"{task} does not use the uploaded {box} {Path(upload).name}: remove it from the {box} "
                             f"box, or choose the task {' or '.join(readers)}")  # fmt: skip
    from avflow.encoders.text import check_text_extra
    from avflow.flow.sampling import check_seed
    from avflow.pipelines.default_model import read_default_config

    check_text_extra(read_default_config(settings.model).text_encoder)  # no [text] extra: one line, before any model
    seed = check_seed(seed)  # one line before any model, not torch's overflow traceback
    duration = settings.duration if duration is None else _number(duration, "duration (s)")
    if task in ("t2av", "continue") and not 0.5 <= duration <= settings.max_duration:
        raise AvflowError(f"duration must be between 0.5 and {settings.max_duration} s, not {duration}")
    steps = check_steps(settings.steps if steps is None else steps)  # None: the model's own
    cfg_strength = check_cfg_strength(cfg_strength)
    # the model's own checks (cfg_strength > 0 and finite) from its config, before the model loads
    sampling = read_default_config(settings.model).sampling.override(steps=steps, cfg_strength=cfg_strength)
    given = None if task == "t2av" else _joint_input(audio_path if task == "a2v" else video_path, task, settings)
    if task == "v2a":
        check_existing_audio(given, existing_audio)
    model = joint_model(settings)
    with model_turn(model, progress):
        clip = model.generate(
            prompt.strip(), seed=seed, duration=duration if task in ("t2av", "continue") else None, sampling=sampling,
            task=task, audio_path=given if task == "a2v" else None, video_path=given if task != "a2v" else None,
            progress=progress,
        )  # fmt: skip
    out = _job_dir(settings)
    name = prompt_stem(prompt) if given is None else f"{safe_stem(given, 'upload')}_{task}"
    video, spectrogram = out / f"{name}.mp4", out / f"{name}_spectrogram.png"
    dropped, carried = "", ""
    if task == "v2a":
        _, dropped = _write_onto(given, clip.audio, clip.sample_rate, video, existing_audio)
    elif task == "a2v":  # the uploaded sound as given, not the model's 16 kHz copy of it
        from avflow.data.mux import write_video_with_audio_of

        carried = f". Its sound: {write_video_with_audio_of(video, clip.frames, clip.fps, given)}"
    else:
        clip.save(video)
    clip.save_spectrogram(spectrogram)
    windows = f" in {clip.windows} windows" if clip.windows > 1 else ""
    changed = ""  # what the model made other than asked: said, not silently
    if task == "continue":  # the user's frames go through the model's size and frame rate
        height, width = clip.frames.shape[1:3]
        changed += f"; your clip is re-rendered at the model's {width}x{height}, {clip.fps:g} fps"
    if task in ("t2av", "continue"):  # the length made is whole frames at the model's fps (continue: what is added)
        made = clip.frames.shape[0] / clip.fps if task == "t2av" else max(1, round(duration * clip.fps)) / clip.fps
        if abs(made - duration) > 1e-6:
            added = " added" if task == "continue" else ""
            changed += f"; {duration:g} s{added} rounded to {made:.4g} s at {clip.fps:g} fps"
    try:  # of the file as written (as `avflow eval` reads it): each a value, or no score and why (a blank video)
        metrics = clip.metrics(video)
        measures = ", ".join(f"{k}: {m.value:.3g}" if m.defined else f"{k}: - ({m.reason})" for k, m in metrics.items())
    except MediaError as exc:  # e.g. a v2a video longer than the measures hold in memory
        measures = f"metrics not measured: {exc}"
    return Result(video, spectrogram, f"{task}, {clip.duration:.2f} s{windows}{changed}{dropped}. {measures}{carried}")


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


@_tab_call
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
    steps = check_steps(settings.steps if steps is None else steps)  # None: the model's own
    cfg_strength = check_cfg_strength(cfg_strength)
    video = check_video_upload(video_path)
    from avflow.pipelines.inputs import check_video_input

    info = check_video_input(video)
    check_existing_audio(video, existing_audio)  # before any model, not after the sampling
    if info.duration > settings.max_foley_duration:  # refused, never cut
        raise MediaError(f"{video.name}: {info.duration:.1f} s is longer than {settings.max_foley_duration:g} s")
    from avflow.pipelines.foley import check_prompts

    spec = _foley_spec(settings)
    check_prompts(spec, prompt or None, negative_prompt or None)  # refused, never cut: the tokenizer alone
    if missing_foley_weights(settings):
        raise AvflowError(foley_weights_message(settings))
    from avflow.data.media import write_audio

    sampling = spec.sampling.override(steps=steps, cfg_strength=cfg_strength)
    pipeline = foley_pipeline(settings)
    with model_turn(pipeline, progress):
        output = pipeline.generate_video(
            video, prompt or None, negative_prompt or None, seed=seed,
            sampling=sampling, progress=progress,
        )  # fmt: skip
    out = _job_dir(settings)
    name = f"{safe_stem(video, 'video')}_foley"
    result, note = _write_onto(video, output.audio[None], output.sample_rate, out / f"{name}.mp4", existing_audio)
    wav = write_audio(out / f"{name}.wav", output.audio[None], output.sample_rate)
    summary = f"{output.duration:.2f} s in {output.windows} window(s) at {output.sample_rate} Hz"
    summary += note
    return Result(result, _spectrogram_of(result, out), summary, [wav])


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


BINAURAL_MODES = ("auto", "model", "spatialise")  # `binaural_track`'s modes


def binaural_modes() -> list[str]:
    """The Binaural tab's choices on this server: "model" only where a binaural model is installed."""
    from avflow.models.binaural import MODEL_FILE

    return [mode for mode in BINAURAL_MODES if mode != "model" or MODEL_FILE.is_file()]


@_tab_call
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
    from avflow.pipelines.binaural import binaural_track, check_mix, nothing_to_spatialise
    from avflow.pipelines.spatialise import gain_note

    seed = check_seed(seed)  # one line before any model, not torch's overflow traceback
    steps = check_steps(steps)
    if mode == "model" and not MODEL_FILE.is_file():  # not where it would be on this server's disk
        raise AvflowError("no binaural model is installed on this server: choose auto or spatialise (the video's own "
                          "audio, placed where things move)")  # fmt: skip
    video = check_video_upload(video_path)
    info = probe(video)
    if info.duration > settings.max_binaural_duration:
        raise MediaError(f"{video.name}: {info.duration:.1f} s is longer than {settings.max_binaural_duration:g} s")
    if mode == "auto":
        mode = "model" if MODEL_FILE.is_file() else "spatialise"
    if mode == "spatialise" and not info.has_audio:
        raise nothing_to_spatialise(video.name, "upload it with a sound track (e.g. the Foley tab's result)",
                                    "choose the binaural model", installed=MODEL_FILE.is_file())  # fmt: skip
    check_mix(video, None, mode=mode, existing_audio=existing_audio, has_audio=info.has_audio,
              mix="\"the video's own audio\": mix", instead="choose keep or replace")  # fmt: skip
    if progress is not None:
        progress(0, 1)  # a cancelled request stops here, before any model; the steps below report (and stop) too
    pipeline = binaural_pipeline() if mode == "model" else None  # spatialising uses no shared model
    # a cue model places the shipped joint model's v2a sound: the server's copy (when it serves the shipped one),
    # not a fresh load per request; its turn is taken after the binaural model's (the Generate tab takes only its own)
    joint = joint_model(settings) if pipeline is not None and pipeline.needs_mono and settings.model is None else None
    with ExitStack() as turns:
        for shared in (pipeline, joint):
            if shared is not None:
                turns.enter_context(model_turn(shared, progress))
        track = binaural_track(video, mode=mode, seed=seed, steps=steps, pipeline=pipeline, progress=progress,
                               joint=joint)  # fmt: skip
    if progress is not None:
        progress(1, 1)
    out = _job_dir(settings)
    name = f"{safe_stem(video, 'video')}_binaural"
    result, note = _write_onto(video, track.audio, track.sample_rate, out / f"{name}.mp4", existing_audio)
    wav = write_audio(out / f"{name}.wav", track.audio, track.sample_rate)
    summary = f"{track.duration:.2f} s, {track.mode}" + (f", {gain_note(track.gain)}" if track.gain < 1 else "")
    summary += note
    return Result(result, _spectrogram_of(result, out), summary, [wav])


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

    return save_file_spectrogram(media, out / f"{media.stem}_spectrogram.png")
