"""Progress bars: one wrapper so every long loop looks and behaves the same."""

from __future__ import annotations

import sys
from typing import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", quiet: bool = False, leave: bool = False) -> tqdm:
    """A tqdm bar on stderr; `quiet` (or a non-terminal stderr) disables the bar."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


def log(message: str) -> None:
    """Plain progress lines, on stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)
