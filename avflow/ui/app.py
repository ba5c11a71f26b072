"""The `avflow ui` web app (Gradio): the page layout of the joint generation, foley and binaural tabs.

Gradio is imported only inside `build_app`, so the core package does not need it. Each tab calls one plain function
of `avflow.ui.services` and shows its `AvflowError` as a one-line message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO, EXISTING_AUDIO
from avflow.errors import AvflowError
from avflow.ui.services import (
    JOINT_TASKS,
    VIDEO_TYPES,
    Progress,
    Result,
    UISettings,
    binaural_steps,
    foley_cfg_strength,
    foley_steps,
    foley_weights_message,
    generate_binaural,
    generate_foley,
    generate_joint,
    joint_cfg_strength,
    joint_steps,
)

log = logging.getLogger("avflow.ui")

BINAURAL_MODES = {"auto": "auto", "binaural model": "model", "spatialise the video's own audio": "spatialise"}



def one_line(exc: BaseException) -> str:
    """A message fit for the page: the exception's first line, never a traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_app(settings: UISettings | None = None):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    settings = settings or UISettings()

    def in_page(call: Callable[[Progress], Result], progress) -> tuple:
        """Run one tab's call with gradio progress; errors become one-line gr.Error messages in the page."""
        progress(0.0, desc="starting")

        def report(done: int, total: int) -> None:
            progress((done, max(total, 1)), desc="sampling", unit="steps")

        try:
            result = call(report)
        except AvflowError as exc:
            raise gr.Error(one_line(exc), print_exception=False) from None
        except Exception as exc:  # anything else: log it server-side, show one line in the page
            log.exception("ui request failed")
            raise gr.Error(f"{type(exc).__name__}: {one_line(exc)}", print_exception=False) from None
        files = [str(result.video), *map(str, result.extra_files)]
        return str(result.video), str(result.spectrogram), files, result.summary

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
    with gr.Blocks(title="avflow") as demo:
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
                        task = gr.Radio([(what, name) for name, what in JOINT_TASKS.items()], value="t2av",
                                        label="task", elem_id="joint-task")  # fmt: skip
                        j_audio = gr.File(label="sound (a video for it)", type="filepath", elem_id="joint-audio")
                        j_video = gr.File(label="video (sound for it, or a clip with sound to continue)",
                                          file_types=VIDEO_TYPES, type="filepath",
                                          elem_id="joint-video-in")  # fmt: skip
                        gr.Markdown(f"{upload_note} Uploads are used whole, up to {settings.max_joint_input:g} s.")
                        seed = gr.Number(label="seed", value=0, precision=0)
                        duration = gr.Slider(0.5, settings.max_duration, value=settings.duration,
                                             label="duration (s): the clip's, or what is added")  # fmt: skip
                        steps = gr.Slider(1, 100, value=joint_steps(settings), step=1, label="steps")
                        cfg_strength = gr.Slider(1.0, 10.0, value=joint_cfg_strength(settings), label="cfg_strength")
                        j_existing = gr.Radio(list(EXISTING_AUDIO), value=DEFAULT_EXISTING_AUDIO,
                                              label="the uploaded video's own audio (sound for a video)",
                                              elem_id="joint-existing-audio")  # fmt: skip
                        go = gr.Button("Generate", variant="primary", elem_id="joint-generate")
                    joint_out = outputs("joint")

                def joint(prompt, seed, duration, steps, cfg_strength, task, audio, video, existing,  # fmt: skip
                          progress=gr.Progress()):  # noqa: B008
                    return in_page(
                        lambda report: generate_joint(
                            prompt, settings, task=task or "t2av", audio_path=audio, video_path=video, seed=seed,
                            duration=duration, steps=steps, cfg_strength=cfg_strength, existing_audio=existing,
                            progress=report,
                        ),
                        progress,
                    )  # fmt: skip

                go.click(joint, [prompt, seed, duration, steps, cfg_strength, task, j_audio, j_video, j_existing],
                         joint_out, api_name="joint")  # fmt: skip

            with gr.Tab("Foley", id="foley", elem_id="tab-foley"):
                gr.Markdown(foley_weights_message(settings), elem_id="foley-weights")
                with gr.Row():
                    with gr.Column():
                        f_video = gr.File(label="video", file_types=VIDEO_TYPES, type="filepath", elem_id="foley-video")
                        gr.Markdown(upload_note)
                        f_prompt = gr.Textbox(label="prompt (optional)")
                        f_negative = gr.Textbox(label="negative prompt (optional)")
                        f_seed = gr.Number(label="seed", value=0, precision=0)
                        f_steps = gr.Slider(1, 100, value=foley_steps(settings), step=1, label="steps")
                        f_cfg_strength = gr.Slider(1.0, 10.0, value=foley_cfg_strength(settings), label="cfg_strength")
                        f_audio = gr.Radio(list(EXISTING_AUDIO), value=DEFAULT_EXISTING_AUDIO,
                                           label="the video's own audio", elem_id="foley-existing-audio")  # fmt: skip
                        f_go = gr.Button("Add sound", variant="primary", elem_id="foley-generate")
                    foley_out = outputs("foley")

                def foley(video, prompt, negative, seed, steps, cfg_strength, audio, progress=gr.Progress()):  # noqa: B008
                    return in_page(
                        lambda report: generate_foley(
                            video, prompt, settings, negative_prompt=negative, seed=seed, steps=steps,
                            cfg_strength=cfg_strength, existing_audio=audio, progress=report,
                        ),
                        progress,
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
                        b_video = gr.File(label="video", file_types=VIDEO_TYPES, type="filepath", elem_id="bin-video")
                        gr.Markdown(upload_note)
                        b_mode = gr.Radio(list(BINAURAL_MODES), value="auto", label="how", elem_id="binaural-mode")
                        b_seed = gr.Number(label="seed", value=0, precision=0)
                        b_steps = gr.Slider(1, 100, value=binaural_steps(settings), step=1, label="steps")
                        b_audio = gr.Radio(list(EXISTING_AUDIO), value=DEFAULT_EXISTING_AUDIO,
                                           label="the video's own audio", elem_id="bin-existing-audio")  # fmt: skip
                        b_go = gr.Button("Make binaural", variant="primary", elem_id="binaural-generate")
                    binaural_out = outputs("binaural")

                def binaural(video, mode, seed, steps, audio, progress=gr.Progress()):  # noqa: B008
                    return in_page(
                        lambda report: generate_binaural(
                            video, settings, mode=BINAURAL_MODES.get(mode, "auto"), seed=seed, steps=steps,
                            existing_audio=audio, progress=report,
                        ),
                        progress,
                    )  # fmt: skip

                b_go.click(binaural, [b_video, b_mode, b_seed, b_steps, b_audio], binaural_out, api_name="binaural")

    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.max_queue)
    return demo


def launch(settings: UISettings, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Build and serve the app until interrupted."""
    settings.output_dir.mkdir(parents=True, exist_ok=True)
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
