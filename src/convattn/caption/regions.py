"""What a decoder reads of a grid of region features: the grid's shape, the outer ring
replaced by its inward neighbours (the encoder's zero padding marks the ring), and each
region rescaled. Every decoder (caption/decoders.py, caption/transformer.py) reads its
regions through `read_regions`; each option is off by default, the study's decoders exactly.
"""

from __future__ import annotations

import torch
from torch import nn
FEATURE_NORMS = ("none", "l2", "layernorm")
OUTER_RING = ("keep", "inward")


def grid_of(regions: int, grid) -> tuple[int, int]:
    """The (H', W') of `regions` features: `grid` when it fits, else a square grid."""
    if grid is not None and grid[0] * grid[1] == regions:
        return tuple(grid)
    side = round(regions ** 0.5)
    if side * side != regions:
        raise ValueError(f"{regions} regions: not a {grid} grid and not square")
    return side, side


def replace_outer_ring(features: torch.Tensor, grid) -> torch.Tensor:
    """features [B, R, C] on an (H', W') grid -> [B, R, C] with rows 0 and H'-1 and columns 0
    and W'-1 replaced by their inward neighbours (row 1, row H'-2, ...; corners diagonally).

    Why: the encoder zero-pads every convolution, so the ring's features carry a padding
    signature the interior lacks; the homework attention decoder puts far more of its weight
    there than the ring's share of the area, and with the ring replaced by its neighbours the
    same trained decoder's weight drops to about the area share while its BLEU-4 and CIDEr-D
    do not fall (docs/results.md, "Attention on the border", has the measured shares)."""
    H, W = grid
    if H < 3 or W < 3:  # no interior to copy from
        return features
    g = features.reshape(features.shape[0], H, W, -1).clone()
    g[:, 0], g[:, -1] = g[:, 1], g[:, -2]
    g[:, :, 0], g[:, :, -1] = g[:, :, 1], g[:, :, -2]
    return g.reshape(features.shape)


def normalise_features(features: torch.Tensor, how: str) -> torch.Tensor:
    """features [B, R, C] -> [B, R, C], each region rescaled on its own (see the module doc).
    "none" returns the tensor itself."""
    if how == "l2":
        return features * (features.shape[-1] ** 0.5 / features.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    if how == "layernorm":
        return nn.functional.layer_norm(features, features.shape[-1:])
    return features


def read_regions(features: torch.Tensor, outer_ring: str, feature_norm: str, grid,
                 top: nn.Module | None = None) -> torch.Tensor:
    """features [B, R, C_in] on the (H', W') `grid` (None: square) -> what a decoder reads
    [B, R, C]: through the encoder's tuned top blocks (`top`, encoders.TopBlocks; C_in is then
    the cached features' channels), the outer ring replaced (outer_ring="inward"), then each
    region rescaled (feature_norm); as is by default."""
    if top is not None:
        features = top(features, grid_of(features.shape[1], grid))
    if outer_ring == "inward":
        features = replace_outer_ring(features, grid_of(features.shape[1], grid))
    return normalise_features(features, feature_norm)

