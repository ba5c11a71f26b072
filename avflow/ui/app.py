"""The `avflow ui` web app (Gradio): the page layout of the joint generation, foley and binaural tabs.

Gradio is imported only inside `build_app`, so the core package does not need it. Each tab calls one plain function
of `avflow.ui.services` in a worker thread and shows its `AvflowError` as a one-line message; a request whose tab
was closed or reloaded (or whose API client went away) stops at its next sampling step and frees its slot. `launch`
writes results in a folder of --output-dir that avflow owns (JOBS_FOLDER) and serves that folder only.
"""

# no `from __future__ import annotations`: gradio finds a handler's `request: gr.Request` by its evaluated annotation

import asyncio
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO, EXISTING_AUDIO
from avflow.errors import AvflowError
from avflow.hub import is_remote_file
from avflow.ui.services import (
    CFG_RANGE,
    JOINT_TASKS,
    STEPS_RANGE,
    VIDEO_TYPES,
    WAITING,
    Cancelled,
    Progress,
    Result,
    UISettings,
    binaural_modes,
    binaural_steps,
    cancellable,
    foley_cfg_strength,
    foley_steps,
    foley_weights_message,
    generate_binaural,
    generate_foley,
    generate_joint,
    joint_cfg_strength,
    joint_steps,
    public_text,
    remove_old_jobs,
)

log = logging.getLogger("avflow.ui")

BINAURAL_MODES = {"auto": "auto", "binaural model": "model", "spatialise the video's own audio": "spatialise"}
JOBS_FOLDER = "avflow-ui-jobs"  # the folder of --output-dir that `launch` writes results in, and the only one it serves
WAITING_TEXT = "waiting: another request is using this model"  # the progress bar's line while a request waits its turn


def one_line(exc: BaseException) -> str:
    """A message fit for the page: the exception's first line, never a traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Requests:
    """The cancel signals of the requests running now, by gradio session: a tab closed or reloaded ends its session
    (gradio's unload event), which stops the session's requests at their next sampling step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str | None, set[threading.Event]] = {}

    @contextmanager
    def signal(self, session: str | None) -> Iterator[threading.Event]:
        """A cancel signal for one request of `session`, set by `cancel(session)` while inside."""
        token = threading.Event()
        with self._lock:
            self._sessions.setdefault(session, set()).add(token)
        try:
            yield token
        finally:
            with self._lock:
                tokens = self._sessions.get(session, set())
                tokens.discard(token)
                if not tokens:
                    self._sessions.pop(session, None)

    def cancel(self, session: str | None) -> int:
        """Set the signals of `session`'s running requests; how many."""
        with self._lock:
            tokens = list(self._sessions.get(session, ()))
        for token in tokens:
            token.set()
        return len(tokens)


def checked_by_the_tab(component):
    """`component` (a slider, number box or radio) passing what it gets to the tab unchanged: the tab's own check
    refuses a value out of its range, not whole (a seed of 2.7: gradio's `precision=0` made it 3) or not among its
    choices in a line that names it and stays (gradio's checks showed a message that vanished after 10 s, or a
    multi-line "Could not preprocess input component" with a traceback in the server's log)."""
    component.preprocess = lambda payload: payload
    return component


def choice(value, choices, what: str) -> str:
    """`value` if it is one of `choices` (a radio's, passed unchecked by `checked_by_the_tab`), else a one-line
    AvflowError naming `what`."""
    if not isinstance(value, str) or value not in choices:
        raise AvflowError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def binaural_mode(label) -> str:
    """The Binaural tab's "how" (a label of BINAURAL_MODES) as `generate_binaural`'s mode; an unknown label is a
    one-line error, not "auto". The "binaural model" label is taken where no model is installed: the tab then says
    that none is installed here."""
    return BINAURAL_MODES[choice(label, BINAURAL_MODES, "how")]


def client_gone() -> Callable[[], bool]:
    """Whether the gradio event now running has lost its client: gradio marks an event dead (`alive`) when its
    client's event stream closes (a closed tab, a killed API client), but tells a running function nothing. This
    reads gradio's queue (not public API; where this gradio has none of it, never gone): the unload event covers
    browsers and gradio clients, this the API clients that keep no heartbeat."""
    try:
        from gradio.context import LocalContext

        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        event = blocks._queue.event_ids_to_events.get(event_id) if blocks is not None and event_id else None
    except Exception:  # another gradio
        event = None
    if event is None or not hasattr(event, "alive"):
        return lambda: False
    return lambda: not event.alive


