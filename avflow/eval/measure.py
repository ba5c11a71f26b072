"""One metric value that may be undefined: every measure says why it has no value instead of returning NaN.

``Measure.of(value, confidence)`` holds a finite value; ``Measure.undefined(reason)`` holds none and a one-line reason
that a report, the UI or ``avflow demo`` can show as it is ("no visual events: the video is static or blank").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Measure:
    """``value`` is a finite float when ``defined``, else None with ``reason`` saying why; ``confidence`` in [0, 1]
    (0 when undefined) says how far the value can be trusted."""

    value: float | None
    defined: bool
    reason: str = ""
    confidence: float = 0.0

    def __post_init__(self) -> None:
        if self.defined and (self.value is None or not math.isfinite(self.value)):
            raise ValueError(f"a defined measure needs a finite value, got {self.value!r}")
        if not self.defined and (self.value is not None or not self.reason):
            raise ValueError("an undefined measure has no value and needs a reason")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    @classmethod
    def of(cls, value: float, confidence: float = 1.0) -> Measure:
        """A defined value; a non-finite one becomes undefined ("not finite") rather than a silent NaN."""
        value = float(value)
        if not math.isfinite(value):
            return cls.undefined(f"the value is not finite ({value})")
        return cls(value=value, defined=True, confidence=float(min(max(confidence, 0.0), 1.0)))

    @classmethod
    def undefined(cls, reason: str) -> Measure:
        return cls(value=None, defined=False, reason=reason)

    def get(self, default: float = math.nan) -> float:
        """The value, or ``default`` when undefined (for arrays of per-clip values)."""
        return self.value if self.defined else default

    def to_dict(self) -> dict:
        """JSON-ready: ``{"value", "confidence"}`` or ``{"value": None, "reason"}``."""
        if self.defined:
            return {"value": self.value, "confidence": round(self.confidence, 4)}
        return {"value": None, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.value:.4g} (confidence {self.confidence:.2f})" if self.defined else f"undefined: {self.reason}"
