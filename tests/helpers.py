"""Helpers shared by several test files (import as `from helpers import ...`; tests never import each other)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from avflow.codecs.audio_vae import AudioVAEConfig
from avflow.codecs.bigvgan import BigVGANConfig
from avflow.encoders.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from avflow.encoders.synchformer import Synchformer, SynchformerConfig
from avflow.models.mmaudio import MMAudio
from avflow.models.mmaudio_config import MMAudioConfig

REPO = Path(__file__).resolve().parents[1]
TINY_FOLEY_MODEL = "tiny_test"
TEXT_DIM = 24  # text width of the tiny joint models
TINY_CLIP = CLIPConfig(
    embed_dim=16,
    vision=CLIPVisionConfig(width=32, layers=1, head_width=16),
    text=CLIPTextConfig(width=16, heads=1, layers=1),
)
TINY_SYNC = SynchformerConfig(embed_dim=32, num_heads=2, depth=1)


def fixtures_root() -> Path:
    """The reference fixtures folder: $AVFLOW_FIXTURES or ../shared/fixtures. Missing is a failure."""
    root = Path(os.environ.get("AVFLOW_FIXTURES", REPO.parent / "shared" / "fixtures"))
    if not root.is_dir():
        pytest.fail(f"reference fixtures not found at {root} (set AVFLOW_FIXTURES)", pytrace=False)
    return root


def constructor(path: Path) -> dict:
    """The `constructor` arguments a fixture was recorded with (its `.json`)."""
    return json.loads(Path(path).read_text())["constructor"]


def vae_fixture_for(fixtures: Path, latent_dim: int) -> str:
    """The name of the audio VAE fixture whose latent width (`embed_dim` in its .json) is `latent_dim`."""
    names = [p.name.removesuffix(".json") for p in sorted((fixtures / "mmaudio").glob("vae_tiny_*.json"))]
    fitting = [n for n in names if constructor(fixtures / "mmaudio" / f"{n}.json")["embed_dim"] == latent_dim]
    if not fitting:
        pytest.fail(f"no VAE fixture with {latent_dim}-dim latents among {names}", pytrace=False)
    return fitting[0]


def tiny_foley_model(fixtures: Path, steps: int):
    """The tiny fixture network with the VAE fixture of the same latent width and the 16 kHz vocoder, as a
    FoleyModel sampling with `steps` steps."""
    from avflow.codecs.audio_vae import AudioVAE
    from avflow.codecs.bigvgan import BigVGAN
    from avflow.models.mmaudio import load_official_state_dict
    from avflow.models.mmaudio_config import SAMPLING
    from avflow.pipelines.foley_model import FoleyModel

    mm, bv = fixtures / "mmaudio", fixtures / "bigvgan"
    network = MMAudio(MMAudioConfig(**constructor(mm / "network_tiny_v1.json")))
    load_official_state_dict(network, mm / "network_tiny_v1.weights.safetensors")
    vae_name = vae_fixture_for(fixtures, network.config.latent_dim)
    vae = AudioVAE(AudioVAEConfig(**constructor(mm / f"{vae_name}.json")))
    vae.load_weights(load_file(mm / f"{vae_name}.weights.safetensors"))
    vocoder = BigVGAN(BigVGANConfig.from_dict(constructor(bv / "bigvgan_v1_tiny.json")))
    vocoder.load_weights(load_file(bv / "bigvgan_v1_tiny.weights.safetensors"))
    return FoleyModel(network.eval(), vae.eval(), vocoder.eval(), SAMPLING.override(steps=steps))


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter with seeded Gaussian values (so zero-initialised paths carry signal)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def tiny_foley_raw_files(raw: Path, fixtures: Path) -> tuple[dict[str, tuple[str, str]], dict]:
    """Official-format files of a tiny foley model written to `raw`: ({stem: (file name, subkey)}, spec arguments).

    The network takes the fixture network's layout with small encoder widths; its latent width comes from the
    fixture's `.json`, and so does the VAE (the one whose `embed_dim` matches it) and the vocoder.
    """
    mm, bv = fixtures / "mmaudio", fixtures / "bigvgan"
    tiny = constructor(mm / "network_tiny_v1.json")
    net_cfg = MMAudioConfig(**{**tiny, "clip_dim": 16, "sync_dim": 32, "text_dim": 16, "text_seq_len": 77})
    vae_name = vae_fixture_for(fixtures, net_cfg.latent_dim)
    net = randomize_(MMAudio(net_cfg), 1, 0.05)
    with torch.no_grad():
        net.latent_mean.zero_()
        net.latent_std.fill_(1.0)
    torch.save(net.state_dict(), raw / "tiny_net.pth")  # official MMAudio .pth: a flat state dict
    torch.save(load_file(mm / f"{vae_name}.weights.safetensors"), raw / "tiny_vae.pth")
    vocoder = load_file(bv / "bigvgan_v1_tiny.weights.safetensors")
    torch.save({"generator": vocoder}, raw / "tiny_vocoder.pt")  # as best_netG.pt
    sync = randomize_(Synchformer(TINY_SYNC), 2).state_dict()
    torch.save({**sync, "afeat_extractor.dummy": torch.zeros(1)}, raw / "tiny_sync.pth")  # whole Synchformer file
    save_file(randomize_(CLIP(TINY_CLIP), 3).state_dict(), raw / "tiny_clip.safetensors")  # open_clip layout
    files = {
        "tiny_net": ("tiny_net.pth", ""),
        "tiny_vae": ("tiny_vae.pth", ""),
        "tiny_vocoder": ("tiny_vocoder.pt", "generator"),
        "tiny_sync": ("tiny_sync.pth", ""),
        "tiny_clip": ("tiny_clip.safetensors", ""),
    }
    spec = dict(
        network="tiny_net",
        vae="tiny_vae",
        vocoder="tiny_vocoder",
        synchformer="tiny_sync",
        clip="tiny_clip",
        network_config=net_cfg,
        vae_config=AudioVAEConfig(**constructor(mm / f"{vae_name}.json")),
        vocoder_config=BigVGANConfig.from_dict(constructor(bv / "bigvgan_v1_tiny.json")),
        clip_config=TINY_CLIP,
        synchformer_config=TINY_SYNC,
    )
    return files, spec


def install_tiny_foley(monkeypatch, home: Path, source: Path, files: dict[str, tuple[str, str]], spec) -> Path:
    """$AVFLOW_HOME = `home` holding the raw files (with MD5s) and the tiny model registered under TINY_FOLEY_MODEL."""
    from avflow import hub
    from avflow.pipelines.foley_variants import VARIANTS
    from avflow.weights import md5_file

    (home / "raw").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("AVFLOW_HOME", str(home))
    monkeypatch.delenv("AVFLOW_OFFLINE", raising=False)
    for stem, (name, subkey) in files.items():
        (home / "raw" / name).write_bytes((source / name).read_bytes())
        monkeypatch.setitem(hub.ASSETS, stem, hub.Asset(name, md5=md5_file(source / name), subkey=subkey))
    monkeypatch.setitem(hub.MODELS, TINY_FOLEY_MODEL, list(files))
    monkeypatch.setitem(VARIANTS, TINY_FOLEY_MODEL, spec)
    return home


def always_winograd(monkeypatch) -> None:
    """Pin the measured Winograd choice to Winograd on every kernel-3 convolution: timed per shape, it could differ
    by run and by CPU, and a test of the fast path or of exact bits must not hang on that."""
    from avflow.nn import mmaudio_blocks, winograd

    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    monkeypatch.setattr(winograd, "pays_off", lambda *args, **kwargs: True)


def moving_square(t: int = 16, h: int = 16, w: int = 32, side: str = "left", seed: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) uint8: grey background, a white 4x4 square bouncing vertically on one side."""
    rng = np.random.default_rng(seed)
    frames = np.full((t, h, w, 3), 60, dtype=np.uint8)
    x0 = rng.integers(1, w // 2 - 5) if side == "left" else rng.integers(w // 2 + 1, w - 5)
    for k in range(t):
        y = int(abs((k % 8) - 4) * (h - 5) / 4)
        frames[k, y : y + 4, x0 : x0 + 4] = 255
    return frames


def sweep_video_frames(fps: float, seconds: float, size=(32, 48)) -> np.ndarray:
    """(T, H, W, 3) uint8: a brightening background and a white square sweeping right."""
    n = max(1, round(seconds * fps))
    frames = np.zeros((n, *size, 3), np.uint8)
    for i in range(n):
        frames[i, :, :] = (7 * i) % 200
        x = (3 * i) % (size[1] - 8)
        frames[i, 8:16, x : x + 8] = 255
    return frames


def perturb(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter (zero-initialised gates and adaLN layers included) so every path carries signal."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def joint_inputs(batch: int = 2, frames: int = 3, tokens: int = 12):
    """Streams `video` (B, 16, frames, 4, 4) and `audio` (B, tokens, 20), times and text conditions for tiny joint
    models (text width TEXT_DIM, 5 tokens of which 3 are real)."""
    streams = {"video": torch.randn(batch, 16, frames, 4, 4), "audio": torch.randn(batch, tokens, 20)}
    t = {"video": torch.rand(batch), "audio": torch.rand(batch)}
    cond = {"text": torch.randn(batch, 5, TEXT_DIM), "text_mask": torch.tensor([[1, 1, 1, 0, 0]] * batch).bool()}
    return streams, t, cond


def shipped_default_model_is_v2() -> bool:
    """Whether the shipped avflow/assets/default_model is a v2 folder (its config.json records codecs_checksum)."""
    from avflow.pipelines.default_model import default_model_dir

    try:
        return "codecs_checksum" in json.loads((default_model_dir() / "config.json").read_text())
    except (OSError, ValueError):
        return False


def write_tiny_default_model(folder: Path, *, seed: int = 0, checksum: str | None = None) -> Path:
    """A default model v2 folder with tiny RANDOM weights, as `scripts/train_default_v2.py` exports one:
    `joint.safetensors` (fp16) and `config.json` (binaural left/right joint model, codec checksum, clip format,
    sampling), plus tiny world codecs in `folder/codecs` that config.json names. `checksum` replaces the codecs' own
    (a model trained with other codecs). Clips are 2 s windows of 32x32 at 16 fps with 16 kHz audio."""
    from avflow.codecs.world import load_world_codecs, save_codec
    from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
    from avflow.codecs.world_video_codec import WorldVideoCodec, WorldVideoCodecConfig
    from avflow.config import to_dict
    from avflow.models.audio_tower import AudioTowerConfig
    from avflow.models.joint import JointConfig, JointModel
    from avflow.models.wan import WanConfig
    from avflow.weights import save_safetensors

    folder = Path(folder)
    torch.manual_seed(seed)
    video = WorldVideoCodec(WorldVideoCodecConfig(channels=(8, 16, 16), blocks=(1, 1, 1), latent_blocks=1))
    audio = WorldAudioCodec(WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4))
    save_codec(video, folder / "codecs", "video")
    save_codec(audio, folder / "codecs", "audio")
    text_dim, text_len = 384, 16  # the tiny text encoder's width
    joint = JointConfig(
        video=WanConfig(num_attention_heads=2, attention_head_dim=12, text_dim=text_dim, freq_dim=32, ffn_dim=48,
                        num_layers=2),
        audio=AudioTowerConfig(latent_dim=2 * audio.latent_channels, text_dim=text_dim, hidden_dim=32, depth=3,
                               fused_depth=1, num_heads=2, text_seq_len=text_len),
        fusion="bidirectional", fusion_options={"heads": 2}, text_dim=text_dim, text_len=text_len, video_fps=16.0,
        audio_latent_rate=audio.latent_rate, audio_streams=("left", "right"),
    )  # fmt: skip
    model = perturb(JointModel(joint), 0.05)  # zero-initialised heads and gates carry signal too
    save_safetensors({k: v.half() for k, v in model.state_dict().items()}, folder / "joint.safetensors")
    config = {
        "joint": to_dict(joint),
        "codecs_checksum": checksum or load_world_codecs(folder / "codecs").checksum,
        "codecs": "codecs",
        "text_encoder": "tiny",
        "duration": 2.0,
        "fps": 16,
        "height": 32,
        "width": 32,
        "sample_rate": 16000,
        "sampling": {"cfg_strength": 2.0, "steps": 2, "solver": "euler"},
        "default_prompt": "a red ball bounces twice on the left",
        "training": {"note": "random weights for tests"},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def write_tiny_model_config(folder: Path, files: dict[str, tuple[str, str]], spec: dict, name: str = "tiny.json"):
    """A `--model CONFIG.json` for the tiny foley model whose official-format files lie in `folder` (as written by
    `tiny_foley_raw_files`); weight files are named relative to the config's folder."""
    from avflow.config import to_dict
    from avflow.pipelines.foley_variants import PARTS, FoleySpec

    by_stem = {stem: file for stem, (file, _) in files.items()}
    data = to_dict(FoleySpec(**{**spec, **{part: by_stem[spec[part]] for part in PARTS}}))
    path = Path(folder) / name
    path.write_text(json.dumps(data, indent=1))
    return path


class WeightReads:
    """Every attempt to read weights during a test, recorded (`calls`) and refused with an AssertionError."""

    def __init__(self, monkeypatch):
        import safetensors
        import safetensors.torch

        from avflow.models import binaural
        from avflow.pipelines import default_model
        from avflow.pipelines.binaural import BinauralPipeline
        from avflow.pipelines.foley import FoleyPipeline

        self.calls: list[str] = []
        targets = [
            (torch, "load"),
            (safetensors.torch, "load_file"),
            (safetensors.torch, "load"),
            (safetensors, "safe_open"),
            (FoleyPipeline, "load"),
            (default_model, "load_default_model"),
            (BinauralPipeline, "from_assets"),
            (binaural, "load_binaural"),
        ]
        for owner, name in targets:
            monkeypatch.setattr(owner, name, self._refuse(f"{getattr(owner, '__name__', owner)}.{name}"))

    def _refuse(self, name: str):
        def refuse(*args, **kwargs):
            self.calls.append(name)
            raise AssertionError(f"weights were read: {name}")

        return refuse


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (hidden ones included) with its size and modification time."""
    paths = sorted(Path(folder).rglob("*"))
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


# A minimal ASS header: FFmpeg's text subtitle encoders need one to open.
ASS_HEADER = b"[Script Info]\r\nScriptType: v4.00+\r\n\r\n[Events]\r\nFormat: Layer, Start, End, Style, Text\r\n"


def with_subtitles(path: Path, codec: str, text: bytes) -> Path:
    """A 2 s h264 video with one subtitle (`codec`: mov_text for an mp4, subrip for an mkv) shown from 0.5 s."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=16)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        subs = out.add_stream(codec)
        subs.codec_context.subtitle_header = ASS_HEADER
        subs.metadata["language"] = "deu"
        for k in range(32):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 7 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 16)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        payload = len(text).to_bytes(2, "big") + text if codec == "mov_text" else text
        packet = av.Packet(payload)
        packet.stream, packet.time_base = subs, Fraction(1, 1000)
        packet.pts = packet.dts = 500
        packet.duration = 700
        out.mux(packet)
    return path


def prores_mov(path: Path) -> Path:
    """A 2 s QuickTime file as editors export it: ProRes 422 video (64x48, 16 fps) and 48 kHz stereo PCM."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("prores_ks", rate=16)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv422p10le"
        track = out.add_stream("pcm_s16le", rate=48000, layout="stereo")
        for k in range(32):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 7 * k, np.uint8), format="rgb24")))
        out.mux(video.encode(None))
        sound = (np.random.default_rng(0).standard_normal((1, 2 * 96000)) * 3000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(sound, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux([*track.encode(frame), *track.encode(None)])
    return path


def damaged_ts(path: Path, damaged: tuple[int, ...] = (5, 9)) -> Path:
    """A 2 s MPEG-TS (h264 32x32 at 16 fps, 16 kHz stereo AAC noise) whose audio packets numbered `damaged` (from 1)
    have their ADTS header zeroed, as a broken recording or broadcast capture has: the mp4 muxer refuses them."""
    import io
    from fractions import Fraction

    import av

    good = io.BytesIO()
    with av.open(good, "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=16)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("aac", rate=16000, layout="stereo")
        for k in range(32):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 7 * k, np.uint8), "rgb24")))
        out.mux(video.encode(None))
        noise = np.random.default_rng(0).uniform(-0.2, 0.2, (2, 32000)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(noise, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        out.mux([*audio.encode(frame), *audio.encode(None)])
    good.seek(0)
    with av.open(good, format="mpegts") as source, av.open(str(path), "w", format="mpegts") as out:
        copies = {s.index: out.add_stream_from_template(s) for s in source.streams}
        n_audio = 0
        for packet in source.demux():
            if packet.dts is None:
                continue
            index = packet.stream_index
            if packet.stream.type == "audio":
                n_audio += 1
                if n_audio in damaged:
                    broken = av.Packet(b"\0\0\0\0" + bytes(packet)[4:])
                    broken.pts, broken.dts, broken.time_base = packet.pts, packet.dts, packet.time_base
                    packet = broken
            packet.stream = copies[index]
            out.mux(packet)
    return path


def run_train(cfg: dict, folder: Path, nproc: int = 1, env: dict | None = None, *overrides: str):
    """`avflow train` on `cfg` (written to FOLDER/config.in.yaml) in a subprocess run from `folder`, as one process or
    `nproc` torchrun ranks (gloo on the CPU), one thread each; the CompletedProcess with its captured output."""
    import os
    import subprocess
    import sys

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    launch = [sys.executable, "-m", "avflow.cli"]
    if nproc > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        launch += ["-m", "avflow.cli"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [*launch, "train", str(path), *overrides], cwd=folder, env=full_env, capture_output=True, text=True, timeout=300
    )


def tiny_joint_tensors(n: int = 8) -> dict[str, torch.Tensor]:
    """A `tensor_file` of `n` clips for tiny joint models: 3x4x4 video latents (16 channels), 24 audio latents of 20
    (0.75 s at 16 fps and 32 Hz) and 5 text tokens of TEXT_DIM."""
    g = torch.Generator().manual_seed(0)
    return {
        "streams.video": torch.randn(n, 16, 3, 4, 4, generator=g),
        "streams.audio": torch.randn(n, 24, 20, generator=g),
        "cond.text": torch.randn(n, 5, TEXT_DIM, generator=g),
        "cond.text_mask": torch.ones(n, 5, dtype=torch.bool),
    }


def one_step_joint_run(out_dir: Path, data_file: Path, model_args: dict, batch_size: int) -> dict:
    """A raw `avflow train` config: one fp32 step of the joint model `model_args` on the tensor file `data_file`
    (no EMA, validation or samples; a checkpoint at step 1)."""
    return {
        "out_dir": str(out_dir),
        "model": {"name": "joint", "args": model_args},
        "task": {"name": "joint_flow", "args": {"timesteps": "logit_normal", "cond_dropout": 0.1, "sample_steps": 2}},
        "data": {"train": {"name": "tensor_file", "args": {"file": str(data_file)}}, "num_workers": 0},
        "train": {"steps": 1, "batch_size": batch_size, "seed": 0, "device": "cpu", "precision": "fp32", "threads": 1},
        "ema": {"enabled": False},
        "log": {"every": 1, "val_every": 0, "sample_every": 0, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 1, "keep_last": 1},
    }
