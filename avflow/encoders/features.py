"""MMAudio's conditioning features from a video file and text: CLIP frames, Synchformer segments, CLIP text tokens.

`Encoders.encode_video(path, text)` streams the video a window at a time (memory holds one window of source frames
plus the features), so long videos are fine. Shapes for d seconds: clip_f (B, int(8 d), 1024), sync_f
(B, 8 * ((int(25 d) - 16) // 8 + 1), 768), text_f (B, 77, 1024).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from avflow.encoders.clip import CLIP, CLIPConfig
from avflow.encoders.preprocess import (
    clip_normalize,
    common_duration,
    frame_counts,
    iter_encoder_frames,
    sync_normalize,
    video_duration,
)
from avflow.encoders.synchformer import SEGMENT_FRAMES, SEGMENT_STEP, Synchformer, SynchformerConfig, split_segments
from avflow.encoders.tokenizer import CLIPTokenizer
from avflow.errors import MediaError, WeightsError
from avflow.weights import load_strict, read_state_dict

SYNC_RUN = 16  # Synchformer segments normalised at a time (136 frames: 82 MB in float32 at 224x224)
Progress = Callable[[int, int], None]  # (rows done, rows in all): the encoders' batches, for a progress bar


def load_clip(path: str | Path, config: CLIPConfig | None = None) -> CLIP:
    """CLIP from an open_clip checkpoint (`open_clip_pytorch_model.bin`) or a safetensors copy."""
    state = read_state_dict(path, subkey="state_dict")
    with torch.device("meta"):
        model = CLIP(config)
    model = model.to_empty(device="cpu")
    return load_strict(model, state, str(path)).eval()


def load_synchformer(path: str | Path, config: SynchformerConfig | None = None) -> Synchformer:
    """Synchformer's visual part from `synchformer_state_dict.pth` (other keys are ignored) or a safetensors copy."""
    state = {k: v for k, v in read_state_dict(path, subkey="state_dict").items() if k.startswith("vfeat_extractor.")}
    if not state:
        raise WeightsError(f"{path}: no 'vfeat_extractor.*' keys; not a Synchformer checkpoint")
    with torch.device("meta"):
        model = Synchformer(config)
    model = model.to_empty(device="cpu")
    return load_strict(model, state, str(path)).eval()


@dataclass
class ConditionFeatures:
    """What the MMAudio network is conditioned on."""

    clip_f: Tensor  # (B, N_clip, D_clip)
    sync_f: Tensor  # (B, N_sync, D_sync)
    text_f: Tensor | None  # (B, 77, D_text) or None (the network's empty text)
    duration: float  # seconds both video streams cover

    def as_cond(self) -> dict[str, Tensor | None]:
        return {"clip_f": self.clip_f, "sync_f": self.sync_f, "text_f": self.text_f}


def _batches(runs: Iterable[Tensor], size: int) -> Iterator[Tensor]:
    """Regroup consecutive runs of rows into contiguous batches of `size` rows (the last may be shorter)."""
    held: list[Tensor] = []
    count = 0
    for run in runs:
        while len(run):
            take = min(size - count, len(run))
            held.append(run[:take])
            count, run = count + take, run[take:]
            if count == size:
                yield torch.cat(held)
                held, count = [], 0
    if held:
        yield torch.cat(held)


