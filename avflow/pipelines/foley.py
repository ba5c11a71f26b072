"""Video (or text, or an image) to audio with an MMAudio variant, for videos of any frame rate and any length.

Long videos are generated in overlapping windows of at most `window_s` seconds (the model's training length, 8 s).

Seam policy (soft inpainting + crossfade):
  * The windows (`plan_windows`) are the fewest of at most `window_s` seconds that cover the input with starts on
    the latent grid, spread evenly, each overlapping the next by `overlap_s`; window k's first `n` latent frames
    overlap the previous window's last `n`.
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow import hub
from avflow.codecs.audio_vae import AudioVAE
from avflow.codecs.bigvgan import BigVGAN, BigVGANConfig
from avflow.data.image import read_image
from avflow.encoders.clip import CLIP
from avflow.encoders.features import Encoders, load_clip, load_synchformer
from avflow.encoders.preprocess import clip_frames_transform
from avflow.encoders.synchformer import Synchformer
from avflow.encoders.tokenizer import CLIPTokenizer
from avflow.errors import ConfigError, WeightsError
from avflow.flow.sampling import SamplingConfig, check_seed
from avflow.models.mmaudio import build_mmaudio, load_official_state_dict
from avflow.pipelines.foley_frames import chunk_seconds, iter_window_frames
from avflow.pipelines.foley_model import FoleyModel, check_components
from avflow.pipelines.foley_overlap import OverlapInpainting, ramp
from avflow.pipelines.foley_variants import (
    PARTS,
    FoleySpec,
    is_cache_asset,
    is_weights_file,
    model_files,
    resolve_model,
)
from avflow.pipelines.foley_windows import DEFAULT_SEED, Window, check_guidance, plan_windows
from avflow.pipelines.generate import check_prompt_tokens
from avflow.pipelines.inputs import check_duration, check_sound_duration, check_video_input
from avflow.precision import DEFAULT_PRECISION, autocast, check_precision
from avflow.weights import load_strict, read_state_dict

Progress = Callable[[int, int], None]  # (work units done, units of the whole run): see `RunProgress`
PROGRESS_UNITS = 1000  # progress units per window
# How a window's units are shared between its stages before any window has been timed (CPU runs of the official
# models spend most of a window in the encoders; GPU runs in sampling). Later windows share them as the windows
# before them took time, stage by stage.
FIRST_WINDOW_SHARES = {"features": 5.0, "sampling": 4.0, "decoding": 1.0}
IMAGE_SHARE = 0.5  # i2a: encoding the one image, in the first window
# The parts of a stage, in the order they run, and their shares of it before a window has timed them (the official
# models on a CPU: CLIP's frames cost about five times the Synchformer's segments, reading the video little).
STAGE_PARTS = {"features": {"frames": 0.05, "clip": 0.8, "sync": 0.15}}
VAE_SHARE = 0.15  # of a window's decoding, before the vocoder's levels (the official VAEs and vocoders on a CPU)


def config_name(model: str, weights: str | Path | None = None) -> str:
    """Where a foley model's network config comes from, in words: its JSON model config, the official variant, or
    the `avflow train` run folder given as its weights."""
    if weights is not None and not hub.is_remote_file(weights) and Path(weights).is_dir():
        return f"the network config of the run {weights}"
    return f"model config {model}" if str(model).lower().endswith(".json") else f"model {model}"


def check_model(model: str, weights: str | Path | None = None, *, weights_option: str = "--weights") -> FoleySpec:
    """`resolve_model`, and the network's, VAE's and vocoder's configs checked to fit together (latent width, mel
    bins, hop, sample rate), naming the model config: one-line errors before any weights are read."""
    spec = resolve_model(model, weights, weights_option=weights_option)
    where = model if str(model).lower().endswith(".json") else f"model {model}"
    check_components(spec.network_config, spec.vae_config, spec.vocoder_config, where)
    return spec


@functools.cache
def clip_tokenizer() -> CLIPTokenizer:
    """The packaged CLIP tokenizer (its vocabulary only, no weights), read once per process."""
    return CLIPTokenizer()


def check_prompt_lengths(
    most: int,
    prompt: str | None,
    negative_prompt: str | None = None,
    *,
    negative: str = "the negative prompt",
    tokenizer: CLIPTokenizer | None = None,
) -> None:
    """A one-line error for a prompt, or a negative prompt (named `negative`), longer than the `most` tokens the
    model's CLIP text tower reads (its `clip_config.text.context_length`), start and end of text included: the
    tokenizer would cut it silently. Counts with `tokenizer` (default: the packaged one) alone; reads no weights."""
    tokenizer = tokenizer or clip_tokenizer()
    for text, what in ((prompt, "the prompt"), (negative_prompt, negative)):
        if text:
            check_prompt_tokens(len(tokenizer.encode(text)) + 2, most, what)  # + the start and end of text tokens


def check_prompts(spec: FoleySpec, prompt: str | None, negative_prompt: str | None = None, **kwargs) -> None:
    """`check_prompt_lengths` at the context length of `spec`'s CLIP text tower: before the model loads."""
    check_prompt_lengths(spec.clip_config.text.context_length, prompt, negative_prompt, **kwargs)


