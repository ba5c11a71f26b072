"""Let idle OpenMP threads sleep, so that torch's CPU work does not stall when other processes share the cores.

torch's CPU ops run on an OpenMP thread team (libgomp on Linux). By default a thread that finishes its share spins,
waiting for the next parallel region, and only then sleeps. On a machine that has other work (a browser, a second
job, another rank of `torchrun`), the spinning threads take the cores the working ones need, and every small op
waits for a descheduled thread. Beside one busy process on the 2-core project machine, `avflow generate` took 11-26 s
instead of 8 and a toy `avflow train` 8-9 s instead of 5.6; with `OMP_WAIT_POLICY=PASSIVE` the idle threads sleep at
once (8.2 and 5.6 s there), for 1-3 % more wall time on the idle machine (docs/foley.md, "Threads").

`wait_passively()` sets it for the process where the environment does not say otherwise; libgomp reads it once, when
torch is first imported, so the `avflow` command calls it before any command imports torch. `OMP_WAIT_POLICY=ACTIVE`
in the environment keeps the spinning (a machine with nothing else to run). A library user sets the variable before
importing torch.
"""

from __future__ import annotations

import os

VARIABLE = "OMP_WAIT_POLICY"


def wait_passively() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the environment sets it; returns whether it was set here."""
    if VARIABLE in os.environ:
        return False
    os.environ[VARIABLE] = "PASSIVE"
    return True
