"""RSICD laid out as dataset.json + images/ from pinned public sources, every file checked.

    download_rsicd(dest=None, source=None, captions=None) -> dest

- images: RitaRamo/image-caption-remote-sensing-images at IMAGES_COMMIT, folder
  IMAGES_FOLDER: 10,921 JPEGs, each checked against the SHA-256 manifest shipped in the
  package (manifests.RSICD_MANIFEST). `source` (--from) may be any shape sources.py reads;
  the official release's RSICD_images.zip is accepted by its Git LFS object's SHA-256, and
  any other archive image by image against the manifest.
- captions and the official split: albertofrizzera/VT-RSBS at CAPTIONS_COMMIT,
  metadata/RSICD/RSICD.csv, checked by its SHA-256 (`captions`: a path, URL or git directory).
- dataset.json: as the reference build.py writes it (tokens = lower-cased runs of letters of
  each caption, as RSICD's own dataset_rsicd.json; the scene label kept), written last, so a
  folder with a dataset.json is a finished one.

Verified images are kept across runs: a rerun checks what is there and fetches the rest.
"""

from __future__ import annotations

import ast
import hashlib
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runtime import cache_dir
from convattn.data import manifests, sources, transfer
from convattn.data.rsicd_images import fetch_images

IMAGES_REPO = "RitaRamo/image-caption-remote-sensing-images"
IMAGES_COMMIT = "160b24710763499705548eaf295cedc71c9c63d9"
IMAGES_FOLDER = "src/datasets/RSICD/raw_dataset/RSICD_images"
IMAGES_URL = f"https://raw.githubusercontent.com/{IMAGES_REPO}/{IMAGES_COMMIT}/{IMAGES_FOLDER}/"
CAPTIONS_REPO = "albertofrizzera/VT-RSBS"
CAPTIONS_COMMIT = "ded5390c69e227a2d424e7f077ffe312cfa5b771"
CAPTIONS_PATH = "metadata/RSICD/RSICD.csv"
CAPTIONS_URL = f"https://raw.githubusercontent.com/{CAPTIONS_REPO}/{CAPTIONS_COMMIT}/{CAPTIONS_PATH}"
CAPTIONS_SHA256 = "d1c7be7c36d73c0261962e9306ab3728fcf406b371135bc2997bef725de8df1c"
# 201528014227051/RSICD_optimal: RSICD_images.zip is a Git LFS object (484,955,574 bytes)
OFFICIAL_ZIP_SHA256 = "0d3ebda15b8b1e5c2754270d38462251e8c61489b54e463e499c978da4b91d10"
TOKEN = re.compile(r"[a-z]+")
FIX = "rerun to continue (verified files are kept), or pass --from a mirror, an archive or a git directory"


@dataclass(frozen=True)
class RsicdPins:
    """What a download is checked against; the shipped ones are `shipped_pins()`, tests
    make small ones."""

    manifest: dict[str, tuple[str, int]]  # image name -> (SHA-256, size in bytes)
    images_url: str = IMAGES_URL
    captions_url: str = CAPTIONS_URL
    captions_sha256: str = CAPTIONS_SHA256
    commit: str = IMAGES_COMMIT
    folder: str = IMAGES_FOLDER
    captions_commit: str = CAPTIONS_COMMIT
    captions_path: str = CAPTIONS_PATH
    official_zip_sha256: str = OFFICIAL_ZIP_SHA256


def shipped_pins() -> RsicdPins:
    return RsicdPins(manifest=manifests.parse_rsicd(manifests.shipped(manifests.RSICD_MANIFEST)))


def rsicd_cache() -> Path:
    return cache_dir() / "rsicd"


def download_rsicd(dest=None, source: str | None = None, captions: str | None = None, *,
                   pins: RsicdPins | None = None, jobs: int = 8, quiet: bool = False) -> Path:
    """Lay RSICD out in `dest` (default: the cache), fetching only what is not there verified."""
    pins = pins or shipped_pins()
    dest = Path(dest or rsicd_cache())
    work = dest / ".download"
    rows = read_rows(captions_csv(work, captions, pins))
    unknown = [r["filename"] for r in rows if r["filename"] not in pins.manifest]
    if unknown:
        raise UserError(f"{pins.captions_path}: {len(unknown)} captioned images are not in the image "
                        f"manifest (first: {unknown[0]}); the pins disagree, report it")
    fetch_images(dest / "images", work, source or pins.images_url, pins, jobs=jobs, quiet=quiet, fix=FIX)
    transfer.place(dest / "dataset.json", layout_json(rows).encode())
    splits = {}
    for row in rows:
        splits[row["split"]] = splits.get(row["split"], 0) + 1
    log(f"RSICD: {len(rows):,} images, {splits}, every file verified, in {dest}")
    return dest


def captions_csv(work: Path, captions: str | None, pins: RsicdPins) -> bytes:
    """RSICD.csv, checked by its SHA-256 and kept in `work` once it is."""
    kept = work / "RSICD.csv"
    if kept.is_file() and transfer.sha256_file(kept) == pins.captions_sha256:
        return kept.read_bytes()
    where = captions or pins.captions_url
    if transfer.is_url(where):
        data = transfer.fetch_bytes(where, "rerun, or pass --captions a copy of RSICD.csv (a path or URL)")
    elif Path(where).is_dir():
        data = sources.git_file(Path(where), pins.captions_commit, pins.captions_path)
    elif Path(where).is_file():
        data = Path(where).read_bytes()
    else:
        raise UserError(f"--captions {where}: no such file; pass RSICD.csv, its URL, or a clone of "
                        f"{CAPTIONS_REPO}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != pins.captions_sha256:
        raise UserError(f"{where}: SHA-256 {digest[:12]}..., expected {pins.captions_sha256[:12]}... "
                        f"({CAPTIONS_REPO} {pins.captions_commit[:7]} {pins.captions_path}); "
                        "pass --captions that file")
    transfer.place(kept, data)
    return data


def read_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def layout_json(rows: list[dict]) -> str:
    """dataset.json's text, byte for byte as the reference build.py writes it."""
    images = []
    for i, row in enumerate(rows):
        sentences = [{"tokens": TOKEN.findall(raw.lower()), "raw": raw, "imgid": i, "sentid": sid}
                     for sid, raw in zip(ast.literal_eval(row["sent_id"]), ast.literal_eval(row["sentence"]))]
        images.append({"filename": row["filename"], "imgid": i, "split": row["split"], "label": row["label"],
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    return json.dumps({"dataset": "rsicd", "images": images})
