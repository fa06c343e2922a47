"""Which images are train, val and test: a dataset's own split, or a named random re-split.

    split_names(["train", "val", ..., "test"], "official")  -> the same list
    split_names(official, "random-3")                      -> 80/10/10 of all images, seed 3

`official` is the `split` field of dataset.json (RSICD's and Sydney-Captions' published
split). `random-N` shuffles every image (whatever its official split) with seed N and gives
the first 80 % to train, the next 10 % to val and the rest to test: how the code of PKG-, MG-
and SFDR-Transformer and RitaRamo's repository re-split RSICD and Sydney-Captions (each with
its own seed, so no re-split of theirs is this one; docs/published.md). A re-split puts
images of one scene, and captions written to one template, on both sides, so a number
measured on one is not comparable with one measured on the official split.

The shuffle is `random.Random(N).shuffle` of the image indices in dataset.json's order: the
same N gives the same split on every machine and Python version.
"""

from __future__ import annotations

import random
import re

from convattn.common.errors import UserError

OFFICIAL = "official"
RANDOM = re.compile(r"random-(\d+)")
FRACTIONS = (0.8, 0.1)  # train, val; test is the rest
HELP = ("which images are train/val/test: official (dataset.json's split) or random-N (a seeded "
        "shuffle of all images, 80/10/10, seed N: how papers that re-split RSICD did)")


def check_scheme(scheme: str, flag: str = "--split") -> str:
    """A valid scheme name, or a one-line UserError naming `flag`."""
    if scheme != OFFICIAL and not RANDOM.fullmatch(scheme):
        raise UserError(f"{flag} {scheme}: expected official or random-N (N a whole number, e.g. random-1)")
    return scheme


def split_names(official: list[str], scheme: str) -> list[str]:
    """Each image's split (in dataset.json's order) under `scheme`."""
    if check_scheme(scheme) == OFFICIAL:
        return list(official)
    order = list(range(len(official)))
    random.Random(int(RANDOM.fullmatch(scheme).group(1))).shuffle(order)
    n_train = round(FRACTIONS[0] * len(order))
    n_val = round(FRACTIONS[1] * len(order))
    names = [""] * len(order)
    for rank, i in enumerate(order):
        names[i] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return names
