"""Tasks as per-frame timesteps: which latent frames of each stream are clean conditions (t = 1).

- `joint`: both streams noised (text-to-audio+video).
- `a2v`: audio clean, video generated.  - `v2a`: video clean, audio generated.
- `continuation`: the first k video latent frames and the audio latents of the same span are clean.
- A `prefix` of k frames may also be clean in a2v / v2a (the generated stream's first k frames): how long inputs
  are generated window by window, each window continuing the previous one.

Times come back per frame, `(B, T)` for video and `(B, N)` for audio, so one batch may mix tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from avflow.errors import ConfigError

TASKS = ("joint", "a2v", "v2a", "continuation")


def audio_clean_count(k_video: int, video_fps: float, temporal_stride: int, audio_rate: float) -> int:
    """Audio latents fully inside the first `k_video` video latent frames (same wall-clock span)."""
    span = k_video * temporal_stride / video_fps  # seconds
    return int(math.floor(span * audio_rate + 1e-6))


def task_times(
    task: str,
    t: Tensor,
    video_frames: int,
    audio_tokens: int,
    *,
    k_video: int = 1,
    video_fps: float = 16.0,
    temporal_stride: int = 4,
    audio_rate: float = 31.25,
    prefix: bool = False,
) -> dict[str, Tensor]:
    """t `(B,)` noise level of the generated part -> {"video": (B, T), "audio": (B, N)} with 1 on clean frames.

    `prefix`: in a2v / v2a, the first `k_video` frames of the generated stream (and their audio span) are clean too.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    b = t.shape[0]
    tv = t[:, None].expand(b, video_frames).clone()
    ta = t[:, None].expand(b, audio_tokens).clone()
    if task == "continuation" or prefix:
        if not 0 < k_video < video_frames:
            raise ConfigError(f"a clean prefix needs 0 < k_video < {video_frames} latent frames, got {k_video}")
        tv[:, :k_video] = 1.0
        ta[:, : audio_clean_count(k_video, video_fps, temporal_stride, audio_rate)] = 1.0
    if task == "a2v":
        ta.fill_(1.0)
    elif task == "v2a":
        tv.fill_(1.0)
    return {"video": tv, "audio": ta}


def loss_masks(t: dict[str, Tensor]) -> dict[str, Tensor]:
    """True where a frame is generated (t < 1): video `(B, 1, T, 1, 1)`, audio `(B, N, 1)`, broadcastable to x."""
    return {"video": (t["video"] < 1.0)[:, None, :, None, None], "audio": (t["audio"] < 1.0)[:, :, None]}


# every task of the joint model, so one trained model does joint generation, a2v, v2a and continuation
DEFAULT_RATIOS: dict[str, float] = {"joint": 0.5, "a2v": 0.15, "v2a": 0.15, "continuation": 0.2}


@dataclass
class TaskMixture:
    """Training task mixture: each sample draws a task with these ratios (normalised); continuation draws k."""

    ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIOS))
    max_k_video: int | None = None  # continuation draws k in [1, max_k_video] (default: half the frames)
    prefix: float = 0.0  # probability that an a2v / v2a sample also has a clean prefix of k frames (windows)

    def __post_init__(self) -> None:
        bad = [k for k in self.ratios if k not in TASKS]
        if bad or not self.ratios or any(v < 0 for v in self.ratios.values()) or sum(self.ratios.values()) <= 0:
            raise ConfigError(f"task ratios must be non-negative over {TASKS}, got {self.ratios}")
        if not 0.0 <= self.prefix <= 1.0:
            raise ConfigError(f"prefix: a probability in [0, 1], got {self.prefix}")

    def draw(self, video_frames: int, generator: torch.Generator | None = None) -> tuple[str, int, bool]:
        """One sample's task, its clean-prefix length k (frames) and whether an a2v / v2a sample has that prefix,
        from `generator` alone."""
        names = list(self.ratios)
        probs = torch.tensor([self.ratios[n] for n in names], dtype=torch.float64)
        task = names[int(torch.multinomial(probs, 1, generator=generator))]
        if task == "continuation" and video_frames < 2:
            task = "joint"
        prefix = False
        if task in ("a2v", "v2a") and self.prefix > 0 and video_frames >= 2:
            prefix = bool(torch.rand(1, generator=generator) < self.prefix)
        k = 1
        if task == "continuation" or prefix:
            max_k = self.max_k_video or max(1, video_frames // 2)
            k = int(torch.randint(1, min(max_k, video_frames - 1) + 1, (1,), generator=generator))
        return task, k, prefix

    def sample(
        self,
        t: Tensor,
        video_frames: int,
        audio_tokens: int,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        **timing,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
        """t `(B,)` -> (times per frame, loss masks, task names per sample).

        `generator`: one per sample (each sample's task then depends on its own generator only, so not on how a
        batch is split across processes), or one shared by the batch.
        """
        gens = generator if isinstance(generator, list) else [generator] * t.shape[0]
        if len(gens) != t.shape[0]:
            raise ConfigError(f"need one generator per sample ({t.shape[0]}), got {len(gens)}")
        tv, ta, tasks = [], [], []
        for i, g in enumerate(gens):
            task, k, prefix = self.draw(video_frames, g)
            times = task_times(task, t[i : i + 1], video_frames, audio_tokens, k_video=k, prefix=prefix, **timing)
            tv.append(times["video"])
            ta.append(times["audio"])
            tasks.append(task)
        times = {"video": torch.cat(tv), "audio": torch.cat(ta)}
        return times, loss_masks(times), tasks
