"""Weights on disk, one helper per job: reading state dicts, strict loading that names bad keys, atomic writes and
checksums. Every loader in avflow (the weight cache, MMAudio, codecs, encoders, training exports) goes through here.

Reading: by the file's content, whatever its suffix (`sniff_format`): safetensors with safetensors, torch files
(official `.pth` / `.pt` / `.bin`, Lightning `.ckpt`) with `torch.load(weights_only=True)`, so no pickled code runs.
`read_state_dict(..., meta=True)` finds the same state dict as meta tensors, from the file's header or index alone.
Loading into a module (`load_strict`) also checks what the tensors hold: no NaN or infinity, no integers where the
module holds floats. Every failure is a one-line `WeightsError` naming the file (and, for a file of another kind of
network, that kind: `identify_state_dict`).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import WeightsError, WeightsWarning

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes (torch puts some in its messages)


def _first_line(exc: BaseException) -> str:
    text = ANSI.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def sniff_format(path: str | Path) -> str | None:
    """What a weights file holds by its first bytes, whatever its name: "torch" (torch.save's zip archive, or the
    legacy pickle format), "safetensors" (an 8-byte little-endian header length, then the JSON header), or None
    (neither: empty, truncated to nothing or foreign)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    # safetensors first: a header length whose low byte is 0x80 (1 file in 256) starts like a pickle; a pickle's or a
    # zip's first 8 bytes read as a length far beyond any file, so the two tests never both hold
    if len(head) == 9 and head[8:] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return "torch"
    return None


def _unreadable(path: Path, exc: BaseException) -> WeightsError:
    """The one-line error of a file torch or safetensors could not read; a pickled object that a weights-only read
    refuses (a whole nn.Module saved with torch.save(model)) is named, with how to re-save its weights."""
    text = ANSI.sub("", str(exc))
    pickled = re.search(r"GLOBAL ([\w.]+)", text)
    if pickled:
        name = pickled.group(1)
        return WeightsError(f"{path}: holds a pickled {name.rsplit('.', 1)[-1]} object ({name}), not a state dict; "
                            "re-save it with torch.save(model.state_dict(), PATH)")  # fmt: skip
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    why = f"weights-only unpickler: {unpickler.group(1).strip()}" if unpickler else _first_line(exc)
    return WeightsError(f"{path}: not a readable checkpoint (corrupt or of another format; {why[:200]})")


