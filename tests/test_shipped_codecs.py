"""The shipped world codecs (avflow/assets/codecs): they load through `load_world_codecs`, fit the size budgets and
meet a loose floor on world clips generated here (test-split seeds, never trained on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avflow.codecs.world import default_codec_dir, load_world_codecs
from avflow.eval.event_audio import compare_event_audio
from avflow.eval.side import event_cues
from avflow.eval.video_quality import frame_psnr
from avflow.world.dataset import clip_seed, make_clip
from avflow.world.scene import WorldConfig

ASSETS = Path(__file__).resolve().parents[1] / "avflow" / "assets"
MB = 1_000_000
CLIPS = 3  # 2 s world clips
MIN_ILD_DB = 1.0  # events whose ground-truth |ILD| is at least this have a side to get right


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_all_assets_fit_in_25_mb():
    size = folder_bytes(ASSETS)
    assert size <= 25 * MB, f"avflow/assets holds {size / MB:.2f} MB, the budget is 25 MB"


def test_world_codecs_fit_in_5_mb():
    folder = default_codec_dir()
    assert folder.is_dir(), f"{folder}: no shipped codecs (scripts/export_codecs.py writes them)"
    size = folder_bytes(folder)
    assert size <= 5 * MB, f"the world codecs take {size / MB:.2f} MB, the budget is 5 MB"


@pytest.fixture(scope="module")
def clips():
    config = WorldConfig(duration=2.0, fps=16)
    return [make_clip(clip_seed("test", 7, i), config) for i in range(CLIPS)]


def test_shipped_codecs_meet_a_loose_floor(clips):
    codecs = load_world_codecs()  # the shipped folder
    video_codec, audio_codec = codecs.video, codecs.audio
    psnr, sides = [], []
    with torch.no_grad():
        for clip in clips:
            video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1.0  # (1, 3, T, H, W)
            z = video_codec.encode(video)
            assert z.shape == (1, video_codec.latent_channels, *video_codec.latent_shape(*clip.frames.shape[:3]))
            rec = ((video_codec.decode(z)[0] + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
            psnr.append(frame_psnr(clip.frames, rec).mean())

            wav = torch.from_numpy(clip.audio)[None]  # (1, 2, samples), 2 s: a whole number of latents
            latents = audio_codec.encode(wav)
            n = wav.shape[-1] // audio_codec.samples_per_latent
            assert {k: v.shape for k, v in latents.items()} == {
                s: (1, n, audio_codec.latent_channels) for s in ("left", "right")
            }
            back = audio_codec.decode(latents, length=wav.shape[-1])[0].numpy()  # (2, samples)
            sr = clip.meta["sample_rate"]
            heard = compare_event_audio(back, clip.audio, sr, [e["time"] for e in clip.meta["events"]]).times
            for ref, got in zip(event_cues(clip.audio, sr, heard), event_cues(back, sr, heard)):
                if ref.ild_db.defined and abs(ref.ild_db.value) >= MIN_ILD_DB:
                    sides.append(got.ild_db.defined and np.sign(got.ild_db.value) == np.sign(ref.ild_db.value))
    assert np.mean(psnr) >= 28.0, f"video PSNR {np.mean(psnr):.1f} dB < 28 dB"
    assert len(sides) >= 5, f"only {len(sides)} events with a clear side in {CLIPS} clips"
    # the shipped audio codec gets 78 % of 103 sided events right on 8 such clips (docs/codecs.md: its ILD target is
    # not met yet); chance is 50 %
    assert np.mean(sides) >= 0.65, f"ILD sign right on {np.mean(sides):.0%} of {len(sides)} sided events"
