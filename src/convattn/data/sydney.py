"""Sydney-Captions laid out as dataset.json + images/ from its public mirror, checked.

    download_sydney(dest=None, source=None) -> dest

Source: the Hugging Face dataset isaaccorley/Sydney-Captions at REVISION, file
Sydney_captions.zip (about 355 MB: the 613 TIFFs and the Karpathy-style json), the mirror
the torchrs author published. `source` (--from): that zip from elsewhere (a path or URL), or
a folder holding a copy (its dataset.json and images).

Checked, against the manifest shipped in the package (made from the original dataset.json
and images): every image's split and its five captions' lower-cased tokens; every image
decoded, 500x500 RGB, and its 8x8 grey thumbnail within TOLERANCE levels of the original's,
so each file is the picture its captions describe. Not checked: the zip's own bytes (no digest
of it could be pinned), the images' bytes (pixels are compared at thumbnail scale only), the
captions' raw text and punctuation beyond their tokens.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from convattn.common.errors import UserError
from convattn.common.progress import log, progress
from convattn.common.runtime import cache_dir
from convattn.data import manifests, sources, transfer

REPO = "isaaccorley/Sydney-Captions"
REVISION = "4b357e804147b78f6daf2deaed77260c53441bb5"
URL = f"https://huggingface.co/datasets/{REPO}/resolve/{REVISION}/Sydney_captions.zip"
TOLERANCE = 4  # grey levels a thumbnail may move (re-encoding moves it 1; other images differ by 8+)
FIX = "rerun to continue (verified files are kept), or pass --from a copy of Sydney_captions.zip"


@dataclass(frozen=True)
class SydneyPins:
    """What a download is checked against; the shipped ones are `shipped_pins()`."""

    manifest: dict[str, dict]  # file stem -> {split, tokens, size, thumb}
    url: str = URL


def shipped_pins() -> SydneyPins:
    return SydneyPins(manifest=manifests.parse_sydney(manifests.shipped(manifests.SYDNEY_MANIFEST)))


def sydney_cache() -> Path:
    return cache_dir() / "sydney-captions"


def download_sydney(dest=None, source: str | None = None, *, pins: SydneyPins | None = None,
                    quiet: bool = False) -> Path:
    """Lay Sydney-Captions out in `dest` (default: the cache); a finished, verified folder is
    checked and left as it is."""
    pins = pins or shipped_pins()
    dest = Path(dest or sydney_cache())
    images = dest / "images"
    have = verified_images(images, pins, quiet)
    if (dest / "dataset.json").is_file() and len(have) == len(pins.manifest):
        check_captions(_read_json(dest / "dataset.json", dest / "dataset.json"), pins, dest / "dataset.json")
        log(f"Sydney-Captions: already in {dest}, every image verified")
        return dest
    label, read_json, files, downloaded = _open(source or pins.url, dest / ".download", quiet)
    try:
        data = read_json()
        check_captions(data, pins, label)
        _keep_images(data, images, have, files, pins, label, quiet)
    except transfer.Mismatch as exc:
        if not downloaded:
            raise
        downloaded.unlink()
        raise transfer.Mismatch(f"{exc} (the downloaded {label} was removed; a rerun downloads it again)") from None
    for entry in data["images"]:
        entry["filename"] = PurePosixPath(entry["filename"]).name
    transfer.place(dest / "dataset.json", json.dumps(data).encode())
    if downloaded:
        downloaded.unlink()
    log(f"Sydney-Captions: {len(data['images'])} images, captions, split and pixels verified, in {dest}")
    return dest


def _open(where: str, work: Path, quiet: bool):
    """(label, a reader of its dataset json, a reader of its files by name, the archive if it
    was downloaded here) for a folder, or a zip at a path or URL."""
    kind = sources.kind_of(where)
    if kind == "folder":
        return where, partial(_folder_json, Path(where)), partial(sources.folder_files, Path(where)), None
    if kind != "archive":
        raise UserError(f"--from {where}: not Sydney_captions.zip (a path or URL) or a folder holding a copy")
    path, downloaded = sources.local_archive(where, work, FIX, quiet)
    return path.name, partial(_archive_json, path), partial(sources.archive_files, path), path if downloaded else None


def fetch_when_absent(why: str, seconds: float = 5) -> tuple[Path | None, str]:
    """For `convattn reproduce`: Sydney-Captions downloaded into the cache from
    $CONVATTN_SYDNEY_URL or the mirror, or (None, one line why not). Without a network this
    returns within about 2 x `seconds`."""
    url = os.environ.get("CONVATTN_SYDNEY_URL") or URL
    problem = transfer.unreachable(url, seconds) if transfer.is_url(url) else None
    if problem:
        return None, (f"{why} Could not fetch it ({problem}); run `convattn download sydney-captions` "
                      "where there is a network, or pass --sydney DIR.")
    log(f"Sydney-Captions not found; downloading it into {sydney_cache()}")
    try:
        return download_sydney(None, url), ""
    except UserError as exc:
        return None, f"{why} Could not fetch it: {exc}"


def check_captions(data: dict, pins: SydneyPins, label) -> None:
    """Each image's split and captions' tokens as in the original; a UserError naming the
    first that is not."""
    entries = {PurePosixPath(e["filename"]).stem: e for e in data.get("images", [])}
    extra, lacking = sorted(set(entries) - set(pins.manifest)), sorted(set(pins.manifest) - set(entries))
    if extra or lacking:
        raise transfer.Mismatch(f"{label}: its images are not Sydney-Captions' 613 ({len(lacking)} missing, "
                        f"{len(extra)} unknown, first: {(lacking or extra)[0]}); pass --from another copy")
    for what, key, value in (("split", "split", lambda e: e.get("split")),
                             ("captions", "tokens", lambda e: manifests.tokens_digest(e.get("sentences", [])))):
        wrong = sorted(stem for stem, e in entries.items() if value(e) != pins.manifest[stem][key])
        if wrong:
            raise transfer.Mismatch(f"{label}: the {what} of {len(wrong)} images differ from the original "
                            f"Sydney-Captions' (first: {entries[wrong[0]]['filename']}); pass --from another copy")


def image_problem(data: bytes, expected: dict) -> str | None:
    """Why these bytes are not the expected image (None when they are)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if list(image.size) != expected["size"] or image.mode != "RGB":
                return (f"{image.size[0]}x{image.size[1]} {image.mode}, expected "
                        f"{expected['size'][0]}x{expected['size'][1]} RGB")
            thumb = manifests.thumbnail(image).astype(int)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"not a readable image ({exc.__class__.__name__})"
    want = np.frombuffer(bytes.fromhex(expected["thumb"]), dtype=np.uint8).reshape(thumb.shape)
    moved = int(np.abs(thumb - want.astype(int)).max())
    return None if moved <= TOLERANCE else f"not the original picture (thumbnail {moved} grey levels off)"


