"""Asymmetric windowed aligners (UniAVGen), placed after every k-th layer.

- audio-to-video: each video latent frame's tokens attend to the audio tokens within `window` latent frames of it
  (those whose nearest latent frame is within `window` frames, an attention mask built from the streams' seconds;
  `window_mask`);
- video-to-audio: each audio token attends to the video tokens of the frame interpolated linearly between the two
  latent frames around its time (keys and values interpolated).

Both outputs are zero-initialised, so a fresh joint model computes what its towers compute. With
`region_modulation=True` a head predicts a soft spatial mask over video tokens that scales the audio-to-video update
of each token and the weight of each video token as context for audio. A mask given in `v.extras["region_mask"]`
(`cond["region_mask"]` of the joint model; formats in `region_modulation`) replaces the prediction: a known region at
sampling, kept by every guidance branch. The joint task does not give it in training: it supervises the prediction
with it (`mask_loss`), so the aligners learn with the masks they get at sampling, where there is usually none to give,
and the flow loss reaches the head too (UniAVGen modulates with the prediction and decays the mask loss).
The predictions of a forward pass, with their graph, go to `v.extras["predicted_region_masks"]` (one `(B, L)` per
aligner; the joint model hands them out through `velocity(..., aux=)`); the module keeps only detached copies of the
last pass in `predicted_masks` (for inspection), so it holds no graph after a forward and deep-copies at any time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.nn.fusion.base import Fusion, FusionOptions, TowerState
from avflow.nn.fusion.full_attention import check_heads, state_rotary
from avflow.nn.fusion.region_modulation import RegionModulation, flat_mask, token_mask
from avflow.nn.temporal_alignment import TemporalAlignment, as_alignment, frame_period
from avflow.nn.wan_blocks import WanAttention, WanRotary, apply_rotary


@dataclass(frozen=True, kw_only=True)
class WindowedAlignerOptions(FusionOptions):
    heads: int = 2  # heads of both aligners at the video width (even head size for the 3-D RoPE)
    every: int = 1  # aligners after layers every-1, 2 every-1, ...
    window: int = 1  # audio-to-video: audio tokens within `window` latent frames of each video frame
    region_modulation: bool = False  # predicted soft spatial masks gate the interaction per video token

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"every: windowed_aligners needs every >= 1, got {self.every}")
        if self.window < 0:
            raise ConfigError(f"window: windowed_aligners needs window >= 0, got {self.window}")

    def check(self, video_dim: int, audio_dim: int, n_layers: int) -> None:
        check_heads(video_dim, self.heads)
        if self.every > n_layers:
            where = f"every={self.every} places no aligner in {n_layers} layers"
            raise ConfigError(f"fusion_options.every: windowed_aligners with {where}")


TIE = 1e-9  # in frame periods: a token this close to the half-way point between two frames is on it (float noise)


def frame_offsets(video_seconds: Tensor, audio_seconds: Tensor, period: float) -> Tensor:
    """-> long `(T, N)`: how many latent frames after frame j the frame nearest audio token n is (frame times
    `t_j`, spaced `period`); a token half-way between two frames is nearest the earlier one. Frame times are the mean
    of their pixel frames' start times (`video_frame_seconds`), half a pixel frame before the frame's span's centre,
    so such a token lies in the earlier frame's span; audio times are latent centres."""
    delta = (audio_seconds[None, :] - video_seconds[:, None]) / period  # in frame periods
    return torch.ceil(delta - 0.5 - TIE).long()


def window_mask(video_seconds: Tensor, audio_seconds: Tensor, period: float, window: int, tokens_per_frame: int):
    """-> bool `(T*S, N)`: video token (frame j) sees audio token n iff the frame nearest t_n (`frame_offsets`) is
    within `window` frames of j, i.e. (window + ½)·period ≥ t_n − t_j > −(window + ½)·period: each audio token is in
    the window 0 neighbourhood of exactly one frame. The first frame's neighbourhood reaches back to the clip's start
    and the last one's on to its end (and past it), so no audio token is left out; only the first and the last frame
    get those tokens (the others' windows keep their width of (2 window + 1)·period, so away from ties the masks are
    those of |t_n − t_j| < (window + ½)·period, which the shipped model was trained with)."""
    offset = frame_offsets(video_seconds, audio_seconds, period)  # (T, N)
    near = offset.abs() <= window
    near[0] |= offset[0] < 0
    near[-1] |= offset[-1] > 0
    return near.repeat_interleave(tokens_per_frame, dim=0)