def local_model_files(spec: FoleySpec, root: Path | None = None) -> dict[str, Path]:
    """The parts' files that are on this machine now (weights files, cache assets already converted, remote files
    already downloaded), by part name; nothing is fetched, converted or read."""
    files = {}
    for part in PARTS:
        ref = getattr(spec, part)
        if is_weights_file(ref):
            files[part] = Path(ref)
        elif is_cache_asset(ref) and ref in hub.ASSETS:
            files[part] = hub.converted_path(hub.ASSETS[ref], root)
        else:
            try:
                files[part] = hub.remote_file(ref, download=False)
            except WeightsError:
                continue
    return {part: file for part, file in files.items() if file.is_file()}


SUBKEYS = {"vocoder": "generator", "clip": "state_dict", "synchformer": "state_dict"}  # as the parts' loaders read


def check_model_files(spec: FoleySpec, files: Mapping[str, Path], config: str = "the model config") -> None:
    """Each part's file (of `files`, by part name) against its module built on the meta device, from the file's
    keys and shapes alone (`read_state_dict` with meta): a wrong file is a one-line WeightsError in well under a second,
    not after gigabytes of the parts before it were read. `config` names where the network config came from."""
    for part in PARTS:
        state = read_state_dict(files[part], subkey=SUBKEYS.get(part, ""), meta=True) if part in files else None
        if state is not None:
            _check_part(part, spec, state, str(files[part]), config)


def _check_part(part: str, spec: FoleySpec, state: dict[str, Tensor], where: str, config: str) -> None:
    """One part's meta state dict against its module built on the meta device, as its loader checks it."""
    if part == "network":
        load_official_state_dict(build_mmaudio(spec.network_config, device="meta"), state, name=where,
                                 config_name=config)  # fmt: skip
        return
    if part == "synchformer":
        state = {k: v for k, v in state.items() if k.startswith("vfeat_extractor.")}
        if not state:
            raise WeightsError(f"{where}: no 'vfeat_extractor.*' keys; not a Synchformer checkpoint")
    if part == "vocoder":  # its loader folds weight-norm pairs first (shapes only, on meta); copies change nothing
        meta_vocoder(spec.vocoder_config).load_weights(state, source=where)
        return
    with torch.device("meta"):
        module = {"vae": lambda: AudioVAE(spec.vae_config), "clip": lambda: CLIP(spec.clip_config),
                  "synchformer": lambda: Synchformer(spec.synchformer_config)}[part]()  # fmt: skip
    load_strict(module, state, where, assign=True)


@functools.lru_cache(maxsize=4)
def meta_vocoder(config: BigVGANConfig) -> BigVGAN:
    """BigVGAN built on the meta device, once per config: its anti-aliasing filters, computed on meta, take about
    a second to build (the other parts: milliseconds)."""
    with torch.device("meta"):
        return BigVGAN(config)


