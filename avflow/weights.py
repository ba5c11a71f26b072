"""Weights on disk, one helper per job: reading state dicts, strict loading that names bad keys, atomic writes and
checksums. Every loader in avflow (the weight cache, MMAudio, codecs, encoders, training exports) goes through here.

Reading: `.safetensors` with safetensors, anything else (official `.pth` / `.pt` / `.bin`) with
`torch.load(weights_only=True)`, so no pickled code runs. Every failure is a one-line `WeightsError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import WeightsError, WeightsWarning


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def read_torch(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`: tensors, containers and plain values only; no pickled code runs.
    `mmap`: the tensors map the file (copy-on-write) instead of being read into memory: pages are read when used, and
    processes reading one file share them (a resume under torchrun: every rank reads the same checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        why = _first_line(exc)
        raise WeightsError(f"{path}: not a readable checkpoint (corrupt or of another format; {why})") from None


COMPILED = "_orig_mod."  # torch.compile's wrapper inserts this segment into every key under it
DDP = "module."  # DistributedDataParallel / DataParallel prefix every key with this


def read_state_dict(path: str | Path, *, subkey: str = "") -> dict[str, Tensor]:
    """The flat state dict of a weights file.

    `subkey`: the state dict may sit under this key of the file's top-level dict (e.g. "generator" in BigVGAN's
    files, "state_dict" in some open_clip ones); a file that already is a flat state dict is taken as is. A training
    checkpoint of MMAudio's trainer or of `avflow train` gives its network (`training_checkpoint_weights`, said in a
    `WeightsWarning`). The wrappers' key prefixes are removed: DDP's `module.` on every key, torch.compile's
    `_orig_mod.` wherever it sits.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix != ".safetensors":
        state: Any = read_torch(path)
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # truncated or foreign file
            why = _first_line(exc)
            raise WeightsError(f"{path}: not a readable checkpoint (corrupt or of another format; {why})") from None
    if subkey and isinstance(state, dict) and isinstance(state.get(subkey), Mapping):
        state = dict(state[subkey])
    elif isinstance(state, dict) and not _is_flat(state):
        found = training_checkpoint_weights(state)
        if found is not None:
            state, whose, what = found
            warnings.warn(WeightsWarning(f"{path}: a training checkpoint of {whose}: {what}"), stacklevel=2)
    if not isinstance(state, dict) or not _is_flat(state):
        under = f" (looked under {subkey!r})" if subkey else ""
        inside = f"; it holds {describe_keys(map(str, state))}" if isinstance(state, dict) and state else ""
        raise WeightsError(f"{path}: does not hold a flat state dict of tensors{under}{inside}")
    return unwrapped(state)


def _is_flat(state: Mapping) -> bool:
    return all(isinstance(v, Tensor) for v in state.values())


