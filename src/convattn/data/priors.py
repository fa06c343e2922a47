"""Captions chosen from the training captions alone, without looking at the image: the
`prior` and `class-prior` reference captioners (caption/reference.py scores them as it
scores a decoder; `convattn data audit` scores them on every split it audits).

Images are anything with `captions` (token sequences; empty ones are skipped) and `label`
(dataset.json's scene class, or None). A tie goes to the caption met first in dataset.json's
order (Counter.most_common keeps that order).
"""

from __future__ import annotations

from collections import Counter


def most_frequent(captions) -> tuple[str, ...]:
    """The most frequent non-empty caption of `captions` (token sequences)."""
    return Counter(tuple(c) for c in captions if c).most_common(1)[0][0]


def prior(train, held_out) -> list[tuple[str, ...]]:
    """The most frequent training caption, for every held-out image."""
    caption = most_frequent(c for im in train for c in im.captions)
    return [caption] * len(held_out)


def class_prior(train, held_out) -> list[tuple[str, ...]]:
    """For each held-out image, the most frequent training caption of its scene class (the
    most frequent overall for a class with no training image)."""
    by_class = {}
    for im in train:
        by_class.setdefault(im.label, []).extend(im.captions)
    best = {label: most_frequent(captions) for label, captions in by_class.items()}
    fallback = prior(train, [None])[0]
    return [best.get(im.label, fallback) for im in held_out]


def missing_labels(images) -> int:
    """How many images have no scene label (class-prior needs every one labelled)."""
    return sum(1 for im in images if im.label is None)
