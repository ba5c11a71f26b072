"""Flow matching for the joint audio-video model with a per-sample task mixture (joint / a2v / v2a / continuation).

With a region-modulating fusion (`windowed_aligners` with `region_modulation`) the loss adds `mask_loss_weight` times
the region-mask loss: the binary cross-entropy of each aligner's predicted mask against the batch's `cond.region_mask`
(formats in `avflow.nn.fusion.region_modulation`). The given mask is the target only: the model runs on its own
predictions (no teacher forcing), as it does when sampling without a mask (docs/training.md, "Region modulation").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from avflow.errors import ConfigError
from avflow.flow.loss import noised_streams
from avflow.models.tasks import DEFAULT_RATIOS, TaskMixture
from avflow.nn.fusion.region_modulation import mask_loss, token_mask
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask


@dataclass(frozen=True, kw_only=True)
class JointFlowConfig(FlowMatchingConfig):
    ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIOS))  # every task (continuation too)
    prefix: float = 0.0  # probability of a clean prefix in a2v / v2a samples (window-by-window generation)
    # probability that a whole step runs with the audio-video interaction off and empty conditions: the negative
    # branch of modality-aware CFG (UniAVGen), which a model never trained so is off its training distribution;
    # under DDP it leaves the fusion unused in that step (the trainer asks for train.find_unused_parameters)
    cross_modal_dropout: float = 0.0
    # weight of the region-mask loss for a model whose fusion has region_modulation (ignored for other models); the
    # data must then hold cond.region_mask, unless it is 0: the mask head then learns through the flow loss alone
    mask_loss_weight: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.cross_modal_dropout <= 1.0:
            raise ConfigError(f"cross_modal_dropout must be in [0, 1], got {self.cross_modal_dropout}")
        if not (math.isfinite(self.mask_loss_weight) and self.mask_loss_weight >= 0):
            raise ConfigError(f"mask_loss_weight must be finite and >= 0, got {self.mask_loss_weight}")


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

    def loss(self, model, batch: dict) -> torch.Tensor:
        """The flow loss, plus `mask_loss_weight` x the region-mask loss for a region-modulating model. A step with
        the interaction off (`cross_modal_dropout`) predicts no mask and adds nothing."""
        if not getattr(model, "region_modulation", False):
            return super().loss(model, batch)
        cond, weight = dict(batch["cond"]), self.config.mask_loss_weight
        target = cond.pop("region_mask", None)  # the target, not an input: the model modulates with its prediction
        if target is None and weight > 0:
            raise ConfigError(
                "task.args.mask_loss_weight: the model's fusion has region_modulation on, but the data "
                "has no cond.region_mask to supervise its mask head; add region masks to the data or "
                "set task.args.mask_loss_weight=0 (the head then learns through the flow loss alone)"
            )
        aux: dict = {}
        flow = super().loss(model, {**batch, "cond": cond, "aux": aux})
        if weight == 0 or "region_masks" not in aux:
            return flow
        return flow + weight * mask_loss(aux["region_masks"], token_mask(target, aux["region_grid"]))

    def velocity(self, model, xt: dict, batch: dict, cond: dict) -> dict:
        extra = {"aux": batch["aux"]} if "aux" in batch else {}  # region masks out (region-modulating models only)
        return model.velocity(xt, batch["t"], cond, cross_modal=batch["cross_modal"], **extra)

    @torch.no_grad()
    def sample(self, model, batch: dict) -> dict[str, float]:
        """`FlowMatchingTask.sample`; for a region-modulating model it samples with the predicted masks (the batch's
        region mask left out, as at inference without one) and adds `region_mask_loss`: the region-mask loss of one
        forward at the batch's drawn noise and times (interaction on)."""
        if not getattr(model, "region_modulation", False):
            return super().sample(model, batch)
        cond = dict(batch["cond"])
        target = cond.pop("region_mask", None)
        metrics = super().sample(model, {**batch, "cond": cond})
        if target is not None:
            xt, _, _ = noised_streams(batch["streams"], batch["t"], batch["noise"], self.config.sigma_min)
            aux: dict = {}
            model.velocity(xt, batch["t"], cond, aux=aux)
            if "region_masks" in aux:
                loss = mask_loss(aux["region_masks"], token_mask(target, aux["region_grid"]))
                metrics["region_mask_loss"] = float(loss)
        return metrics
