"""World codecs, old vs new in one run: reconstruction quality on a test split, encode/decode speed, targets.

    python benchmarks/codecs.py --world data/world2s --clips 64 [--threads 2] [--json docs/codecs_metrics.json]

Old: the first default model's world video AE and audio VAE (Griffin-Lim, its mono copied to both ears, so its ILD
and ITD are 0), read from `--old` (a model folder with video_ae.safetensors / audio_vae.safetensors; skipped when
absent). New: the codecs in `--codecs` (default: the shipped avflow/assets/codecs). Quality on the test split's first
`--clips` clips:

- video: PSNR (peak 255), per object and frame the colour-mask IoU and centroid error vs the ground-truth mask
  (median, and per colour and shape), PSNR of the frames at latent-frame boundaries minus the others;
- audio: per-ear multi-resolution STFT log-magnitude distance (magnitudes floored 60 dB below the reference's
  loudest bin), and per ground-truth event (`avflow.eval.event_audio`: onset error, loudness over 50 ms from the onset,
  ILD, and ITD by sub-sample GCC-PHAT over [onset − 3 ms, onset + 15 ms)), each against the ground truth. The floor
  row is the ground truth against the same clip re-rendered with another ambience seed (what no codec can beat).

Speed: batch 1, one 2 s clip, `--threads` threads, best of 3 after a warm-up; x real time = clip seconds / wall.
The last table puts every target of the codec card next to its measured value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CODEC_WORLD,
    ArgumentParser,
    check_output,
    ensure_codec_world,
    positive_int,
    print_table,
    run_main,
    timed,
)

from avflow.eval.audio_quality import stft_log_distance  # noqa: E402
from avflow.eval.event_audio import EventAudio, compare_event_audio  # noqa: E402
from avflow.eval.video_quality import boundary_psnr_gap, frame_psnr, object_scores  # noqa: E402
from avflow.world.dataset import load_clip, read_manifest, rerender_audio  # noqa: E402


def to_video(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1.0  # (1, 3, T, H, W)


def to_frames(video: torch.Tensor) -> np.ndarray:
    return ((video[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)


class VideoScores:
    def __init__(self) -> None:
        self.psnr, self.objects = [], []

    def add(self, clip, frames: np.ndarray) -> None:
        self.psnr.append(frame_psnr(clip.frames, frames))
        self.objects += object_scores(frames, clip.masks, clip.meta["objects"])

    def summary(self) -> dict:
        psnr = np.stack(self.psnr)  # (clips, T)
        iou = np.array([s.iou for s in self.objects])
        err = np.array([s.centroid_error_px for s in self.objects])
        by = defaultdict(list)
        for s in self.objects:
            by[f"{s.colour} {s.shape}"].append((s.iou, s.centroid_error_px))
        groups = {
            k: {
                "median_iou": float(np.median([a for a, _ in v])),
                "median_centroid_px": float(np.median([b for _, b in v])),
                "n": len(v),
            }
            for k, v in sorted(by.items())
        }
        return {"psnr_db": float(psnr.mean()), "median_iou": float(np.median(iou)),
                "median_centroid_px": float(np.median(err)), "boundary_gap_db": boundary_psnr_gap(psnr),
                "object_frames": len(self.objects), "by_object": groups}  # fmt: skip


FLOOR_SEED_OFFSET = 1 << 50  # the floor's ambience seed: clip seed + this, outside every split's seed range


class AudioScores:
    def __init__(self) -> None:
        self.stft, self.events = [], []

    def add(self, rec: np.ndarray, ref: np.ndarray, event_times: np.ndarray, sample_rate: int) -> None:
        """`rec`, `ref`: (2, samples) [left, right]."""
        self.stft.append(float(stft_log_distance(torch.from_numpy(rec), torch.from_numpy(ref))))
        self.events.append(compare_event_audio(rec, ref, sample_rate, event_times))

    def summary(self) -> dict:
        events = EventAudio.merge(self.events)
        medians = events.summary()
        return {"stft_log_distance": float(np.mean(self.stft)), **{k: m.get() for k, m in medians.items()},
                "onsets_found": medians["onset_error_ms"].confidence,
                "events": len(events), "unheard": events.unheard}  # fmt: skip


def main() -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=CODEC_WORLD)
    p.add_argument("--split", default="test")
    p.add_argument("--clips", type=positive_int, default=64)
    p.add_argument("--codecs", default=None, help="codec folder (default: the shipped one)")
    p.add_argument("--old", default="avflow/assets/default_model", help="folder of the old world AE/VAE")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    check_output(p, args.json)
    torch.set_num_threads(args.threads)
    from avflow.codecs.world import load_world_codecs

    new = load_world_codecs(args.codecs)
    old = load_old(Path(args.old))
    ensure_codec_world(args.world, args.split)
    rows = read_manifest(args.world, args.split)[: args.clips]
    video = {"new": VideoScores()} | ({"old": VideoScores()} if old else {})
    audio = {"new": AudioScores()} | ({"old": AudioScores()} if old else {}) | {"floor": AudioScores()}
    start = time.time()
    with torch.no_grad():
        for row in rows:
            clip = load_clip(Path(args.world) / args.split / row["id"])
            frames = to_video(clip.frames)
            video["new"].add(clip, to_frames(new.video.decode(new.video.encode(frames))))
            ref = clip.audio  # (2, samples)
            sr, times = clip.meta["sample_rate"], np.array([e["time"] for e in clip.meta["events"]])
            wav = torch.from_numpy(ref)[None]  # (1, 2, samples)
            n = new.audio.latent_length(wav.shape[-1]) * new.audio.samples_per_latent
            rec = new.audio.decode(new.audio.encode(wav[..., :n]), length=wav.shape[-1])
            audio["new"].add(rec[0].numpy(), ref, times, sr)
            audio["floor"].add(rerender_audio(clip.meta, clip.meta["seed"] + FLOOR_SEED_OFFSET), ref, times, sr)
            if old:
                video["old"].add(clip, to_frames(old["video"].decode(old["video"].encode(frames))))
                mono = wav.mean(1)
                m = mono.shape[-1] // 512 * 512
                back = old["audio"].decode(old["audio"].encode(mono[:, :m]))
                back = torch.nn.functional.pad(back, (0, wav.shape[-1] - back.shape[-1]))
                audio["old"].add(back.expand(2, -1).numpy().astype(np.float32), ref, times, sr)
    quality = {k: v.summary() for k, v in video.items()}
    sound = {k: v.summary() for k, v in audio.items()}
    speed = measure_speed(new, old)
    print_table([{"codec": k, **{m: v for m, v in q.items() if m != "by_object"}} for k, q in quality.items()],
                f"video quality on {len(rows)} {args.split} clips of {args.world}")  # fmt: skip
    print_table([{"object": k, **v} for k, v in quality["new"]["by_object"].items()], "new video codec per object")
    print_table([{"codec": k, **v} for k, v in sound.items()],
                "audio quality on the same clips (per-event errors: medians of |error|; floor: ground truth vs "
                "another ambience seed)")  # fmt: skip
    print_table(speed, f"speed, batch 1, 2 s clip, {args.threads} threads")
    targets = target_table(quality, sound, speed)
    print_table(targets, "targets (test split)")
    result = {"clips": len(rows), "split": args.split, "world": args.world, "threads": args.threads,
              "video": quality, "audio": sound, "speed": speed, "targets": targets,
              "seconds": round(time.time() - start, 1)}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


TARGETS = (  # (measures, key, goal, met(new, old)): issue 21's targets on the test split
    ("video", "psnr_db", ">= 32 dB (ship >= 28)", lambda x, old: x >= 32),
    ("video", "median_iou", ">= 0.8 (ship >= 0.7)", lambda x, old: x >= 0.8),
    ("video", "median_centroid_px", "<= 1 px", lambda x, old: x <= 1),
    ("video", "boundary_gap_db", "within 1 dB", lambda x, old: abs(x) <= 1),
    ("audio", "onset_error_ms", "<= 2 ms", lambda x, old: x <= 2),
    ("audio", "loudness_error_db", "<= 1 dB", lambda x, old: x <= 1),
    ("audio", "ild_error_db", "<= 1 dB", lambda x, old: x <= 1),
    ("audio", "itd_error_us", "<= 100 us", lambda x, old: x <= 100),
    ("audio", "stft_log_distance", "<= old / 2", lambda x, old: x <= old / 2),
)


def target_table(video: dict, audio: dict, speed: list[dict]) -> list[dict]:
    """Each target with the new codec's value, the old codec's and (audio) the floor's; medians for the events."""
    nan = float("nan")
    out = []
    for what, key, goal, met in TARGETS:
        measured = {"video": video, "audio": audio}[what]
        new, old = measured["new"][key], measured.get("old", {}).get(key, nan)
        floor = audio["floor"][key] if what == "audio" else nan
        out.append({"target": f"{what} {key}", "goal": goal, "new": new, "old": old, "floor": floor,
                    "met": "yes" if met(new, old) else "NO"})  # fmt: skip
    for row in speed:
        if row["codec"] == "new audio":
            x = row["decode_x_rt"]
            out.append({"target": "audio decode x real time", "goal": ">= 20", "new": x, "old": nan, "floor": nan,
                        "met": "yes" if x >= 20 else "NO"})  # fmt: skip
    return out