def build_app(settings: UISettings | None = None):
    """The Gradio Blocks app (not launched)."""
    import anyio  # gradio's
    import gradio as gr

    settings = settings or UISettings()
    requests = Requests()

    def error(message: str) -> Exception:
        return gr.Error(message, duration=None, print_exception=False)  # stays until closed, not a bare "Error"

    def run(call: Callable[[Progress], Result], progress, cancelled: Callable[[], bool]) -> tuple:
        """One tab's call (in a worker thread) with gradio progress, stopped at its next sampling step once
        `cancelled()`; errors become one-line gr.Error messages in the page."""

        def sampling(done: int, total: int) -> None:
            if (done, total) == WAITING:  # another request has the model: this one waits its turn
                progress(0.0, desc=WAITING_TEXT)
            else:  # a share of the whole run: its units are the pipeline's (features, windows' steps, decoding)
                progress(done / max(total, 1), desc="generating")

        try:
            if cancelled():
                raise Cancelled("cancelled before it started")
            progress(0.0, desc="starting")
            result = call(cancellable(sampling, cancelled))
            if cancelled():  # after its last step: no one to show it to, nothing to keep
                job = result.video.parent
                if job.parent.resolve() == settings.output_dir.resolve():
                    shutil.rmtree(job, ignore_errors=True)
                raise Cancelled("cancelled after its last step")
        except Cancelled as exc:
            log.info("ui request stopped, no longer wanted: %s", exc)
            raise error("cancelled: the page or client that asked for it went away") from None
        except AvflowError as exc:
            raise error(one_line(exc)) from None
        except Exception as exc:  # anything else: log it server-side, show one line in the page
            log.exception("ui request failed")
            raise error(f"{type(exc).__name__}: {public_text(one_line(exc), settings=settings)}") from None
        files = [str(result.video), *map(str, result.extra_files)]
        return str(result.video), str(result.spectrogram), files, result.summary

    async def in_page(call: Callable[[Progress], Result], progress, request) -> tuple:
        """Run one tab's call in a worker thread until it returns, or until it stops at its next sampling step once
        the request is no longer wanted: its session ended (the unload event: a tab closed or reloaded), its client
        gone (`client_gone`), or its gradio task cancelled (the slot is then held until the worker has stopped)."""
        gone = client_gone()
        with requests.signal(getattr(request, "session_hash", None)) as token:

            def cancelled() -> bool:
                if not token.is_set() and gone():
                    token.set()
                return token.is_set()

            # anyio's worker threads (as gradio's own for a plain function; with gradio's context, which its progress
            # bar reads), not the event loop's small default executor
            work = asyncio.ensure_future(anyio.to_thread.run_sync(run, call, progress, cancelled))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                token.set()
                await asyncio.wait({work})
                if not work.cancelled():
                    work.exception()  # retrieved: the cancelled request's own gr.Error goes nowhere
                raise

    def outputs(tab: str):
        with gr.Column():
            video = gr.Video(label="result", elem_id=f"{tab}-video", interactive=False)
            spectrogram = gr.Image(
                label="spectrogram", type="filepath", interactive=False, elem_id=f"{tab}-spectrogram"
            )
            files = gr.File(label="download", file_count="multiple", interactive=False, elem_id=f"{tab}-files")
            summary = gr.Markdown(elem_id=f"{tab}-summary")
        return [video, spectrogram, files, summary]

    upload_note = f"Accepted: {', '.join(VIDEO_TYPES)}; at most {settings.max_file_size}."
    keep = max(1, round(settings.keep_hours * 3600))  # gradio's copies of the results: as long as the job folders
    with gr.Blocks(title="avflow", delete_cache=(min(keep, 3600), keep)) as demo:
        gr.Markdown("# avflow\nSynchronized audio-visual generation with flow matching.")
        with gr.Tabs():
            with gr.Tab("Generate", id="joint", elem_id="tab-joint"):
                with gr.Row():
                    with gr.Column():
                        prompt = gr.Textbox(
                            label="prompt",
                            value="a red ball bounces on a wooden floor",
                            lines=2,
                            elem_id="joint-prompt",
                        )
                        tasks = [(what, name) for name, what in JOINT_TASKS.items()]
                        task = checked_by_the_tab(gr.Radio(tasks, value="t2av", label="task", elem_id="joint-task"))
                        j_audio = gr.File(label="sound (a video for it)", type="filepath", elem_id="joint-audio")
                        j_video = gr.File(label="video (sound for it, or a clip with sound to continue)",
                                          type="filepath", elem_id="joint-video-in")  # fmt: skip
                        gr.Markdown(f"{upload_note} Uploads are used whole, up to {settings.max_joint_input:g} s.")
                        seed = checked_by_the_tab(gr.Number(label="seed", value=0))  # 2.7: refused, not made 3
                        duration = checked_by_the_tab(gr.Slider(0.5, settings.max_duration, value=settings.duration,
                                                      label="duration (s): the clip's, or what is added"))  # fmt: skip
                        steps = checked_by_the_tab(gr.Slider(*STEPS_RANGE, value=joint_steps(settings), step=1,
                                                             label="steps"))  # fmt: skip
                        cfg_strength = checked_by_the_tab(gr.Slider(*CFG_RANGE, value=joint_cfg_strength(settings),
                                                                    label="cfg_strength"))  # fmt: skip
                        j_existing = checked_by_the_tab(gr.Radio(list(EXISTING_AUDIO), value=DEFAULT_EXISTING_AUDIO,
                                                        label="the uploaded video's own audio (sound for a video)",
                                                        elem_id="joint-existing-audio"))  # fmt: skip
                        go = gr.Button("Generate", variant="primary", elem_id="joint-generate")
                    joint_out = outputs("joint")

                async def joint(prompt, seed, duration, steps, cfg_strength, task, audio, video, existing,  # fmt: skip
                                request: gr.Request, progress=gr.Progress()):  # noqa: B008
                    return await in_page(
                        lambda report: generate_joint(
                            prompt, settings, task=task or "t2av", audio_path=audio, video_path=video, seed=seed,
                            duration=duration, steps=steps, cfg_strength=cfg_strength,
                            existing_audio=choice(existing, EXISTING_AUDIO, "the video's own audio"),
                            progress=report,
                        ),
                        progress,
                        request,
                    )  # fmt: skip

                go.click(joint, [prompt, seed, duration, steps, cfg_strength, task, j_audio, j_video, j_existing],
                         joint_out, api_name="joint")  # fmt: skip

            with gr.Tab("Foley", id="foley", elem_id="tab-foley"):
                gr.Markdown(foley_weights_message(settings), elem_id="foley-weights")
                with gr.Row():
                    with gr.Column():
                        f_video = gr.File(label="video", type="filepath", elem_id="foley-video")  # the tab checks it
                        gr.Markdown(upload_note)
                        f_prompt = gr.Textbox(label="prompt (optional)")
                        f_negative = gr.Textbox(label="negative prompt (optional)")
                        f_seed = checked_by_the_tab(gr.Number(label="seed", value=0))
                        f_steps = checked_by_the_tab(gr.Slider(*STEPS_RANGE, value=foley_steps(settings), step=1,
                                                               label="steps"))  # fmt: skip
                        f_cfg_strength = checked_by_the_tab(gr.Slider(*CFG_RANGE, value=foley_cfg_strength(settings),
                                                                      label="cfg_strength"))  # fmt: skip
                        f_audio = checked_by_the_tab(gr.Radio(list(EXISTING_AUDIO), value=DEFAULT_EXISTING_AUDIO,
                                                     label="the video's own audio",
                                                     elem_id="foley-existing-audio"))  # fmt: skip
                        f_go = gr.Button("Add sound", variant="primary", elem_id="foley-generate")
                    foley_out = outputs("foley")

                async def foley(video, prompt, negative, seed, steps, cfg_strength, audio,  # fmt: skip
                                request: gr.Request, progress=gr.Progress()):  # noqa: B008
                    return await in_page(
                        lambda report: generate_foley(
                            video, prompt, settings, negative_prompt=negative, seed=seed, steps=steps,
                            cfg_strength=cfg_strength, progress=report,
                            existing_audio=choice(audio, EXISTING_AUDIO, "the video's own audio"),
                        ),
                        progress,
                        request,
                    )  # fmt: skip

                f_go.click(
                    foley,
                    [f_video, f_prompt, f_negative, f_seed, f_steps, f_cfg_strength, f_audio],
                    foley_out,
                    api_name="foley",
                )

            with gr.Tab("Binaural", id="binaural", elem_id="tab-binaural"):
                gr.Markdown("Give a video a binaural (left/right) track that follows what moves on screen.")
                with gr.Row():
                    with gr.Column():
                        b_video = gr.File(label="video", type="filepath", elem_id="bin-video")  # the tab checks it
                        gr.Markdown(upload_note)
                        modes = [label for label, mode in BINAURAL_MODES.items() if mode in binaural_modes()]
                        b_mode = checked_by_the_tab(gr.Radio(modes, value="auto", label="how",
                                                             elem_id="binaural-mode"))  # "model": if any
                        b_seed = checked_by_the_tab(gr.Number(label="seed", value=0))
                        b_steps = checked_by_the_tab(gr.Slider(*STEPS_RANGE, value=binaural_steps(settings), step=1,
                                                               label="steps"))  # fmt: skip
                        b_audio = checked_by_the_tab(gr.Radio(list(EXISTING_AUDIO), value=DEFAULT_EXISTING_AUDIO,
                                                     label="the video's own audio",
                                                     elem_id="bin-existing-audio"))  # fmt: skip
                        b_go = gr.Button("Make binaural", variant="primary", elem_id="binaural-generate")
                    binaural_out = outputs("binaural")

                async def binaural(video, mode, seed, steps, audio, request: gr.Request,  # fmt: skip
                                   progress=gr.Progress()):  # noqa: B008
                    return await in_page(
                        lambda report: generate_binaural(
                            video, settings, mode=binaural_mode(mode), seed=seed, steps=steps,
                            existing_audio=choice(audio, EXISTING_AUDIO, "the video's own audio"), progress=report,
                        ),
                        progress,
                        request,
                    )  # fmt: skip

                b_go.click(binaural, [b_video, b_mode, b_seed, b_steps, b_audio], binaural_out, api_name="binaural")

        def end_session(request: gr.Request) -> None:
            """A tab closed or reloaded (its heartbeat gone): its requests stop at their next sampling step."""
            if stopped := requests.cancel(getattr(request, "session_hash", None)):
                log.info("ui session ended: stopping its %d running request(s)", stopped)

        demo.unload(end_session)

    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.max_queue)
    return demo


