"""Uploaded bytes -> an RGB image the encoder can read, or a message a person can act on.

An upload is untrusted: it may be empty, not an image, larger than the limit, truncated, or
a decompression bomb (a few kilobytes of PNG that claim 50,000 x 50,000 pixels). Every one
of these is a `BadImage` with an HTTP status and a sentence; nothing here lets Pillow's own
exceptions escape. The pixels then go through exactly the preprocessing of
`caption.encoders.load_image` (RGB, bicubic resize to the model's image size, [0, 1]).
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024      # 20 MB: a 500x500 TIFF is 0.75 MB, a phone photo 3-8 MB
MAX_PIXELS = 40_000_000           # 40 megapixels decode to 120 MB of RGB; more is refused
                                  # before decoding (Pillow's own bomb limit is 89 MP)


class BadImage(ValueError):
    """An upload that cannot be captioned; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def megabytes(n: int) -> str:
    """20971520 -> "20 MB", 1572864 -> "1.5 MB"."""
    return f"{n / 1024 / 1024:.1f}".removesuffix(".0") + " MB"


def open_upload(data: bytes, name: str = "the file") -> Image.Image:
    """Bytes of an image file -> a fully decoded RGB PIL image, upright (EXIF orientation
    applied, as browsers show it). Raises BadImage."""
    if not data:
        raise BadImage(f"{name} is empty (0 bytes); choose an image file")
    if len(data) > MAX_BYTES:
        raise BadImage(f"{name} is {megabytes(len(data))}; the limit is {megabytes(MAX_BYTES)}", 413)
    kind = None  # the format Pillow recognised, for the message about a damaged file
    with warnings.catch_warnings():
        # Pillow warns between its limit and twice it: treat that as the bomb it may be
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                kind, (width, height) = probe.format, probe.size
                check_pixels(name, width, height)
                probe.verify()  # structure and checksums (PNG CRCs), without decoding pixels
            # verify() leaves the image unusable: decode from a fresh handle
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES is off)
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
        except UnidentifiedImageError:
            raise BadImage(f"{name} is not an image Pillow can read, or too damaged to recognise "
                           "(tried every format it knows: PNG, JPEG, TIFF, WebP, BMP, GIF, ...)",
                           415) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImage(f"{name} claims more pixels than the limit of {MAX_PIXELS:,}; "
                           "it looks like a decompression bomb", 413) from None
        except BadImage:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            # truncated files, bad checksums, broken headers: Pillow uses all of these
            detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise BadImage(f"{name} is a damaged or truncated {kind + ' image' if kind else 'image'} "
                           f"({detail}); save it again and retry") from None


def check_pixels(name: str, width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise BadImage(f"{name} has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadImage(f"{name} is {width}x{height} = {width * height:,} pixels; the limit is "
                       f"{MAX_PIXELS:,} (a decompression bomb, or a photo to shrink first)", 413)


def to_tensor(img: Image.Image, size: int | None = None, max_side: int | None = None) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float in [0, 1], as `load_image` does: resized to
    size x size (bicubic) when the model was trained at a fixed size. A model trained at each
    image's own size gets the image as it is, unless a side exceeds `max_side`: then it is
    shrunk (bicubic, aspect kept) so its grid of regions stays near the training grid."""
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    elif size is None and max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BICUBIC)
    array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
