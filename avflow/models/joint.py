"""Joint audio-video flow model: a Wan-layout video tower and an MMAudio-layout audio tower joined by a fusion module.

Implements the generator protocol (`velocity`, `empty_conditions`). Streams: `video` `(B, 16, T, H, W)` latents and
the audio streams named by `audio_streams`: `audio` `(B, N, C)` (mono latents), or `left` and `right` `(B, N, C)`
each (a binaural codec's per-ear latents, generated together: the audio tower sees them side by side in channels,
`audio.latent_dim` = 2 C). Video or audio may be given alone (text-to-video-only / text-to-audio-only). Times per
stream are `(B,)` or per latent frame `(B, T)` / `(B, N)` (the audio streams share one); t = 1 marks clean
condition frames (tasks in `tasks.py`).
`cond` is `{"text": (B, S, text_dim), "text_mask": (B, S) bool}`; masked text tokens are zeroed (Wan's padding).
With a region-modulating fusion (`windowed_aligners` with `region_modulation`) `cond` may also hold `region_mask`, a
known region that replaces the predicted one (formats in `avflow.nn.fusion.region_modulation`); it is no droppable
condition (see `empty_conditions`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.flow.streams import time_dim
from avflow.models.audio_tower import AudioTower, AudioTowerConfig
from avflow.models.wan import WanConfig, WanVideoTower
from avflow.nn.fusion import FusionOptions, build_fusion, check_fusion, fusion_options
from avflow.nn.temporal_alignment import ALIGNMENTS, TemporalAlignment


@dataclass(frozen=True, kw_only=True)
class JointConfig:
    """Default: a small model for the procedural world (MiniLM text, world codecs' latent shapes)."""

    video: WanConfig = field(default_factory=WanConfig)
    audio: AudioTowerConfig = field(default_factory=AudioTowerConfig)
    fusion: str = "bidirectional"  # a variant of avflow.nn.fusion.FUSIONS
    # its options dataclass as a mapping; stored resolved (every field, defaults filled in) so that `{}` and the
    # defaults spelled out are one network when a checkpoint's config is compared with this one
    fusion_options: dict = field(default_factory=dict)
    alignment: str = "none"  # temporal RoPE of cross-modal attention: none | avsync | seconds (temporal_alignment)
    text_dim: int = 384
    text_len: int = 32
    video_fps: float = 16.0  # frames per second of the pixel video
    video_temporal_stride: int = 4  # pixel frames per video latent frame (plain T / 4, see world_video_ae.py)
    audio_latent_rate: float = 31.25  # audio latents per second
    audio_streams: tuple[str, ...] = ("audio",)  # ("audio",) or ("left", "right"), side by side in channels

    def __post_init__(self) -> None:
        self._check_rates_and_sizes()
        if self.audio_streams not in (("audio",), ("left", "right")):
            raise ConfigError(f"audio_streams: must be ['audio'] or ['left', 'right'], got {list(self.audio_streams)}")
        if self.audio.latent_dim % len(self.audio_streams):
            raise ConfigError(f"audio.latent_dim {self.audio.latent_dim} must split evenly over {self.audio_streams}")
        if self.video.text_dim != self.text_dim or self.audio.text_dim != self.text_dim:
            raise ConfigError(
                f"text_dim {self.text_dim} must equal video.text_dim {self.video.text_dim} "
                f"and audio.text_dim {self.audio.text_dim}"
            )
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(
                f"alignment: unknown temporal alignment {self.alignment!r} (choose from {', '.join(ALIGNMENTS)})"
            )
        n_layers = max(self.video.num_layers, self.audio.depth)
        typed = check_fusion(self.fusion, self.fusion_options, self.alignment, video_dim=self.video.dim,
                             audio_dim=self.audio.hidden_dim, n_layers=n_layers)  # fmt: skip
        object.__setattr__(self, "fusion_options", asdict(typed))

    def _check_rates_and_sizes(self) -> None:
        """The rates the towers' tokens are placed in time by (`video_frame_seconds`, `check_rates`, the temporal
        alignment divide by them) and the text sizes: one-line ConfigErrors naming the field."""
        for name in ("video_fps", "audio_latent_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a positive number, got {value}")
        for name in ("video_temporal_stride", "text_dim", "text_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")

    @property
    def fusion_config(self) -> FusionOptions:
        """The fusion variant's typed options."""
        return fusion_options(self.fusion, self.fusion_options)


def video_frame_seconds(n_latent: int, fps: float, stride: int, device=None) -> Tensor:
    """Centre time (s) of each video latent frame: latent j covers pixel frames [stride j, stride (j + 1))."""
    return (torch.arange(n_latent, device=device, dtype=torch.float64) * stride + (stride - 1) / 2) / fps


def audio_token_seconds(n: int, rate: float, device=None) -> Tensor:
    """Centre time (s) of each audio latent."""
    return (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / rate


def reads_rates(config: JointConfig) -> bool:
    """Whether the fusion places audio and video tokens in time by `video_fps`, `video_temporal_stride` and
    `audio_latent_rate`: the windowed aligners (masks, interpolation) and a temporal RoPE alignment (avsync, seconds)
    do; bidirectional fusion, no fusion and index positions (alignment none) read no rate."""
    return config.fusion == "windowed_aligners" or (config.fusion != "none" and config.alignment != "none")


def check_rates(config: JointConfig, frames: int, tokens: int, name: str = "stream 'audio'") -> None:
    """One-line ConfigError (starting with `name`) unless `tokens` audio latents span what `frames` video latent
    frames span at the configured rates to less than one video latent frame plus one audio latent: |N − T·τ| < τ + 1,
    τ the audio latents per video latent frame. That is what rounding each stream of one clip to whole latents (either
    way) leaves; the joint pipeline's windows (a2v, v2a, continue, windowed t2av) and world-codec caches match exactly,
    and floored audio hops with frames rounded to whole ones (the fixed codecs) stay within it."""
    c = config
    per_frame = c.video_temporal_stride * c.audio_latent_rate / c.video_fps
    want = frames * per_frame
    if abs(tokens - want) >= per_frame + 1:
        raise ConfigError(
            f"{name}: {tokens} latents at {c.audio_latent_rate:g}/s span {tokens / c.audio_latent_rate:.4g} s, "
            f"but {frames} video latent frames at {c.video_fps:g} fps (stride {c.video_temporal_stride}) span "
            f"{frames * c.video_temporal_stride / c.video_fps:.4g} s = {want:.4g} audio latents; the two may differ by "
            f"less than one video latent frame plus one audio latent ({per_frame + 1:.4g}): the data do not have "
            f"the configured video_fps, video_temporal_stride and audio_latent_rate"
        )


class JointModel(nn.Module):
    """Video tower + audio tower + fusion; velocity in the t = 1 data convention."""

    def __init__(self, config: JointConfig | None = None):
        super().__init__()
        self.config = c = config or JointConfig()
        self.video = WanVideoTower(c.video)
        self.audio = AudioTower(c.audio)
        alignment = TemporalAlignment(c.alignment, video_period=c.video_temporal_stride / c.video_fps)
        dims, blocks = (self.video.dim, self.audio.dim), (self.video.n_blocks, self.audio.n_blocks)
        self.fusion = build_fusion(c.fusion, *dims, *blocks, c.fusion_config, alignment)

    @property
    def region_modulation(self) -> bool:
        """Whether the fusion predicts region masks (`velocity(..., aux=)` hands them out)."""
        return getattr(self.fusion, "region", None) is not None

    def empty_conditions(self, batch: int) -> dict[str, Tensor]:
        """Empty text. A `region_mask` has no empty value: it says where the video is, not what to generate, so the
        guidance branches and the dropped samples of training keep the given one (the helpers pass the `cond` keys
        these lack through unchanged: `flow.guidance`, `train.flow_task`)."""
        device = next(self.parameters()).device
        c = self.config
        return {
            "text": torch.zeros(batch, c.text_len, c.text_dim, device=device),
            "text_mask": torch.zeros(batch, c.text_len, dtype=torch.bool, device=device),
        }

    def _text(self, cond: dict[str, Tensor]) -> Tensor:
        text = cond["text"]
        mask = cond.get("text_mask")
        return text if mask is None else text * mask[..., None].to(text.dtype)

    def _audio_in(self, streams: dict[str, Tensor], t: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The audio streams side by side in channels `(B, N, sum C)` and their (shared) times."""
        names = self.config.audio_streams
        return torch.cat([streams[s] for s in names], dim=-1), t[names[0]]

    def _audio_out(self, velocity: Tensor) -> dict[str, Tensor]:
        names = self.config.audio_streams
        return dict(zip(names, velocity.chunk(len(names), dim=-1)))

    def _check_shapes(self, streams: dict[str, Tensor], t: dict[str, Tensor], cond: dict[str, Tensor]) -> None:
        """A one-line ConfigError naming the stream (or the text) and the expected vs actual shape; shape comparisons
        only (it runs at every sampling step). Where the fusion reads the rates (`reads_rates`), the audio latents
        must span the video latent frames' span at them to less than one video latent frame plus one audio latent
        (`check_rates`)."""
        c, first = self.config, next(iter(streams))
        audio = next((streams[s] for s in c.audio_streams if s in streams), None)
        width = c.audio.latent_dim // len(c.audio_streams)
        for name, x in streams.items():
            if name == "video":
                channels = c.video.in_channels
                want, ok = f"(B, {channels}, T, H, W)", x.ndim == 5 and x.shape[1] == channels
            else:  # the audio streams share their length
                n = audio.shape[1] if audio.ndim == 3 else "N"
                want, ok = f"(B, {n}, {width})", x.ndim == 3 and x.shape[1:] == (n, width)
            if not ok:
                raise ConfigError(f"stream {name!r}: latents must be {want}, got {tuple(x.shape)}")
        if "video" in streams and audio is not None and reads_rates(c):
            names = ("streams " if len(c.audio_streams) > 1 else "stream ") + " and ".join(map(repr, c.audio_streams))
            check_rates(c, streams["video"].shape[2], audio.shape[1], names)
        batch = streams[first].shape[0]
        for name, x in streams.items():
            if x.shape[0] != batch:
                raise ConfigError(f"stream {name!r}: a batch of {x.shape[0]}, where {first!r} has {batch}")
            ts, frames = t.get(name), x.shape[time_dim(name)]
            if not isinstance(ts, Tensor) or ts.shape not in ((batch,), (batch, frames)):
                got = f"shape {tuple(ts.shape)}" if isinstance(ts, Tensor) else repr(ts)
                raise ConfigError(f"stream {name!r}: t must be a tensor ({batch},) or ({batch}, {frames}), got {got}")
        text = cond.get("text") if isinstance(cond, dict) else None
        if not isinstance(text, Tensor) or text.ndim != 3 or text.shape[0] != batch or text.shape[2] != c.text_dim:
            got = f"shape {tuple(text.shape)}" if isinstance(text, Tensor) else repr(text)
            raise ConfigError(f"cond['text'] must be a tensor ({batch}, S, {c.text_dim}), got {got}")

    def velocity(
        self,
        streams: dict[str, Tensor],
        t: dict[str, Tensor],
        cond: dict[str, Tensor],
        *,
        cross_modal: bool = True,
        aux: dict | None = None,
    ) -> dict[str, Tensor]:
        """The velocity of each stream. `aux`: a dict this call fills with what a loss needs beyond the velocity:
        with a region-modulating fusion on (both streams, `cross_modal`), `region_masks` (the predicted masks `(B, L)`,
        one per aligner, with their graph) and `region_grid` (the video token grid (T', H', W'))."""
        audio_names = set(self.config.audio_streams)
        given_audio = set(streams) & audio_names
        if set(streams) - audio_names - {"video"} or not streams or given_audio not in (set(), audio_names):
            want = " and ".join(repr(s) for s in self.config.audio_streams)
            raise ConfigError(f"joint model streams are 'video' and/or {want}, got {sorted(streams)}")
        self._check_shapes(streams, t, cond)
        text = self._text(cond)
        c = self.config
        out = {}
        if "video" in streams and given_audio:
            xv = streams["video"]
            xa, ta = self._audio_in(streams, t)
            v = self.video.embed(xv, 1000.0 * (1.0 - t["video"]), text)
            a = self.audio.embed(xa, ta, text)
            v.seconds = video_frame_seconds(v.grid[0], c.video_fps, c.video_temporal_stride, xv.device)
            a.seconds = audio_token_seconds(a.grid[0], c.audio_latent_rate, xa.device)
            if cond.get("region_mask") is not None:  # a given region replaces the predicted one (region modulation)
                v.extras["region_mask"] = cond["region_mask"]
            self.fusion.run(self.video, self.audio, v, a, cross_modal)
            if aux is not None and v.extras.get("predicted_region_masks"):
                aux["region_masks"], aux["region_grid"] = v.extras["predicted_region_masks"], tuple(v.grid)
            return {"video": -self.video.head(v), **self._audio_out(self.audio.head(a))}
        if "video" in streams:
            out["video"] = self.video.velocity(streams["video"], t["video"], text)
        if given_audio:
            xa, ta = self._audio_in(streams, t)
            out |= self._audio_out(self.audio(xa, ta, text))
        return out

    def forward(self, streams: dict[str, Tensor], t: dict[str, Tensor], cond: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.velocity(streams, t, cond)
