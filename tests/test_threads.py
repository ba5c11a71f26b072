"""The `avflow` command lets idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless told otherwise, and sets it
before torch is imported (libgomp reads it once, when it loads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SPY = """
import os, sys
import avflow.cli as cli
seen = {}
real = cli.wait_passively
def spy():
    seen["torch"] = "torch" in sys.modules
    return real()
cli.wait_passively = spy
cli.main(["train", "toy", "--print-config"])
print(seen["torch"], os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_sets_the_wait_policy_before_torch_loads_unless_the_environment_does(given, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run([sys.executable, "-c", SPY], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"False {expected}"
