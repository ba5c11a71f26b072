"""The web UI's progress bar shows the share of the whole run done, not "sampling N/M steps": the pipelines report
(done, total) in their own units (the Foley tab's features, steps and decoding; the Generate tab's steps over every
window), so the page read "sampling 485/1000 steps" while features were still being extracted."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from test_ui_checked_inputs import demo, tiny_model  # noqa: F401 (fixtures)


def test_the_bar_shows_a_share_of_the_run(demo):  # noqa: F811
    (fn,) = [f for f in demo.fns.values() if f.api_name == "joint"]
    calls = []
    payloads = ["a red ball bounces", 0, 0.5, 1, 3.5, "t2av", None, None, "keep"]
    values = [c.preprocess(p) if p is not None else None for c, p in zip(fn.inputs, payloads, strict=True)]
    record = lambda *a, **k: calls.append((a, k))  # noqa: E731
    asyncio.run(fn.fn(*values, request=SimpleNamespace(session_hash="t"), progress=record))
    shares = [a[0] for a, k in calls if k.get("desc") == "generating"]
    assert shares and all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in shares) and shares[-1] == 1.0
    assert not any(k.get("unit") == "steps" or k.get("desc") == "sampling" for _, k in calls)
