"""An uploaded file -> the tensor a model reads.

`Upload` holds the file as the form parser left it (spooled to disk past 1 MB) until a
caller inside its --parallel slot asks for it decoded: so a burst of uploads waits as files,
not as decoded images, and decoding (images.py, in a worker of workers.py) runs no more
uploads at once than the server captions. `to_tensor` is `caption.encoders.load_image`'s
preprocessing (RGB, bicubic resize to the model's image size, [0, 1]) of a decoded image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from convattn.serve.images import MAX_BYTES, Decoded, Fit
from convattn.serve.workers import DecodePool


@dataclass
class Upload:
    """An uploaded file, read and decoded (in `pool`) only by `decode`."""
    file: BinaryIO
    name: str          # for messages: "'x.png'" or "the upload"
    pool: DecodePool

    def decode(self, fit: Fit) -> Decoded:
        data = self.file.read(MAX_BYTES + 1)  # one byte more than allowed is enough to refuse
        return self.pool.decode(data, self.name, fit)


def to_tensor(img: Image.Image, size: int | None = None, max_side: int | None = None) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float in [0, 1], as `load_image` does: resized to
    size x size (bicubic) when the model was trained at a fixed size. A model trained at each
    image's own size gets the image as it is, unless a side exceeds `max_side`: then it is
    shrunk (bicubic, aspect kept) so its grid of regions stays near the training grid. An
    upload decoded at the model's Fit is already that size, and is not resized again."""
    target = Fit(size, max_side).of(*img.size)
    if img.size != target:
        img = img.resize(target, Image.BICUBIC)
    array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