def interpolation_weights(video_seconds: Tensor, audio_seconds: Tensor, period: float) -> Tensor:
    """-> `(N, T)`: each audio token's linear interpolation weights over the latent frames around its time."""
    frames = len(video_seconds)
    weights = audio_seconds.new_zeros(len(audio_seconds), frames, dtype=torch.float32)
    if frames == 1:
        return weights + 1
    pos = ((audio_seconds - video_seconds[0]) / period).clamp(0, frames - 1)
    left = pos.floor().long().clamp(max=frames - 2)
    frac = (pos - left).float()
    rows = torch.arange(len(audio_seconds), device=weights.device)
    weights[rows, left] = 1 - frac
    weights[rows, left + 1] = frac
    return weights


class AudioToVideoAligner(nn.Module):
    """Video tokens query the audio tokens in their window; zero-initialised output projection."""

    def __init__(self, video_dim: int, audio_dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(video_dim, eps=eps)
        self.context_norm = nn.LayerNorm(audio_dim, eps=eps)
        self.attn = WanAttention(video_dim, heads, eps, context_dim=audio_dim)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, video: Tensor, audio: Tensor, mask: Tensor, video_rotary, audio_rotary) -> Tensor:
        """video `(B, Lv, Dv)`, audio `(B, N, Da)`, mask `(Lv, N)` bool -> update `(B, Lv, Dv)`."""
        seen = mask.any(dim=1)  # frames whose window holds no audio token get no update
        mask = mask | ~seen[:, None]
        out = self.attn(self.norm(video), self.context_norm(audio), video_rotary, audio_rotary, mask)
        return out * seen[:, None].to(out.dtype)


