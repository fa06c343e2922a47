"""Fashion-MNIST from its four IDX files: validated, split 50,000 / 10,000 / 10,000.

IDX format (big-endian): a 4-byte magic `0x00 0x00 <type> <ndim>` (type 0x08 = uint8),
then `ndim` 4-byte sizes, then the data. Images are (N, 28, 28) uint8, labels (N,) uint8
in 0..9. Each file may be gzip-compressed (`name.gz`) or raw (`name`).

The study's split: the 60,000 training images are shuffled with a fixed seed (independent
of the training seed, so every run is scored on the same dev set); the first five sixths
train, the last sixth (10,000 of 60,000) is the dev set. t10k is the test set. Pixels are
divided by 256, as in the study.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convattn.common.errors import UserError
from convattn.data.download import find_fashion_mnist

IMAGE_SIDE = 28
SPLIT_SEED = 42      # the train/dev split's seed: fixed, not the training seed
DEV_FRACTION = 1 / 6  # 10,000 of the 60,000 training images

IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension


@dataclass
class FashionMNIST:
    """Images as float32 (N, 1, 28, 28) in [0, 1), labels as int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    dev_x: torch.Tensor
    dev_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    folder: Path
    fingerprint: str  # SHA-256 over the four decompressed files: identifies the data a run saw

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "dev": len(self.dev_y), "test": len(self.test_y)}


def _open_idx(folder: Path, name: str) -> tuple[Path, bytes]:
    """Read `name` (.gz) or its raw twin; the error names both candidates."""
    gz_path, raw_path = folder / name, folder / name.removesuffix(".gz")
    if gz_path.exists():
        try:
            return gz_path, gzip.decompress(gz_path.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"{gz_path}: not a readable gzip file ({exc}); re-download it or "
                            "replace it with the raw IDX file") from None
    if raw_path.exists():
        return raw_path, raw_path.read_bytes()
    raise UserError(f"--data {folder}: no {raw_path.name}(.gz) found; install the Debian package "
                    "dataset-fashion-mnist, run `convattn download fashion-mnist`, or pass "
                    "--data DIR")


def parse_idx(path: Path, data: bytes, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    """Check an IDX payload's magic, dimensions and length; return it as a uint8 array."""
    ndim = 1 + len(shape_tail)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header ({len(data)} bytes); re-download the file")
    (got_magic,) = struct.unpack(">I", data[:4])
    if got_magic != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise UserError(f"{path}: magic number 0x{got_magic:08x}, expected 0x{magic:08x} "
                        f"(uint8 {kind}); is this the right file?")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if tuple(dims[1:]) != shape_tail:
        raise UserError(f"{path}: item shape {tuple(dims[1:])}, expected {shape_tail}; "
                        "not Fashion-MNIST")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise UserError(f"{path}: {what}: {len(data)} bytes, header says {expected}; "
                        "re-download the file")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_pair(folder: Path, prefix: str, digest) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, images_raw = _open_idx(folder, f"{prefix}-images-idx3-ubyte.gz")
    labels_path, labels_raw = _open_idx(folder, f"{prefix}-labels-idx1-ubyte.gz")
    digest.update(images_raw)
    digest.update(labels_raw)
    images = parse_idx(images_path, images_raw, IMAGES_MAGIC, (IMAGE_SIDE, IMAGE_SIDE))
    labels = parse_idx(labels_path, labels_raw, LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels; the files do not belong together")
    if len(labels) and labels.max() > 9:
        raise UserError(f"{labels_path}: label {int(labels.max())} outside 0..9; "
                        "not Fashion-MNIST")
    # (N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1): the study divides by 256
    x = torch.from_numpy(images.astype(np.float32) / 256.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> FashionMNIST:
    """Load and validate the four files from `data_dir` (or the default places); split."""
    folder = find_fashion_mnist(data_dir)
    digest = hashlib.sha256()
    full_x, full_y = _read_pair(folder, "train", digest)
    test_x, test_y = _read_pair(folder, "t10k", digest)
    n_dev = round(len(full_y) * DEV_FRACTION)
    if len(full_y) - n_dev < 1 or n_dev < 1 or len(test_y) < 1:
        raise UserError(f"--data {folder}: {len(full_y)} training and {len(test_y)} test images "
                        "are too few to split into train, dev and test")
    order = torch.randperm(len(full_y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train_idx, dev_idx = order[:-n_dev], order[-n_dev:]
    return FashionMNIST(
        train_x=full_x[train_idx], train_y=full_y[train_idx],
        dev_x=full_x[dev_idx], dev_y=full_y[dev_idx],
        test_x=test_x, test_y=test_y,
        folder=folder, fingerprint=digest.hexdigest(),
    )