class Encoders(nn.Module):
    """CLIP + Synchformer + CLIP tokenizer. `clip_batch` frames and `sync_batch` segments go through at a time: enough
    rows (about 6000 tokens) for the matrix products to run at the machine's peak, few enough that the activations
    stay a few hundred MB whatever the video's length."""

    def __init__(
        self,
        clip: CLIP,
        synchformer: Synchformer,
        tokenizer: CLIPTokenizer | None = None,
        *,
        clip_batch: int = 8,
        sync_batch: int = 4,
        window_s: float = 0.5,
    ):
        super().__init__()
        self.clip = clip.eval()
        self.synchformer = synchformer.eval()
        self.tokenizer = tokenizer or CLIPTokenizer(context_length=clip.config.text.context_length)
        self.clip_batch, self.sync_batch, self.window_s = clip_batch, sync_batch, window_s

    @classmethod
    def from_pretrained(
        cls,
        clip_path: str | Path,
        synchformer_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> Encoders:
        """Official checkpoints: open_clip DFN5B-CLIP-ViT-H-14-384 and Synchformer's `synchformer_state_dict.pth`."""
        return cls(load_clip(clip_path), load_synchformer(synchformer_path), **kwargs).to(device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.clip.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.token_embedding.weight.dtype

    @torch.no_grad()
    def encode_clip(self, frames: Tensor, progress: Progress | None = None) -> Tensor:
        """(B, T, 3, H, W) frames -> (B, T, D) L2-normalised image features; `progress(frames done, B T)` after
        every batch (a long video's encoding takes minutes on a CPU).

        uint8 frames are pixels; float frames are [0, 1] pixels (MMAudio's encode_video_with_clip input)."""
        b, t = frames.shape[:2]
        flat = frames.flatten(0, 1)
        out = []
        for i in range(0, b * t, self.clip_batch):
            x = flat[i : i + self.clip_batch].to(self.device)
            x = clip_normalize(x if x.dtype == torch.uint8 else x * 255.0, self.dtype)
            out.append(self.clip.encode_image(x, normalize=True))
            if progress is not None:
                progress(i + len(x), b * t)
        return torch.cat(out).unflatten(0, (b, t))

    @torch.no_grad()
    def encode_sync(self, frames: Tensor, progress: Progress | None = None) -> Tensor:
        """(B, T, 3, 224, 224) frames -> (B, S * 8, D), S = (T - 16) // 8 + 1 segments, segment-major;
        `progress(segments done, B S)` after every batch.

        uint8 frames are pixels; float frames are already normalised to [-1, 1] (MMAudio's encode_video_with_sync)."""
        b, s = split_segments(frames).shape[:2]  # (B, S, 16, 3, H, W)
        out, done = [], 0
        for x in _batches(self._sync_runs(frames, s), self.sync_batch):
            out.append(self.synchformer(x[:, None])[:, 0])  # (n, 8, D)
            done += len(x)
            if progress is not None:
                progress(done, b * s)
        return torch.cat(out).unflatten(0, (b, s)).flatten(1, 2)

    def _sync_runs(self, frames: Tensor, s: int) -> Iterator[Tensor]:
        """The S segments of each video of `frames` (B, T, 3, H, W), in order, as (n, 16, 3, H, W) views of runs of
        SYNC_RUN segments normalised together: segments overlap by half, so normalising each segment alone did
        every frame twice; a run does its frames once (the 8 it shares with the next run twice) and holds no more
        than SYNC_RUN segments' frames in float."""
        for video in frames:
            for first in range(0, s, SYNC_RUN):
                n = min(SYNC_RUN, s - first)
                span = video[SEGMENT_STEP * first : SEGMENT_STEP * (first + n - 1) + SEGMENT_FRAMES].to(self.device)
                x = sync_normalize(span, self.dtype) if span.dtype == torch.uint8 else span.to(self.dtype)
                yield split_segments(x[None])[0]

    @torch.no_grad()
    def encode_text(self, texts: str | list[str]) -> Tensor:
        """Strings -> (B, 77, D) normalised per-token features (MMAudio's encode_text)."""
        tokens = self.tokenizer(texts).to(self.device)
        return self.clip.encode_text(tokens, normalize=True)

    @torch.no_grad()
    def encode_video(
        self, path: str | Path, text: str | None = None, duration: float | None = None, progress: Progress | None = None
    ) -> ConditionFeatures:
        """One video (first `duration` seconds, default all) -> features with B = 1, streamed window by window;
        `progress(frames done, frames in all)` (CLIP and Synchformer frames together) after every stretch read and
        encoded."""
        d = video_duration(path, duration)
        total = max(1, sum(frame_counts(d)))
        clip_parts, sync_parts = [], []
        pending = torch.empty(0, 3, 1, 1, dtype=torch.uint8)  # sync frames not yet in a finished segment
        n_clip = n_sync = 0
        for chunk in iter_encoder_frames(path, d, self.window_s):
            n_clip, n_sync = n_clip + len(chunk.clip), n_sync + len(chunk.sync)
            if len(chunk.clip):
                clip_parts.append(self.encode_clip(chunk.clip[None]))
            pending = torch.cat([pending, chunk.sync]) if len(pending) else chunk.sync
            if len(pending) >= SEGMENT_FRAMES:
                s = (len(pending) - SEGMENT_FRAMES) // SEGMENT_STEP + 1
                sync_parts.append(self.encode_sync(pending[None, : SEGMENT_STEP * (s - 1) + SEGMENT_FRAMES]))
                pending = pending[SEGMENT_STEP * s :]
            if progress is not None:
                progress(min(n_clip + n_sync, total), total)
        d = common_duration(d, n_clip, n_sync)
        n_clip, n_sync = frame_counts(d)
        if n_clip == 0 or n_sync < SEGMENT_FRAMES:
            raise MediaError(f"{path}: video too short ({d:.3f} s); the encoders need at least 0.64 s")
        clip_f = torch.cat(clip_parts, dim=1)[:, :n_clip]
        per_segment = self.synchformer.config.temporal_resolution
        sync_f = torch.cat(sync_parts, dim=1)[:, : per_segment * ((n_sync - SEGMENT_FRAMES) // SEGMENT_STEP + 1)]
        text_f = self.encode_text([text]) if text is not None else None
        if progress is not None:
            progress(total, total)
        return ConditionFeatures(clip_f, sync_f, text_f, d)

    @torch.no_grad()
    def encode_videos(
        self, paths: list[str | Path], texts: list[str] | None = None, duration: float | None = None
    ) -> ConditionFeatures:
        """A batch of videos (equal lengths after the common `duration`) -> features with B = len(paths)."""
        if texts is not None and len(texts) != len(paths):
            raise ValueError(f"got {len(paths)} videos but {len(texts)} texts")
        feats = [self.encode_video(p, None, duration) for p in paths]
        lengths = {(f.clip_f.shape[1], f.sync_f.shape[1]) for f in feats}
        if len(lengths) > 1:
            raise MediaError(f"videos give different feature lengths {sorted(lengths)}; pass a common duration")
        return ConditionFeatures(
            torch.cat([f.clip_f for f in feats]),
            torch.cat([f.sync_f for f in feats]),
            self.encode_text(texts) if texts is not None else None,
            min(f.duration for f in feats),
        )
