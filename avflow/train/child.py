"""Running a training process as a child of a script (scripts/train_default_v2.py, train_binaural_v2.py, ...).

`subprocess.run` answers Ctrl-C by killing its child 0.25 s later, so a trainer's graceful stop (it catches SIGINT,
finishes the step, saves a checkpoint and exits 130; `avflow.train.trainer`) never completes and the steps since
its last checkpoint are lost. `run_child` keeps waiting for the child instead.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


def run_child(cmd: list[str], run: Path | None = None) -> None:
    """Run `cmd` to its end; a non-zero exit is `subprocess.CalledProcessError`, as `subprocess.run(check=True)`.

    Ctrl-C: the terminal signals the whole process group, so the child got it too; this waits for the child to
    save and exit. A second Ctrl-C forwards SIGINT to the child (it stops at once; it is the child's first if only
    this process was signalled), a third kills it. After an interrupt, or where the child exits 130 (it stopped on a
    Ctrl-C this process did not see), this prints one line (the last checkpoint step of the run folder `run`, where
    given) and exits with status 130."""
    child = subprocess.Popen(cmd)
    interrupts = 0
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts == 1:
                print("\nwaiting for the training process to save (Ctrl-C again stops it at once)", file=sys.stderr,
                      flush=True)  # fmt: skip
            elif interrupts == 2:
                child.send_signal(signal.SIGINT)
            else:
                child.kill()
    if interrupts or code in (130, -signal.SIGINT):  # 130: the trainer stopped on Ctrl-C (this process may ignore it)
        print(f"interrupted at {_last_step(run)}; rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(130)
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def _last_step(run: Path | None) -> str:
    """'step N' of the newest checkpoint in `run`/checkpoints, or what is known without one."""
    if run is None:
        return "the last saved step"
    from avflow.train.checkpoint import list_checkpoints

    found = list_checkpoints(Path(run) / "checkpoints")
    return f"step {found[0][0]} ({run})" if found else f"no saved step ({run})"
