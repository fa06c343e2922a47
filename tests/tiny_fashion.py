"""Tiny Fashion-MNIST look-alikes for tests: valid IDX files, and the ways they go wrong.

`write_tiny_fashion(folder)` writes the four files with a learnable pattern (each class
lights a different 7x7 block of the 28x28 image, plus noise), so a few epochs of training
beat chance. `break_file(folder, name, how)` damages one of them.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 array -> IDX bytes: magic 0x0000 08 <ndim>, the sizes, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 28, 28) uint8: class c lights block (c // 4, c % 4) of a 4x4 grid of 7x7 blocks."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, k = divmod(int(c), 4)
        images[i, r * 7:(r + 1) * 7, k * 7:(k + 1) * 7] = rng.integers(180, 256, size=(7, 7))
    return images


def write_tiny_fashion(folder, n_train: int = 240, n_test: int = 60, gz: bool = True,
                       seed: int = 0) -> Path:
    """Write the four IDX files (gzip-compressed unless gz=False) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_y = rng.integers(0, 10, size=n_train).astype(np.uint8)
    test_y = rng.integers(0, 10, size=n_test).astype(np.uint8)
    payloads = {
        TRAIN_IMAGES: idx_bytes(make_images(train_y, rng)),
        TRAIN_LABELS: idx_bytes(train_y),
        TEST_IMAGES: idx_bytes(make_images(test_y, rng)),
        TEST_LABELS: idx_bytes(test_y),
    }
    for name, data in payloads.items():
        if gz:
            (folder / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(data)
    return folder


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def break_file(folder, name: str, how: str) -> Path:
    """Damage one file written by write_tiny_fashion (gz). `how`: missing, magic, truncated,
    shape, count (one image fewer than labels), label (a label of 12), gzip (bad gzip)."""
    path = Path(folder) / name
    data = _read(path)
    if how == "missing":
        path.unlink()
        return path
    if how == "gzip":
        path.write_bytes(b"\x1f\x8b\x08\x00garbage")
        return path
    if how == "magic":
        data = struct.pack(">I", 0x0000_0D03) + data[4:]
    elif how == "truncated":
        data = data[:len(data) - 100]
    elif how == "shape":   # claims 27 columns: header and length disagree with 28x28
        n = struct.unpack(">I", data[4:8])[0]
        data = data[:4] + struct.pack(">3I", n, 28, 27) + data[16:16 + n * 28 * 27]
    elif how == "count":   # one image fewer than there are labels
        n = struct.unpack(">I", data[4:8])[0]
        data = data[:4] + struct.pack(">I", n - 1) + data[8:16] + data[16:16 + (n - 1) * 784]
    elif how == "label":
        data = data[:8] + bytes([12]) + data[9:]
    else:
        raise ValueError(how)
    path.write_bytes(gzip.compress(data, mtime=0))
    return path