def verified_images(images: Path, pins: SydneyPins, quiet: bool) -> dict[str, str]:
    """stem -> file name of the images already in `images` that check."""
    present = [p for p in images.iterdir() if p.stem in pins.manifest] if images.is_dir() else []
    have = {}
    for path in progress(present, desc="checking Sydney-Captions images", unit="img", quiet=quiet):
        if image_problem(path.read_bytes(), pins.manifest[path.stem]) is None:
            have[path.stem] = path.name
    return have


def _keep_images(data: dict, images: Path, have: dict, files, pins: SydneyPins, label: str, quiet: bool) -> None:
    wanted = {PurePosixPath(e["filename"]).name for e in data["images"]} - set(have.values())
    bad, kept = [], 0
    for name, blob in progress(files(wanted), total=len(wanted), desc="Sydney-Captions images",
                               unit="img", quiet=quiet):
        problem = image_problem(blob, pins.manifest[PurePosixPath(name).stem])
        if problem:
            bad.append(f"{name}: {problem}")
            continue
        transfer.place(images / name, blob)
        kept += 1
    verified = f"{len(have) + kept} verified images kept in {images}"
    if bad:
        raise transfer.Mismatch(f"{label}: {len(bad)} images failed their check (first: {bad[0]}); nothing "
                        f"unverified was kept, {verified}; pass --from another copy")
    if kept < len(wanted):
        raise transfer.Mismatch(f"{label}: {len(wanted) - kept} of the images its dataset.json names are not in "
                        f"it; {verified}; pass --from a complete copy")


def _read_json(blob_or_path, label) -> dict:
    try:
        text = blob_or_path.read_bytes() if isinstance(blob_or_path, Path) else blob_or_path
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise transfer.Mismatch(f"{label}: not a readable dataset.json ({exc}); pass --from another copy") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise transfer.Mismatch(f"{label}: no Karpathy-style images list in it; pass --from another copy")
    return data


def _folder_json(folder: Path) -> dict:
    if not (folder / "dataset.json").is_file():
        raise UserError(f"--from {folder}: no dataset.json there; pass a folder holding a copy, or the zip")
    return _read_json(folder / "dataset.json", folder / "dataset.json")


def _archive_json(path: Path) -> dict:
    """The archive's Karpathy-style json: its one .json member holding an images list."""
    names = [n for n in sources.archive_names(path) if n.lower().endswith(".json")]
    for _, blob in sources.archive_files(path, {PurePosixPath(n).name for n in names}):
        try:
            data = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            return data
    raise transfer.Mismatch(f"{path}: no Karpathy-style dataset json in it; pass --from another copy "
                            "of Sydney_captions.zip")
