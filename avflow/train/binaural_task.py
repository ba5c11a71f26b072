"""Flow matching for the binaural model with its two conditions dropped apart: the mono (so the same model does video
-> binaural) and the video (the negative branch of guidance when a mono is given), besides the usual CFG dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avflow.errors import ConfigError
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask


@dataclass(frozen=True, kw_only=True)
class BinauralFlowConfig(FlowMatchingConfig):
    mono_drop: float = 0.3  # per-sample probability of training without the mono (mono_on = 0)
    video_drop: float = 0.1  # per-sample probability of training without the video (video_on = 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.mono_drop <= 1.0 and 0.0 <= self.video_drop <= 1.0):
            raise ConfigError(f"mono_drop and video_drop must be in [0, 1], got {self.mono_drop}, {self.video_drop}")


class BinauralFlowTask(FlowMatchingTask):
    """`FlowMatchingTask` whose batches carry cond `video_on` and `mono_on` (B,); each is zeroed per sample from the
    sample's own seed (independent of the batch split)."""

    def prepare(self, batch: dict, device: torch.device) -> dict:
        out = super().prepare(batch, device)
        draws = torch.stack([torch.rand(2, generator=torch.Generator().manual_seed(int(s) ^ 0xB1A0))
                             for s in batch["seed"].tolist()])  # (B, 2): mono, video  # fmt: skip
        cond = dict(out["cond"])
        keep_mono = (draws[:, 0] >= self.config.mono_drop).to(device)
        keep_video = (draws[:, 1] >= self.config.video_drop).to(device)
        cond["mono_on"] = cond["mono_on"] * keep_mono.to(cond["mono_on"].dtype)
        cond["video_on"] = cond["video_on"] * keep_video.to(cond["video_on"].dtype)
        out["cond"] = cond
        return out
