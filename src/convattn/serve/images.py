"""Uploaded bytes -> an RGB image of the size the caller needs, or a sentence a person can act on.

An upload is untrusted: it may be empty, not an image, over the limit, truncated, damaged in
ways that make an image library raise anything at all, a decompression bomb (a few
kilobytes of PNG that claim 50,000 x 50,000 pixels), a progressive JPEG with thousands of
scans, or a 1 x 40,000,000 strip whose direct resize would need gigabytes of filter
coefficients. `decode` turns every one of these into a `BadImage` with an HTTP status and a
sentence naming the format. It runs in a worker process with a time and memory budget
(workers.py); this module is Pillow only (no numpy, no torch), so a worker starts quickly.

Shrinking: a side that must shrink by more than REDUCING_GAP times is first reduced by an
integer factor (a JPEG by the decoder's own DCT scaling, `draft`; any other format by box
averaging, `reduce`), per axis, then resized bicubic as `caption.encoders.load_image` does.
So an extreme aspect ratio costs no more than a square image, and an image within
REDUCING_GAP of the model's size gets exactly `load_image`'s pixels.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_BYTES = 20 * 1024 * 1024      # 20 MB: a 500x500 TIFF is 0.75 MB, a phone photo 3-8 MB
MAX_PIXELS = 40_000_000           # 40 megapixels decode to 120 MB of RGB; more is refused
                                  # before decoding (Pillow's own bomb limit is 89 MP)
MAX_SIDE = 65_535                 # the most a JPEG or WebP side may be; Pillow keeps a pointer
                                  # and an allocation per row, so 1 x 40,000,000 would cost 600 MB
MAX_SCANS = 100                   # a progressive JPEG has about 10; each one is a pass over the image
REDUCING_GAP = 3.0                # shrink by integer factors to within 3x of the size, then bicubic
# what Pillow raises on truncated files, bad checksums and broken headers; anything else is
# named in the sentence as the reader's failure
EXPECTED = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error)
REFUSED = {"EPS": "it would run Ghostscript", "PDF": "it is a document, not an image"}
# modes reduced before they become RGB; others are converted first ("1" to L, the rest to
# RGB: alpha is dropped before averaging, as load_image drops it, and at less memory than
# Image.reduce's premultiplied copy of an RGBA image)
REDUCIBLE = {"L", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"}
ORIENTATIONS = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
                4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
                6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
                8: [Image.Transpose.ROTATE_90]}  # EXIF orientation -> what shows it upright


# /a/b/c -> group 1 "c": an absolute path in a sentence, to be shown by its last part
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/()'\",;]+/)*([^\s/()'\",;]+)/?")


def without_paths(text: str) -> str:
    """A sentence for the page: each absolute path in it shown as .../<its last part>."""
    return ABSOLUTE_PATH.sub(lambda m: ".../" + m[1], text)


class BadImage(ValueError):
    """An upload that cannot be captioned; `status` is the HTTP status to answer with;
    `unexpected`: an image reader failed in a way it does not mean to (worth a log line)."""

    def __init__(self, message: str, status: int = 400, unexpected: bool = False):
        super().__init__(message)
        self.status = status
        self.unexpected = unexpected


@dataclass(frozen=True)
class Fit:
    """The size an image is wanted at: `size` x `size` exactly, or (size None) its own size
    with its longer side shrunk to `max_side` when longer (None: never shrunk)."""
    size: int | None = None
    max_side: int | None = None

    def of(self, width: int, height: int) -> tuple[int, int]:
        """The size a width x height image is resized to."""
        if self.size is not None:
            return self.size, self.size
        if self.max_side and max(width, height) > self.max_side:
            scale = self.max_side / max(width, height)
            return max(1, round(width * scale)), max(1, round(height * scale))
        return width, height


@dataclass
class Decoded:
    """An upload decoded: `image` (RGB, at the Fit asked for, upright) and what it was."""
    image: Image.Image
    width: int        # the upright image's own size, before fitting
    height: int
    format: str


def megabytes(n: int) -> str:
    """20971520 -> "20 MB", 1572864 -> "1.5 MB"."""
    return f"{n / 1024 / 1024:.1f}".removesuffix(".0") + " MB"


def too_large(name: str, n: int, limit: int = MAX_BYTES) -> str:
    """'x.png' is 21 MB; the limit is 20 MB -- in bytes when both round to the same."""
    size, cap = megabytes(n), megabytes(limit)
    if size == cap:
        size, cap = f"{n:,} bytes", f"{limit:,} bytes ({cap})"
    return f"{name} is {size}; the limit is {cap}"


def decode(data: bytes, name: str = "the file", fit: Fit = Fit()) -> Decoded:
    """Bytes of an image file -> Decoded. Raises BadImage, whatever the file does to Pillow."""
    if not data:
        raise BadImage(f"{name} is empty (0 bytes); choose an image file")
    if len(data) > MAX_BYTES:
        raise BadImage(too_large(name, len(data)), 413)
    kind = None  # the format Pillow recognised, for the message about a damaged file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warnings about odd files: one sentence is enough
        # Pillow warns between its limit and twice it: treat that as the bomb it may be
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                kind = probe.format
                check_header(name, probe, data)
                probe.verify()  # structure and checksums (PNG CRCs), without decoding pixels
            # verify() leaves the image unusable: decode from a fresh handle
            with Image.open(io.BytesIO(data)) as img:
                return fitted(img, fit)
        except BadImage:
            raise
        except UnidentifiedImageError:
            raise BadImage(f"{name} is not an image Pillow can read, or too damaged to recognise "
                           "(tried every format it knows: PNG, JPEG, TIFF, WebP, BMP, GIF, ...)",
                           415) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImage(f"{name} claims more pixels than the limit of {MAX_PIXELS:,}; "
                           "it looks like a decompression bomb", 413) from None
        except MemoryError:
            raise BadImage(f"{name} needs more memory to decode than an upload may use; it looks "
                           "like a decompression bomb", 413) from None
        except Exception as exc:  # noqa: BLE001 -- untrusted bytes: a plugin may raise anything
            raise damaged(name, kind or reader_of(exc), exc) from None


def damaged(name: str, kind: str | None, exc: Exception) -> BadImage:
    """The sentence for a file Pillow failed on: truncated files, bad checksums, broken
    headers (OSError, SyntaxError, ValueError, ...), or a reader's own bug on odd input."""
    detail = without_paths(str(exc).splitlines()[0][:200]) if str(exc).strip() else ""
    if not isinstance(exc, EXPECTED):
        detail = f"Pillow's {kind or 'image'} reader failed on it: {exc.__class__.__name__}" + \
                 (f", {detail}" if detail else "")
    what = f"{kind} image" if kind else "image"
    return BadImage(f"{name} is a damaged or truncated {what} ({detail or exc.__class__.__name__}); "
                    "save it again and retry", unexpected=not isinstance(exc, EXPECTED))


