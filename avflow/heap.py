"""Keep freed memory in the process heap (glibc), so that each new tensor reuses pages already mapped.

By default glibc maps every block over its mmap threshold (128 KiB at start, raised to the size of each such block
freed, up to 32 MiB) on its own and unmaps it when freed, and trims the heap's free top beyond twice that threshold.
A model that makes and frees tensors of many MiB at every layer then touches fresh pages all the time, and the
kernel zero-fills each 4 KiB page at its first touch: vocoding 8 s of 44.1 kHz audio with BigVGAN v2 took 12-23
million minor page faults and 23-50 s of system CPU time per call on 2 cores, up to half its CPU time (avflow's way
and the plain one; docs/foley.md).
`keep_freed_memory()` makes glibc take every block from the heap (`M_MMAP_MAX` 0: no separate mappings) and trim the
heap only beyond `TRIM_THRESHOLD` of free space at its top, so freed blocks are reused as they are and the faults
go. What it costs: a process keeps what it has used, up to its peak, until it ends, rather than returning freed
memory between stages, and blocks that a fragmented heap cannot merge raise the peak (by 0-0.8 GB in those runs).

The `avflow` command calls it once before a command runs; `AVFLOW_KEEP_FREED_MEMORY=0` in the environment keeps
glibc's defaults (for a smaller peak). A library user may call it (it changes the whole process), or set glibc's own
variables: where any `MALLOC_*` variable or `GLIBC_TUNABLES` is set in the environment, those win and nothing is
changed. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os

from avflow.errors import ConfigError

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 * 2**30  # bytes of free heap top kept before trimming
SWITCH = "AVFLOW_KEEP_FREED_MEMORY"  # environment: "1" (default) or "0" (glibc's defaults)


def sets_malloc(name: str) -> bool:
    """Whether an environment variable of this name configures glibc's allocator."""
    return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def environment_sets_malloc() -> bool:
    """Whether the environment configures glibc's allocator itself."""
    return any(sets_malloc(name) for name in os.environ)


def keep_freed_memory() -> bool:
    """Set glibc's allocator as above; True if set, False where the environment turns it off or configures malloc
    itself, or the C library is not glibc."""
    switch = os.environ.get(SWITCH, "1")
    if switch not in ("0", "1"):
        raise ConfigError(f"{SWITCH} must be 0 or 1, got {switch!r}")
    if switch == "0" or environment_sets_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting the trim threshold also stops glibc's dynamic thresholds.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