def read_torch(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`: tensors, containers and plain values only; no pickled code runs.
    `mmap`: the tensors map the file (copy-on-write) instead of being read into memory: pages are read when used, and
    processes reading one file share them (a resume under torchrun: every rank reads the same checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    if sniff_format(path) == "safetensors":
        raise WeightsError(f"{path}: a safetensors file, not a torch checkpoint")
    try:
        if str(path).endswith(".safetensors"):  # torch.load hands such a name to safetensors; a file it reads itself
            with open(path, "rb") as f:
                return torch.load(f, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise _unreadable(path, exc) from None


COMPILED = "_orig_mod."  # torch.compile's wrapper inserts this segment into every key under it
WRAPPER_SEGMENTS = (  # segments that wrappers insert into the keys of the modules they wrap, wherever they sit
    COMPILED,
    "_fsdp_wrapped_module.",  # FullyShardedDataParallel (FSDP1, unflattened state dict)
    "_checkpoint_wrapped_module.",  # activation checkpointing's checkpoint_wrapper
)
DDP = "module."  # DistributedDataParallel / DataParallel prefix every key with this
STATE_KEYS = ("ema", "model", "state_dict", "module", "network", "params", "generator")  # where files keep one
OWNER_PREFIXES = ("model.", "net.")  # a training framework's attribute holding the network (Lightning: model.)


def _read_by_content(path: Path, meta: bool) -> Any:
    """The object in a weights file, read by what its bytes hold (safetensors or torch), not by its suffix; a
    suffix that says otherwise is said in a WeightsWarning (by the full read only). A file of neither kind is read
    by its suffix, which names the failure. `meta`: tensors as meta tensors, no tensor data read (`_read_meta`)."""
    found = sniff_format(path)
    named = "safetensors" if path.suffix.lower() == ".safetensors" else "torch"
    if found is not None and found != named and not meta:
        what = "a safetensors file" if found == "safetensors" else "a torch checkpoint"
        warnings.warn(WeightsWarning(f"{path}: {what} despite its {path.suffix or 'missing'} suffix; read as one"),
                      stacklevel=3)  # fmt: skip
    if meta:
        return _read_meta(path, found or named)
    if (found or named) == "torch":
        return read_torch(path)
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # truncated or foreign file
        raise _unreadable_safetensors(path, exc) from None


NO_CHEAP_READ = object()  # what `_read_meta` gives for a file whose layout cannot be read without its tensor data
TORCH_LEGACY = b"\x80"  # the first byte of torch's legacy (pre-zip) pickle format, which torch cannot map
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def _read_meta(path: Path, kind: str) -> Any:
    """The object in a weights file of `kind` with its tensors as meta tensors (shapes and dtypes), no tensor data
    read: a safetensors file's header, or a torch file's pickled index (`torch.load` with mmap), whatever its size.
    `NO_CHEAP_READ` where torch cannot map the file (its legacy format; a torch file named .safetensors, which
    torch.load hands to safetensors) or a dtype has no torch name here. An unreadable file: the full read's error."""
    if kind == "safetensors":
        return _safetensors_meta(path)
    with open(path, "rb") as f:
        legacy = f.read(1) == TORCH_LEGACY
    if legacy or path.suffix.lower() == ".safetensors":
        return NO_CHEAP_READ
    return _as_meta(read_torch(path, mmap=True))


def _safetensors_meta(path: Path) -> dict[str, Tensor] | object:
    """Meta tensors of a safetensors file's keys, shapes and dtypes, from its header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            found = {k: (tuple(s.get_shape()), SAFETENSORS_DTYPES.get(s.get_dtype())) for k, s in slices.items()}
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise _unreadable_safetensors(path, exc) from None
    if any(dtype is None for _, dtype in found.values()):
        return NO_CHEAP_READ
    return {k: torch.empty(shape, dtype=dtype, device="meta") for k, (shape, dtype) in found.items()}


def _as_meta(value: Any) -> Any:
    """`value` with every tensor of one or more dims (nested in dicts, lists and tuples) as a meta tensor of its
    shape and dtype (0-dim ones kept: a checkpoint's step or sigma_rel is read as a number)."""
    if isinstance(value, Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta") if value.ndim else value
    if isinstance(value, dict):
        return {k: _as_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_as_meta(v) for v in value)
    return value


def _unreadable_safetensors(path: Path, exc: BaseException) -> WeightsError:
    return WeightsError(f"{path}: not a readable safetensors file (corrupt or of another format; "
                        f"{_first_line(exc)})")  # fmt: skip


WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")  # the names weights files go by (read by content)


def weight_files_in(folder: str | Path) -> list[str]:
    """The names of the files in `folder` (not below it) that end in a `WEIGHT_SUFFIXES` suffix, sorted: for the
    error of a folder of another layout (a Hugging Face style config.json + model.safetensors)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)


@overload
def read_state_dict(path: str | Path, *, subkey: str = "", meta: Literal[False] = False) -> dict[str, Tensor]: ...
@overload
def read_state_dict(path: str | Path, *, subkey: str = "", meta: bool) -> dict[str, Tensor] | None: ...


def read_state_dict(path: str | Path, *, subkey: str = "", meta: bool = False) -> dict[str, Tensor] | None:
    """The flat state dict of a weights file, read by its content (`sniff_format`), whatever its suffix.

    `subkey`: the state dict may sit under this key of the file's top-level dict (e.g. "generator" in BigVGAN's
    files, "state_dict" in some open_clip ones); a file that already is a flat state dict is taken as is. A training
    checkpoint of MMAudio's trainer or of `avflow train` gives its network (`training_checkpoint_weights`, said in a
    `WeightsWarning`); another dict holding one state dict under a `STATE_KEYS` key (`{"ema": ...}`, Lightning's
    `{"state_dict": ..., "epoch": ...}`) gives that one, said likewise. The wrappers' key prefixes are removed: DDP's
    `module.` on every key, torch.compile's, FSDP's and checkpoint_wrapper's segments wherever they sit.

    `meta`: the same state dict, found the same way with the same errors, as meta tensors of its shapes and dtypes
    (0-dim tensors as read): no tensor data is read, whatever the file's size (to check a file against a module
    built on the meta device before reading gigabytes). None where the file cannot be read so cheaply (torch's
    legacy format, a torch file named .safetensors: the full read says what is wrong); the notes are the full read's.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    state = _read_by_content(path, meta)
    if state is NO_CHEAP_READ:
        return None
    if subkey and isinstance(state, dict) and isinstance(state.get(subkey), Mapping):
        state = dict(state[subkey])
    elif isinstance(state, dict) and not _is_flat(state):
        found = training_checkpoint_weights(state)
        if found is not None:
            state, whose, what = found
            if not meta:
                warnings.warn(WeightsWarning(f"{path}: a training checkpoint of {whose}: {what}"), stacklevel=2)
        elif (wrapped := _wrapped_state_dict(path, state)) is not None:
            state, what = wrapped
            if not meta:
                warnings.warn(WeightsWarning(f"{path}: {what}"), stacklevel=2)
    if not isinstance(state, dict) or not _is_flat(state):
        raise WeightsError(f"{path}: does not hold a flat state dict of tensors{_what_instead(state, subkey)}")
    return unwrapped(state)


def _wrapped_state_dict(path: Path, state: Mapping) -> tuple[dict[str, Tensor], str] | None:
    """(state dict, what was taken) of a dict holding exactly one state dict under a `STATE_KEYS` key, else
    None; several such state dicts are a WeightsError naming them (which one is meant is the user's choice)."""
    found = [k for k in STATE_KEYS if isinstance(state.get(k), Mapping) and state[k] and _is_flat(state[k])]
    if len(found) > 1:
        raise WeightsError(f"{path}: holds {len(found)} state dicts ({', '.join(found)}); re-save the one to use, "
                           f"e.g. torch.save(checkpoint[{found[0]!r}], PATH)")  # fmt: skip
    if not found:
        return None
    others = [str(k) for k in state if k != found[0]]
    beside = f" (beside {describe_keys(others)})" if others else ""
    return dict(state[found[0]]), f"the state dict under {found[0]!r} is used{beside}"


def _what_instead(state: Any, subkey: str) -> str:
    """What a file that is no flat state dict holds, for its error: the entries that are no tensors, the keys of
    a dict of other things, or the type of what it holds."""
    under = f" (looked under {subkey!r})" if subkey else ""
    if not isinstance(state, dict):
        return f"{under}; it holds a {type(state).__name__}"
    if not state:
        return f"{under}; it is empty"
    others = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, Tensor)]
    if len(others) < len(state):
        return f"{under}; entries that are no tensors: {describe_keys(others)}"
    return f"{under}; it holds {describe_keys(map(str, state))}"


def _is_flat(state: Mapping) -> bool:
    return all(isinstance(v, Tensor) for v in state.values())


def unwrapped(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`state` with the key prefixes of training wrappers removed: DDP's `module.` when every key has it, and the
    segments of torch.compile (`_orig_mod.`), FSDP and checkpoint_wrapper wherever they appear (a wrapped model or a
    wrapped part of one)."""
    state = {_without_segments(k): v for k, v in state.items()}
    if state and all(k.startswith(DDP) for k in state):
        state = {k.removeprefix(DDP): v for k, v in state.items()}
    return state


def _without_segments(key: str) -> str:
    for segment in WRAPPER_SEGMENTS:
        key = key.replace("." + segment, ".").removeprefix(segment)
    return key


def with_averages(state: Mapping[str, Tensor], averages: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A model's state dict with the EMA `averages` in place of the parameters they average, each in the model's
    dtype (the buffers, which an EMA does not average, as they are)."""
    return {k: averages[k].to(v.dtype) if k in averages else v for k, v in state.items()}


def merge_lora_state(state: Mapping[str, Tensor], scale: float) -> dict[str, Tensor]:
    """`state` with every LoRA adapter (`P.lora_a` and `P.lora_b` beside `P.weight`, as
    `avflow.models.peft.LoRALinear` saves them) folded into its linear, `P.weight + scale · P.lora_b @ P.lora_a`, its
    keys dropped: the state dict of the plain network, which loads strictly. `scale`: LoRA's alpha / rank."""
    out = dict(state)
    for key in state:
        if key != "lora_a" and not key.endswith(".lora_a"):
            continue
        base = key.removesuffix("lora_a")
        if base + "lora_b" in state and base + "weight" in state:
            a, b = out.pop(key), out.pop(base + "lora_b")
            out[base + "weight"] = state[base + "weight"] + scale * b @ a
    return out


def training_checkpoint_weights(state: Mapping) -> tuple[dict[str, Tensor], str, str] | None:
    """(network state dict, whose checkpoint, what was taken) from a training checkpoint, or None when `state` is
    not one.

    MMAudio's trainer (`*_ckpt_last.pth`: it, weights, optimizer, scheduler, ema): its `weights`, the network as
    trained (its post-hoc EMA state cannot be read as weights; the run's `*_ema_final.pth` is the EMA). `avflow
    train` (`checkpoints/step_*.pt`: step, model, ema, optimizer, ...): the EMA of its smallest sigma_rel in place of
    the parameters, what the run's `ema_<sigma_rel>.safetensors` export holds at that step, or `model` where it kept
    no EMA; the LoRA adapters of a run with a `peft` section (its `lora_scale`) folded in, as its exports have them.
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
    scale = state.get("lora_scale")
    plain = dict if scale is None else lambda weights: merge_lora_state(weights, float(scale))
    try:
        sigmas = [float(s) for s in ema["sigma_rels"]]
        i = min(range(len(sigmas)), key=sigmas.__getitem__)
        averages = ema["averages"][i]
    except (TypeError, KeyError, IndexError, ValueError):
        return plain(model), whose, "its network as trained (it kept no EMA)"
    return plain(with_averages(model, averages)), whose, f"its EMA (sigma_rel {sigmas[i]:g})"


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
        raise _unreadable_safetensors(path, exc) from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise _unreadable_safetensors(path, exc) from None


def describe_keys(keys: Iterable[str], limit: int = 6) -> str:
    """Sorted keys, at most `limit` of them, then how many more."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


KINDS = (  # (what a state dict holds, key prefixes each found in its keys); the first that fits names it
    ("an avflow joint model", ("audio.", "video.", "fusion.")),
    ("an MMAudio network", ("audio_input_proj.",)),
    ("an audio VAE", ("decoder.conv_in", "data_mean")),
    ("a BigVGAN vocoder", ("conv_pre", "ups.")),
    ("a Synchformer", ("vfeat_extractor.",)),
    ("a CLIP model", ("visual.",)),
    ("a CLIP model", ("token_embedding",)),
)
# the official layouts by their input and latent widths, as in avflow.codecs' AUDIO_VAE_CONFIGS and BIGVGAN_CONFIGS
VAE_LAYOUTS = {(80, 20): "16k", (128, 40): "44k"}  # (mel bins, latent channels)
BIGVGAN_LAYOUTS = {80: "16k", 128: "44k"}  # mel bins


def identify_state_dict(keys: Iterable[str]) -> str | None:
    """What a state dict with these keys holds ("an audio VAE", "an MMAudio network", ...: `KINDS`), or None where
    it is no kind that avflow loads. Keys only: for naming a file given in place of another."""
    keys = list(keys)
    for kind, prefixes in KINDS:
        if all(any(k.startswith(p) for k in keys) for p in prefixes):
            return kind
    return None


def _layout(kind: str | None, state: Mapping[str, Tensor]) -> str | None:
    """The official layout ("16k" / "44k") of an audio VAE or BigVGAN state dict, by its tensors' shapes."""
    if kind == "an audio VAE":
        mean, conv = state.get("data_mean"), state.get("decoder.conv_in.weight")
        if isinstance(mean, Tensor) and isinstance(conv, Tensor) and mean.ndim == conv.ndim == 3:
            return VAE_LAYOUTS.get((mean.shape[1], conv.shape[1]))
    if kind == "a BigVGAN vocoder":  # conv_pre's weight (out, mels, 7), or weight norm's weight_v beside weight_g
        convs = [v for k, v in state.items() if k.startswith("conv_pre.") and isinstance(v, Tensor) and v.ndim == 3]
        mels = [v.shape[1] for v in convs]
        return BIGVGAN_LAYOUTS.get(max(mels)) if mels else None
    return None


def _with_layout(kind: str, state: Mapping[str, Any]) -> str:
    layout = _layout(kind, state)
    return f"{kind} of the {layout} layout" if layout else kind


def _other_kind(state: Mapping[str, Any], expected: Mapping[str, Tensor]) -> str | None:
    """What a state dict that does not fit a module (whose state dict is `expected`) holds instead, where both are
    kinds avflow knows (`identify_state_dict`) and differ, or are the same kind in two official layouts; else None."""
    kind, own = identify_state_dict(map(str, state)), identify_state_dict(expected)
    if kind is None or own is None:
        return None
    if kind != own:
        tops = sorted({k.split(".")[0] + (".*" if "." in k else "") for k in map(str, state)})
        return f"holds {_with_layout(kind, state)}, not {own} (its keys: {describe_keys(tops)})"
    layout, own_layout = _layout(kind, state), _layout(own, expected)
    if layout and own_layout and layout != own_layout:
        return f"holds {kind} of the {layout} layout, not of the {own_layout} layout that this model reads"
    return None


def _key_problems(expected: Mapping[str, Tensor], state: Mapping[str, Any], optional: tuple[str, ...]) -> list[str]:
    """What keeps `state` from fitting a module whose state dict is `expected`: missing, unexpected, non-tensor,
    misshapen keys, and integer tensors where the module holds floats (floats of any width are cast)."""
    missing = [k for k in expected if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in expected]
    both = [k for k in expected if k in state]
    not_tensors = [k for k in both if not isinstance(state[k], Tensor)]
    tensors = [k for k in both if isinstance(state[k], Tensor)]
    misshapen = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in tensors
                 if tuple(state[k].shape) != tuple(expected[k].shape)]  # fmt: skip
    kinds = [f"{k} {_dtype_name(state[k])} != {_dtype_name(expected[k])}" for k in tensors
             if expected[k].is_floating_point() and not state[k].is_floating_point()]  # fmt: skip
    found = (("missing keys", missing, 6), ("unexpected keys", unexpected, 6), ("not tensors", not_tensors, 6),
             ("shape mismatch", misshapen, 3), ("dtype mismatch", kinds, 3))  # fmt: skip
    return [f"{what}: {describe_keys(keys, limit=limit)}" for what, keys, limit in found if keys]


def _dtype_name(value: Tensor) -> str:
    return str(value.dtype).removeprefix("torch.")


def _without_owner_prefix(
    state: Mapping[str, Any], expected: Mapping[str, Tensor], optional: tuple[str, ...]
) -> tuple[Mapping[str, Any], list[str]]:
    """(`state` without a prefix every key has (`OWNER_PREFIXES`: Lightning's `model.`) where the keys fit the
    module only without it, else `state` as it is; what keeps that from fitting, `_key_problems`)."""
    problems = _key_problems(expected, state, optional)
    if not state or not problems:
        return state, problems
    for prefix in OWNER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            stripped = {k.removeprefix(prefix): v for k, v in state.items()}
            if not _key_problems(expected, stripped, optional):
                return stripped, []
    return state, problems


def non_finite(state: Mapping[str, Any], keys: Iterable[str] | None = None) -> list[str]:
    """The keys (of `keys`, default all) whose floating-point tensors hold NaN or infinity: one pass over each."""
    found = []
    for k in state if keys is None else keys:
        value = state.get(k)
        if isinstance(value, Tensor) and value.is_floating_point() and not value.is_meta:
            if not bool(torch.isfinite(value).all()):
                found.append(k)
    return found


def load_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str = "state dict",
    *,
    optional: tuple[str, ...] = (),
    assign: bool = False,
) -> nn.Module:
    """Copy `state` into `module`; a WeightsError names every missing, unexpected, non-tensor, misshapen or
    integer-where-float key and every tensor holding NaN or infinity, or what the file holds instead (another kind
    of network, an int8 file of `quantize_int8`).

    Keys ending with one of `optional` (e.g. recomputable filter buffers) may be absent. A prefix on every key that
    only keeps them from fitting (`OWNER_PREFIXES`) is removed. `assign` replaces the module's tensors instead of
    copying into them (for modules built on the meta device), each in the module's dtype as a copy would be
    (weights saved in fp16 or bf16 load into an fp32 module).
    """
    expected = module.state_dict()
    state, mismatch = _without_owner_prefix(state, expected, optional)  # the key comparison, done once
    other = _other_kind(state, expected) if mismatch else None
    if other is not None:
        raise WeightsError(f"{source}: {other}")
    if any(k.endswith(INT8_SCALE) for k in state) and not any(k.endswith(INT8_SCALE) for k in expected):
        raise WeightsError(f"{source}: an int8 file of avflow's quantize_int8 (int8 weights with {INT8_SCALE} "
                           "scales), which this loader does not read; give fp32/fp16 weights, or read it with "
                           "avflow.weights.dequantize_int8 first")  # fmt: skip
    problems = []
    if mismatch:
        kind = identify_state_dict(map(str, state))
        holds = f"holds {_with_layout(kind, state)}; " if kind and identify_state_dict(expected) is None else ""
        problems.append(f"{holds}does not match {type(module).__name__}: " + "; ".join(mismatch))
    bad = non_finite(state, [k for k in expected if k in state])
    if bad:
        problems.append(f"non-finite values in {len(bad)} tensor{'s' if len(bad) > 1 else ''} "
                        f"({describe_keys(bad, limit=3)})")  # fmt: skip
    if problems:
        raise WeightsError(f"{source}: " + "; ".join(problems))
    if assign:
        state = {k: _as_dtype(v, expected[k].dtype) for k, v in state.items()}
    module.load_state_dict(dict(state), strict=not optional, assign=assign)
    return module


def _as_dtype(value: Tensor, dtype: torch.dtype) -> Tensor:
    """A floating-point tensor in the floating-point `dtype` it is loaded into; anything else as it is."""
    same_kind = value.is_floating_point() and dtype.is_floating_point
    return value.to(dtype) if same_kind and value.dtype != dtype else value


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], *, durable: bool = True) -> None:
    """Write through a temporary file in the same folder, fsync it, then rename it over `path`.

    Either `path` ends up complete or nothing changes: when `write` fails, the temporary file and any folders made
    for it are removed again. `durable=False` skips the fsyncs (still whole or absent if the process dies, not if
    the machine loses power): for many small files a rerun can remake, e.g. a world dataset's clips.
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
            if durable:
                os.fsync(f.fileno())
        if os.stat(tmp).st_mode & 0o777 != mode:  # a writer that recreated the file by name: safetensors' save_file
            os.chmod(tmp, mode)  # makes it 0600, unreadable to the other users of a shared cache or run folder
            if durable:
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
    if durable:
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
