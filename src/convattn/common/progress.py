"""Progress: one tqdm wrapper so every long loop looks the same, and the `convattn` logger.

Log lines go to stderr (stdout stays machine-readable) through the standard `logging`
module, under the logger "convattn": a program embedding convattn can raise its level,
redirect it, or capture it like any other library's.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable

from tqdm import tqdm

logger = logging.getLogger("convattn")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the call (test captures replace it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


if not logger.handlers:
    logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", quiet: bool = False, leave: bool = False) -> tqdm:
    """A tqdm bar on stderr; `quiet` (or a non-terminal stderr) disables the bar."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


def log(message: str) -> None:
    """One progress line on stderr (the "convattn" logger at INFO)."""
    logger.info(message)
