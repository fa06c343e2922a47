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


class _Lines:
    """A file for tqdm where stderr is not a terminal (a log file, a pipe, a batch job):
    each refresh becomes one line through the logger instead of a carriage-return redraw."""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            log(text)

    def flush(self) -> None:
        pass


LINE_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", quiet: bool = False, leave: bool = False, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr; where stderr is not a terminal, a line every LINE_INTERVAL
    seconds instead; `quiet` disables both."""
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                    disable=quiet, dynamic_ncols=True)
    # delay: a loop shorter than one interval prints nothing
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=False, file=_Lines(),
                disable=quiet, mininterval=LINE_INTERVAL, maxinterval=LINE_INTERVAL,
                delay=LINE_INTERVAL, bar_format="{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), "
                "{elapsed} elapsed, {remaining} left, {rate_fmt}")


def log(message: str) -> None:
    """One progress line on stderr (the "convattn" logger at INFO)."""
    logger.info(message)
