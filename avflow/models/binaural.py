"""A ViSAudio-style dual-branch binaural generator on the world's binaural codec: streams `left` and `right` (each
(B, N, C), the codec's latents) share one DiT trunk.

Both branches' tokens enter one joint self-attention sequence (so each ear sees the other), with per-token adaLN
conditioning from the flow time and per-token input conditioning from the spatio-temporal video features of
`avflow.nn.spatiotemporal` and, optionally, a given mono sound (its codec latents, the same for both ears; dropped in
training with a flag, so one model does video -> binaural and video + mono -> binaural).
The branch identity is carried by the orientation of the spatial features (each ear sees the frame's columns from its
own side; see `SpatioTemporalConditioner`), and the input/output heads are shared. A learned left/right embedding
would break the symmetry, so there is none: mirroring the video exactly swaps the two outputs (up to float
summation order), which `tests/test_binaural.py` checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.data.interaural_cues import CueStreamConfig
from avflow.errors import ConfigError, WeightsError
from avflow.flow.sampling import SamplingConfig
from avflow.nn.spatiotemporal import SPATIAL_CHANNELS, TIMING_DIM, SpatioTemporalConditioner, video_features
from avflow.weights import load_strict, read_metadata, read_safetensors, save_safetensors

SIDES = ("left", "right")
MODEL_FILE = Path(__file__).resolve().parent.parent / "assets" / "binaural" / "model.safetensors"  # shipped weights
SAMPLING = SamplingConfig(steps=16, cfg_strength=2.0)  # the shipped model's sampling settings
CUE_STREAM = CueStreamConfig()  # the `cues` representation's settings (a model records them in its export)
REPRESENTATIONS = ("codec", "cues")
PRIORS = ("none", "spatialiser")


@dataclass(frozen=True, kw_only=True)
class BinauralConfig:
    latent_dim: int = 32  # per-ear channels: the world audio codec's latents, or CUE_STREAM.dim
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    bins: int = 16  # horizontal bins of the spatial features
    # what each ear's stream is: "codec" = the binaural codec's latents (the mono condition: its codec latents);
    # "cues" = interaural cue streams relative to a given mono (`avflow.data.interaural_cues`; the mono
    # condition: its band levels), rendered onto that mono, so a mono is always needed
    representation: str = "codec"
    # a cue model's per-ear prior: "spatialiser" = the cue streams of the rule-based spatialiser's rendering of the
    # mono (`avflow.pipelines.spatialise`: tracked and anchored positions, spherical head), one more condition per
    # ear, switched off with the video (it is read from the video); "none": no prior
    prior: str = "none"
    # with a prior: the network models the difference from it. The flow is reparametrised inside `velocity` (for
    # x_t = a_t x0 + t x1: r_t = x_t - t p and v = v_r + p), so training and sampling are those of x unchanged
    residual: bool = False

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ConfigError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got "
                              f"{self.representation!r}")  # fmt: skip
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if self.prior != "none" and self.representation != "cues":
            raise ConfigError(f"prior {self.prior!r} needs the cues representation, got {self.representation!r}")
        if self.residual and self.prior == "none":
            raise ConfigError("residual models the difference from a prior: set prior too")
        if self.representation == "cues" and self.latent_dim != CUE_STREAM.dim:
            raise ConfigError(f"the cues representation has {CUE_STREAM.dim} channels per ear, got latent_dim "
                              f"{self.latent_dim}")  # fmt: skip


def sinusoidal(x: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """(...,) -> (..., dim) sin/cos embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = scale * x.float()[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm DiT block with per-token adaLN-zero modulation from c (B, L, dim)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # (B, L, dim) each
        b, n, d = x.shape
        q, k, v = self.qkv(modulate(self.norm1(x), shift1, scale1)).view(b, n, 3, self.heads, -1).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, h, L, dh)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class BinauralFlow(nn.Module):
    """velocity({"left", "right"} (B, N, C), t, cond) -> {"left", "right"} (B, N, C).

    cond: timing (B, N, 5), spatial (B, N, 8, bins), video_on (B,), mono (B, N, C) codec latents of the given mono,
    mono_on (B,); an `_on` of 0 replaces that condition by a learned null token (1-token conditions broadcast).
    With `config.prior` set, also prior (B, 2, N, C): the [left, right] cue streams of the spatialiser's rendering,
    each ear's added to that ear's tokens (so mirrored inputs still give swapped ears), off where video_on is 0;
    with `config.residual` the network sees x_t - t p and its velocity is v_r + p (p: that ear's prior, 0 where the
    video is off), so it models the difference from the prior.
    """

    def __init__(self, config: BinauralConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.inp = nn.Linear(config.latent_dim, d)
        self.video = SpatioTemporalConditioner(d, config.bins)
        self.no_video = nn.Parameter(torch.zeros(d))
        self.mono = nn.Sequential(nn.Linear(config.latent_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.no_mono = nn.Parameter(torch.zeros(d))
        if config.prior != "none":
            self.prior = nn.Sequential(nn.Linear(config.latent_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([Block(d, config.heads, config.mlp_ratio) for _ in range(config.depth)])
        self.out_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.out_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, config.latent_dim)
        nn.init.zeros_(self.out_ada[1].weight)
        nn.init.zeros_(self.out_ada[1].bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def device(self) -> torch.device:
        return self.inp.weight.device

    def empty_conditions(self, batch: int, n_tokens: int = 1) -> dict[str, Tensor]:
        """No video and no mono: zero features with both flags 0; broadcast over tokens inside `velocity`."""
        dev, c = self.device, self.config
        empty = {
            "timing": torch.zeros(batch, n_tokens, TIMING_DIM, device=dev),
            "spatial": torch.zeros(batch, n_tokens, SPATIAL_CHANNELS, c.bins, device=dev),
            "video_on": torch.zeros(batch, device=dev),
            "mono": torch.zeros(batch, n_tokens, c.latent_dim, device=dev),
            "mono_on": torch.zeros(batch, device=dev),
        }
        if c.prior != "none":
            empty["prior"] = torch.zeros(batch, len(SIDES), n_tokens, c.latent_dim, device=dev)
        return empty

    def _video(self, cond: dict, side: str, n: int, cross_modal: bool) -> Tensor:
        b = cond["video_on"].shape[0]
        null = self.no_video.expand(b, n, -1)
        if not cross_modal:
            return null
        timing, spatial = _fit(cond["timing"], n), _fit(cond["spatial"], n)
        on = cond["video_on"].to(null.dtype).view(b, 1, 1)
        seen = self.video(timing, spatial, side)  # (B, N, dim)
        if self.config.prior != "none":
            seen = seen + self.prior(_fit(cond["prior"][:, SIDES.index(side)], n))
        return on * seen + (1 - on) * null

    def _mono(self, cond: dict, n: int) -> Tensor:
        b = cond["mono_on"].shape[0]
        on = cond["mono_on"].to(self.no_mono.dtype).view(b, 1, 1)
        return on * self.mono(_fit(cond["mono"], n)) + (1 - on) * self.no_mono.expand(b, n, -1)

    def _residual_prior(self, cond: dict, side: str, n: int, cross_modal: bool) -> Tensor | None:
        """(B, N, C) the prior a residual model's stream is the difference from (zeros where the video is off)."""
        if not self.config.residual:
            return None
        p = _fit(cond["prior"][:, SIDES.index(side)], n)
        on = cond["video_on"].to(p.dtype).view(-1, 1, 1) if cross_modal else torch.zeros_like(p[:, :1, :1])
        return p * on

    def velocity(self, streams: dict, t: dict, cond: dict, *, cross_modal: bool = True) -> dict:
        hs, cs, priors = [], [], []
        n = streams["left"].shape[1]
        mono = self._mono(cond, n)  # (B, N, dim), the same for both ears
        for side in SIDES:
            x = streams[side]  # (B, N, C)
            b = x.shape[0]
            pos = sinusoidal(torch.arange(n, device=x.device), self.config.dim, scale=1.0)  # (N, dim)
            ts = t[side]
            ts = ts[:, None].expand(b, n) if ts.ndim == 1 else ts  # (B, N)
            priors.append(self._residual_prior(cond, side, n, cross_modal))
            if priors[-1] is not None:
                x = x - ts[..., None].to(x.dtype) * priors[-1]  # r_t = x_t - t p
            cs.append(self.time(sinusoidal(ts, self.config.dim)))  # (B, N, dim)
            hs.append(self.inp(x) + pos + mono + self._video(cond, side, n, cross_modal))
        h, c = torch.cat(hs, 1), torch.cat(cs, 1)  # (B, 2N, dim): both ears in one attention sequence
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.out_ada(c).chunk(2, dim=-1)
        v = self.out(modulate(self.out_norm(h), shift, scale))
        v = {"left": v[:, :n], "right": v[:, n:]}
        return {s: v[s] if p is None else v[s] + p for s, p in zip(SIDES, priors)}  # v = v_r + p

    def forward(self, streams: dict, t: dict, cond: dict, *, cross_modal: bool = True) -> dict:
        return self.velocity(streams, t, cond, cross_modal=cross_modal)


def video_conditions(frames, fps: float, n_tokens: int, token_rate: float, bins: int = 16) -> dict[str, Tensor]:
    """Unbatched conditions for `n_tokens` latent tokens at `token_rate` per second: the spatio-temporal features of
    the video frames (T, H, W, 3) uint8 and `video_on` = 1."""
    return {**video_features(frames, fps, n_tokens, token_rate=token_rate, bins=bins), "video_on": torch.tensor(1.0)}


def mono_conditions(mono_latents: Tensor | None, n_tokens: int, latent_dim: int) -> dict[str, Tensor]:
    """Unbatched mono conditions: the codec latents (N, C) of the given mono with `mono_on` = 1, or zeros and 0."""
    if mono_latents is None:
        return {"mono": torch.zeros(n_tokens, latent_dim), "mono_on": torch.tensor(0.0)}
    return {"mono": mono_latents.float(), "mono_on": torch.tensor(1.0)}


def _fit(x: Tensor, n: int) -> Tensor:
    """Broadcast a 1-token condition, or pad (repeat the last token) or trim one along dim 1, to n tokens."""
    if x.shape[1] == n:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, n, *x.shape[2:])
    if x.shape[1] > n:
        return x[:, :n]
    return torch.cat([x, x[:, -1:].expand(-1, n - x.shape[1], *x.shape[2:])], 1)


def save_binaural(model: BinauralFlow, path: str | Path, codecs_checksum: str = "",
                  sampling: SamplingConfig | None = None, draws: int = 1) -> None:  # fmt: skip
    """Weights (fp16), the config and the world codecs' checksum (or, for cue streams, their settings) as
    safetensors metadata; with `sampling`, the model's own steps and cfg_strength (else `SAMPLING` applies);
    `draws`: a cue model's output is the mean of this many draws' cue streams (`binaural_draws`)."""
    import json
    from dataclasses import asdict

    state = {k: v.detach().half() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(asdict(model.config)), "codecs_checksum": codecs_checksum}
    if model.config.representation == "cues":
        meta["cue_stream"] = json.dumps(asdict(CUE_STREAM))
    if sampling is not None:
        meta["sampling"] = json.dumps({"steps": sampling.steps, "cfg_strength": sampling.cfg_strength})
    if draws != 1:
        if draws < 1 or model.config.representation != "cues":
            raise ConfigError(f"draws must be >= 1 and only a cue model averages draws, got {draws}")
        meta["draws"] = str(draws)
    save_safetensors(state, path, metadata=meta)


def binaural_draws(path: str | Path) -> int:
    """How many draws' cue streams a cue model's output averages (its export's `draws`; 1 when not recorded): the
    mean estimates the cues the video and the sound imply, where one draw scatters around them (docs/binaural.md)."""
    recorded = read_metadata(path).get("draws", "1")
    if not recorded.isdigit() or int(recorded) < 1:
        raise WeightsError(f"{path}: unreadable draws {recorded!r} in its metadata")
    return int(recorded)


def binaural_sampling(path: str | Path) -> SamplingConfig:
    """The sampling settings an export records (`save_binaural`'s `sampling`), else `SAMPLING`."""
    import json

    recorded = read_metadata(path).get("sampling")
    try:
        return SAMPLING.override(**json.loads(recorded)) if recorded else SAMPLING
    except (TypeError, ValueError, ConfigError) as exc:
        raise WeightsError(f"{path}: unreadable sampling settings in its metadata: {exc}") from None


def load_binaural(path: str | Path) -> tuple[BinauralFlow, str]:
    """A model saved by `save_binaural` (fp32 on the CPU, eval mode) and the checksum of the codecs it was trained
    with ("" for a cue-stream model, whose cue settings must be this code's `CUE_STREAM`)."""
    import json
    from dataclasses import asdict

    tensors, metadata = read_safetensors(path)
    if "config" not in metadata:
        raise WeightsError(f"{path}: not a binaural model checkpoint (no model config in its metadata, as "
                           "scripts/train_binaural_v2.py's export writes)")  # fmt: skip
    try:
        config = BinauralConfig(**json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise WeightsError(f"{path}: not a binaural model checkpoint: {exc}") from None
    if config.representation == "cues" and metadata.get("cue_stream") != json.dumps(asdict(CUE_STREAM)):
        raise WeightsError(f"{path}: a cue-stream model made with other cue settings than this avflow's CUE_STREAM")
    model = BinauralFlow(config)
    load_strict(model, {k: v.float() for k, v in tensors.items()}, str(path))
    return model.eval(), metadata.get("codecs_checksum", "")
