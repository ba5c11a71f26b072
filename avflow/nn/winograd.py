"""Winograd F(4, 3): a kernel-3, stride-1, 'same'-padded convolution over tokens with half the multiplications.

Lavin & Gray (arXiv 1509.09308). Four outputs of a 3-tap correlation come from six inputs d and the taps g as
y = A^T [(G g) * (B^T d)]; with channels, each of the six transform positions p is one matrix product
M_p = V_p @ U_p^T over all tiles at once, V_p = (B^T d)_p (tiles, C_in) and U_p = (G g)_p (C_out, C_in).
That is 6 products per 4 outputs where the direct convolution needs 12 (3 taps x 4 outputs). The transforms only
add, subtract and scale by small powers of two and by 1/6, so in float32 the result stays within a few ulps of
the direct convolution (tests/test_winograd.py measures it against float64). Half the multiplications is not always
less time: the six products have only N / 4 rows each, and on some CPUs the direct convolution runs near the matmul
peak, so `pays_off` times both on the input at hand (docs/foley.md has the measurements).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

TILE = 4  # outputs per tile
ALPHA = TILE + 2  # inputs per tile (and transform positions)
# B^T (6, 6), G (6, 3), A^T (4, 6) for the interpolation points 0, 1, -1, 2, -2 and infinity.
B_T = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
A_T = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)


def _matrix(rows: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).to(like.device, like.dtype)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight (C_out, C_in, 3) -> U (6, C_out, C_in)."""
    return torch.einsum("pk,oik->poi", _matrix(G, weight), weight).contiguous()


def transform_input(x: torch.Tensor) -> torch.Tensor:
    """Tokens x (B, N, C) -> V (6, B * ceil(N / 4), C): zero-padded by one token on the left, tiled by 4."""
    b, n, c = x.shape
    tiles = -(-n // TILE)
    padded = F.pad(x, (0, 0, 1, tiles * TILE + 1 - n))  # (B, 4 tiles + 2, C)
    windows = padded.unfold(1, ALPHA, TILE)  # (B, tiles, C, 6), a view
    return torch.einsum("btca,pa->pbtc", windows, _matrix(B_T, x)).reshape(ALPHA, b * tiles, c)


def transform_output(m: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """Products M (6, B * tiles, C_out) -> y (B, length, C_out)."""
    y = torch.einsum("ip,pxo->xio", _matrix(A_T, m), m)  # (B * tiles, 4, C_out)
    return y.reshape(batch, -1, m.shape[-1])[:, :length]


def products(v: torch.Tensor, weight: torch.Tensor, transformed: torch.Tensor | None, block: int = 256):
    """M = V_p @ U_p^T for every p: (6, tiles, C_in) -> (6, tiles, C_out). Without a cached U, the weight is
    transformed `block` output channels at a time, each block used while it is hot in the cache."""
    if transformed is not None:
        return torch.bmm(v, transformed.transpose(1, 2))
    c_out = weight.shape[0]
    m = v.new_empty(ALPHA, v.shape[1], c_out)
    for start in range(0, c_out, block):
        u = transform_weight(weight[start : start + block])  # (6, block, C_in)
        torch.bmm(v, u.transpose(1, 2), out=m[:, :, start : start + block])
    return m


def conv3(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    transformed: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same as Conv1d(C_in, C_out, 3, padding=1) on channel-last x (B, N, C_in) -> (B, N, C_out).

    `transformed`: `transform_weight(weight)` if cached; `v`: `transform_input(x)` if already computed (several
    convolutions of the same input share it).
    """
    v = transform_input(x) if v is None else v
    y = transform_output(products(v, weight, transformed), x.shape[0], x.shape[1])
    return y if bias is None else y + bias


def direct(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The direct convolution on channel-last x (B, N, C_in) -> (B, N, C_out)."""
    return F.conv1d(x.transpose(1, 2), weight, bias, padding=1).transpose(1, 2)


def pays_off(x: torch.Tensor, weight: torch.Tensor, transformed: torch.Tensor | None, repeats: int = 3) -> bool:
    """Whether `conv3` runs faster than `direct` on x here: the best of `repeats` timed calls of each after one
    untimed call, the two alternating so that a change of load hits both."""
    conv3(x, weight, None, transformed), direct(x, weight)
    fast = slow = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        conv3(x, weight, None, transformed)
        middle = time.perf_counter()
        direct(x, weight)
        fast, slow = min(fast, middle - start), min(slow, time.perf_counter() - middle)
    return fast < slow
