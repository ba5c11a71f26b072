"""Training checkpoints: a checksum manifest per checkpoint, keep-last-k, per-rank RNG states (atomic writes and
checksums: `avflow.weights`).

Layout in `<out_dir>/checkpoints/`: `step_00001000.pt` (torch.save of the full training state) and
`step_00001000.json` (its size and sha256, written after it). A checkpoint without a manifest, of the wrong size
or checksum, or that torch cannot load, is skipped with a warning and the previous one is used; where none is
usable, resuming is an error (starting over would replace the run).
"""

from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from avflow.errors import TrainingWarning, WeightsError
from avflow.weights import atomic_write, read_torch, save_torch, sha256_file

NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in `folder`, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / m.group(0)) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(folder: Path, step: int, state: dict, keep_last: int) -> Path:
    """Write `state` atomically with its manifest, then delete all but the newest `keep_last` checkpoints, this one
    always kept: a run resumed from an older checkpoint (newer ones damaged) must not prune what it just wrote."""
    path = checkpoint_path(folder, step)
    save_torch(state, path)
    manifest = {"file": path.name, "step": step, "size": path.stat().st_size, "sha256": sha256_file(path)}
    atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    others = [old for _, old in list_checkpoints(folder) if old != path]
    for old in others[keep_last - 1 :]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be trusted, or None when its manifest matches it."""
    manifest_path = Path(path).with_suffix(".json")
    if not manifest_path.is_file():
        return "no manifest (the write was interrupted)"
    try:
        manifest = json.loads(manifest_path.read_text())
        size, digest = int(manifest["size"]), str(manifest["sha256"])
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    actual = Path(path).stat().st_size
    if actual != size:
        return f"truncated or resized ({actual} bytes, manifest says {size})"
    if sha256_file(path) != digest:
        return "checksum mismatch"
    return None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", verify: bool = True) -> dict:
    """Load a checkpoint (checked against its manifest); raises WeightsError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint")
    reason = problem(path) if verify else None
    if reason is not None:
        raise WeightsError(f"{path}: corrupt checkpoint: {reason}")
    # mapped, not read: a resume copies what it needs out of it (every rank its shards, under fsdp), so no process
    # holds a second full copy of model, optimizer and EMA states while it loads; writes to it stay private
    return read_torch(path, map_location, mmap=True)


def load_latest(folder: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """(path, state) of the newest usable checkpoint in `folder`, warning about each one skipped; None if there is
    none at all. A WeightsError where there are checkpoints but none loads: starting over would replace the run."""
    damaged = []
    for _, path in list_checkpoints(folder):
        try:
            state = load_checkpoint(path, map_location)
        except WeightsError as exc:
            damaged.append(exc)
            continue
        for exc in damaged:  # said once a usable one is found: there is a previous one to fall back to
            warnings.warn(TrainingWarning(f"{exc}; falling back to the previous checkpoint"), stacklevel=2)
        return path, state
    if damaged:
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        raise WeightsError(f"every checkpoint in {folder} is damaged ({damaged[0]}{more}): delete {folder} to start "
                           "over, or give another out_dir")  # fmt: skip
    return None


def rng_state() -> dict:
    """This process's torch, CUDA, numpy and python RNG states (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