def absolute_paths(settings: UISettings) -> UISettings:
    """`settings` with its folders and files (output folder, models, weights) as absolute paths, so that they still
    name the same files once `leave_the_upload_folder` has changed the working folder; names and URLs unchanged."""
    local = lambda ref: ref is not None and not is_remote_file(ref)  # noqa: E731
    full = lambda ref: str(Path(ref).expanduser().absolute())  # noqa: E731
    foley_model = settings.foley_model
    if foley_model.lower().endswith(".json") and local(foley_model):  # else an official model's name
        foley_model = full(foley_model)
    return replace(
        settings,
        output_dir=settings.output_dir.expanduser().absolute(),
        model=full(settings.model) if local(settings.model) else settings.model,
        foley_model=foley_model,
        foley_weights=full(settings.foley_weights) if local(settings.foley_weights) else settings.foley_weights,
    )


def leave_the_upload_folder(settings: UISettings) -> None:
    """Where gradio's upload folder ($GRADIO_TEMP_DIR, default $TMPDIR/gradio) lies inside the working folder (`cd /tmp
    && avflow ui`, GRADIO_TEMP_DIR=$PWD/g), make the output folder the working one: gradio refuses an upload named
    '.holiday.mp4' in the working folder ("Dotfiles located in the temporary directory cannot be moved to the
    cache..."). $GRADIO_TEMP_DIR is made absolute first (gradio reads it on each upload); `settings`' paths must be
    (`absolute_paths`)."""
    if relative := os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = str(Path(relative).expanduser().absolute())
    uploads = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    inside = lambda folder: uploads.is_relative_to(folder.resolve())  # noqa: E731
    if inside(Path.cwd()) and not inside(settings.output_dir):
        log.info("ui: working in %s (gradio's upload folder %s is inside %s)", settings.output_dir, uploads, Path.cwd())
        os.chdir(settings.output_dir)


def launch(settings: UISettings, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Build and serve the app until interrupted. Results are written in `settings.output_dir`'s JOBS_FOLDER, the only
    folder of it the server serves and cleans up (`--output-dir` served whole let anyone download any file in it)."""
    settings = absolute_paths(replace(settings, output_dir=settings.output_dir / JOBS_FOLDER))
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    remove_old_jobs(settings)  # a previous server's, older than --keep-hours (then with each new result)
    leave_the_upload_folder(settings)
    demo = build_app(settings)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=settings.max_file_size,
        allowed_paths=[str(settings.output_dir)],
        show_error=True,
        inbrowser=False,
        quiet=False,
    )
