"""Checking uploaded images (images.decode, in-process here): every bad file is a BadImage
with a status and a sentence, and a good one becomes exactly the tensor `load_image` makes
from the same file."""

from __future__ import annotations

import io
import warnings

import hostile
import pytest
import torch
from PIL import Image

from convattn.caption.encoders import load_image
from convattn.serve import images
from convattn.serve.images import BadImage, Fit, decode
from convattn.serve.uploads import to_tensor


def open_upload(data: bytes, name: str = "the file", fit: Fit = Fit()) -> Image.Image:
    return decode(data, name, fit).image


def picture(size=(90, 60), mode="RGB") -> Image.Image:
    img = Image.new(mode, size)
    img.putdata([((x * 7) % 256, (y * 5) % 256, (x * y) % 256)[: len(mode)] if mode != "L" else (x * 3) % 256
                 for y in range(size[1]) for x in range(size[0])])
    return img


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp")])
@pytest.mark.parametrize("size", [None, 64])
def test_same_tensor_as_load_image(tmp_path, fmt, suffix, size):
    path = tmp_path / f"x.{suffix}"
    data = encoded(picture(), fmt)
    path.write_bytes(data)
    ours = to_tensor(open_upload(data), size)
    assert torch.equal(ours, load_image(path, size))
    # decoded at the model's size, as the server does, the same pixels
    assert torch.equal(to_tensor(open_upload(data, fit=Fit(size)), size), ours)
    assert ours.shape == ((3, 64, 64) if size else (3, 60, 90))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_become_rgb_like_load_image(tmp_path, mode):
    img = picture(mode="RGB").convert(mode)
    data = encoded(img, "PNG")
    (tmp_path / "x.png").write_bytes(data)
    assert torch.equal(to_tensor(open_upload(data)), load_image(tmp_path / "x.png"))


