"""The cue transfer of avflow.pipelines.cue_transfer: a rendered pair's ILD and ITD carried onto another mono."""

import numpy as np
import pytest

from avflow.eval import spatial
from avflow.pipelines.cue_transfer import transfer_cues

SR = 16000


def rendered_pair(ild_db: float, delay: int, seed: int = 0) -> np.ndarray:
    """(2, S) noise with the left ear `ild_db` louder and leading by `delay` samples (negative: the right leads)."""
    s = np.random.default_rng(seed).standard_normal(SR + 64)
    gain = 10.0 ** (ild_db / 40.0)
    left, right = gain * s[32 : 32 + SR], s[32 - delay : 32 - delay + SR] / gain
    return np.stack([left, right])


@pytest.mark.parametrize("ild_db, delay", [(6.0, 8), (-4.0, -5)])
def test_transfer_carries_ild_and_itd_and_keeps_the_mono(ild_db, delay):
    mono = np.random.default_rng(7).standard_normal(SR).astype(np.float32) * 0.1
    out = transfer_cues(mono, rendered_pair(ild_db, delay))
    assert out.shape == (2, SR)
    residual = np.sqrt(np.mean((out.mean(0) - mono) ** 2)) / np.sqrt(np.mean(mono**2))
    assert residual < 0.03  # (L + R) / 2 is the given mono (exact but in the few bins where |D| is floored)
    assert spatial.ild(out) == pytest.approx(ild_db, abs=1.0)  # sign and magnitude of the ILD
    assert 1e6 * spatial.itd_gcc_phat(out, SR) == pytest.approx(1e6 * delay / SR, abs=70.0)  # ITD > 0: left leads


def test_transfer_refuses_a_mono_pair():
    with pytest.raises(ValueError, match="mono"):
        transfer_cues(np.zeros(100), np.zeros(100))
