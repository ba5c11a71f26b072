"""The default model's quality targets over a prompt set (issue 22, item 2), as data, and their measured values.

Each target is a rate over the clips it applies to (a clip whose measure is undefined fails it), except sync (the
median error over every visible contact of every clip, an unmatched contact counting as 250 ms) and space (a rate
over matched onsets at an off-centre contact). A target with nothing to measure is "not measurable", never met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avflow.eval.prompt_measures import PromptClipMeasures


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    what: str  # what is counted, for the table
    bound: float  # least rate (most ms for "sync")
    over: str  # the population


TARGETS = (
    Target(name="object", what="named colour: one compact component of 0.5-2.5x an object's area, <= 6 % of the "
           "frame, in >= half the frames", bound=0.9, over="single-object clips"),
    Target(name="object_side", what="its mean x in the named third (left < 0.4 W, right > 0.6 W, middle 0.3-0.7 W)",
           bound=0.8, over="single-object clips naming a side"),
    Target(name="sound", what="audio peak >= -20 dBFS with >= 1 onset", bound=0.9, over="clips"),
    Target(name="contact", what="a visible contact of every bouncing named object", bound=0.8,
           over="'bounces'/'hops' prompts"),
    Target(name="count", what="visible contacts within +-1 of the count named (and >= 1)", bound=0.8,
           over="prompts naming a count"),
    Target(name="sync", what="median of abs(audio onset - contact), unmatched = 250 ms", bound=62.0,
           over="visible contacts"),
    Target(name="space", what="ILD sign at the matched onset = side of the object at the contact", bound=0.8,
           over="matched onsets at off-centre contacts"),
    Target(name="two_objects", what="both named colours shown (as for 'object')", bound=0.7,
           over="two-object clips"),
)  # fmt: skip


@dataclass(frozen=True)
class TargetResult:
    target: Target
    value: float | None  # None when nothing was measurable
    n: int  # clips, contacts or onsets it was measured over

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.target.bound if self.target.name == "sync" else self.value >= self.target.bound

    def text(self) -> str:
        if self.value is None:
            return "not measurable (n = 0)"
        return f"{self.value:.1f} ms" if self.target.name == "sync" else f"{self.value:.0%}"


def score(clips: list[PromptClipMeasures], names: tuple[str, ...] | None = None) -> list[TargetResult]:
    """The measured value of each target (all of them, or those in ``names``) over ``clips``."""
    checks = [c.checks() for c in clips]
    out = []
    for target in TARGETS:
        if names is not None and target.name not in names:
            continue
        if target.name == "sync":
            errors = [p.error_ms for c in clips for p in c.pairs]
            out.append(TargetResult(target, float(np.median(errors)) if errors else None, len(errors)))
        elif target.name == "space":
            agrees = [p.agrees for c in clips for p in c.pairs if p.agrees is not None]
            out.append(TargetResult(target, float(np.mean(agrees)) if agrees else None, len(agrees)))
        else:
            ok = [c[target.name] for c in checks if c[target.name] is not None]
            out.append(TargetResult(target, float(np.mean(ok)) if ok else None, len(ok)))
    return out


def markdown_table(results: list[TargetResult], bounds: bool = True) -> str:
    """A markdown table: measure, what, over, target, measured, n, met; ``bounds=False`` drops the target and met
    columns (measures without a target, e.g. a2v and v2a)."""
    columns = ["measure", "what", "over", "target", "measured", "n", "met"]
    if not bounds:
        columns = [c for c in columns if c not in ("target", "met")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        t = r.target
        bound = f"<= {t.bound:g} ms" if t.name == "sync" else f">= {t.bound:.0%}"
        row = [t.name, t.what, t.over] + ([bound] if bounds else []) + [r.text(), str(r.n)]
        lines.append("| " + " | ".join(row + (["yes" if r.met else "**no**"] if bounds else [])) + " |")
    return "\n".join(lines)
