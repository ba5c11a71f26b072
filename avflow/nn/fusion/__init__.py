"""Audio-video fusion modules, chosen by name from `FUSIONS` (one file per variant, each with its options dataclass).

`FUSIONS[name]` is the variant's module class and its frozen options dataclass; the options' defaults are the
variant's defaults, and a config's `fusion_options` mapping is checked against them strictly (`fusion_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from avflow.config import from_dict
from avflow.errors import ConfigError
from avflow.nn.fusion.base import Fusion, FusionOptions, block_schedule
from avflow.nn.fusion.bidirectional import BidirectionalFusion, BidirectionalOptions
from avflow.nn.fusion.full_attention import FullAttentionFusion, FullAttentionOptions
from avflow.nn.fusion.none import NoFusion, NoFusionOptions
from avflow.nn.fusion.windowed_aligners import WindowedAlignerFusion, WindowedAlignerOptions
from avflow.nn.temporal_alignment import TemporalAlignment, as_alignment
from avflow.nn.towers import TowerState


class FusionVariant(NamedTuple):
    module: type[Fusion]
    options: type[FusionOptions]


FUSIONS: dict[str, FusionVariant] = {
    "none": FusionVariant(NoFusion, NoFusionOptions),
    "bidirectional": FusionVariant(BidirectionalFusion, BidirectionalOptions),
    "full_attention": FusionVariant(FullAttentionFusion, FullAttentionOptions),
    "windowed_aligners": FusionVariant(WindowedAlignerFusion, WindowedAlignerOptions),
}


def fusion_options(name: str, options: Mapping | FusionOptions | None = None, path: str = "fusion_options"):
    """The typed options of variant `name` from a mapping, strictly (a bad name, an unknown key or a wrong type is
    a one-line ConfigError naming `path`)."""
    if name not in FUSIONS:
        raise ConfigError(f"fusion: unknown fusion {name!r} (choose from {', '.join(FUSIONS)})")
    cls = FUSIONS[name].options
    if isinstance(options, FusionOptions):
        if not isinstance(options, cls):
            raise ConfigError(f"{path}: fusion {name!r} takes {cls.__name__}, got {type(options).__name__}")
        return options
    return from_dict(cls, options or {}, path)


def check_fusion(
    name: str, options: Mapping | FusionOptions | None, alignment: str, *, video_dim: int, audio_dim: int, n_layers: int
) -> FusionOptions:
    """Options that fit the variant, the towers (widths, layers) and the temporal alignment; else ConfigError."""
    typed = fusion_options(name, options)
    check_alignment(name, alignment)
    typed.check(video_dim, audio_dim, n_layers)
    return typed


def check_alignment(name: str, alignment: TemporalAlignment | str) -> None:
    """ConfigError unless variant `name` can use the temporal alignment `alignment`: one other than 'none' needs a
    variant with a temporal RoPE in its cross-modal attention (no fusion has none).
    `alignment` is a TemporalAlignment or its name, one of `ALIGNMENTS` (an unknown name is a ConfigError)."""
    alignment = as_alignment(alignment).name
    if alignment != "none" and not FUSIONS[name].module.takes_alignment:
        raise ConfigError(f"alignment: fusion {name!r} has no temporal RoPE to align; use alignment 'none'")


def build_fusion(
    name: str,
    video_dim: int,
    audio_dim: int,
    video_blocks: int,
    audio_blocks: int,
    options: Mapping | FusionOptions | None = None,
    alignment: TemporalAlignment | str | None = None,
) -> Fusion:
    """The fusion module `name` with its (typed or mapping) options; `alignment` for variants that take one (another
    than 'none' given to a variant without a temporal RoPE is a ConfigError, as in `check_fusion`).
    `alignment` may be a TemporalAlignment or its name (`as_alignment`), as the variant classes take it. Widths and
    block counts must be positive integers (a ConfigError naming them, before anything is built)."""
    sizes = {"video_dim": video_dim, "audio_dim": audio_dim, "video_blocks": video_blocks, "audio_blocks": audio_blocks}
    bad = [f"{k}={v!r}" for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ConfigError(f"fusion {name!r}: widths and block counts must be positive integers, got {', '.join(bad)}")
    variant = FUSIONS.get(name)
    typed = fusion_options(name, options)
    if alignment is not None:
        alignment = as_alignment(alignment)
        check_alignment(name, alignment)
    extra = {"alignment": alignment} if variant.module.takes_alignment and alignment is not None else {}
    return variant.module(video_dim, audio_dim, video_blocks, audio_blocks, typed, **extra)


__all__ = [
    "FUSIONS",
    "Fusion",
    "FusionOptions",
    "FusionVariant",
    "TowerState",
    "block_schedule",
    "build_fusion",
    "check_alignment",
    "check_fusion",
    "fusion_options",
]