class VideoToAudioAligner(nn.Module):
    """Audio tokens query the video tokens of their interpolated frame; zero-initialised output projection."""

    def __init__(self, video_dim: int, audio_dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(audio_dim, eps=eps)
        self.context_norm = nn.LayerNorm(video_dim, eps=eps)
        self.to_q = nn.Linear(audio_dim, video_dim)
        self.to_k = nn.Linear(video_dim, video_dim)
        self.to_v = nn.Linear(video_dim, video_dim)
        self.norm_q = nn.RMSNorm(video_dim, eps=eps)
        self.norm_k = nn.RMSNorm(video_dim, eps=eps)
        self.to_out = nn.Linear(video_dim, audio_dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(
        self,
        audio: Tensor,
        video: Tensor,
        frames: int,
        weights: Tensor,
        audio_rotary,
        video_rotary,
        region: Tensor | None = None,
    ) -> Tensor:
        """audio `(B, N, Da)`, video `(B, T*S, Dv)`, weights `(N, T)`, region `(B, T*S)` -> update `(B, N, Da)`."""
        b, lv, _ = video.shape
        q = apply_rotary(self.norm_q(self.to_q(self.norm(audio))).unflatten(-1, (self.heads, -1)), *audio_rotary)
        context = self.context_norm(video)
        k = apply_rotary(self.norm_k(self.to_k(context)).unflatten(-1, (self.heads, -1)), *video_rotary)
        v = self.to_v(context).unflatten(-1, (self.heads, -1))  # (B, Lv, H, d)
        if region is not None:
            v = v * region[:, :, None, None]
        k, v = k.view(b, frames, lv // frames, *k.shape[2:]), v.view(b, frames, lv // frames, *v.shape[2:])
        scores = torch.einsum("bnhd,btshd->bhnts", q, k) * q.shape[-1] ** -0.5
        logits = torch.einsum("nt,bhnts->bhns", weights, scores)  # = q · (interpolated keys)
        probs = logits.softmax(dim=-1)
        out = torch.einsum("nt,bhns,btshd->bnhd", weights, probs, v)  # probs @ (interpolated values)
        return self.to_out(out.flatten(2))


class WindowedAlignerFusion(Fusion):
    """Audio-to-video and video-to-audio aligners after layers k−1, 2k−1, ... (`every` = k)."""

    takes_alignment = True

    def __init__(
        self,
        video_dim: int,
        audio_dim: int,
        video_blocks: int,
        audio_blocks: int,
        options: WindowedAlignerOptions = WindowedAlignerOptions(),
        alignment: TemporalAlignment | str = "none",
    ):
        super().__init__(video_dim, audio_dim, video_blocks, audio_blocks)
        options.check(video_dim, audio_dim, self.n_layers)
        heads, every, region_modulation = options.heads, options.every, options.region_modulation
        self.rope = WanRotary(check_heads(video_dim, heads))
        self.alignment = as_alignment(alignment)
        self.window = options.window
        self.layers = [layer for layer in range(self.n_layers) if layer % every == every - 1]
        self.slot = {layer: i for i, layer in enumerate(self.layers)}
        self.audio_to_video = nn.ModuleList([AudioToVideoAligner(video_dim, audio_dim, heads) for _ in self.layers])
        self.video_to_audio = nn.ModuleList([VideoToAudioAligner(video_dim, audio_dim, heads) for _ in self.layers])
        self.region = nn.ModuleList([RegionModulation(video_dim) for _ in self.layers]) if region_modulation else None
        self.predicted_masks: list[Tensor] = []  # detached copies of the last pass's predictions (no graph)
        self.cache: dict | None = None

    def prepare(self, v: TowerState, a: TowerState) -> dict:
        """Masks, interpolation weights and RoPE tables shared by every aligner of one forward pass."""
        frames, n = v.grid[0], a.grid[0]
        device = v.x.device
        tv = v.seconds if v.seconds is not None else torch.arange(frames, device=device, dtype=torch.float64)
        ta = a.seconds if a.seconds is not None else torch.arange(n, device=device, dtype=torch.float64)
        period = frame_period(tv, self.alignment.video_period) if frames > 1 else float("inf")
        video_rotary, audio_rotary = state_rotary(self.rope, self.alignment, v, a)
        return {
            "mask": window_mask(tv, ta, period, self.window, v.x.shape[1] // frames),
            "weights": interpolation_weights(tv, ta, period),
            "video_rotary": video_rotary,
            "audio_rotary": audio_rotary,
        }

    def run(self, video_tower, audio_tower, v: TowerState, a: TowerState, cross_modal: bool) -> None:
        self.predicted_masks = []
        self.cache = self.prepare(v, a) if cross_modal else None
        super().run(video_tower, audio_tower, v, a, cross_modal)
        self.cache = None

    def region_mask(self, slot: int, v: TowerState) -> Tensor | None:
        """The mask gating aligner `slot`: the given `v.extras["region_mask"]`, else the head's prediction; the
        prediction goes to `v.extras["predicted_region_masks"]` either way (a detached copy to `predicted_masks`)."""
        if self.region is None:
            return None
        predicted = self.region[slot](v.x)  # (B, Lv)
        v.extras.setdefault("predicted_region_masks", []).append(predicted)
        self.predicted_masks.append(predicted.detach())
        given = v.extras.get("region_mask")
        if given is None:
            return predicted
        return flat_mask(token_mask(given, v.grid), *predicted.shape).to(predicted.dtype)

    def exchange(self, layer: int, v: TowerState, a: TowerState) -> None:
        if layer not in self.slot:
            return
        slot, c = self.slot[layer], self.cache or self.prepare(v, a)
        region = self.region_mask(slot, v)
        video, audio = v.x, a.x
        dv = self.audio_to_video[slot](video, audio, c["mask"], c["video_rotary"], c["audio_rotary"])
        da = self.video_to_audio[slot](
            audio, video, v.grid[0], c["weights"], c["audio_rotary"], c["video_rotary"], region
        )
        v.x = video + (dv if region is None else dv * region[..., None])
        a.x = audio + da