def unwrapped(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`state` with the key prefixes of training wrappers removed: DDP's `module.` when every key has it, and
    torch.compile's `_orig_mod.` segment wherever it appears (a compiled model or a compiled part of one)."""
    state = {k.replace("." + COMPILED, ".").removeprefix(COMPILED): v for k, v in state.items()}
    if state and all(k.startswith(DDP) for k in state):
        state = {k.removeprefix(DDP): v for k, v in state.items()}
    return state


def with_averages(state: Mapping[str, Tensor], averages: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A model's state dict with the EMA `averages` in place of the parameters they average, each in the model's
    dtype (the buffers, which an EMA does not average, as they are)."""
    return {k: averages[k].to(v.dtype) if k in averages else v for k, v in state.items()}


def training_checkpoint_weights(state: Mapping) -> tuple[dict[str, Tensor], str, str] | None:
    """(network state dict, whose checkpoint, what was taken) from a training checkpoint, or None when `state` is
    not one.

    MMAudio's trainer (`*_ckpt_last.pth`: it, weights, optimizer, scheduler, ema): its `weights`, the network as
    trained (its post-hoc EMA state cannot be read as weights; the run's `*_ema_final.pth` is the EMA). `avflow
    train` (`checkpoints/step_*.pt`: step, model, ema, optimizer, ...): the EMA of its smallest sigma_rel in place of
    the parameters, what the run's `ema_<sigma_rel>.safetensors` export holds at that step, or `model` where it kept
    no EMA.
    """
    weights, model, ema = state.get("weights"), state.get("model"), state.get("ema")
    if isinstance(weights, Mapping) and _is_flat(weights) and ("optimizer" in state or "it" in state):
        it = state.get("it")
        at = f" at iteration {it}" if isinstance(it, int) else ""
        what = "its network as trained is used, not an EMA (the run's *_ema_final.pth holds the EMA)"
        return dict(weights), f"MMAudio's trainer{at}", what
    if not (isinstance(model, Mapping) and _is_flat(model) and "step" in state):
        return None
    whose = f"avflow train at step {state['step']}"
    try:
        sigmas = [float(s) for s in ema["sigma_rels"]]
        i = min(range(len(sigmas)), key=sigmas.__getitem__)
        averages = ema["averages"][i]
    except (TypeError, KeyError, IndexError, ValueError):
        return dict(model), whose, "its network as trained (it kept no EMA)"
    return with_averages(model, averages), whose, f"its EMA (sigma_rel {sigmas[i]:g})"


def run_weights_file(folder: str | Path) -> Path:
    """The file holding a training run folder's network (`avflow train`'s out_dir), found without reading weights:
    what the run exported when it ended (the EMA of the smallest sigma_rel, `ema_<sigma_rel>.safetensors`; without
    an EMA, `model.safetensors`) unless a checkpoint is newer (a run resumed and stopped later), else the newest
    `checkpoints/step_*.pt`."""
    folder = Path(folder)
    exports = sorted(folder.glob("ema_*.safetensors"), key=lambda p: _sigma_of(p.stem))
    final = exports[0] if exports else folder / "model.safetensors"
    checkpoints = sorted((folder / "checkpoints").glob("step_*.pt"))
    newest = checkpoints[-1] if checkpoints else None
    if final.is_file() and (newest is None or final.stat().st_mtime >= newest.stat().st_mtime):
        return final
    if newest is not None:
        return newest
    raise WeightsError(f"{folder}: a training run without weights yet (no ema_*.safetensors, checkpoints/step_*.pt "
                       "or model.safetensors)")  # fmt: skip


def run_weights(folder: str | Path) -> tuple[dict[str, Tensor], str]:
    """The network of a training run folder (the file `run_weights_file` picks; of a checkpoint, its EMA as
    `training_checkpoint_weights` takes it) and where it came from."""
    folder = Path(folder)
    file = run_weights_file(folder)
    if file.suffix == ".safetensors":
        ema = file.name.startswith("ema_")
        return read_state_dict(file), f"its EMA export {file.name}" if ema else "its model.safetensors (no EMA export)"
    state = read_torch(file)
    found = training_checkpoint_weights(state) if isinstance(state, dict) else None
    if found is None:
        raise WeightsError(f"{file}: not a training checkpoint of avflow train (no step and model in it)")
    return unwrapped(found[0]), f"{file.relative_to(folder)} ({found[2]})"


def _sigma_of(stem: str) -> float:
    try:
        return float(stem.removeprefix("ema_"))
    except ValueError:
        return float("inf")


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def describe_keys(keys: Iterable[str], limit: int = 6) -> str:
    """Sorted keys, at most `limit` of them, then how many more."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str = "state dict",
    *,
    optional: tuple[str, ...] = (),
    assign: bool = False,
) -> nn.Module:
    """Copy `state` into `module`; a WeightsError names every missing, unexpected, non-tensor or misshapen key.

    Keys ending with one of `optional` (e.g. recomputable filter buffers) may be absent. `assign` replaces the
    module's tensors instead of copying into them (for modules built on the meta device), each in the module's
    dtype as a copy would be (weights saved in fp16 or bf16 load into an fp32 module).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in expected]
    not_tensors = [k for k in state if k in expected and not isinstance(state[k], Tensor)]
    misshapen = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], Tensor) and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {describe_keys(unexpected)}")
    if not_tensors:
        problems.append(f"not tensors: {describe_keys(not_tensors)}")
    if misshapen:
        problems.append(f"shape mismatch: {describe_keys(misshapen, limit=3)}")
    if problems:
        raise WeightsError(f"{source}: does not match {type(module).__name__}: " + "; ".join(problems))
    if assign:
        state = {k: _as_dtype(v, expected[k].dtype) for k, v in state.items()}
    module.load_state_dict(dict(state), strict=not optional, assign=assign)
    return module


def _as_dtype(value: Tensor, dtype: torch.dtype) -> Tensor:
    """A floating-point tensor in the floating-point `dtype` it is loaded into; anything else as it is."""
    same_kind = value.is_floating_point() and dtype.is_floating_point
    return value.to(dtype) if same_kind and value.dtype != dtype else value


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, fsync it, then rename it over `path`.

    Either `path` ends up complete or nothing changes: when `write` fails, the temporary file and any folders made
    for it are removed again.
    """
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    done = False
    try:
        with open(tmp, "w+b") as f:  # readable too, for writers that patch what they wrote
            mode = os.fstat(f.fileno()).st_mode & 0o777  # a new file's permissions under the user's umask
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.stat(tmp).st_mode & 0o777 != mode:  # a writer that recreated the file by name: safetensors' save_file
            os.chmod(tmp, mode)  # makes it 0600, unreadable to the other users of a shared cache or run folder
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done:
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_safetensors(tensors: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (on the CPU, contiguous, storage not shared) as safetensors, atomically. A tensor is copied
    only where it must be (on another device, not contiguous, or sharing storage with one before it), and the file
    is written from the tensors, not built in memory first: converting a checkpoint of N bytes took about 4 N."""
    from safetensors.torch import save_file

    owned, storages = {}, set()
    for name, value in tensors.items():
        value = value.detach().cpu().contiguous()
        storage = value.untyped_storage().data_ptr()
        if storage in storages or value.untyped_storage().nbytes() != value.numel() * value.element_size():
            value = value.clone()  # shared with another tensor, or a view of a larger one: its own bytes
        storages.add(value.untyped_storage().data_ptr())
        owned[name] = value
    atomic_write(Path(path), lambda f: save_file(owned, f.name, metadata=metadata))
    return Path(path)


def save_torch(obj: Any, path: str | Path) -> Path:
    """`torch.save` of `obj`, atomically (readable with `torch.load(weights_only=True)` when it holds only tensors,
    containers and plain values)."""
    atomic_write(Path(path), lambda f: torch.save(obj, f))
    return Path(path)


def _digest(path: str | Path, h, chunk: int = 1 << 22) -> str:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    return _digest(path, hashlib.sha256())


def md5_file(path: str | Path) -> str:
    """MD5 of a file (only to compare with checksums that publishers give as MD5)."""
    return _digest(path, hashlib.md5())


INT8_SCALE = ".int8_scale"  # suffix of the per-group scales stored beside an int8 tensor
INT8_GROUP = 64  # consecutive values (in memory order) that share one scale


def quantize_int8(state: Mapping[str, Tensor], min_numel: int = 1024) -> dict[str, Tensor]:
    """Storage compression: each float tensor with >= 2 dims and >= `min_numel` values becomes int8, with one fp16
    scale per group of `INT8_GROUP` consecutive values (symmetric: `w ~ q * scale`, `scale = max|group| / 127`)
    under `key + INT8_SCALE`; other floats become fp16. About 53 % of fp16's size; small groups keep small weights
    next to large ones (a first layer over 251 frequency bins) exact to 0.4 % of their group's largest value."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
        elif value.ndim >= 2 and value.numel() >= min_numel:
            flat = value.detach().float().reshape(-1)
            groups = F.pad(flat, (0, -flat.numel() % INT8_GROUP)).reshape(-1, INT8_GROUP)  # (G, group)
            scale = (groups.abs().amax(dim=1) / 127.0).half().clamp_min(1e-7)  # (G,) as stored
            q = torch.round(groups / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
            out[key] = q.reshape(-1)[: flat.numel()].reshape(value.shape)
            out[key + INT8_SCALE] = scale
        else:
            out[key] = value.detach().half()
    return out


def dequantize_int8(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fp32 tensors from a state dict written by `quantize_int8` (other state dicts: floats to fp32, the rest kept)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(INT8_SCALE):
            continue
        scale = state.get(key + INT8_SCALE)
        if scale is not None:
            flat = F.pad(value.reshape(-1).float(), (0, -value.numel() % INT8_GROUP)).reshape(-1, INT8_GROUP)
            out[key] = (flat * scale.float()[:, None]).reshape(-1)[: value.numel()].reshape(value.shape)
        else:
            out[key] = value.float() if value.is_floating_point() else value
    return out
