"""Binaural generation: the dual-branch flow model, its conditioning, the feature codec, the spatialiser and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avflow.codecs.binaural_features import FEATURES_FILE, BinauralFeatures, load_features, num_tokens
from avflow.eval.spatial import ild, itd_gcc_phat
from avflow.flow import cfg, sample
from avflow.models.binaural import MODEL_FILE, BinauralConfig, BinauralFlow, load_binaural, save_binaural
from avflow.nn.spatiotemporal import video_features
from avflow.pipelines.spatialise import amplitude_pan, spatialise
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask

SR = 16000


def moving_square(t: int = 16, h: int = 16, w: int = 32, side: str = "left", seed: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) uint8: grey background, a white 4x4 square bouncing vertically on one side."""
    rng = np.random.default_rng(seed)
    frames = np.full((t, h, w, 3), 60, dtype=np.uint8)
    x0 = rng.integers(1, w // 2 - 5) if side == "left" else rng.integers(w // 2 + 1, w - 5)
    for k in range(t):
        y = int(abs((k % 8) - 4) * (h - 5) / 4)
        frames[k, y : y + 4, x0 : x0 + 4] = 255
    return frames


def tiny_model(seed: int = 0, nonzero: bool = True) -> BinauralFlow:
    torch.manual_seed(seed)
    model = BinauralFlow(BinauralConfig(dim=32, depth=2, heads=2, bins=8))
    if nonzero:  # zero-initialised output layers would make every velocity 0 (and any symmetry test trivial)
        with torch.no_grad():
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.1)
    return model


def conditions(frames: np.ndarray, n: int, fps: float = 16.0, bins: int = 8) -> dict[str, torch.Tensor]:
    f = video_features(frames, fps, n, bins=bins)
    return {"timing": f["timing"][None], "spatial": f["spatial"][None], "video_on": torch.ones(1)}


def test_forward_backward_sampling():
    model = tiny_model(nonzero=False)
    b, n = 2, 9
    cond = {k: torch.cat([v, v]) for k, v in conditions(moving_square(), n).items()}
    batch = {
        "streams": {s: torch.randn(b, n, 20) for s in ("left", "right")},
        "cond": cond,
        "seed": torch.tensor([1, 2]),
    }
    task = FlowMatchingTask(FlowMatchingConfig(cond_dropout=0.5))
    loss = task.loss(model, task.prepare(batch, torch.device("cpu")))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.out.weight.grad is not None and model.out.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    noise = {s: torch.randn(b, n, 20) for s in ("left", "right")}
    result = sample(tiny_model(), noise, cond, steps=3, guidance=cfg(2.0, cond=tiny_model().empty_conditions(b, n)))
    assert result.nfe == 6
    assert all(result.streams[s].shape == (b, n, 20) and torch.isfinite(result.streams[s]).all() for s in noise)
    off = tiny_model().velocity(noise, {s: torch.zeros(b) for s in noise}, cond, cross_modal=False)
    on = tiny_model().velocity(noise, {s: torch.zeros(b) for s in noise}, cond)
    assert not torch.allclose(off["left"], on["left"])  # cross_modal=False really removes the video


def test_mirrored_video_swaps_the_ears():
    """Exact up to float summation order: the tolerance is atol = rtol = 1e-5."""
    model = tiny_model(seed=1).eval()
    frames = moving_square(side="left", seed=3)
    frames[:, 2:6, 20:23] = 200  # a second, static object elsewhere
    n = 12
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, n, 20, generator=g), torch.randn(1, n, 20, generator=g)
    t = {"left": torch.tensor([0.3]), "right": torch.tensor([0.3])}
    with torch.no_grad():
        out = model.velocity({"left": a, "right": b}, t, conditions(frames, n))
        mirrored = model.velocity({"left": b, "right": a}, t, conditions(frames[:, :, ::-1].copy(), n))
    torch.testing.assert_close(mirrored["left"], out["right"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mirrored["right"], out["left"], atol=1e-5, rtol=1e-5)
    # not trivially symmetric: swapping the ears without mirroring the video changes the result
    with torch.no_grad():
        swapped = model.velocity({"left": b, "right": a}, t, conditions(frames, n))
    assert (swapped["left"] - out["right"]).abs().max() > 1e-3


def test_feature_codec_shapes_and_level_difference():
    codec = load_features(FEATURES_FILE)
    assert isinstance(codec, BinauralFeatures)
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(8000).astype(np.float32)) * 0.1
    audio = torch.stack([noise, 0.3 * noise])[None]  # left louder by 10.5 dB
    z = codec.encode(audio)
    assert z["left"].shape == (1, num_tokens(8000), 20) == (1, 16, 20)
    y = codec.decode(z, 8000, iters=8)[0].numpy()
    assert y.shape == (2, 8000)
    assert ild(y) > 6.0 and itd_gcc_phat(y, SR) > 0  # the level difference survives; the ITD follows from it


@pytest.mark.parametrize("side", ["left", "right"])
def test_spatialiser_follows_the_object(side: str):
    frames = moving_square(t=16, side=side)
    mono = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.1
    out = spatialise(mono, SR, frames, fps=16.0)
    sign = 1 if side == "left" else -1
    assert out.shape == (2, SR)
    assert sign * ild(out) > 1.0 and sign * itd_gcc_phat(out, SR) > 5e-5
    pan = amplitude_pan(mono, SR, frames, fps=16.0)
    assert sign * ild(pan) > 1.0 and abs(itd_gcc_phat(pan, SR)) < 1e-5


def test_model_save_load_roundtrip(tmp_path):
    model = tiny_model(seed=2)
    save_binaural(model, tmp_path / "m.safetensors")
    loaded = load_binaural(tmp_path / "m.safetensors")
    x = {s: torch.randn(1, 5, 20) for s in ("left", "right")}
    t = {s: torch.tensor([0.5]) for s in x}
    cond = loaded.empty_conditions(1, 5)
    torch.testing.assert_close(loaded.velocity(x, t, cond)["left"], model.half().float().velocity(x, t, cond)["left"])


@pytest.mark.parametrize("mode", ["spatialise", "model"])
def test_cli_writes_stereo_mp4_of_the_video_duration(tmp_path, mode: str, capsys):
    from avflow.cli import main
    from avflow.data.media import probe, read_audio, write_video

    assert MODEL_FILE.is_file(), "the trained binaural model ships with the package"
    frames = np.repeat(np.repeat(moving_square(t=20, h=16, w=32), 2, axis=1), 2, axis=2)  # (20, 32, 64, 3)
    mono = np.random.default_rng(0).standard_normal((1, int(1.25 * SR))).astype(np.float32) * 0.05
    src = write_video(tmp_path / "in.mp4", frames, 16, audio=mono, sample_rate=SR)
    out = tmp_path / "out.mp4"
    assert main(["binaural", str(src), "-o", str(out), "--mode", mode, "--steps", "4"]) == 0
    assert "its audio track kept as track 2 (--audio keep)" in capsys.readouterr().out
    info = probe(out)
    assert info.has_audio and info.audio_channels == 2 and info.audio_tracks == 2  # the new track, then the video's
    audio, sr = read_audio(out)
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] / sr - probe(src).duration) < 1e-3
    if mode == "spatialise":  # the `avflow foley --binaural` path: a generated mono track + the video
        from avflow.pipelines.spatialise import spatialise_video

        stereo = spatialise_video(mono[0], SR, str(src))
        assert stereo.shape == (2, mono.shape[1]) and ild(stereo) > 1.0  # the square is on the left
