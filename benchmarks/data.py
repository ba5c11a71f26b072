"""Data loader throughput vs the MMAudio recipe's training step (target: loader >= 3x the step's samples/s).

Builds a temporary feature cache with the shapes of an MMAudio variant (random features, 8 s clips), then measures
(1) samples/s of the mixture loader (two caches, one video-audio and one audio-text) with 0..N workers and
(2) samples/s of one training step (forward + backward + AdamW) of the recipe on that variant, in the same run.
Usage: .venv/bin/python benchmarks/data.py [--variant small_16k] [--clips 96] [--batch 8] [--device cpu|cuda]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avflow.data.cache import build_cache  # noqa: E402
from avflow.data.datasets import ClipRecord  # noqa: E402
from avflow.models.mmaudio_config import CONFIGS, get_config  # noqa: E402
from avflow.train.datasets import SeededDataset  # noqa: E402
from avflow.train.mmaudio_recipe import (  # noqa: E402
    MixtureConfig,
    MMAudioMixture,
    MMAudioModelConfig,
    MMAudioRecipe,
    MMAudioRecipeConfig,
    build_model,
)
from benchmarks.common import (  # noqa: E402
    ArgumentParser,
    device_type,
    load_facts,
    non_negative_int,
    positive_int,
    print_table,
    run_main,
)


def feature_shapes(variant: str) -> dict[str, tuple[int, int]]:
    c = get_config(variant)
    return {
        "audio": (c.latent_seq_len, c.latent_dim),
        "clip_f": (c.clip_seq_len, c.clip_dim),
        "sync_f": (c.sync_seq_len, c.sync_dim),
        "text_f": (c.text_seq_len, c.text_dim),
    }


def make_caches(root: Path, shapes: dict, clips: int) -> dict[str, float]:
    def extractor(names):
        def extract(record):
            g = torch.Generator().manual_seed(zlib.crc32(record.id.encode()))
            return {k: torch.randn(shapes[k], generator=g) for k in names}

        return extract

    va = [ClipRecord(f"v{i:05d}") for i in range(clips)]
    at = [ClipRecord(f"a{i:05d}") for i in range(clips // 2)]
    build_cache(root / "va", va, extractor(list(shapes)), "bench", shard_size=32)
    build_cache(root / "at", at, extractor(["audio", "text_f"]), "bench", shard_size=32)
    return {str(root / "va"): 1.0, str(root / "at"): 0.5}


def loader_rate(dataset, batch: int, workers: int, batches: int) -> float:
    from torch.utils.data import DataLoader

    items = [(i, 0) for i in range(len(dataset))]
    chunks = [items[i : i + batch] for i in range(0, len(items) - batch + 1, batch)]
    loader = DataLoader(dataset, batch_sampler=chunks, num_workers=workers, persistent_workers=False)
    it = iter(loader)
    next(it)  # start-up (worker spawn, first shard open) is not counted
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            break
        n += len(b["seed"])
    return n / (time.perf_counter() - start)


def step_rate(variant: str, dataset, batch: int, device: torch.device, steps: int) -> float:
    # latent statistics do not change a step's cost: mean 0, std 1 (from scratch, "auto" would be refused)
    model = build_model(MMAudioModelConfig(variant=variant, latent_stats="none")).to(device)
    task = MMAudioRecipe(MMAudioRecipeConfig())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    from torch.utils.data import default_collate

    raw = default_collate([dataset[(i, 0)] for i in range(batch)])
    dtype = torch.bfloat16 if device.type == "cuda" else None

    def step():
        b = task.prepare(raw, device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = task.loss(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="small_16k", choices=sorted(CONFIGS))
    parser.add_argument("--clips", type=positive_int, default=96)
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=positive_int, default=3)
    parser.add_argument("--device", type=device_type, default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.clips < 2 or args.clips * 4 // args.batch < 3:
        parser.error(f"--clips {args.clips}: give >= 2 and >= 3/4 of --batch (the loader times whole batches)")
    device = args.device
    shapes = feature_shapes(args.variant)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_caches(Path(tmp), shapes, args.clips)
        dataset = SeededDataset(MMAudioMixture(MixtureConfig(sources=sources, size=args.clips * 4)), 0)
        train = step_rate(args.variant, dataset, args.batch, device, args.steps)
        rows = [{"what": f"train step ({args.variant}, {device.type})", "samples/s": f"{train:.1f}", "x step": "1.00"}]
        for w in args.workers:
            rate = loader_rate(dataset, args.batch, w, batches=args.clips * 4 // args.batch - 2)
            rows.append({"what": f"loader, {w} workers", "samples/s": f"{rate:.1f}", "x step": f"{rate / train:.2f}"})
    print_table(
        rows,
        f"feature-cache loader vs training step (batch {args.batch}, target >= 3x; "
        f"threads {torch.get_num_threads()}, {load_facts(load_before)})",
    )
    best = max(float(r["x step"]) for r in rows[1:])
    print(f"best loader / step = {best:.2f}x -> {'OK' if best >= 3 else 'BELOW TARGET'} (target >= 3x)")


if __name__ == "__main__":
    run_main(main)
