"""Hostile uploads, generated: the files of issue #27 by name, and a seeded stream of damaged
files of every format Pillow writes, and of nine it only opens (truncations, bit flips, overwritten header fields,
repeated chunks, swapped extensions), scan and size bombs and extreme aspect ratios.

    named()              -> {name: bytes}: the reproducers the issue lists
    more()               -> {name: bytes}: bombs of the same kinds within every limit
    generated(seed, n)   -> [(filename, bytes)]: n cases, the same for the same seed

Used by tests/serve/test_hostile.py against a live server and by bench/serve_hostile.py.
Every file is made here from a few generated pixels; nothing is read from disk.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib

from PIL import Image

# formats Pillow writes, with the keyword arguments of a variant worth damaging
WRITABLE = [
    ("PNG", "png", {}), ("PNG", "png", {"optimize": True}), ("JPEG", "jpg", {}),
    ("JPEG", "jpg", {"progressive": True}), ("GIF", "gif", {}), ("BMP", "bmp", {}),
    ("TIFF", "tif", {}), ("TIFF", "tif", {"compression": "tiff_lzw"}),
    ("TIFF", "tif", {"compression": "tiff_adobe_deflate"}), ("TIFF", "tif", {"compression": "jpeg"}),
    ("TIFF", "tif", {"compression": "packbits"}), ("WEBP", "webp", {}), ("WEBP", "webp", {"lossless": True}),
    ("AVIF", "avif", {"quality": 60}), ("JPEG2000", "jp2", {}), ("JPEG2000", "j2k", {}), ("ICO", "ico", {}),
    ("TGA", "tga", {}), ("TGA", "tga", {"compression": "tga_rle"}), ("PPM", "ppm", {}), ("PCX", "pcx", {}),
    ("SGI", "sgi", {}), ("DDS", "dds", {}), ("QOI", "qoi", {}), ("IM", "im", {}), ("ICNS", "icns", {}),
    ("MPO", "mpo", {}), ("BLP", "blp", {}), ("SPIDER", "spi", {}), ("DIB", "dib", {}), ("XBM", "xbm", {}),
    ("MSP", "msp", {}), ("EPS", "eps", {}), ("PDF", "pdf", {}),
]
# the mode a format needs, where RGB is not accepted
MODES = {"XBM": "1", "MSP": "1", "SPIDER": "F", "PCX": "RGB", "BLP": "P"}


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # IM is deprecated; still read, still sent
        img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def picture(size=(64, 48), seed: int = 0) -> Image.Image:
    """Smooth gradients with a little noise: compresses like a photo."""
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 20 + rng.randint(0, 40))
    return Image.merge("RGB", (base, noise, base.rotate(90).resize(size)))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_bit_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of width x height white pixels, compressed to a few kilobytes."""
    row = b"\0" + b"\xff" * ((width + 7) // 8)
    raw, rows = zlib.compressobj(9), max(1, 1_000_000 // len(row))  # compressed a block of rows at a time
    body = b"".join(raw.compress(row * min(rows, height - at)) for at in range(0, height, rows)) + raw.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def scan_bomb(side: int = 6000, repeats: int = 6000, quality: int = 50) -> bytes:
    """A progressive greyscale JPEG whose last scan header is repeated `repeats` times before
    the end marker: each repeat costs the decoder a pass over every coefficient."""
    data = encode(Image.linear_gradient("L").resize((side, side)), "JPEG", quality=quality, progressive=True)
    last = data.rfind(b"\xff\xda")
    length = struct.unpack(">H", data[last + 2:last + 4])[0]
    header = data[last:last + 2 + length]
    return data[:-2] + header * repeats + b"\xff\xd9"


def chunk_bomb(chunks: int = 1_600_000) -> bytes:
    """A 500x500 PNG with `chunks` empty unknown chunks before its data (19 MB for 1.6
    million): checking their CRCs one by one costs Pillow seconds."""
    png = one_bit_png(500, 500)
    header_end = 8 + 25  # the signature and IHDR
    return png[:header_end] + png_chunk(b"zzZz", b"") * chunks + png[header_end:]


def damaged_avif() -> bytes:
    """A 500x500 AVIF (quality 60) with two bits flipped at the start of its coded frame:
    the container is intact, the AV1 decoder fails ("Failed to decode frame 0")."""
    data = bytearray(encode(picture((500, 500)), "AVIF", quality=60))
    at = data.find(b"mdat") + 5  # the first bytes of the AV1 data
    data[at] ^= 0x81
    return bytes(data)


def zero_frame_emf() -> bytes:
    """An EMF header whose frame is all zeros (Pillow's WMF plugin divides by its size)."""
    return b"\x01\x00\x00\x00" + b"\x00" * 36 + b" EMF" + b"\x00" * 100


def named(scan_side: int = 6000) -> dict[str, bytes]:
    """The issue's files (its scan bomb is 6000x6000; a smaller side is refused alike, for its
    6,000 scans, and made faster)."""
    return {"damaged.avif": damaged_avif(), "zero-frame.emf": zero_frame_emf(),
            "scan-bomb.jpg": scan_bomb(side=scan_side), "1x40000000.png": one_bit_png(1, 40_000_000),
            "40000000x1.png": one_bit_png(40_000_000, 1)}


def more() -> dict[str, bytes]:
    """Files within the byte, pixel and scan limits that still cost: a PNG of 1.6 million
    chunks (a time bomb only the CPU budget stops), extreme aspect ratios and 40 megapixels."""
    side = int(40_000_000 ** 0.5)
    return {"chunks.png": chunk_bomb(), "1x65535.png": one_bit_png(1, 65_535),
            "610x65535.png": one_bit_png(610, 65_535), f"{side}x{side}.png": one_bit_png(side, side),
            "scans-100.jpg": scan_bomb(side=6000, repeats=90)}


def grey(w: int, h: int, seed: int) -> bytes:
    return picture((w, h), seed).convert("L").tobytes()


def read_only_formats(rng: random.Random) -> list[tuple[str, bytes]]:
    """Small valid files of formats Pillow opens but does not write, built by hand."""
    w, h, seed = 2 * rng.randint(4, 24), rng.randint(4, 40), rng.randint(0, 1 << 30)
    ico = encode(picture((32, 32), seed), "ICO", sizes=[(32, 32)], bitmap_format="bmp")
    pcx = encode(picture((w, h), seed), "PCX")
    sun = struct.pack(">8I", 0x59A66A95, w, h, 8, w * h, 1, 0, 0) + grey(w, h, seed)
    cards = ["SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 2", f"NAXIS1  = {w}", f"NAXIS2  = {h}", "END"]
    fits = "".join(c.ljust(80) for c in cards).ljust(2880).encode() + grey(w, h, seed)
    gbr = struct.pack(">5I", 29, 2, w, h, 1) + b"GIMP" + struct.pack(">I", 10) + b"x\0" + grey(w, h, seed)
    xv = f"P7 332\n#END_OF_COMMENTS\n{w} {h} 255\n".encode() + grey(w, h, seed)
    psd = (struct.pack(">4sH6sHIIHH", b"8BPS", 1, b"\0" * 6, 1, h, w, 8, 1) + b"\0" * 12
           + struct.pack(">H", 0) + grey(w, h, seed))
    rows = ",\n".join('"' + "".join(rng.choice(".#") for _ in range(w)) + '"' for _ in range(h))
    xpm = f'/* XPM */\nstatic char *x[] = {{\n"{w} {h} 2 1",\n". c #000000",\n"# c #ffffff",\n{rows}}};\n'
    wmf = struct.pack("<IH4hHIH", 0x9AC6CDD7, 0, 0, 0, 1440, 1440, 1440, 0, 0) + b"\1\0\x09\0" + b"\0" * 14
    return [("x.cur", ico[:2] + b"\2\0" + ico[4:]), ("x.dcx", struct.pack("<3I", 0x3ADE68B1, 12, 0) + pcx),
            ("x.ras", sun), ("x.fits", fits), ("x.gbr", gbr), ("x.xv", xv), ("x.psd", psd),
            ("x.xpm", xpm.encode()), ("x.wmf", wmf)]


def originals(rng: random.Random) -> list[tuple[str, bytes]]:
    """One small valid file per format Pillow writes or opens, of a random size."""
    out = []
    for fmt, ext, kwargs in WRITABLE:
        size = (rng.randint(8, 96), rng.randint(8, 96))
        img = picture(size, rng.randint(0, 1 << 30)).convert(MODES.get(fmt, "RGB"))
        if fmt == "ICNS":
            img = img.resize((32, 32))
        out.append((f"x.{ext}", encode(img, fmt, **kwargs)))
    return out + read_only_formats(rng)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One damaged copy of `data` and what was done to it."""
    kind = rng.choice(["truncate", "flip", "flips", "overwrite", "header", "repeat", "zero-tail"])
    b = bytearray(data)
    if kind == "truncate":
        return kind, bytes(b[:rng.randint(0, max(0, len(b) - 1))])
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else rng.randint(2, 16)):
            at = rng.randrange(len(b))
            b[at] ^= 1 << rng.randrange(8)
        return kind, bytes(b)
    if kind == "overwrite":
        at, n = rng.randrange(len(b)), rng.randint(1, 32)
        b[at:at + n] = bytes([rng.choice([0, 0xFF, rng.randrange(256)])]) * n
        return kind, bytes(b[:len(data)])
    if kind == "header":  # a size or offset field near the start set to an extreme
        at = rng.randrange(min(len(b), 64))
        b[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"])
        return kind, bytes(b[:len(data)])
    if kind == "repeat":  # a slice of the file repeated many times inside it
        lo = rng.randrange(len(b))
        piece = bytes(b[lo:lo + rng.randint(1, 64)])
        return kind, bytes(b[:lo]) + piece * rng.randint(2, 2000) + bytes(b[lo:])
    return kind, bytes(b[:len(b) // 2]) + b"\0" * (len(b) - len(b) // 2)


def bombs(rng: random.Random) -> list[tuple[str, bytes]]:
    """Size, scan and aspect-ratio bombs small enough to generate in milliseconds."""
    out = [(f"{w}x{h}.png", one_bit_png(w, h)) for w, h in
           [(1, 200_000), (200_000, 1), (3, 1_000_000), (1_000_000, 2), (20_000, 20_000)]]
    out.append(("scans.jpg", scan_bomb(side=rng.choice([256, 512]), repeats=rng.choice([200, 2000]))))
    header = struct.pack(">IIBBBBB", 2**31 - 1, 2**31 - 1, 8, 2, 0, 0, 0)
    out.append(("claims.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")))
    out.append(("zero.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0))))
    return out


def generated(seed: int = 0, n: int = 400) -> list[tuple[str, bytes]]:
    """n hostile uploads: the bombs, the issue's files, then damaged copies of every format
    (some sent under another format's extension), then odd names and empty files."""
    rng = random.Random(seed)
    valid = originals(rng)
    cases = bombs(rng) + [(name, data) for name, data in named(scan_side=500).items()]
    cases += [("empty.png", b""), ("../../etc/passwd", b"root:x:0:0"), ("..\\..\\boot.ini", valid[0][1]),
              ("%00.png", valid[2][1]), ("x" * 300 + ".png", b"\x89PNG\r\n\x1a\n")]
    while len(cases) < n:
        name, data = rng.choice(valid)
        kind, damaged = mutate(data, rng)
        if rng.random() < 0.1:
            name = rng.choice(valid)[0]  # the extension of another format
        cases.append((f"{kind}-{len(cases)}-{name}", damaged))
    return cases[:n]
