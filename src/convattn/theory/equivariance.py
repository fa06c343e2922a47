"""Q2.1: convolution is equivariant to translation; max-pooling adds approximate invariance.

Measured on smoothed Gaussian noise (neighbouring pixels correlated, like a photo) and a
random Conv2d(3 -> 8, k x k) in float64: conv(shift(x)) against shift(conv(x)) with
circular and with zero padding, and how many outputs keep their value under a 1-pixel
shift before and after 2x2 max-pooling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHIFTS = [(1, 0), (0, 1), (-1, 0), (0, -1), (3, -2), (5, 7)]  # (dy, dx) in pixels
ONE_PIXEL = SHIFTS[:4]


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Circular shift of a (1, C, H, W) map."""
    return torch.roll(img, (dy, dx), dims=(2, 3))


def _shift_response(f, x: torch.Tensor) -> tuple[float, float]:
    """Mean over 1-pixel shifts of the fraction of outputs that keep their value, and of the
    relative change of the whole map."""
    base, kept, change = f(x), [], []
    for dy, dx in ONE_PIXEL:
        out = f(_shift(x, dy, dx))
        kept.append(torch.isclose(out, base, rtol=0, atol=1e-12).double().mean().item())
        change.append(((out - base).norm() / base.norm()).item())
    return float(np.mean(kept)), float(np.mean(change))


def equivariance_checks(seed: int = 0, size: int = 28, kernel: int = 3) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, size, size, generator=gen, dtype=torch.float64)  # (1, 3, H, W)
    blur = torch.ones(3, 1, 3, 3, dtype=torch.float64) / 9
    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), blur, groups=3)
    weight = torch.randn(8, 3, kernel, kernel, generator=gen, dtype=torch.float64)
    bias = torch.randn(8, generator=gen, dtype=torch.float64)
    p = kernel // 2

    def conv_circular(img):  # (1, 3, H, W) -> (1, 8, H, W)
        return F.conv2d(F.pad(img, (p, p, p, p), mode="circular"), weight, bias)

    def conv_zero(img):
        return F.conv2d(img, weight, bias, padding=p)

    circular, interior, border = 0.0, 0.0, 0.0
    for dy, dx in SHIFTS:
        shifted = _shift(x, dy, dx)
        circular = max(circular, (conv_circular(shifted) - _shift(conv_circular(x), dy, dx)).abs().max().item())
        diff = (conv_zero(shifted) - _shift(conv_zero(x), dy, dx)).abs()
        m = p + max(abs(dy), abs(dx))  # rows/cols touched by padding or wrap-around
        interior = max(interior, diff[..., m:-m, m:-m].max().item())
        border = max(border, diff.max().item())

    # no ReLU before pooling, so that outputs clamped at zero do not count as "unchanged"
    conv_kept, conv_change = _shift_response(conv_circular, x)
    pool_kept, pool_change = _shift_response(lambda img: F.max_pool2d(conv_circular(img), 2), x)
    return {
        "image": f"{size}x{size}x3 smoothed Gaussian noise", "conv": f"Conv2d(3->8, {kernel}x{kernel}), float64",
        "shifts": [list(s) for s in SHIFTS],
        "circular_max_abs_diff": circular,
        "zero_padding_interior_max_abs_diff": interior,
        "zero_padding_border_max_abs_diff": border,
        "conv_unchanged_fraction": conv_kept,
        "pool_invariant_fraction": pool_kept,
        "conv_relative_change": conv_change,
        "pool_relative_change": pool_change,
    }
