"""Flow matching for the binaural model with its two conditions dropped apart: the mono (so the same model does video
-> binaural) and the video (the negative branch of guidance when a mono is given), besides the usual CFG dropout."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avflow.errors import ConfigError
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask


@dataclass(frozen=True, kw_only=True)
class BinauralFlowConfig(FlowMatchingConfig):
    mono_drop: float = 0.3  # per-sample probability of training without the mono (mono_on = 0)
    video_drop: float = 0.1  # per-sample probability of training without the video (video_on = 0)
    # cue representation only (`avflow.data.interaural_cues`), where the events' lead is what places a sound:
    lead_weight: float = 1.0  # loss weight of each ear's last column (the lead) against 1 for each band level
    event_weight: float = 0.0  # extra loss weight of tokens where the mono's broadband level rises (see the task)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.mono_drop <= 1.0 and 0.0 <= self.video_drop <= 1.0):
            raise ConfigError(f"mono_drop and video_drop must be in [0, 1], got {self.mono_drop}, {self.video_drop}")
        if not (math.isfinite(self.lead_weight) and self.lead_weight > 0):
            raise ConfigError(f"lead_weight must be finite and > 0, got {self.lead_weight}")
        if not (math.isfinite(self.event_weight) and self.event_weight >= 0):
            raise ConfigError(f"event_weight must be finite and >= 0, got {self.event_weight}")


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

    def element_weights(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Both ears' loss weights (B, N, C) when `lead_weight` or `event_weight` is set, else uniform.

        Column weight: `lead_weight` for the last column (the lead), 1 for the others. Token weight, from the mono's
        features (cond `mono`, whose last column is its broadband level in units of `mono_scale_db`, 10 dB):
            w_k = 1 + event_weight · clamp(level_k − level_{k−1}, 0, 2)      (w_0 = 1)
        so a token where the sound rises by 20 dB or more weighs 1 + 2·event_weight: the per-event measures read the
        cues at the onsets, where most tokens of a clip are ambience or decay.
        """
        cfg = self.config
        if cfg.lead_weight == 1.0 and cfg.event_weight == 0.0:
            return {}
        representation = getattr(getattr(model, "config", None), "representation", None)
        if representation != "cues":
            raise ConfigError(f"task.args lead_weight and event_weight weigh the cue streams' columns and the mono's "
                              f"level: they need model.args.representation=cues, got {representation!r}")  # fmt: skip
        left = batch["streams"]["left"]  # (B, N, C)
        columns = torch.ones(left.shape[-1], dtype=torch.float32, device=left.device)
        columns[-1] = cfg.lead_weight
        weight = columns.expand(left.shape[0], left.shape[1], -1)  # (B, N, C)
        if cfg.event_weight > 0:
            mono = batch["cond"]["mono"]  # (B, N, C)
            if mono.shape[:2] != left.shape[:2]:
                raise ConfigError(f"event_weight needs the mono's features per token (B, N, C) as the ears' "
                                  f"{tuple(left.shape[:2])}, got cond mono {tuple(mono.shape)}")  # fmt: skip
            level = mono[..., -1].float()  # (B, N)
            rise = torch.diff(level, dim=1, prepend=level[:, :1]).clamp(0.0, 2.0)  # (B, N)
            weight = weight * (1.0 + cfg.event_weight * rise)[..., None]
        return {"left": weight, "right": weight}
