"""A training run's output folder: what may be written into it, and what resuming it changes.

The trainer writes `WRITTEN` there (and `ema_*.safetensors`); other files may sit beside them (a data cache the
config reads). Refused before anything is built: an out_dir that is a file; a folder whose `config.yaml` or weights
no run wrote (no `checkpoints/`, no `metrics.jsonl`, no `config.yaml` of a training config), which the run would
replace; and `checkpoint.resume=none` in a
folder holding another run's checkpoints, which would mix two runs (a later resume picks the newest step of either).
Resuming compares the checkpoint's config with this one (`resume_changes`): another network is refused, and so is
another `init.freeze` or `ema.sigma_rels` (`resume_refusal`: the optimizer and EMA states would not fit), any other
change is named in a note, and the config the earlier steps were trained with is kept as `config_until_step_N.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avflow.errors import ConfigError
from avflow.train.checkpoint import list_checkpoints

WRITTEN = ("config.yaml", "metrics.jsonl", "model.safetensors", "checkpoints", "tb", "ema_snapshots")
# settings a resumed run may change without a note: how long, how it logs and saves, where it runs, validation
UNNOTED = ("out_dir", "train.steps", "train.threads", "train.device", "train.compile", "train.find_unused_parameters",
           "data.num_workers", "data.val", "log.", "checkpoint.", "init.", "distributed.")  # fmt: skip
REFUSED = ("model.",)  # the checkpoint's weights are of another network


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted key: value}; lists and tuples compared as lists."""
    if not isinstance(tree, Mapping):
        return {prefix: list(tree) if isinstance(tree, tuple) else tree}
    items: dict[str, Any] = {}
    for key, value in tree.items():
        items.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return items


def _listed(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def resume_changes(saved: Mapping, current: Mapping) -> tuple[list[str], list[str]]:
    """(changes that make the checkpoint another network's, other changes that matter), each "key saved -> now",
    between the config a checkpoint was saved with and the config resuming it."""
    before, after = flat(saved), flat(current)
    refused, noted = [], []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, "(unset)"), after.get(key, "(unset)")
        if old == new or (_listed(key, UNNOTED) and not _listed(key, REFUSED)):
            continue
        (refused if _listed(key, REFUSED) else noted).append(f"{key} {old} -> {new}")
    return refused, noted


def resume_refusal(saved: Mapping, current: Mapping, checkpoint: Path) -> str | None:
    """Why `checkpoint` (saved with config `saved`) cannot go on under `current` although it holds the same network,
    in one line; None where it can. Its optimizer state is per trainable parameter, matched by position (another
    `init.freeze` would give Adam moments to other parameters, or not load), and its EMA state per profile."""
    before, after = flat(saved), flat(current)
    checks = [("init.freeze", "the optimizer state is per trainable parameter")]
    if before.get("ema.enabled", True) and after.get("ema.enabled", True):
        checks.append(("ema.sigma_rels", "the EMA state holds one average per profile"))
    for key, why in checks:
        old, new = before.get(key), after.get(key)
        if key == "ema.sigma_rels":
            old, new = [float(s) for s in old or ()], [float(s) for s in new or ()]
        if old != new:
            return (f"{key} changed since {Path(checkpoint).name} ({old} -> {new}): {why}; keep {key} to resume, "
                    f"or start a new out_dir from these weights (init.weights={checkpoint})")  # fmt: skip
    return None


def _run_config(path: Path) -> bool:
    """Whether `path` is a config.yaml that a training run wrote (a TrainConfig's sections)."""
    from avflow.config import read_yaml

    if not path.is_file():
        return False
    try:
        data = read_yaml(path)
    except ConfigError:
        return False
    return isinstance(data, Mapping) and {"out_dir", "model", "task", "data"} <= data.keys()


def check_out_dir(out_dir: Path, resume: str) -> None:
    """A one-line ConfigError where a run in `out_dir` would lose or mix files (see the module docstring)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir: {out_dir} is a file, not a folder")
    if not out_dir.is_dir():
        return
    checkpoints = list_checkpoints(out_dir / "checkpoints")
    if not checkpoints and not (out_dir / "metrics.jsonl").is_file() and not _run_config(out_dir / "config.yaml"):
        kept = [p.name for p in (out_dir / "config.yaml", out_dir / "model.safetensors") if p.is_file()]
        kept += sorted(p.name for p in out_dir.glob("ema_*.safetensors"))
        if kept:
            raise ConfigError(f"out_dir: {out_dir} holds {kept[0]}, which no training run wrote (no checkpoints/, "
                              "no metrics.jsonl) and a run would replace; give another out_dir")  # fmt: skip
    if resume == "none" and checkpoints:
        raise ConfigError(f"out_dir: {out_dir} holds a run's checkpoints (up to step {checkpoints[0][0]}); "
                          "checkpoint.resume=none would start another run among them: give another out_dir, or "
                          "delete its checkpoints/ to start over")  # fmt: skip
