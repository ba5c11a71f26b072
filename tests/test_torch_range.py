"""pyproject.toml's torch requirement: a lower bound no older than the core code needs, and no upper bound (CI installs
one torch release; the range stays open)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# The oldest torch the core (everything but distributed.strategy: fsdp) runs on. Evidence, first release with each:
#   nn.RMSNorm (avflow/nn/wan_blocks.py, mmaudio_blocks.py, fusion/*): 2.4 (pytorch/pytorch#121364);
#   torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type) (avflow/precision.py,
#   nn/mmaudio_blocks.py, codecs/bigvgan_blocks.py): 2.4 (pytorch/pytorch#124359; absent from 2.3.1's torch/_C stubs).
# Everything else the core calls is older (load_state_dict(assign=) 2.1, uint8 antialiased bicubic interpolate 2.1,
# torch.device as a context manager 2.0, scaled_dot_product_attention 2.0, torch.load(weights_only=) 1.13).
# fsdp needs 2.6 (`from torch.distributed.fsdp import fully_shard`) and imports it lazily (avflow/train/fsdp.py).
CORE_TORCH_MIN = (2, 4)


def _torch_requirements() -> list[str]:
    deps = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [d for d in deps if re.match(r"torch\s*($|[<>=!~;\[])", d)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0]))


def test_torch_lower_bound_covers_the_core():
    (req,) = _torch_requirements()
    spec = req.split(";")[0]
    lower = re.findall(r">=\s*([0-9][0-9.]*)", spec)
    assert lower, f"{req!r}: no torch lower bound (>=)"
    floor = max(_version(v) for v in lower)
    assert floor >= CORE_TORCH_MIN, (
        f"{req!r} admits torch {'.'.join(map(str, floor))}, but the core needs torch "
        f">={'.'.join(map(str, CORE_TORCH_MIN))} (see CORE_TORCH_MIN)"
    )


def test_torch_range_stays_open_above():
    (req,) = _torch_requirements()
    spec = req.split(";")[0]
    assert not re.search(r"<|==|~=|===", spec), f"{req!r}: torch's range must stay open above (only a >= bound)"


def test_installed_torch_is_in_range():
    torch = pytest.importorskip("torch")
    assert _version(torch.__version__)[:2] >= CORE_TORCH_MIN
