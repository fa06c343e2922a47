"""Seeding, device choice, threads, cache folder, environment facts: written once."""

from __future__ import annotations

import os
import platform
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import convattn
from convattn.common.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_device(name: str = "auto"):
    """`auto` -> cuda when available, else cpu. Asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


@contextmanager
def torch_threads(n: int):
    """Run torch on n CPU threads inside the block, then restore the previous count; n = 0
    leaves it alone. Batch-8 ops are tiny, and on a shared 2-core machine every parallel op
    waits for the busier core: one thread per process was faster for everything measured."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_dir() -> Path:
    """Downloaded data and computed features live here: $CONVATTN_CACHE or ~/.cache/convattn."""
    return Path(os.environ.get("CONVATTN_CACHE") or Path.home() / ".cache" / "convattn")


def environment() -> dict:
    """Versions, threads and device facts recorded beside every result."""
    return {
        "convattn": convattn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