class RunProgress:
    """The `progress(done, total)` of a whole generation run: `total` = windows x PROGRESS_UNITS, and each window's
    units are shared between its stages (features, the solver steps, decoding) in proportion to the seconds each
    stage took per window so far (`FIRST_WINDOW_SHARES` for the first window). `progress` is called with done = 0
    before any work, at the start of every stage and after every solver step, encoder batch and vocoder level
    (`part`, `within`: the bar and its ETA move inside the long CPU stages too), never going back, and with
    done = total only once the audio is complete. A callback that has a `stage(text)` method also hears which window
    and stage run ("window 2/3: sampling")."""

    def __init__(self, progress: Progress | None, windows: int, features: str | None) -> None:
        self.progress, self.windows = progress, windows
        self.features = features  # "video": every window; "image": the first window; None: no encoder stage
        self.total = windows * PROGRESS_UNITS
        self.seconds: dict[str, float] = {}  # per stage, summed over the windows that ran it
        self.counts: dict[str, int] = {}
        self.window, self.stage, self.began, self.done = -1, None, 0.0, 0
        self.bounds: dict[str, tuple[int, int]] = {}
        self.part_seconds: dict[tuple[str, str], float] = {}  # per (stage, part), summed over the windows
        self.part_spans: tuple[tuple[int, str] | None, dict[str, tuple[float, float]]] = (None, {})  # `_part_spans`

    def _stages(self, window: int) -> list[str]:
        encode = self.features == "video" or self.features == "image" and window == 0
        return (["features"] if encode else []) + ["sampling", "decoding"]

    def _share(self, window: int) -> dict[str, tuple[int, int]]:
        """(first unit, end unit) of each stage of `window`, within the window."""
        stages = self._stages(window)
        timed = all(self.counts.get(s) for s in stages) and sum(self.seconds.get(s, 0.0) for s in stages) > 0
        if timed:
            weights = {s: self.seconds[s] / self.counts[s] for s in stages}
        else:
            weights = {s: FIRST_WINDOW_SHARES[s] for s in stages}
            if self.features == "image" and "features" in weights:
                weights["features"] = IMAGE_SHARE
        total, at, bounds = sum(weights.values()), 0.0, {}
        for s in stages:
            first = round(at / total * PROGRESS_UNITS)
            at += weights[s]
            bounds[s] = (first, round(at / total * PROGRESS_UNITS))
        return bounds

    def _report(self, done: int) -> None:
        self.done = max(self.done, min(done, self.total))
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _close_stage(self) -> None:
        if self.stage is not None:
            now = time.perf_counter()
            self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + now - self.began
            self.counts[self.stage] = self.counts.get(self.stage, 0) + 1
            self.stage = None

    def begin(self, window: int, stage: str) -> None:
        """`stage` of `window` (0-based) starts (again: nothing changes)."""
        if (window, stage) == (self.window, self.stage):
            return
        self._close_stage()
        if window != self.window:
            self.window, self.bounds = window, self._share(window)
        self.stage, self.began = stage, time.perf_counter()
        describe = getattr(self.progress, "stage", None)
        if callable(describe):
            describe(f"window {window + 1}/{self.windows}: {stage}")
        self._report(window * PROGRESS_UNITS + self.bounds[stage][0])

    def step(self, done: int, steps: int) -> None:
        """`done` of the current window's `steps` solver steps are done."""
        first, end = self.bounds["sampling"]
        self._report(self.window * PROGRESS_UNITS + first + round((end - first) * min(done, steps) / max(1, steps)))

    def within(self, start: float, end: float) -> Progress | None:
        """A `progress(done, total)` over the fractions `start` to `end` of the current stage's units, short of the
        run's total (which `finish` alone reports); None when the run has no callback: the work it is given to then
        reports nothing."""
        if self.progress is None:
            return None
        first, last = self.bounds[self.stage]
        base, span = self.window * PROGRESS_UNITS + first, last - first

        def report(done: int, total: int) -> None:
            at = base + round(span * (start + (end - start) * min(done, total) / max(1, total)))
            self._report(min(at, self.total - 1))

        return report

    @contextmanager
    def part(self, stage: str, name: str) -> Iterator[Progress | None]:
        """Part `name` of `stage` (`STAGE_PARTS[stage]`: the parts in the order they run, with their shares until
        each has been timed; then their seconds so far, fixed for the window at its first part) runs: yields its
        `within` progress, times it and reports its end. Outside `stage` (the frames asked for once more after the
        last window) it yields None and counts nothing."""
        if self.stage != stage:
            yield None
            return
        if self.part_spans[0] != (self.window, stage):
            self.part_spans = ((self.window, stage), self._part_spans(stage))
        report = self.within(*self.part_spans[1][name])
        began = time.perf_counter()
        yield report
        self.part_seconds[stage, name] = self.part_seconds.get((stage, name), 0.0) + time.perf_counter() - began
        if report is not None:
            report(1, 1)

    def _part_spans(self, stage: str) -> dict[str, tuple[float, float]]:
        """(start, end) fractions of `stage` for each of its parts, by their seconds per window once all are timed."""
        names = list(STAGE_PARTS[stage])
        timed = all(self.part_seconds.get((stage, n)) for n in names)
        weights = [self.part_seconds[stage, n] if timed else STAGE_PARTS[stage][n] for n in names]
        ends = np.cumsum(weights) / sum(weights)
        return {n: (float(ends[i - 1]) if i else 0.0, float(ends[i])) for i, n in enumerate(names)}

    def finish(self) -> None:
        """The run's audio is complete."""
        self._close_stage()
        self._report(self.total)


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
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        self.model, self.encoders = model, encoders
        self.window_s, self.overlap_s, self.read_s = window_s, overlap_s, read_s
        self.precision = check_precision(precision)  # `avflow.precision`: auto, fp32 or bf16
        self.trace: list[tuple[str, float]] | None = None
        self.timings: dict[str, float] = {}  # wall seconds per stage (features, sampling, decoding), accumulated

    @classmethod
    def load(
        cls,
        model: str = "large_44k_v2",
        *,
        weights: str | Path | None = None,
        root: Path | None = None,
        device: str | torch.device = "cpu",
        sampling: SamplingConfig | None = None,
        compile_vocoder: bool = False,
        **kwargs,
    ) -> FoleyPipeline:
        """Load every part of `model` (an official variant's name, its files from the weight cache, or a JSON model
        config), the network from `weights` when given; `sampling` defaults to the model's; `kwargs` go to the
        constructor (window_s, overlap_s, read_s, precision: with the default "auto", a CUDA device runs the networks
        under bf16 autocast where the GPU supports it). `compile_vocoder`: the vocoder's anti-aliased activations as one
        compiled kernel each (`BigVGAN.compile_activations`; float32 only, compiled at the first decode)."""
        spec = check_model(model, weights)
        paths = model_files(spec, model, root)
        check_model_files(spec, paths, config_name(model, weights))  # headers only: seconds before gigabytes
        network = load_official_state_dict(build_mmaudio(spec.network_config, device="meta"), paths["network"],
                                           config_name=config_name(model, weights))  # fmt: skip
        network = network.to(device).eval()
        vae = AudioVAE.from_file(paths["vae"], spec.vae_config).to(device).eval()
        vocoder = BigVGAN.from_file(paths["vocoder"], spec.vocoder_config).to(device).eval()
        if compile_vocoder:
            vocoder.compile_activations()
        foley = FoleyModel(network, vae, vocoder, sampling or spec.sampling)
        clip = load_clip(paths["clip"], spec.clip_config)
        sync = load_synchformer(paths["synchformer"], spec.synchformer_config)
        return cls(foley, Encoders(clip, sync).to(device), **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def latent_rate(self) -> float:
        config = self.model.network.config
        return config.sample_rate / config.hop_length / 2

    def _autocast(self, *, codec: bool = False) -> AbstractContextManager:
        """Autocast of this pipeline's precision on its device, for the networks or (`decoding`) the VAE + vocoder."""
        return autocast(self.precision, self.model.device, codec=codec)

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
        if prompt is None:
            return None
        with self._autocast():
            return self.encoders.encode_text([prompt]).float()

    # -- video ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_video(
        self,
        path: str | Path,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        *,
        duration: float | None = None,
        seed: int = DEFAULT_SEED,
        sampling: SamplingConfig | None = None,
        progress: Progress | None = None,
    ) -> FoleyOutput:
        """Audio for the video's first `duration` seconds (default: all of it), window by window. `progress(done,
        total)` hears of the whole run, from before the first window's features to the complete audio
        (`RunProgress`). A `negative_prompt` needs cfg_strength > 1, and cfg_strength < 1 is refused
        (`check_guidance`); a prompt or negative prompt longer than CLIP reads is refused, never cut
        (`check_prompt_lengths`)."""
        seed = check_seed(seed)
        self._check_guidance(sampling, negative_prompt)
        self._check_prompts(prompt, negative_prompt)
        info = check_video_input(path, duration=check_duration(duration))
        total = info.duration if duration is None else min(float(duration), info.duration)
        windows = plan_windows(total, self.window_s, self.overlap_s, self.latent_rate)
        run = RunProgress(progress, len(windows), "video")
        run.begin(0, "features")
        text_f, negative_f = self._text(prompt), self._text(negative_prompt)

        def features() -> Iterator[tuple[Window, Tensor, Tensor]]:
            frames = iter_window_frames(path, windows, chunk_seconds(info, self.read_s))
            while True:
                with self._timed("features"):
                    with run.part("features", "frames"):
                        wf = next(frames, None)
                    if wf is None:
                        return
                    self._note("clip_frames", len(wf.clip) / 8.0)
                    self._note("sync_frames", len(wf.sync) / 25.0)
                    with self._autocast():
                        with run.part("features", "clip") as done:
                            clip_f = self.encoders.encode_clip(wf.clip[None], progress=done).float()  # (1, n_clip, D)
                        with run.part("features", "sync") as done:
                            sync_f = self.encoders.encode_sync(wf.sync[None], progress=done).float()  # (1, n_tokens, D)
                yield wf.window, clip_f, sync_f

        audio = self._generate_windows(features(), text_f, negative_f, total, seed, sampling, run)
        return FoleyOutput(audio, self.sample_rate, total, len(windows))

    # -- text and image -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_text(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        duration: float = 8.0,
        seed: int = DEFAULT_SEED,
        sampling: SamplingConfig | None = None,
        progress: Progress | None = None,
    ) -> FoleyOutput:
        """Text-to-audio: empty CLIP and sync features, windowed like video when longer than a window; `progress`
        and the guidance checks as in `generate_video`."""
        seed, duration = check_seed(seed), check_sound_duration(duration, "duration")
        self._check_guidance(sampling, negative_prompt)
        self._check_prompts(prompt, negative_prompt)
        windows = plan_windows(duration, self.window_s, self.overlap_s, self.latent_rate)
        run = RunProgress(progress, len(windows), None)
        run.begin(0, "sampling")
        audio = self._generate_windows(
            ((w, None, None) for w in windows),
            self._text(prompt),
            self._text(negative_prompt),
            duration,
            seed,
            sampling,
            run,
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
        seed: int = DEFAULT_SEED,
        sampling: SamplingConfig | None = None,
        progress: Progress | None = None,
    ) -> FoleyOutput:
        """Image-to-audio (MMAudio's image mode): the image as every CLIP frame, empty Synchformer features;
        `progress` and the guidance checks as in `generate_video`."""
        seed, duration = check_seed(seed), check_sound_duration(duration, "duration")
        self._check_guidance(sampling, negative_prompt)
        self._check_prompts(prompt, negative_prompt)
        windows = plan_windows(duration, self.window_s, self.overlap_s, self.latent_rate)
        run = RunProgress(progress, len(windows), "image")
        run.begin(0, "features")
        pixels = read_image(path)  # (H, W, 3) uint8
        frame = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]  # (1, 3, H, W)
        with self._autocast():
            image_f = self.encoders.encode_clip(clip_frames_transform(frame)[None]).float()  # (1, 1, D)

        def feats():
            for w in windows:
                n_clip = self.model.network.set_duration(w.duration).clip
                yield w, image_f.expand(1, n_clip, -1), None

        audio = self._generate_windows(
            feats(), self._text(prompt), self._text(negative_prompt), duration, seed, sampling, run
        )
        return FoleyOutput(audio, self.sample_rate, duration, len(windows))

    # -- the windowed core ----------------------------------------------------------------------------------------

    def _check_guidance(self, sampling: SamplingConfig | None, negative_prompt: str | None) -> None:
        """`check_guidance` on the strength this call samples with (`sampling`, else the model's)."""
        check_guidance((sampling or self.model.sampling).cfg_strength, negative_prompt)

    def _check_prompts(self, prompt: str | None, negative_prompt: str | None) -> None:
        """`check_prompt_lengths` with this pipeline's tokenizer and its context length: never cut silently."""
        tokenizer = self.encoders.tokenizer
        check_prompt_lengths(tokenizer.context_length, prompt, negative_prompt, tokenizer=tokenizer,
                             negative="negative_prompt")  # fmt: skip

    def _check_finite(
        self, latents: Tensor, wav: Tensor, index: int, windows: int, sampling: SamplingConfig | None
    ) -> None:
        """A one-line ConfigError where a window's audio holds NaN or infinite values (written, they would be a
        silent track, or the AAC encoder's refusal), naming the likely cause by whether its (unnormalized) latents
        were finite: the network's weights or the settings, else the VAE's or vocoder's weights or the precision."""
        if bool(torch.isfinite(wav).all()):
            return
        s = sampling or self.model.sampling
        settings = f"steps {s.steps}, cfg_strength {s.cfg_strength:g}, precision {self.precision}"
        if bool(torch.isfinite(latents).all()):
            where = "its VAE or vocoder turned finite latents into NaN or infinite samples"
            cause = f"the VAE or vocoder weights, or the precision ({self.precision})"
        else:
            where = "the network's sampling gave NaN or infinite latents"
            cause = f"the network weights, or the settings ({settings})"
        raise ConfigError(f"the model produced non-finite audio (window {index + 1} of {windows}: {where}); "
                          f"likely cause: {cause}")  # fmt: skip

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
        run: RunProgress,
    ) -> np.ndarray:
        """The audio of `windows` (each with its CLIP and sync features, computed as it is drawn), joined; `run`
        hears of every stage of every window (features: while the next window is drawn, when the run encodes video)
        and finishes when the audio is complete."""
        net, model = self.model.network, self.model
        sr, per_latent = self.sample_rate, 2 * net.config.hop_length
        generator = torch.Generator().manual_seed(seed)
        out: list[np.ndarray] = []
        prev: tuple[int, Tensor] | None = None  # (start latent, normalized latents (1, N, C)) of the last window
        tail: tuple[int, Tensor] | None = None  # (start sample, decoded audio not yet final)
        items, index = iter(windows), 0
        while True:
            if run.features == "video" and index < run.windows:
                run.begin(index, "features")
            item = next(items, None)
            if item is None:
                break
            w, clip_f, sync_f = item
            index += 1
            run.begin(w.index, "sampling")
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
            with self._timed("sampling"), self._autocast():
                latents = self.model.sample_normalized(
                    x0, clip_f, sync_f, text_f, negative_text_f=negative_f, sampling=sampling, generator=generator_net,
                    progress=run.step,
                )  # fmt: skip
            latents = latents.float()
            self._note("latents", latents.shape[1] / self.latent_rate)
            run.begin(w.index, "decoding")
            levels = run.within(VAE_SHARE, 1.0)  # the vocoder's levels move the bar, after the VAE
            with self._timed("decoding"), self._autocast(codec=True):
                raw = net.unnormalize(latents)
                wav = model.decode(raw, round(w.duration * sr), progress=levels)[0].float().cpu()  # (samples,)
            self._check_finite(raw, wav, w.index, run.windows, sampling)
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
        run.finish()
        return audio
