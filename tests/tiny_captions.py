"""A tiny Karpathy-style captioning dataset, generated: small images of one coloured shape on
a plain background, with five captions that say what is drawn.

    make_tiny_captions(root) -> root, holding dataset.json and images/<id>.png

The test split includes the ids 219, 540 and 357, so the captioning defaults (`--show 219
540 357`, the Sydney-Captions images the study shows) find them. With `names` (e.g.
"scene_{:03d}.png") every image is named by that pattern instead, as in a dataset of one's own.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")
SHOWN = ("219", "540", "357")


def _draw(shape: str, colour, background, size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 4, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def _captions(colour: str, shape: str, background: str) -> list[list[str]]:
    texts = [f"a {colour} {shape} on a {background} background",
             f"there is a {colour} {shape} in the image",
             f"a {shape} coloured {colour}",
             f"a {background} picture with one {colour} {shape}",
             f"one {colour} {shape} on {background}"]
    return [t.split() for t in texts]


def make_tiny_captions(root, n_train: int = 30, n_val: int = 8, n_test: int = 8, size: int = 48,
                       seed: int = 0, names: str | None = None, labels: bool = False) -> Path:
    """`labels`: every image gets a scene "label" (its shape), as RSICD's dataset.json has."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    # ids 1..N, except that the first test images take the ids the study shows
    ids = [str(i + 1) for i in range(len(splits))]
    first_test = n_train + n_val
    for j, name in enumerate(SHOWN[:n_test]):
        ids[first_test + j] = name
    images = []
    for i, (split, name) in enumerate(zip(splits, ids)):
        # cycle through every (colour, shape) pair so each split sees all of them
        colour = list(COLOURS)[i % 3]
        shape = SHAPES[(i // 3) % 3]
        background = list(BACKGROUNDS)[(i // 9) % 2]
        img = _draw(shape, COLOURS[colour], BACKGROUNDS[background], size, rng)
        filename = names.format(i) if names else f"{name}.png"
        img.save(root / "images" / filename)
        sentences = [{"tokens": [t.capitalize() if k == 0 else t for k, t in enumerate(c)],
                      "raw": " ".join(c) + " .", "imgid": i, "sentid": 5 * i + s}
                     for s, c in enumerate(_captions(colour, shape, background))]
        images.append({"filename": filename, "imgid": i, "split": split,
                       "sentids": [5 * i + s for s in range(5)], "sentences": sentences,
                       **({"label": shape} if labels else {})})
    (root / "dataset.json").write_text(json.dumps({"dataset": "tiny", "images": images}))
    return root


if __name__ == "__main__":
    import sys

    print(make_tiny_captions(sys.argv[1] if len(sys.argv) > 1 else "tiny-captions"))