def reader_of(exc: Exception) -> str | None:
    """The format whose Pillow plugin raised `exc` (WmfImagePlugin -> "WMF"), if one did."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("PIL.") and module.endswith("ImagePlugin"):
            found = module[4:-len("ImagePlugin")].upper()
        tb = tb.tb_next
    return found


def check_header(name: str, img: Image.Image, data: bytes) -> None:
    """Refuse what would cost too much before decoding a pixel."""
    if img.format in REFUSED:
        raise BadImage(f"{name} is {img.format}, which is not offered here: "
                       f"{REFUSED[img.format]}; save it as PNG or JPEG", 415)
    width, height = img.size
    if width < 1 or height < 1:
        raise BadImage(f"{name} has no pixels ({width}x{height})")
    if max(width, height) > MAX_SIDE:
        raise BadImage(f"{name} is {width}x{height} pixels; the limit is {MAX_SIDE:,} on a side "
                       "(the most JPEG and WebP allow): crop or shrink it", 413)
    if width * height > MAX_PIXELS:
        raise BadImage(f"{name} is {width}x{height} = {width * height:,} pixels; the limit is "
                       f"{MAX_PIXELS:,} (a decompression bomb, or a photo to shrink first)", 413)
    if img.format in ("JPEG", "MPO") and (scans := jpeg_scans(data)) > MAX_SCANS:
        raise BadImage(f"{name} is a JPEG of {scans:,} scans; the limit is {MAX_SCANS} (a "
                       "progressive JPEG has about 10): save it again", 413)


def jpeg_scans(data: bytes) -> int:
    """The number of start-of-scan markers in a JPEG: walks the marker segments, skipping
    each segment's payload and each scan's entropy-coded data (where 0xFF is stuffed)."""
    scans, at, end = 0, 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            at = data.find(b"\xff", at)  # garbage between segments: find the next marker
            if at < 0:
                break
            continue
        marker = data[at + 1]
        if marker in (0xD8, 0xFF) or 0xD0 <= marker <= 0xD7:  # SOI, fill byte, RSTn: no length
            at += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            break
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker == 0xDA:
            scans += 1
            at = next_marker(data, at)
    return scans


def next_marker(data: bytes, at: int) -> int:
    """The offset of the first marker after entropy-coded data starting at `at`."""
    while (at := data.find(b"\xff", at)) >= 0 and at + 1 < len(data):
        if data[at + 1] != 0 and not 0xD0 <= data[at + 1] <= 0xD7:
            return at
        at += 2
    return len(data)


def fitted(img: Image.Image, fit: Fit) -> Decoded:
    """An opened image -> decoded, shrunk to within REDUCING_GAP of its fit while decoding or
    right after, converted to RGB, resized bicubic, turned upright (EXIF orientation, as
    browsers show it)."""
    kind, transposes = img.format or "image", upright(img)
    width, height = img.size  # as stored; upright below
    target = fit.of(*((height, width) if swaps(transposes) else (width, height)))
    if swaps(transposes):
        target = target[::-1]  # in the stored orientation
    if img.format in ("JPEG", "MPO"):
        img.draft(None, (int(target[0] * REDUCING_GAP), int(target[1] * REDUCING_GAP)))
    img.load()  # raises OSError on truncated data (LOAD_TRUNCATED_IMAGES is off)
    img = reduced(img, target)
    if img.size != target:
        img = img.resize(target, Image.BICUBIC)
    for transpose in transposes:
        img = img.transpose(transpose)
    return Decoded(img, *((height, width) if swaps(transposes) else (width, height)), kind)


def upright(img: Image.Image) -> list:
    """The transposes that show `img` upright, from its EXIF orientation; none when the EXIF
    block is damaged (the pixels may be fine: caption them as stored)."""
    try:
        return ORIENTATIONS.get(img.getexif().get(0x0112), [])
    except Exception:  # noqa: BLE001 -- damaged metadata of an untrusted file
        return []


def swaps(transposes: list) -> bool:
    return any(t in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                     Image.Transpose.ROTATE_270) for t in transposes)


def reduced(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """`img` in RGB, box-reduced per axis by the largest integer factor that keeps it at least
    REDUCING_GAP times `target`; the same pixels as convert("RGB") when no factor applies."""
    factors = tuple(max(1, int(side / want / REDUCING_GAP)) for side, want in zip(img.size, target))
    if factors == (1, 1):
        return img.convert("RGB")
    if img.mode not in REDUCIBLE:
        img = img.convert("L" if img.mode == "1" else "RGB")
    return img.reduce(factors).convert("RGB")
