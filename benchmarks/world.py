"""World clip generation speed at default settings vs real time (target: >= 50x faster, i.e. < 80 ms per 4 s clip).

Prints per-stage costs (wall and process CPU time, since the shared machine is often loaded), whole clips per second
single-process and through `make_dataset` with 2 workers (including file writing), and the real-time factor.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ArgumentParser, load_facts, non_negative_int, positive_int, run_main

from avflow.world.caption import make_caption
from avflow.world.dataset import make_clip, make_dataset, render_audio, write_clip
from avflow.world.render import render_frames
from avflow.world.scene import WorldConfig, sample_scene

TARGET_FACTOR = 50.0


def _timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=positive_int, default=20)
    parser.add_argument("--workers", type=non_negative_int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    config = WorldConfig()
    make_clip(0, config)  # warm-up (imports, caches)
    stages: dict[str, list[tuple[float, float]]] = {k: [] for k in ("simulate", "frames", "audio", "caption", "write")}
    n_events = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, args.clips + 1):
            scene, w, c = _timed(sample_scene, config, np.random.default_rng(seed), seed)
            stages["simulate"].append((w, c))
            stages["frames"].append(_timed(render_frames, scene)[1:])
            stages["audio"].append(_timed(render_audio, scene)[1:])
            stages["caption"].append(_timed(make_caption, scene)[1:])
            clip = make_clip(seed, config)
            stages["write"].append(_timed(write_clip, clip, Path(tmp) / f"c{seed}")[1:])
            n_events.append(len(scene.events))
        _, serial_wall, serial_cpu = _timed(make_dataset, Path(tmp) / "serial", args.clips, 0, 1, False, config)
        _, par_wall, _ = _timed(make_dataset, Path(tmp) / "par", args.clips, 0, args.workers, False, config)

    print(f"world benchmark: {args.clips} clips of {config.duration:g} s, {config.width}x{config.height} @ "
          f"{config.fps} fps, {config.sample_rate} Hz; mean {np.mean(n_events):.1f} events/clip; "
          f"{load_facts(load_before)}")  # fmt: skip
    print(f"{'stage':<28}{'wall ms':>10}{'cpu ms':>10}")
    for name, values in stages.items():
        arr = np.asarray(values) * 1000
        print(f"{name:<28}{arr[:, 0].mean():>10.1f}{arr[:, 1].mean():>10.1f}")
    print()
    budget = config.duration / TARGET_FACTOR
    rows = [
        ("make_dataset, 1 process", serial_wall / args.clips, serial_cpu / args.clips),
        (f"make_dataset, {args.workers} workers", par_wall / args.clips, None),
    ]
    print(f"{'pipeline (incl. writing)':<28}{'ms/clip':>10}{'clips/s':>10}{'x realtime':>12}{'target':>10}{'ok':>5}")
    for name, per_clip, _ in rows:
        factor = config.duration / per_clip
        print(f"{name:<28}{per_clip * 1000:>10.1f}{1 / per_clip:>10.1f}{factor:>12.1f}{TARGET_FACTOR:>10.0f}"
              f"{'yes' if factor >= TARGET_FACTOR else 'NO':>5}")  # fmt: skip
    cpu_factor = config.duration / (serial_cpu / args.clips)
    print(f"{'1 process, CPU time only':<28}{serial_cpu / args.clips * 1000:>10.1f}"
          f"{args.clips / serial_cpu:>10.1f}{cpu_factor:>12.1f}{TARGET_FACTOR:>10.0f}"
          f"{'yes' if cpu_factor >= TARGET_FACTOR else 'NO':>5}")  # fmt: skip
    print(f"target: a {config.duration:g} s clip in < {budget * 1000:.0f} ms")


if __name__ == "__main__":
    run_main(main)