def load_old(folder: Path) -> dict | None:
    """The first default model's world codecs (read from its folder's config.json and weights; the pipeline no longer
    reads that format), if that folder still has them."""
    if not (folder / "video_ae.safetensors").is_file() or not (folder / "audio_vae.safetensors").is_file():
        return None
    from avflow.codecs.surgery import without_output_norms
    from avflow.codecs.world_audio_vae import WorldAudioVAE, WorldAudioVAEConfig
    from avflow.codecs.world_video_ae import WorldVideoAE, WorldVideoAEConfig
    from avflow.config import from_dict
    from avflow.weights import load_strict, read_state_dict

    config = json.loads((folder / "config.json").read_text())
    old = {"video": WorldVideoAE(from_dict(WorldVideoAEConfig, config["video_ae"])),
           "audio": WorldAudioVAE(from_dict(WorldAudioVAEConfig, config["audio_vae"]))}  # fmt: skip
    for name, key in (("video", "video_ae"), ("audio", "audio_vae")):
        if config.get(f"{key}_without_output_norms"):
            old[name] = without_output_norms(old[name])
        state = {k: v.float() for k, v in read_state_dict(folder / f"{key}.safetensors").items()}
        load_strict(old[name], state, key).eval().requires_grad_(False)
    return old


def measure_speed(new, old) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 32, 64, 64, generator=g) * 2 - 1
    audio = torch.randn(1, 2, 32000, generator=g) * 0.05
    rows = []
    with torch.no_grad():
        zv, za = new.video.encode(video), new.audio.encode(audio)
        rows.append({"codec": "new video", "encode_x_rt": 2 / timed(lambda: new.video.encode(video)),
                     "decode_x_rt": 2 / timed(lambda: new.video.decode(zv))})  # fmt: skip
        rows.append({"codec": "new audio", "encode_x_rt": 2 / timed(lambda: new.audio.encode(audio)),
                     "decode_x_rt": 2 / timed(lambda: new.audio.decode(za))})  # fmt: skip
        if old:
            ov = old["video"].encode(video)
            mono = audio.mean(1)[:, : 32000 // 512 * 512]
            oa = old["audio"].encode(mono)
            rows.append({"codec": "old video", "encode_x_rt": 2 / timed(lambda: old["video"].encode(video)),
                         "decode_x_rt": 2 / timed(lambda: old["video"].decode(ov))})  # fmt: skip
            rows.append({"codec": "old audio (Griffin-Lim)",
                         "encode_x_rt": 2 / timed(lambda: old["audio"].encode(mono)),
                         "decode_x_rt": 2 / timed(lambda: old["audio"].decode(oa))})  # fmt: skip
    return rows


if __name__ == "__main__":
    run_main(main)
