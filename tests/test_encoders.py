"""Feature encoders: CLIP towers, tokenizer, Synchformer, video preprocessing, the Encoders object."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from avflow.encoders.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from avflow.encoders.features import Encoders, load_clip, load_synchformer
from avflow.encoders.preprocess import (
    CLIP_FPS,
    SYNC_FPS,
    clip_frames_transform,
    frame_counts,
    load_encoder_frames,
    resize_bicubic,
    resize_short_side,
)
from avflow.encoders.synchformer import Synchformer, SynchformerConfig, split_segments
from avflow.encoders.tokenizer import CLIPTokenizer
from avflow.errors import WeightsError

TOL = dict(atol=1e-4, rtol=1e-4)
# Resize vs Pillow's bicubic on natural-looking frames, in grey levels (0-255). Measured: max 2, mean <= 0.007, except
# when one axis is upsampled and the other downsampled (480x360 -> 384x384): max 6, mean 0.24 (rounding of the
# intermediate pass at hard edges).
RESIZE_MAX_ABS, RESIZE_MEAN_ABS = 8, 0.3


def tiny_clip(fixtures) -> tuple[CLIP, dict]:
    meta = json.loads((fixtures / "clip" / "clip_tiny.json").read_text())
    model = CLIP(CLIPConfig.from_open_clip(meta["constructor"])).eval()
    model.load_state_dict(load_file(fixtures / "clip" / "clip_tiny.weights.safetensors"), strict=True)
    return model, load_file(fixtures / "clip" / "clip_tiny.io.safetensors")


def tiny_synchformer(fixtures) -> tuple[Synchformer, dict]:
    meta = json.loads((fixtures / "synchformer" / "synchformer_visual_tiny.json").read_text())["constructor"]
    config = SynchformerConfig(
        embed_dim=meta["embed_dim"], num_heads=meta["num_heads"], depth=meta["depth"], img_size=meta["img_size"]
    )
    model = Synchformer(config).eval()
    model.load_state_dict(load_file(fixtures / "synchformer" / "synchformer_visual_tiny.weights.safetensors"))
    return model, load_file(fixtures / "synchformer" / "synchformer_visual_tiny.io.safetensors")


def random_init(model: torch.nn.Module) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def small_clip(vision: CLIPVisionConfig) -> CLIP:
    return CLIP(CLIPConfig(embed_dim=16, vision=vision, text=CLIPTextConfig(width=16, heads=1, layers=1)))


def full_grid_encoders(window_s: float = 2.0) -> Encoders:
    """Narrow models that take real 384 px / 224 px frames (official grids), random weights."""
    clip = small_clip(CLIPVisionConfig(width=32, layers=1, head_width=16))
    sync = Synchformer(SynchformerConfig(embed_dim=32, num_heads=2, depth=1))
    return Encoders(random_init(clip), random_init(sync), clip_batch=5, sync_batch=2, window_s=window_s)


def write_test_video(path, fps: Fraction, n_frames: int, size=(48, 64)) -> None:
    """Frame i is a flat grey of level 6 * i (lossless h264) with a small moving square."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv444p"
        stream.options = {"qp": "0"}
        for i in range(n_frames):
            img = np.full((*size, 3), (6 * i) % 256, dtype=np.uint8)
            img[:4, i % size[1] : i % size[1] + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def natural_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients + hard-edged shapes + sensor-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([xx / width * 255, yy / height * 255, 128 + 100 * np.sin(xx / 23 + yy / 37)], -1)
    img[height // 4 : height // 2, width // 5 : width // 2] = [250, 30, 30]
    img[(yy - 0.7 * height) ** 2 + (xx - 0.7 * width) ** 2 < (0.15 * height) ** 2] = [20, 200, 40]
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ CLIP


def test_clip_image_tower_matches_fixture(fixtures):
    model, io = tiny_clip(fixtures)
    enc = Encoders(model, Synchformer(SynchformerConfig(embed_dim=8, num_heads=1, depth=0)), clip_batch=3)
    torch.testing.assert_close(enc.encode_clip(io["frames"]), io["image_features"], **TOL)
    x = (io["frames"] * 255.0).round().clamp(0, 255).to(torch.uint8)  # uint8 path normalises the same way
    assert enc.encode_clip(x).shape == io["image_features"].shape
    with torch.no_grad():
        frames = io["frames_normalized"]  # (B, T, 3, H, W), as the fixture's .json describes
        raw = model.encode_image(frames.flatten(0, 1), normalize=False).unflatten(0, frames.shape[:2])
    torch.testing.assert_close(raw, io["image_features_unnormalized"], **TOL)


def test_clip_text_tower_matches_fixture(fixtures):
    model, io = tiny_clip(fixtures)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(io["tokens"]), io["text_features"], **TOL)
        torch.testing.assert_close(model.encode_text(io["tokens"], normalize=False), io["text_features_unnormalized"])
    enc = Encoders(model, Synchformer(SynchformerConfig(embed_dim=8, num_heads=1, depth=0)))
    meta = json.loads((fixtures / "clip" / "clip_tiny.json").read_text())
    torch.testing.assert_close(enc.encode_text(meta["tokenizer_strings"]), io["text_features"][:3], **TOL)


def test_clip_official_layout_on_meta(fixtures):
    official = json.loads((fixtures / "clip" / "official_state_dicts.json").read_text())["dfn5b_clip_vit_h_14_384"]
    with torch.device("meta"):
        model = CLIP(CLIPConfig.from_open_clip(official["config"]))
        default = CLIP()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == official["state_dict"]
    assert {k: list(v.shape) for k, v in default.state_dict().items()} == official["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == official["param_count"]
    assert sum(p.numel() for p in model.visual.parameters()) == official["param_count_visual"]
    with torch.device("meta"):  # 384 px frames give the 378 px model's 27x27 grid: the conv drops 6 px
        assert model.visual(torch.empty(1, 3, 384, 384)).shape == (1, 1024)
        with pytest.raises(ValueError, match="27x27"):
            model.visual(torch.empty(1, 3, 392, 392))


# ------------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_matches_fixture(fixtures):
    meta = json.loads((fixtures / "clip" / "clip_tiny.json").read_text())
    io = load_file(fixtures / "clip" / "clip_tiny.io.safetensors")
    tok = CLIPTokenizer()
    assert torch.equal(tok(meta["tokenizer_strings"]), io["tokens_strings"])
    assert tok.vocab_size == 49408 and (tok.sot_id, tok.eot_id) == (49406, 49407)
    vocab_copy = CLIPTokenizer(str(fixtures / "clip" / "bpe_simple_vocab_16e6.txt.gz"))
    assert torch.equal(vocab_copy(meta["tokenizer_strings"]), io["tokens_strings"])


def test_tokenizer_cleaning_and_truncation():
    tok = CLIPTokenizer()
    assert tok.encode("A  Dog &amp;\n\tcat") == tok.encode("a dog & cat")
    assert tok.encode("\u201cquoted\u201d \ufb01ne") == tok.encode('"quoted" fine')
    assert tok.decode(tok.encode("glass shattering")).strip() == "glass shattering"
    long = tok(["word " * 200])
    assert long.shape == (1, 77) and long[0, 0] == tok.sot_id and long[0, -1] == tok.eot_id


# ------------------------------------------------------------------------------------------------ Synchformer


def test_synchformer_matches_fixture(fixtures):
    model, io = tiny_synchformer(fixtures)
    with torch.no_grad():
        torch.testing.assert_close(model(split_segments(io["video"])), io["segment_features"], **TOL)
    enc = Encoders(small_clip(CLIPVisionConfig(width=8, layers=0, head_width=8)), model, sync_batch=3)
    torch.testing.assert_close(enc.encode_sync(io["video"]), io["features"], **TOL)


def test_synchformer_official_layout_on_meta(fixtures):
    official = json.loads((fixtures / "synchformer" / "official_state_dicts.json").read_text())["synchformer_visual"]
    with torch.device("meta"):
        model = Synchformer()
        assert model(torch.empty(1, 2, 16, 3, 224, 224)).shape == (1, 2, 8, 768)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == official["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == official["param_count"]


# ------------------------------------------------------------------------------------------------ preprocessing


def mmaudio_expected(times: list[float], requested: float) -> tuple[int, int, float]:
    """MMAudio's load_video, written out: a stream at F fps has one frame per target k / F that some source frame in
    [k / F, requested] fills; the duration is cut to what both streams cover; then int(8 d) and int(25 d) frames."""
    last = max(t for t in times if t <= requested + 1e-6)
    n8, n25 = (int(np.floor(last * rate + 1e-6)) + 1 for rate in (8, 25))
    d = min(requested, n8 / 8, n25 / 25)
    return int(np.floor(8 * d + 1e-9)), int(np.floor(25 * d + 1e-9)), d


@pytest.mark.parametrize("fps", [Fraction(16), Fraction(24000, 1001), Fraction(25), Fraction(30)])
def test_frame_sampling_and_counts(tmp_path, fps):
    n_src = int(1.3 * fps)
    path = tmp_path / f"v{float(fps):.3f}.mp4"
    write_test_video(path, fps, n_src)
    times = [i / fps for i in range(n_src)]
    clip, sync, duration = load_encoder_frames(path)
    n_clip, n_sync, d = mmaudio_expected(times, n_src / fps)
    assert duration == pytest.approx(d) and frame_counts(duration) == (n_clip, n_sync)
    assert clip.shape == (n_clip, 3, 384, 384) and clip.dtype == torch.uint8
    assert sync.shape == (n_sync, 3, 224, 224) and sync.dtype == torch.uint8
    assert n_clip >= 9 and n_sync >= 29
    for frames, rate in ((clip, CLIP_FPS), (sync, SYNC_FPS)):  # frame k = first source frame at or after k / rate
        expected = [6 * int(np.ceil(k / rate * fps - 1e-6)) for k in range(len(frames))]
        level = frames[:, :, -20:, :].float().mean(dim=(1, 2, 3))  # bottom rows: flat grey 6 * source index
        assert torch.allclose(level, torch.tensor(expected, dtype=torch.float32), atol=1.0)
    short_clip, short_sync, short_d = load_encoder_frames(path, duration=0.7)
    n_clip, n_sync, d = mmaudio_expected(times, 0.7)
    assert (len(short_clip), len(short_sync)) == (n_clip, n_sync) and short_d == pytest.approx(d)
    assert torch.equal(short_sync, sync[:n_sync]) and torch.equal(short_clip, clip[:n_clip])


def test_resize_close_to_pillow_bicubic():
    errors = []
    for seed, (h, w) in enumerate([(360, 640), (480, 360), (270, 480), (240, 320), (144, 176)]):
        img = natural_frame(h, w, seed)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        for out in [(384, 384), tuple(resize_short_side(x, 224).shape[-2:])]:
            ours = resize_bicubic(x, out)[0].permute(1, 2, 0).numpy().astype(np.int32)
            ref = np.asarray(Image.fromarray(img).resize(out[::-1], Image.BICUBIC)).astype(np.int32)
            errors.append(np.abs(ours - ref))
    assert max(e.max() for e in errors) <= RESIZE_MAX_ABS
    assert max(e.mean() for e in errors) <= RESIZE_MEAN_ABS
    assert resize_short_side(torch.zeros(1, 3, 360, 640, dtype=torch.uint8), 224).shape[-2:] == (224, 398)
    assert clip_frames_transform(torch.zeros(2, 3, 360, 640, dtype=torch.uint8)).shape == (2, 3, 384, 384)


# ------------------------------------------------------------------------------------------------ Encoders


def test_encode_video_streams_like_whole(tmp_path):
    path = tmp_path / "clip.mp4"
    write_test_video(path, Fraction(30), 45)  # 1.5 s
    enc = full_grid_encoders(window_s=0.4)  # several windows, segments straddle them
    feats = enc.encode_video(path, text="a dog barking")
    clip, sync, duration = load_encoder_frames(path)
    assert feats.clip_f.shape == (1, 11, 16) and feats.sync_f.shape == (1, 8 * 3, 32)  # d = 37 / 25 s
    assert feats.text_f.shape == (1, 77, 16)
    torch.testing.assert_close(feats.clip_f, enc.encode_clip(clip[None]))
    torch.testing.assert_close(feats.sync_f, enc.encode_sync(sync[None]))
    batch = enc.encode_videos([path, path], duration=1.0)
    assert batch.clip_f.shape == (2, 8, 16) and batch.sync_f.shape == (2, 8 * 2, 32)
    torch.testing.assert_close(batch.sync_f[1], feats.sync_f[0, :16])


# ------------------------------------------------------------------------------------------------ weights


def test_weight_files_give_one_line_errors(tmp_path, fixtures):
    for loader in (load_clip, load_synchformer):
        with pytest.raises(WeightsError, match="not found") as err:
            loader(tmp_path / "missing.safetensors")
        assert "\n" not in str(err.value)
    for name in ("corrupt.safetensors", "corrupt.pth"):
        bad = tmp_path / name
        bad.write_bytes(b"\x00\x01garbage" * 100)
        with pytest.raises(WeightsError, match="corrupt") as err:
            load_clip(bad)
        assert "\n" not in str(err.value) and name in str(err.value)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(
        (fixtures / "synchformer" / "synchformer_visual_tiny.weights.safetensors").read_bytes()[:5000]
    )
    with pytest.raises(WeightsError):
        load_synchformer(truncated)
    wrong = tmp_path / "wrong.safetensors"  # readable, but the tiny model does not fit the official layout
    save_file(load_file(fixtures / "clip" / "clip_tiny.weights.safetensors"), wrong)
    with pytest.raises(WeightsError, match="does not match CLIP") as err:
        load_clip(wrong)
    assert "\n" not in str(err.value)


def test_loaders_read_official_layouts(tmp_path, fixtures):
    weights = load_file(fixtures / "synchformer" / "synchformer_visual_tiny.weights.safetensors")
    pth = tmp_path / "synchformer_state_dict.pth"  # the official file also holds audio / sync-transformer keys
    torch.save({**weights, "afeat_extractor.x": torch.zeros(1)}, pth)
    model, io = tiny_synchformer(fixtures)
    cfg = model.config
    loaded = load_synchformer(pth, cfg)
    with torch.no_grad():
        torch.testing.assert_close(loaded(split_segments(io["video"])), io["segment_features"], **TOL)
    meta = json.loads((fixtures / "clip" / "clip_tiny.json").read_text())["constructor"]
    clip = load_clip(fixtures / "clip" / "clip_tiny.weights.safetensors", CLIPConfig.from_open_clip(meta))
    assert clip.visual.proj.shape == (meta["vision_cfg"]["width"], meta["embed_dim"])
