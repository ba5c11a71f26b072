"""Shared helpers for the benchmark scripts: timing, the machine's matmul peak, memory peaks, FLOPs, tables, the load
average, and one-line errors for bad input (argument types, an unwritable --json, avflow's errors)."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time in seconds over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def synchronize(device: torch.device | str = "cpu") -> None:
    """Wait for queued GPU work (no-op on the CPU), so that wall times cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(
    n: int = 2048, repeat: int = 5, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> float:
    """Achieved GFLOP/s of a large square matmul on this machine, now (the reference 'peak'); fp32 by default."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)

    def run() -> None:
        a @ b
        synchronize(device)

    sec = timed(run, repeat=repeat)
    return 2 * n**3 / sec / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention `fn` runs (torch's FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def reset_peak_memory(device: torch.device | str = "cpu", trim: bool = True) -> None:
    """Restart the peak-memory count: the GPU allocator's, or this process's peak RSS (Linux clear_refs), after
    handing freed heap memory back to the system unless `trim` is off (so that an earlier stage's freed blocks do
    not hide growth)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        if trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process's since its start


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak since `reset_peak_memory`: GPU memory allocated by torch, or this process's peak RSS (VmHWM)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mb(device: torch.device | str = "cpu") -> float:
    """Memory in use now: GPU memory allocated by torch, or this process's RSS (VmRSS)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def difference(a: torch.Tensor | None, b: torch.Tensor | None) -> tuple[float | None, float | None]:
    """(max |a - b|, RMS(a - b) / RMS(b)) in float32."""
    if a is None or b is None:
        return None, None
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    rel = ((a - b).square().mean().sqrt() / b.square().mean().sqrt().clamp_min(1e-12)).item()
    return (a - b).abs().max().item(), rel


def load_average() -> str:
    """The 1, 5 and 15 minute load averages with the CPU count, e.g. '3.9 4.1 4.4 on 2 CPUs'."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} CPUs"


def load_facts(before: tuple[float, ...]) -> str:
    """The 1-minute load average before (os.getloadavg() taken when timing began) and now, with the CPU count."""
    try:
        now = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        now = "unknown"
    return f"load {before[0]:.2f} before, {now} after on {os.cpu_count()} CPUs"


def report(rows: list[dict], threads: int, load_before: tuple[float, ...], facts: str, json_path: Path | None) -> None:
    """Print the run's facts with the load average before and now, the table of rows; write them as JSON if asked
    (`check_output` refuses an unwritable path up front)."""
    load_after = os.getloadavg()
    print(f"threads={threads}, torch {torch.__version__}, {facts}; {load_facts(load_before)}")
    print_table(rows)
    if json_path:
        json_path.write_text(json.dumps({"threads": threads, "load": [load_before, load_after], "rows": rows}))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors, `PROG: error: MESSAGE (see PROG --help)`, as the avflow command's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    """argparse type: an integer >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def device_type(text: str) -> torch.device:
    """argparse type: a torch device this machine has (cpu, cuda, cuda:1)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU here")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text}: cpu or cuda")
    return device


def check_output(parser: argparse.ArgumentParser, path: Path | str | None, flag: str = "--json") -> None:
    """Refuse (parser.error, before any slow work) an output file that could not be written at the end: its folder
    missing or not writable, or the path a folder. None (not asked for) passes."""
    if path is None:
        return
    path = Path(path)
    folder = path.resolve().parent
    if path.is_dir():
        parser.error(f"{flag} {path}: is a folder, not a file")
    if not folder.is_dir():
        parser.error(f"{flag} {path}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"{flag} {path}: not writable")


def run_main(main: Callable[[], int | None]) -> None:
    """Run a benchmark's `main` and exit with its status; an avflow error (bad input the user can fix: a missing
    file, bad weights, a bad setting) ends the run as one line on stderr, status 2, instead of a traceback."""
    from avflow.errors import AvflowError  # here, not on import: sync_accuracy's worker imports this with an old avflow

    try:
        code = main()
    except AvflowError as exc:
        text = str(exc).strip()
        print(f"{Path(sys.argv[0]).name}: error: {text.splitlines()[0] if text else type(exc).__name__}",
              file=sys.stderr)  # fmt: skip
        code = 2
    sys.exit(code)


def print_table(rows: list[dict], title: str = "") -> None:
    """Print a list of dicts as an aligned text table."""
    if title:
        print(title)
    if not rows:
        return
    cols = list(rows[0])
    cells = [[f"{r.get(c, ''):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


CODEC_WORLD = "data/world2s"  # the world the codecs trained and are measured on (docs/codecs.md)
CODEC_WORLD_ARGS = ["--n", "4000", "--duration", "2", "--fps", "16", "--seed", "0", "--out", CODEC_WORLD,
                    "--workers", "2"]  # fmt: skip


def ensure_codec_world(world: str, split: str) -> None:
    """Build the codecs' world (`avflow world make`, as docs/codecs.md does; about a minute on 2 cores) when `world`
    is its default path and the split is missing; another missing world is a one-line error."""
    if (Path(world) / split / "manifest.jsonl").is_file():
        return
    if world != CODEC_WORLD:
        raise SystemExit(f"error: no world split at {Path(world) / split} (`avflow world make` builds one)")
    print(f"building the codecs' world in {CODEC_WORLD} (about a minute on 2 cores)", flush=True)
    subprocess.run([sys.executable, "-m", "avflow.cli", "world", "make", *CODEC_WORLD_ARGS], check=True)