def test_exif_orientation_applied():
    img = picture((90, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    upright = decode(encoded(img, "JPEG", exif=exif))
    assert upright.image.size == (60, 90) and (upright.width, upright.height) == (60, 90)
    # fitted as it will be shown: the longer side, now the height, shrunk to 45
    assert decode(encoded(img, "JPEG", exif=exif), fit=Fit(max_side=45)).image.size == (30, 45)


def test_large_images_of_own_size_models_are_shrunk_to_the_training_scale():
    x = to_tensor(picture((1000, 250)), None, max_side=512)
    assert x.shape == (3, 128, 512)
    assert to_tensor(picture((300, 200)), None, max_side=512).shape == (3, 200, 300)


@pytest.mark.parametrize("data,status,words", [
    (b"", 400, "empty"),
    (b"hello, this is text and not a picture\n" * 10, 415, "not an image"),
    ((50_000, 50_000), 413, "decompression bomb"),
    ((9_000, 9_000), 413, "pixels"),
])
def test_bad_uploads(bomb, data, status, words):
    data = bomb(*data) if isinstance(data, tuple) else data
    with pytest.raises(BadImage) as info:
        open_upload(data, "'x.png'")
    assert info.value.status == status
    assert words in str(info.value) and "'x.png'" in str(info.value)


def test_pillows_own_bomb_check_is_reported_too(monkeypatch, bomb):
    monkeypatch.setattr(images, "MAX_PIXELS", 10**12)  # let Pillow's limit be the one hit
    with pytest.raises(BadImage) as info:
        open_upload(bomb(50_000, 50_000))
    assert info.value.status == 413 and "decompression bomb" in str(info.value)


def test_over_the_byte_limit(monkeypatch):
    monkeypatch.setattr(images, "MAX_BYTES", 1000)
    with pytest.raises(BadImage) as info:
        open_upload(encoded(picture((200, 200)), "PNG"))
    assert info.value.status == 413 and "limit" in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_truncated_files(fmt):
    data = encoded(picture((200, 150)), fmt)
    with pytest.raises(BadImage) as info:
        open_upload(data[: len(data) // 2])
    assert info.value.status == 400
    assert "truncated" in str(info.value) or "damaged" in str(info.value)


def test_bad_png_checksum():
    data = bytearray(encoded(picture(), "PNG"))
    data[50] ^= 0xFF  # inside the first IDAT chunk's data: its CRC no longer matches
    with pytest.raises(BadImage) as info:
        open_upload(bytes(data))
    assert info.value.status == 400


def test_one_byte_over_the_limit_is_told_in_bytes(monkeypatch):
    monkeypatch.setattr(images, "MAX_BYTES", 20 * 1024 * 1024)
    with pytest.raises(BadImage) as info:
        open_upload(b"\0" * (20 * 1024 * 1024 + 1), "'x.png'")
    assert str(info.value) == "'x.png' is 20,971,521 bytes; the limit is 20,971,520 bytes (20 MB)"


def test_scans_of_a_jpeg_are_counted_and_capped():
    img = picture((64, 48))
    assert images.jpeg_scans(encoded(img, "JPEG")) == 1
    assert 2 < images.jpeg_scans(encoded(img, "JPEG", progressive=True)) < 20
    exif = Image.Exif()
    exif[0x010E] = "\xff\xda" * 50  # markers inside a segment's payload are not scans
    assert images.jpeg_scans(encoded(img, "JPEG", exif=exif)) == 1
    data = encoded(img, "JPEG", progressive=True)
    last = data.rfind(b"\xff\xda")
    header = data[last:last + 2 + int.from_bytes(data[last + 2:last + 4], "big")]
    with pytest.raises(BadImage) as info:
        open_upload(data[:-2] + header * images.MAX_SCANS + b"\xff\xd9", "'x.jpg'")
    assert info.value.status == 413 and "scans" in str(info.value)


def test_a_readers_own_bug_names_the_format():
    with pytest.raises(BadImage) as info:  # Pillow's WMF plugin divides by the frame's size
        open_upload(b"\x01\x00\x00\x00" + b"\x00" * 36 + b" EMF" + b"\x00" * 100, "'x.emf'")
    assert info.value.status == 400 and "WMF" in str(info.value) and "ZeroDivisionError" in str(info.value)


def test_formats_that_run_programs_are_refused():
    with pytest.raises(BadImage) as info:
        open_upload(encoded(picture(), "EPS"), "'x.eps'")
    assert info.value.status == 415 and "Ghostscript" in str(info.value)


@pytest.mark.parametrize("size,fit", [((2000, 1500), Fit(64)), ((3000, 40), Fit(max_side=300)),
                                      ((40, 3000), Fit(64))])
def test_a_large_image_is_reduced_first_and_stays_close_to_a_direct_resize(size, fit):
    """Box-reducing to within REDUCING_GAP before the bicubic resize changes a smooth
    image's pixels (a gradient along its longer side) by a few levels at most of 255, and
    never its size."""
    gradient = Image.linear_gradient("L")  # top to bottom
    img = (gradient if size[1] >= size[0] else gradient.rotate(90)).resize(size).convert("RGB")
    ours = decode(encoded(img, "PNG"), fit=fit).image
    direct = img.resize(fit.of(*size), Image.BICUBIC)
    assert ours.size == direct.size
    diff = (to_tensor(ours) - to_tensor(direct)).abs().max().item() * 255
    assert diff <= 3, diff


def test_pillows_warnings_about_damaged_files_are_not_passed_on():
    """Damaged files make Pillow warn (corrupt EXIF, tags past the end, deprecated formats):
    their sentence is the answer, and the log stays quiet."""
    cases = [data for _, data in hostile.generated(seed=3, n=150)]
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        for data in cases:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
            except Exception:  # noqa: BLE001 -- only the warnings are counted here
                pass
    assert plain  # the cases do make Pillow warn
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        for data in cases:
            try:
                decode(data)
            except BadImage:
                pass
    assert ours == []


def test_paths_in_a_sentence_are_shown_by_their_last_part():
    text = "the features of /data/sets/sydney are not cached (/root/.cache/convattn/ab12/); see a/b"
    assert images.without_paths(text) == "the features of .../sydney are not cached (.../ab12); see a/b"
