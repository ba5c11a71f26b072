"""Flow matching for the joint audio-video model with a per-sample task mixture (joint / a2v / v2a / continuation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from avflow.errors import ConfigError
from avflow.models.tasks import TaskMixture
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask


@dataclass(frozen=True, kw_only=True)
class JointFlowConfig(FlowMatchingConfig):
    ratios: dict[str, float] = field(default_factory=lambda: {"joint": 0.6, "a2v": 0.2, "v2a": 0.2})
    prefix: float = 0.0  # probability of a clean prefix in a2v / v2a samples (window-by-window generation)
    # probability that a whole step runs with the audio-video interaction off and empty conditions: the negative
    # branch of modality-aware CFG (UniAVGen), which a model never trained so is off its training distribution;
    # under DDP it leaves the fusion unused in that step (the trainer asks for train.find_unused_parameters)
    cross_modal_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.cross_modal_dropout <= 1.0:
            raise ConfigError(f"cross_modal_dropout must be in [0, 1], got {self.cross_modal_dropout}")


class JointFlowTask(FlowMatchingTask):
    """`FlowMatchingTask` whose times are per latent frame: 1 on the clean-condition stream of each sample's task."""

    def __init__(self, config: JointFlowConfig):
        super().__init__(config)
        self.mixture = TaskMixture(dict(config.ratios), prefix=config.prefix)

    @property
    def leaves_parameters_unused(self) -> bool:
        return self.config.cross_modal_dropout > 0  # those steps skip the fusion

    def prepare(self, batch: dict, device: torch.device) -> dict:
        """Each sample's task from its own seed; every audio stream (`audio`, or `left` and `right`) shares the
        audio times."""
        out = super().prepare(batch, device)
        gens = [torch.Generator().manual_seed(int(s) ^ 0x5EED) for s in batch["seed"].tolist()]
        audio_streams = [s for s in out["streams"] if s != "video"]
        video, audio = out["streams"]["video"], out["streams"][audio_streams[0]]
        frames, tokens = video.shape[2], audio.shape[1]
        # both streams span the clip, so a clean prefix of k video latent frames covers k * tokens / frames latents
        timing = {"video_fps": 1.0, "temporal_stride": 1, "audio_rate": tokens / frames}
        times, _, _ = self.mixture.sample(out["t"]["video"].cpu(), frames, tokens, generator=gens, **timing)
        out["t"] = {"video": times["video"].to(device)} | {s: times["audio"].to(device) for s in audio_streams}
        out["cross_modal"] = True
        if self.config.cross_modal_dropout > 0:  # one draw per step, from its first sample's seed
            g = torch.Generator().manual_seed(int(batch["seed"][0]) ^ 0xC805)
            if torch.rand(1, generator=g).item() < self.config.cross_modal_dropout:
                out["cross_modal"] = False
                out["drop"] = torch.ones_like(out["drop"])  # the negative branch's empty conditions
        return out

    def velocity(self, model, xt: dict, batch: dict, cond: dict) -> dict:
        return model.velocity(xt, batch["t"], cond, cross_modal=batch["cross_modal"])
