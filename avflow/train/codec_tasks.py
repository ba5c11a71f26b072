"""Training tasks for the world codecs: reconstruction of random windows of world clips.

Each sample's window is drawn from its own seed (independent of batch split and process count). The codec defines
its loss (`codec.loss(x) -> (total, parts)`); the task only cuts windows and reports validation metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avflow.codecs.world_audio_codec import LEVEL_FLOOR_DB, check_auraloss, interaural_l1
from avflow.errors import ConfigError
from avflow.eval.audio_quality import stft_log_distance


@dataclass(frozen=True, kw_only=True)
class VideoReconstructionConfig:
    window: int = 12  # frames per training sample (a multiple of the codec's 4x temporal stride)

    def __post_init__(self) -> None:
        if self.window < 4 or self.window % 4:
            raise ConfigError(f"window: must be a positive multiple of 4, got {self.window}")


class VideoReconstructionTask:
    """Windows of `window` frames starting on a latent-frame boundary; uint8 frames -> [-1, 1] video."""

    def __init__(self, config: VideoReconstructionConfig):
        self.config = config

    def prepare(self, batch: dict, device: torch.device) -> dict:
        frames = batch["streams"]["frames"]  # (B, T, H, W, 3) uint8
        t, w = frames.shape[1], self.config.window
        if t < w:
            raise ConfigError(f"window: clips have {t} frames, fewer than the window of {w}")
        starts = [4 * int(torch.randint(0, (t - w) // 4 + 1, (1,), generator=torch.Generator().manual_seed(s)))
                  for s in batch["seed"].tolist()]  # fmt: skip
        clips = torch.stack([frames[i, s : s + w] for i, s in enumerate(starts)])  # (B, w, H, W, 3)
        video = clips.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)  # (B, 3, w, H, W)
        return {"video": video.to(device), "full": frames.to(device)}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model.loss(batch["video"])[0]

    @torch.no_grad()
    def sample(self, model: nn.Module, batch: dict) -> dict[str, float]:
        """PSNR (dB, [-1, 1] peak-to-peak 2) of whole validation clips through encode -> decode."""
        video = batch["full"].permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)  # (B, 3, T, H, W)
        t = video.shape[2] // 4 * 4
        video = video[:, :, :t]
        rec = model.decode(model.encode(video))
        mse = (rec - video).square().mean(dim=(1, 2, 3, 4)).clamp_min(1e-12)  # (B,)
        return {"psnr": float((10 * torch.log10(4.0 / mse)).mean())}


def _audio_windows(model: nn.Module, audio: torch.Tensor, seeds: list[int], seconds: float) -> torch.Tensor:
    """One window of `seconds` (whole latents) per clip of `audio` `(B, 2, N)`, its start drawn from the clip's seed."""
    hop = model.samples_per_latent
    w = int(seconds * model.sample_rate) // hop * hop
    n = audio.shape[-1]
    if n < w:
        raise ConfigError(f"window: clips have {n} samples, fewer than the window of {w}")
    starts = [hop * int(torch.randint(0, (n - w) // hop + 1, (1,), generator=torch.Generator().manual_seed(s)))
              for s in seeds]  # fmt: skip
    return torch.stack([audio[i, :, s : s + w] for i, s in enumerate(starts)])  # (B, 2, w)


@dataclass(frozen=True, kw_only=True)
class AudioReconstructionConfig:
    window: float = 1.0  # seconds per training sample, rounded down to whole latent frames
    interaural_weight: float = 0.0  # codec loss: interaural cross-spectrum L1 (ITD/ILD per cell; WorldAudioCodec.loss)
    fine_stft_weight: float = 0.0  # codec loss: short-window STFT loss (pre-echo before onsets)
    level_weight: float = 0.0  # codec loss: log short-time level per 1.6 ms (the level of attacks)
    level_floor_db: float = LEVEL_FLOOR_DB  # level term: levels this far below the clip's loudest frame count as this
    pre_echo_weight: float = 0.0  # codec loss: level error in the 8 ms before each attack (`pre_echo_error`)

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ConfigError(f"window: must be > 0 seconds, got {self.window}")
        if min(self.interaural_weight, self.fine_stft_weight, self.level_weight, self.pre_echo_weight) < 0:
            raise ConfigError("interaural_weight, fine_stft_weight, level_weight, pre_echo_weight: must be >= 0")
        if self.level_floor_db <= 0:
            raise ConfigError(f"level_floor_db: must be > 0 dB, got {self.level_floor_db}")


class AudioReconstructionTask:
    """Windows of `window` seconds of binaural world audio `(B, 2, samples)`, aligned to latent frames."""

    def __init__(self, config: AudioReconstructionConfig):
        check_auraloss("task audio_reconstruction")  # WorldAudioCodec.loss: one line before the model and the data
        self.config = config

    def prepare(self, batch: dict, device: torch.device) -> dict:
        audio = batch["streams"]["audio"]  # (B, 2, N) float32
        return {"audio": audio.to(device), "seed": batch["seed"]}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        windows = _audio_windows(model, batch["audio"], batch["seed"].tolist(), self.config.window)
        c = self.config
        weights = {"interaural_weight": c.interaural_weight, "fine_stft_weight": c.fine_stft_weight,
                   "level_weight": c.level_weight, "pre_echo_weight": c.pre_echo_weight}  # fmt: skip
        if any(weights.values()):  # WorldAudioCodec's terms; other codecs: the plain call
            return model.loss(windows, **weights, level_floor_db=c.level_floor_db)[0]
        return model.loss(windows)[0]

    @torch.no_grad()
    def sample(self, model: nn.Module, batch: dict) -> dict[str, float]:
        """Multi-resolution STFT log-magnitude distance of whole validation clips (per ear, mean) and the interaural
        cross-spectrum L1 (`interaural_l1`, power 0.3: how far the ITD and ILD of every cell are off)."""
        audio = batch["audio"]
        n = audio.shape[-1] // model.samples_per_latent * model.samples_per_latent
        audio = audio[..., :n]
        rec = model.decode(model.encode(audio), length=n)
        interaural = float(interaural_l1(rec, audio, 0.3))
        return {"stft_distance": float(stft_log_distance(rec, audio)), "interaural": interaural}


@dataclass(frozen=True, kw_only=True)
class DecoderHeadsConfig:
    window: float = 1.0  # seconds per training sample, rounded down to whole latent frames
    itd_beta: float = 0.5  # interaural delay: smooth-L1 transition (samples)
    floor_db: float = 50.0  # envelope: levels below the clip's loudest frame by more than this count as this
    envelope_stft_weight: float = 0.0  # envelope: weight of a multi-resolution STFT loss on the gained ears
    envelope_ild_weight: float = 0.0  # envelope: weight of the per-frame interaural level difference term

    def __post_init__(self) -> None:
        if min(self.window, self.itd_beta, self.floor_db) <= 0:
            raise ConfigError(f"window, itd_beta, floor_db: must be > 0, got {self.window}, {self.itd_beta}, "
                              f"{self.floor_db}")  # fmt: skip
        if min(self.envelope_stft_weight, self.envelope_ild_weight) < 0:
            raise ConfigError(f"envelope_stft_weight, envelope_ild_weight: must be >= 0, got "
                              f"{self.envelope_stft_weight}, {self.envelope_ild_weight}")  # fmt: skip


class DecoderHeadsTask:
    """The audio codec's decoder heads (interaural delay, envelope: `WorldAudioCodec.head_loss`) on windows of
    binaural world audio; the rest of the codec is meant to be frozen (`init.freeze`), so its latents stay valid."""

    def __init__(self, config: DecoderHeadsConfig):
        if config.envelope_stft_weight:  # WorldAudioCodec.head_loss's STFT term
            check_auraloss("task decoder_heads with envelope_stft_weight > 0")
        self.config = config

    def prepare(self, batch: dict, device: torch.device) -> dict:
        return {"audio": batch["streams"]["audio"].to(device), "seed": batch["seed"]}

    def _options(self) -> dict:
        c = self.config
        return {"itd_beta": c.itd_beta, "floor_db": c.floor_db, "envelope_stft_weight": c.envelope_stft_weight,
                "envelope_ild_weight": c.envelope_ild_weight}  # fmt: skip

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        windows = _audio_windows(model, batch["audio"], batch["seed"].tolist(), self.config.window)
        return model.head_loss(windows, **self._options())[0]

    @torch.no_grad()
    def sample(self, model: nn.Module, batch: dict) -> dict[str, float]:
        """The heads' errors on whole validation clips, with the plain decoder's beside them (`head_loss` parts)."""
        audio = batch["audio"]
        audio = audio[..., : audio.shape[-1] // model.samples_per_latent * model.samples_per_latent]
        return model.head_loss(audio, **self._options())[1]
