"""How far can a per-ear gain curve take the audio codec? Oracle gains against the learned envelope head.

    python benchmarks/codec_gain_oracle.py --world data/world2s --split val --clips 64 [--codecs DIR]
        [--settings 125:20 50:50 25:50] [--json OUT]

The codec's envelope head (`avflow/codecs/envelope.py`) multiplies each decoded ear by a gain curve predicted from
the latents. Here the gains are instead computed from the reference itself: per ear and frame of `hop` samples,
`log RMS(reference) − log RMS(decoded)`, both floored `floor_db` below the clip's loudest frame (the head's training
target, reached exactly), linear between frame centres as the head's are. No codec can decode with them (they need
the reference); they bound what any head of that form could do at that hop and floor. Rows: the decoder without
gains, the codec as it decodes (with its head), and one oracle row per `HOP:FLOOR_DB` setting; columns: issue 21's
per-event measures (`avflow.eval.event_audio`, medians of |error| over the ground-truth events) and the per-ear
STFT log distance, on the same clips as `benchmarks/codecs.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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
)

from avflow.codecs.envelope import apply_gains, envelope_floor, log_envelope  # noqa: E402
from avflow.eval.audio_quality import stft_log_distance  # noqa: E402
from avflow.eval.event_audio import EventAudio, compare_event_audio  # noqa: E402
from avflow.world.dataset import load_clip, read_manifest  # noqa: E402


def oracle_gains(decoded: torch.Tensor, reference: torch.Tensor, hop: int, floor_db: float) -> torch.Tensor:
    """`(B, 2, K)` natural-log gains that give each `hop` frame of `decoded` the floored RMS of `reference`."""
    floor = envelope_floor(reference, hop, floor_db)
    return log_envelope(reference, hop, floor) - log_envelope(decoded, hop, floor)


def parse_setting(text: str) -> tuple[int, float]:
    try:
        hop, floor = text.split(":")
        hop, floor = int(hop), float(floor)
    except ValueError:
        raise SystemExit(f"error: --settings takes HOP:FLOOR_DB pairs such as 125:20, got {text!r}") from None
    if hop < 1 or floor <= 0:
        raise SystemExit(f"error: --settings needs HOP >= 1 and FLOOR_DB > 0, got {text!r}")
    return hop, floor


def main() -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=CODEC_WORLD)
    p.add_argument("--split", default="val", help="the split to read (default: val, so the test split chooses nothing)")
    p.add_argument("--clips", type=positive_int, default=64)
    p.add_argument("--codecs", default=None, help="codec folder (default: the shipped one)")
    p.add_argument("--settings", nargs="+", default=["125:20", "125:50", "50:50", "25:50"], help="HOP:FLOOR_DB")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    check_output(p, args.json)
    settings = [parse_setting(s) for s in args.settings]
    if args.clips < 1 or args.threads < 1:
        raise SystemExit(f"error: --clips and --threads must be >= 1, got {args.clips} and {args.threads}")
    ensure_codec_world(args.world, args.split)
    torch.set_num_threads(args.threads)
    from avflow.codecs.world import load_world_codecs

    codec = load_world_codecs(args.codecs).audio
    rows = read_manifest(args.world, args.split)[: args.clips]
    names = ["decoder, no gains", "codec (learned head)"] + [f"oracle hop {h}, floor {f:g} dB" for h, f in settings]
    events: dict[str, list[EventAudio]] = {n: [] for n in names}
    stft: dict[str, list[float]] = {n: [] for n in names}
    start = time.time()
    with torch.no_grad():
        for row in rows:
            clip = load_clip(Path(args.world) / args.split / row["id"])
            ref = clip.audio.astype(np.float64)  # (2, samples)
            sr, times = clip.meta["sample_rate"], np.array([e["time"] for e in clip.meta["events"]])
            wav = torch.from_numpy(clip.audio)[None]  # (1, 2, samples)
            n = codec.latent_length(wav.shape[-1]) * codec.samples_per_latent
            latents = codec.encode(wav[..., :n])
            plain = codec.decode(latents, gains=False)  # (1, 2, n)
            outs = {names[0]: plain, names[1]: codec.decode(latents)}
            for name, (hop, floor_db) in zip(names[2:], settings):
                outs[name] = apply_gains(plain, oracle_gains(plain, wav[..., :n], hop, floor_db), hop)
            for name, out in outs.items():
                out = torch.nn.functional.pad(out, (0, wav.shape[-1] - out.shape[-1]))[0].double().numpy()
                events[name].append(compare_event_audio(out, ref, sr, times))
                stft[name].append(float(stft_log_distance(torch.from_numpy(out), torch.from_numpy(ref))))
    table = []
    for name in names:
        medians = EventAudio.merge(events[name]).summary()
        table.append({"gains": name, **{k: m.get() for k, m in medians.items()},
                      "stft_log_distance": float(np.mean(stft[name]))})  # fmt: skip
    print_table(table, f"per-ear gains on {len(rows)} {args.split} clips of {args.world} "
                       f"(per-event medians of |error|; {time.time() - start:.0f} s)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": len(rows), "split": args.split, "rows": table}, indent=1))


if __name__ == "__main__":
    run_main(main)
