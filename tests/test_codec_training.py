"""Each world codec trains through its shipped config and `avflow train` (tiny widths, a tiny world made here): the
loss goes down, and the run's log makes a card table. Validation reads 4 training clips (a batch is 4 clips)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avflow.cli import main as cli_main
from avflow.world.dataset import make_dataset
from avflow.world.scene import WorldConfig

REPO = Path(__file__).resolve().parents[1]
STEPS = 40
DROP = {"video": 0.8, "audio": 0.9}  # last 8 steps' mean loss below this fraction of the first 8 steps' (seeded runs:
# video 0.52, audio 0.82; the audio loss keeps a large multi-resolution STFT term early on)
TINY = {
    "video": ["model.args.channels=[8,16,16]", "model.args.latent_blocks=1"],
    "audio": ["model.args.width=16", "model.args.frame_blocks=1", "model.args.latent_blocks=1"],
}


def codec_card():
    spec = importlib.util.spec_from_file_location("codec_card", REPO / "scripts" / "codec_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_into_shipped_folder(which: str, run: Path, out: Path) -> None:
    """scripts/export_codecs.py `which` from `run` into `out`, a folder holding the shipped other codec."""
    import shutil

    from avflow.codecs.world import default_codec_dir

    other = "audio" if which == "video" else "video"
    out.mkdir()
    shutil.copy(default_codec_dir() / f"{other}.safetensors", out)
    shutil.copy(default_codec_dir() / "codecs.json", out)
    spec = importlib.util.spec_from_file_location("export_codecs", REPO / "scripts" / "export_codecs.py")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    assert export.main([which, str(run), "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    make_dataset(root, 6, seed=3, config=WorldConfig(duration=2.0, fps=16))  # 4 train, 1 val, 1 test clips
    return root


@pytest.mark.slow
@pytest.mark.parametrize("which", ["video", "audio"])
def test_codec_trains_through_its_config(which, world, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [
        f"out_dir={run}", f"data.train.args.root={world}", f"data.val.args.root={world}",
        "data.val.args.split=train", "data.val.args.max_clips=4", f"train.steps={STEPS}",
        "train.batch_size=4", "train.threads=1", "schedule.warmup_steps=2", "log.every=1", "log.val_every=20",
        "log.val_batches=1", "log.sample_every=0", f"checkpoint.every={STEPS}", *TINY[which],
    ]  # fmt: skip
    assert cli_main(["train", str(REPO / "configs" / "codecs" / f"world_{which}.yaml"), *overrides]) == 0
    capsys.readouterr()  # the trainer's last line
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = np.array([r["loss"] for r in lines if "loss" in r])
    assert loss.size == STEPS and np.isfinite(loss).all()
    assert loss[-8:].mean() < DROP[which] * loss[:8].mean(), loss
    assert [r["step"] for r in lines if "val_loss" in r] == [20, 40]

    card = codec_card()
    assert card.main([str(run), "--every", "10"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| step | train loss | val_loss |") and len(table) == 2 + STEPS // 10 + 2


def test_decoder_heads_config_trains_the_head_alone_and_exports_with_the_same_checksum(world, tmp_path):
    """configs/codecs/world_audio_synthesis_envelope.yaml (the shipped codec's last decoder head, trained on the rest of
    it, here loaded from the shipped file itself): only the envelope head changes, its validation measures are
    logged, and the export keeps every other stored tensor byte for byte (so the latent checksum)."""
    from avflow.codecs.world import default_codec_dir, load_world_codecs
    from avflow.weights import read_state_dict

    run, out = tmp_path / "run", tmp_path / "codecs"
    overrides = [
        f"out_dir={run}", f"data.train.args.root={world}", f"data.val.args.root={world}",
        "data.val.args.split=train", "data.val.args.max_clips=4", "train.steps=4", "train.batch_size=4",
        "schedule.warmup_steps=1", "log.every=1", "log.val_every=2", "log.val_batches=1", "log.sample_every=2",
        "checkpoint.every=4", f"init.weights={default_codec_dir() / 'audio.safetensors'}",
    ]  # fmt: skip
    config = REPO / "configs" / "codecs" / "world_audio_synthesis_envelope.yaml"
    assert cli_main(["train", str(config), *overrides]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    samples = [r for r in lines if "sample/envelope_db" in r]
    assert [r["step"] for r in samples] == [2, 4] and all(r["sample/envelope_db_no_gains"] > 0 for r in samples)
    export_into_shipped_folder("audio", run, out)
    shipped = read_state_dict(default_codec_dir() / "audio.safetensors")
    again = read_state_dict(out / "audio.safetensors")
    assert set(again) == set(shipped)
    kept = [k for k in shipped if not k.startswith("envelope.")]
    assert all(torch.equal(again[k], shipped[k]) for k in kept)
    assert any(not torch.equal(again[k], shipped[k]) for k in shipped if k.startswith("envelope."))
    assert load_world_codecs(out).checksum == load_world_codecs().checksum


def test_video_refine_config_trains_the_decoder_alone_and_exports_with_the_same_checksum(world, tmp_path):
    """configs/codecs/world_video_refine.yaml (the shipped video decoder trained further, with its full-resolution
    stage, on the frozen encoder): the export keeps the encoder's stored tensors byte for byte, so the latent
    checksum, and changes the decoder."""
    from avflow.codecs.world import default_codec_dir, load_world_codecs
    from avflow.weights import read_state_dict

    run, out = tmp_path / "run", tmp_path / "codecs"
    overrides = [
        f"out_dir={run}", f"data.train.args.root={world}", f"data.val.args.root={world}",
        "data.val.args.split=train", "data.val.args.max_clips=4", "train.steps=3", "train.batch_size=2",
        "schedule.warmup_steps=1", "log.every=1", "log.val_every=3", "log.val_batches=1", "log.sample_every=0",
        "checkpoint.every=3", f"init.weights={default_codec_dir() / 'video.safetensors'}",
    ]  # fmt: skip
    assert cli_main(["train", str(REPO / "configs" / "codecs" / "world_video_refine.yaml"), *overrides]) == 0
    export_into_shipped_folder("video", run, out)
    shipped = read_state_dict(default_codec_dir() / "video.safetensors")
    again = read_state_dict(out / "video.safetensors")
    assert set(again) == set(shipped)
    encoder = [k for k in shipped if k.startswith(("enc_frames.", "enc_fold.", "latent_scale"))]
    assert encoder and all(torch.equal(again[k], shipped[k]) for k in encoder)
    assert any(not torch.equal(again[k], shipped[k]) for k in shipped if k.startswith("dec_"))
    assert load_world_codecs(out).checksum == load_world_codecs().checksum
