"""Train the shipped default model on the procedural world (CPU friendly) and export it to avflow/assets/default_model.

Stages (each skipped when its output exists, so a rerun resumes):
  1. world      `avflow world make` (2 s clips, 64x64, 16 fps, 16 kHz) into WORK/world
  2. codecs     world video AE and audio VAE, each for a wall-clock budget
  3. cache      latents + MiniLM text features of the train/val splits -> WORK/cache_{split}.safetensors
  4. joint      `avflow train configs/default_joint.yaml` (our trainer) on the cached latents
  5. export     fp16 safetensors + config.json into avflow/assets/default_model/

    OMP_NUM_THREADS=1 python scripts/train_default.py --work /tmp/avdef [--clips 1200] [--joint-steps 950]

The shipped model: world 1200 clips; video AE 481 steps (~14 min: 123 steps on 8-frame crops at lr 2e-3, then
`--video-ae-more-minutes 8` on 4-frame crops at lr 1e-3), audio VAE 1095 steps (3.5 min, output norms dropped),
joint 950 steps (16.5 min). The defaults below approximate that sequence in one run; about 35 min of 1-thread CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from avflow.codecs.surgery import without_output_norms
from avflow.codecs.world_audio_vae import WorldAudioVAE, WorldAudioVAEConfig
from avflow.codecs.world_video_ae import WorldVideoAE, WorldVideoAEConfig, frames_to_video, reconstruction_metrics
from avflow.config import to_dict
from avflow.weights import read_state_dict, read_torch, save_safetensors, save_torch
from avflow.world.dataset import load_clip

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "avflow" / "assets" / "default_model"
DURATION, FPS, SIZE, SAMPLE_RATE = 2.0, 16, 64, 16000
VIDEO_AE = WorldVideoAEConfig(channels=16)
AUDIO_VAE = WorldAudioVAEConfig()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def split_stems(world: Path, split: str) -> list[Path]:
    rows = [json.loads(line) for line in (world / split / "manifest.jsonl").read_text().splitlines() if line]
    return [world / split / row["id"] for row in rows]


def make_world(work: Path, clips: int) -> Path:
    world = work / "world"
    if not (world / "test" / "manifest.jsonl").is_file():
        cmd = [sys.executable, "-m", "avflow.cli", "world", "make", "--n", str(clips), "--out", str(world)]
        subprocess.run([*cmd, "--duration", str(DURATION), "--fps", str(FPS), "--seed", "0"], check=True)
    return world


def load_videos(stems: list[Path]) -> torch.Tensor:
    return torch.cat([frames_to_video(torch.from_numpy(load_clip(s).frames)) for s in stems])  # (B, 3, T, H, W)


def load_mono(stems: list[Path]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(load_clip(s).audio).mean(0) for s in stems])  # (B, samples)


def train_video_ae(world: Path, out: Path, budget_s: float, batch: int = 8, crop: int = 4, more: bool = False) -> None:
    """Random `crop`-frame windows (a multiple of 4) until the time budget is spent; `more` continues a saved AE."""
    if out.is_file() and not more:
        return
    stems = split_stems(world, "train")
    videos = torch.stack([torch.from_numpy(load_clip(s).frames) for s in stems])  # (N, T, H, W, 3) uint8
    ae = WorldVideoAE(VIDEO_AE)
    step = 0
    if more:
        saved = read_torch(out)
        ae.load_state_dict(saved["state"])
        ae.latent_scale.fill_(1.0)
        step = saved["steps"]
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(step)
    start = time.time()
    while time.time() - start < budget_s:
        idx = torch.randint(len(videos), (batch,), generator=g)
        t0 = int(torch.randint(0, videos.shape[1] - crop + 1, (1,), generator=g))
        clip = videos[idx, t0 : t0 + crop].permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, crop, H, W)
        loss, parts = ae.loss(clip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            log(f"video AE step {step}: l1 {parts['l1']:.4f} mse {parts['mse']:.5f}")
    ae.eval()
    val = load_videos(split_stems(world, "val")[:8])
    with torch.no_grad():
        ae.fit_latent_scale(load_videos(stems[:16]))
        metrics = reconstruction_metrics(val, ae.decode(ae.encode(val)))
    log(f"video AE: {step} steps, val {metrics}")
    save_torch({"state": ae.state_dict(), "steps": step, "metrics": metrics}, out)


def finetune_video_decoder(world: Path, work: Path, budget_s: float, batch: int = 8, crop: int = 4) -> None:
    """Train only the video AE's decoder (encoder frozen, so cached latents stay valid) -> WORK/video_ae_decoder.pt."""
    stems = split_stems(world, "train")
    videos = torch.stack([torch.from_numpy(load_clip(s).frames) for s in stems])  # (N, T, H, W, 3) uint8
    ae = WorldVideoAE(VIDEO_AE)
    ae.load_state_dict(read_torch(work / "video_ae.pt")["state"])
    ae.encoder.requires_grad_(False).eval()
    opt = torch.optim.AdamW(ae.decoder.parameters(), lr=5e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    start, step = time.time(), 0
    while time.time() - start < budget_s:
        idx = torch.randint(len(videos), (batch,), generator=g)
        t0 = 4 * int(torch.randint(0, videos.shape[1] // 4 - crop // 4 + 1, (1,), generator=g))
        clip = videos[idx, t0 : t0 + crop].permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, crop, H, W)
        with torch.no_grad():
            z = ae.encoder(clip)
        rec = ae.decoder(z)
        loss = (rec - clip).abs().mean() + (rec - clip).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            log(f"video decoder step {step}: loss {loss.item():.4f}")
        if step % 100 == 0:
            save_torch({"decoder": ae.decoder.state_dict(), "steps": step}, work / "video_ae_decoder.pt")
    save_torch({"decoder": ae.decoder.state_dict(), "steps": step}, work / "video_ae_decoder.pt")


def train_audio_vae(world: Path, out: Path, budget_s: float, batch: int = 16, more: bool = False) -> None:
    """Random batches of whole-clip mels until the time budget is spent; `more` continues a saved VAE."""
    if out.is_file() and not more:
        return
    vae = without_output_norms(WorldAudioVAE(AUDIO_VAE))
    step = 0
    if more:
        saved = read_torch(out)
        vae.load_state_dict(saved["state"])
        vae.latent_mean.zero_()
        vae.latent_std.fill_(1.0)
        step = saved["steps"]
    with torch.no_grad():
        mels = vae.wav_to_mel(load_mono(split_stems(world, "train")))  # (N, 80, F)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(step)
    start = time.time()
    while time.time() - start < budget_s:
        loss, parts = vae.loss(mels[torch.randint(len(mels), (batch,), generator=g)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            log(f"audio VAE step {step}: mel_l1 {parts['mel_l1']:.4f} kl {parts['kl']:.3f}")
    vae.eval()
    vae.fit_latent_stats(mels[:128])
    with torch.no_grad():
        val = vae.wav_to_mel(load_mono(split_stems(world, "val")[:16]))
        l1 = float((vae.decode_mel(vae.encode_mel(val)) - val).abs().mean())
    log(f"audio VAE: {step} steps, val mel L1 {l1:.4f}")
    save_torch({"state": vae.state_dict(), "steps": step, "metrics": {"mel_l1": l1}}, out)


def cache_split(world: Path, split: str, work: Path, chunk: int = 32) -> Path:
    out = work / f"cache_{split}.safetensors"
    if out.is_file():
        return out
    from avflow.encoders.text import load_text_encoder

    ae, vae = WorldVideoAE(VIDEO_AE).eval(), without_output_norms(WorldAudioVAE(AUDIO_VAE)).eval()
    ae.load_state_dict(read_torch(work / "video_ae.pt")["state"])
    vae.load_state_dict(read_torch(work / "audio_vae.pt")["state"])
    text_encoder = load_text_encoder("minilm", max_len=32)
    stems = split_stems(world, split)
    video, audio, text, mask = [], [], [], []
    with torch.no_grad():
        for i in range(0, len(stems), chunk):
            part = stems[i : i + chunk]
            video.append(ae.encode(load_videos(part)))
            audio.append(vae.encode(load_mono(part)))
            states, m = text_encoder([json.loads(s.with_suffix(".json").read_text())["caption"] for s in part])
            text.append(states)
            mask.append(m)
    tensors = {"streams.video": torch.cat(video), "streams.audio": torch.cat(audio),
               "cond.text": torch.cat(text), "cond.text_mask": torch.cat(mask)}  # fmt: skip
    save_safetensors(tensors, out)
    log(f"cache {split}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()))
    return out


def train_joint(work: Path, steps: int, config: Path) -> Path:
    run = work / "joint"
    overrides = [f"out_dir={run}", f"train.steps={steps}", f"data.train.args.file={work / 'cache_train.safetensors'}",
                 f"data.val.args.file={work / 'cache_val.safetensors'}"]  # fmt: skip
    if not (run / "model.safetensors").is_file() or json.loads((run / "steps.json").read_text())["steps"] < steps:
        subprocess.run([sys.executable, "-m", "avflow.cli", "train", str(config), *overrides], check=True)
        (run / "steps.json").write_text(json.dumps({"steps": steps}))
    return run


def export(work: Path, run: Path, ema: str, info: dict) -> None:
    from avflow.config import from_dict, read_yaml
    from avflow.flow.sampling import SamplingConfig
    from avflow.models.joint import JointConfig
    from avflow.pipelines.default_model import DefaultModelConfig

    ASSETS.mkdir(parents=True, exist_ok=True)
    half = lambda sd: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}  # noqa: E731
    joint = read_state_dict(run / (f"ema_{ema}.safetensors" if ema else "model.safetensors"))
    save_safetensors(half(joint), ASSETS / "joint.safetensors")
    video = read_torch(work / "video_ae.pt")
    audio = read_torch(work / "audio_vae.pt")
    state = dict(video["state"])
    if (work / "video_ae_decoder.pt").is_file():  # the decoder fine-tuned while the joint model trained
        decoder = read_torch(work / "video_ae_decoder.pt")
        state |= {f"decoder.{k}": v for k, v in decoder["decoder"].items()}
        video["steps"] = f"{video['steps']} (+ {decoder['steps']} decoder-only)"
    save_safetensors(half(state), ASSETS / "video_ae.safetensors")
    save_safetensors(half(audio["state"]), ASSETS / "audio_vae.safetensors")
    model_args = read_yaml(REPO / "configs" / "default_joint.yaml")["model"]["args"]
    config = DefaultModelConfig(
        joint=from_dict(JointConfig, model_args, "model.args"),
        video_ae=VIDEO_AE,
        audio_vae=AUDIO_VAE,
        video_ae_without_output_norms=False,
        audio_vae_without_output_norms=True,
        text_encoder="minilm",
        duration=DURATION,
        fps=FPS,
        height=SIZE,
        width=SIZE,
        sample_rate=SAMPLE_RATE,
        sampling=SamplingConfig(steps=25, cfg_strength=3.0),
        default_prompt="a red rubber ball bounces three times on the left, hits the wall and rolls along the floor",
        training={
            **info,
            "video_ae_steps": video["steps"],
            "video_ae_val": video["metrics"],
            "audio_vae_steps": audio["steps"],
            "audio_vae_val": audio["metrics"],
        },
    )
    (ASSETS / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    size = sum(f.stat().st_size for f in ASSETS.glob("*.safetensors")) / 2**20
    log(f"exported to {ASSETS} ({size:.1f} MiB of weights)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/avdef")
    p.add_argument("--clips", type=int, default=1200)
    p.add_argument("--video-ae-minutes", type=float, default=14.0)
    p.add_argument("--video-ae-more-minutes", type=float, default=0.0, help="continue a saved video AE this long")
    p.add_argument("--audio-vae-minutes", type=float, default=3.5)
    p.add_argument("--audio-vae-more-minutes", type=float, default=0.0, help="continue a saved audio VAE this long")
    p.add_argument("--joint-steps", type=int, default=950)
    p.add_argument("--config", default=str(REPO / "configs" / "default_joint.yaml"))
    p.add_argument("--ema", default="0.1", help="EMA profile to export ('' = raw weights)")
    p.add_argument("--decoder-minutes", type=float, default=0.0, help="stage decoder: video decoder fine-tuning")
    p.add_argument("--stage", choices=["all", "codecs", "audio_vae", "decoder", "export"], default="all")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    world = make_world(work, args.clips)
    if args.stage == "decoder":
        return finetune_video_decoder(world, work, args.decoder_minutes * 60)
    if args.stage == "audio_vae":
        return train_audio_vae(world, work / "audio_vae.pt", args.audio_vae_more_minutes * 60, more=True)
    train_video_ae(world, work / "video_ae.pt", args.video_ae_minutes * 60)
    if args.video_ae_more_minutes > 0:
        train_video_ae(world, work / "video_ae.pt", args.video_ae_more_minutes * 60, more=True)
    train_audio_vae(world, work / "audio_vae.pt", args.audio_vae_minutes * 60)
    if args.audio_vae_more_minutes > 0:
        train_audio_vae(world, work / "audio_vae.pt", args.audio_vae_more_minutes * 60, more=True)
    if args.stage == "codecs":
        return
    cache_split(world, "train", work)
    cache_split(world, "val", work)
    run = train_joint(work, args.joint_steps, Path(args.config))
    info = {"clips": args.clips, "joint_steps": args.joint_steps, "wall_minutes": round((time.time() - start) / 60, 1),
            "hardware": "2-core CPU shared with other jobs, 1 torch thread"}  # fmt: skip
    export(work, run, args.ema, info)


if __name__ == "__main__":
    main()
