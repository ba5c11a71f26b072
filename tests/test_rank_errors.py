"""Under torchrun, who says what: an error every rank raises alike is said once (rank 0), one rank's own error (its
data) by that rank, a collective that lost its peer points at that rank's message, and Ctrl-C ends every rank at
once. Ranks are faked through RANK/WORLD_SIZE around `avflow.cli.main` with stubbed commands (no process group),
except for one slow real two-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from test_train import tiny_config

import avflow
from avflow import cli
from avflow.data.cache import DamagedShardError
from avflow.errors import AvflowError, ConfigError, TrainingError, WeightsError
from avflow.train import distributed
from avflow.train import trainer as trainer_module
from avflow.train.config import load_train_config
from avflow.train.distributed import DistInfo
from avflow.train.trainer import Trainer

REPO = Path(avflow.__file__).resolve().parents[1]  # the avflow under test, for its subprocesses
CONFIG = types.SimpleNamespace(train=types.SimpleNamespace(device="cpu"))
TWO_RANKS = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo")


def as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


def stub_command(monkeypatch, run) -> None:
    """`avflow stub` runs `run(args)`."""
    module = types.ModuleType("avflow_stub_command")
    module.HELP, module.add_arguments, module.run = "a stub", lambda parser: None, run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "stub", module.__name__)


def raising(exc: BaseException):
    def run(args):
        raise exc

    return run


def damaged_loader():
    yield {"x": 1}
    raise DamagedShardError("shard_r1_00003.safetensors: damaged cache shard (simulated); delete it and rerun")


@pytest.mark.parametrize("rank", [0, 1])
def test_a_data_error_is_said_by_the_rank_that_read_it(monkeypatch, capsys, rank):
    """A damaged shard is one rank's own data: that rank says it (rank 1 was silent: the error is a ConfigError,
    which only rank 0 prints)."""

    def run(args):
        list(trainer_module.own_data_errors(damaged_loader()))

    as_rank(monkeypatch, rank)
    stub_command(monkeypatch, run)
    assert cli.main(["stub"]) == 2
    err = capsys.readouterr().err
    prefix = "[rank 1] " if rank else ""
    assert err == f"avflow stub: error: {prefix}shard_r1_00003.safetensors: damaged cache shard (simulated); " \
                  "delete it and rerun\n"  # fmt: skip


def test_data_errors_keep_their_type():
    with pytest.raises(DamagedShardError) as caught:
        list(trainer_module.own_data_errors(damaged_loader()))
    assert not caught.value.every_rank
    assert list(trainer_module.own_data_errors(iter([1, 2]))) == [1, 2]


@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_alike_on_every_rank_is_said_once(monkeypatch, capsys, rank):
    as_rank(monkeypatch, rank)
    stub_command(monkeypatch, raising(ConfigError("train.steps: must be positive")))
    assert cli.main(["stub"]) == 2
    assert capsys.readouterr().err == ("avflow stub: error: train.steps: must be positive\n" if rank == 0 else "")
    stub_command(monkeypatch, raising(AvflowError("this rank's device")))
    assert cli.main(["stub"]) == 2
    assert capsys.readouterr().err == f"avflow stub: error: {'[rank 1] ' if rank else ''}this rank's device\n"


def test_a_lost_peer_is_one_line_on_rank_0_pointing_at_its_message(monkeypatch):
    """A collective whose peer exited (gloo: "Connection reset by peer") is not this rank's failure: a one-line
    TrainingError said by rank 0 (it was a 25-line traceback)."""
    lost = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:5010: Connection reset by peer. GLHF")

    class Failing:
        def __init__(self, config, info):
            raise lost

    monkeypatch.setattr(distributed, "setup", lambda device: TWO_RANKS)
    monkeypatch.setattr(distributed, "cleanup", lambda: None)
    monkeypatch.setattr(trainer_module, "Trainer", Failing)
    with pytest.raises(TrainingError, match=r"^another process failed \(its message is above\)$") as caught:
        trainer_module.train(CONFIG)
    assert caught.value.every_rank
    monkeypatch.setattr(distributed, "setup", lambda device: DistInfo(0, 1, 0, torch.device("cpu"), None))
    with pytest.raises(RuntimeError, match="reset by peer"):  # a single process has no peer
        trainer_module.train(CONFIG)


def test_a_first_step_that_lost_its_peer_does_not_blame_the_model_and_data(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run")))
    trainer = Trainer(load_train_config(path), DistInfo(0, 1, 0, torch.device("cpu"), None))

    def step(batches):
        raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:31666. This is typically caused by")

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(ConfigError, match="the first training step failed"):  # one process: its own step failed
        trainer.fit()
    trainer.info = TWO_RANKS
    with pytest.raises(RuntimeError, match="closed by peer"):  # left to `train`, which says another process failed
        trainer.fit()


def nan_check(tmp_path: Path, rank: int, steps: list[int]):
    folder = tmp_path / "checkpoints"
    folder.mkdir(exist_ok=True)
    for step in steps:
        (folder / f"step_{step:08d}.pt").write_bytes(b"")
    info = DistInfo(rank, 2, rank, torch.device("cpu"), "gloo")
    fake = types.SimpleNamespace(info=info, step=160, ckpt_dir=folder)
    with pytest.raises(TrainingError) as caught:
        Trainer._finite_mean_loss(fake, torch.tensor(float("nan")), 10)
    return caught.value


@pytest.mark.parametrize("rank", [0, 1])
def test_a_nan_loss_is_the_same_true_message_on_every_rank_said_once(tmp_path, monkeypatch, rank):
    """The mean loss is all-reduced, so every rank raises; rank 1 said no checkpoint was kept where rank 0 named
    one (and the no-checkpoint advice lost "a lower optim.lr")."""
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda x, info: x)
    exc = nan_check(tmp_path, rank, [100, 150])
    assert exc.every_rank
    assert str(exc) == (
        "the training loss is nan over steps 151-160: the run diverged (or the data holds non-finite values); its "
        "last checkpoint (step 150) is kept: resume from it with a lower optim.lr, a smaller optim.grad_clip, or "
        "check the data"
    )


def test_a_nan_loss_before_any_checkpoint_still_advises_a_lower_lr(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda x, info: x)
    assert str(nan_check(tmp_path, 0, [])).endswith(
        "no checkpoint was saved before it: rerun with a lower optim.lr, a smaller optim.grad_clip, or check the data"
    )


def test_a_damaged_checkpoint_rank_0_read_for_all_is_said_once(monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, info: (None, "step_6.pt: truncated", None))
    info = DistInfo(1, 2, 1, torch.device("cpu"), "gloo")
    config = types.SimpleNamespace(checkpoint=types.SimpleNamespace(resume="auto"))
    fake = types.SimpleNamespace(info=info, config=config)
    with pytest.raises(WeightsError, match="truncated") as caught:
        Trainer._find_checkpoint(fake)
    assert caught.value.every_rank


@pytest.mark.parametrize("rank", [0, 1])
def test_print_config_is_printed_by_rank_0_alone(monkeypatch, capsys, rank):
    as_rank(monkeypatch, rank)
    assert cli.main(["train", "toy", "--print-config", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert (out.count("steps: 7") == 1) if rank == 0 else out == ""


@pytest.mark.parametrize("rank", [0, 1])
def test_an_unwritable_out_dir_is_said_once(tmp_path, monkeypatch, capsys, rank):
    blocking = tmp_path / "a_file"
    blocking.write_text("")
    as_rank(monkeypatch, rank)
    monkeypatch.setattr(trainer_module, "train", lambda config: pytest.fail("trained"))
    assert cli.main(["train", "toy", f"out_dir={blocking}/run"]) == 2
    err = capsys.readouterr().err
    assert err.count("is a file, not a folder") == (1 if rank == 0 else 0), err
    assert "[rank" not in err


def test_a_batch_that_does_not_split_across_the_processes_is_refused_when_the_config_loads(tmp_path, monkeypatch,
                                                                                          capsys):  # fmt: skip
    as_rank(monkeypatch, 0, world=2)
    monkeypatch.setattr(trainer_module, "train", lambda config: pytest.fail("the model was built"))
    assert cli.main(["train", "toy", "train.batch_size=9", f"out_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err == (
        "avflow train: error: train.batch_size: 9 is not divisible by grad_accum x processes = 1 x 2\n"
    )
    assert not (tmp_path / "run").exists()


class Exited(BaseException):
    pass


def test_ctrl_c_under_torchrun_ends_the_process_at_once(monkeypatch, capsys):
    """Each rank says `interrupted` and leaves through os._exit(130): unwinding freed DDP's reducer and the process
    group, which waited on a peer blocked in a collective (30 s, until torchrun killed the rank, 1 run in 3)."""
    codes = []

    def exit_now(code):
        codes.append(code)
        raise Exited

    def run(args):
        signal.raise_signal(signal.SIGINT)
        time.sleep(1)  # the handler runs here
        return 0

    monkeypatch.setattr(os, "_exit", exit_now)
    stub_command(monkeypatch, run)
    as_rank(monkeypatch, 1)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Exited):
        cli.main(["stub"])
    assert codes == [130] and capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGINT) is before
    as_rank(monkeypatch, 0, world=1)  # a single process: the KeyboardInterrupt unwinds, as before
    assert cli.main(["stub"]) == 130
    assert codes == [130] and capsys.readouterr().err == "interrupted\n"


@pytest.mark.slow
def test_two_real_ranks_a_damaged_shard_on_rank_1(tmp_path):
    """torchrun, 2 gloo ranks: rank 1's data fails at step 3; rank 1 says it, rank 0 one line pointing at it."""
    script = tmp_path / "rankfail.py"
    script.write_text(
        "import os, sys\n"
        "from avflow.train import datasets\n"
        "from avflow.data.cache import DamagedShardError\n"
        "if os.environ['RANK'] == '1':\n"
        "    original, seen = datasets.SyntheticStreams.__getitem__, []\n"
        "    def bad(self, i):\n"
        "        seen.append(i)\n"
        "        if len(seen) > 8:\n"
        "            raise DamagedShardError('shard_r1_00003.safetensors: damaged cache shard (simulated)')\n"
        "        return original(self, i)\n"
        "    datasets.SyntheticStreams.__getitem__ = bad\n"
        "from avflow.cli import main\n"
        "sys.exit(main())\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               "train", "toy", "train.batch_size=8", "train.threads=1", "log.progress=false", "train.steps=50",
               f"out_dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("avflow train: error:")]
    assert proc.returncode != 0
    assert sorted(errors) == [
        "avflow train: error: [rank 1] shard_r1_00003.safetensors: damaged cache shard (simulated)",
        "avflow train: error: another process failed (its message is above)",
    ], proc.stderr[-3000:]
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
