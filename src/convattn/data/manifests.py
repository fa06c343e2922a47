"""The manifests shipped in the package, what they record, and how they were made.

    rsicd_images.sha256.gz   one line per RSICD image: SHA-256, size in bytes, file name
                             (RitaRamo/image-caption-remote-sensing-images at the pinned commit)
    sydney_captions.json.gz  per Sydney-Captions image (by file stem): its split, a digest of
                             its five captions' lower-cased tokens, and an 8x8 grey thumbnail

Rebuild them (the same bytes come back) with

    python -m convattn.data.manifests rsicd GITDIR          # a clone of the images repository
    python -m convattn.data.manifests sydney DATASET_DIR    # dataset.json + images/ of Sydney
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

RSICD_MANIFEST = "rsicd_images.sha256.gz"
SYDNEY_MANIFEST = "sydney_captions.json.gz"
THUMB = 8  # thumbnail side: 8x8 box-averaged grey levels


def tokens_digest(sentences: list[dict]) -> str:
    """16 hex digits of the SHA-256 of an image's captions as the model reads them: each
    sentence's tokens, lower-cased, in order."""
    tokens = [[str(t).lower() for t in s.get("tokens", [])] for s in sentences]
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:16]


def thumbnail(image: Image.Image) -> np.ndarray:
    """(THUMB, THUMB) uint8: the image in grey, box-averaged. Re-encoding an image (TIFF to
    JPEG, quality 85 to 95) moves it by at most 1 level; two different Sydney images differ
    by 8 or more somewhere."""
    return np.asarray(image.convert("L").resize((THUMB, THUMB), Image.BOX), dtype=np.uint8)


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def rsicd_manifest(gitdir: Path, repo: str, commit: str, folder: str) -> bytes:
    """The RSICD manifest of the images in `folder` of `commit`, gzip'd."""
    from convattn.data.sources import _git, git_files

    names = [line.split("\t", 1)[1].rsplit("/", 1)[-1] for line in
             _git(gitdir, "ls-tree", "-r", commit, folder + "/").decode().splitlines()]
    lines = [f"# {repo} {commit} {folder}: sha256 size name\n"]
    lines += [f"{hashlib.sha256(data).hexdigest()} {len(data)} {name}\n"
              for name, data in sorted(git_files(gitdir, commit, folder, names))]
    return _gzip("".join(lines))


def sydney_manifest(folder: Path) -> bytes:
    """The Sydney-Captions manifest of a laid-out copy (dataset.json + images/), gzip'd."""
    data = json.loads((folder / "dataset.json").read_text())
    images = {}
    for entry in data["images"]:
        with Image.open(folder / "images" / entry["filename"]) as image:
            size = list(image.size)
            thumb = thumbnail(image).tobytes().hex()
        images[Path(entry["filename"]).stem] = {"split": entry["split"], "tokens": tokens_digest(entry["sentences"]),
                                                "size": size, "thumb": thumb}
    return _gzip(json.dumps({"dataset": data.get("dataset", "Sydney"), "images": images}, sort_keys=True))


def parse_rsicd(blob: bytes) -> dict[str, tuple[str, int]]:
    """name -> (SHA-256, size) from a gzip'd RSICD manifest."""
    out = {}
    for line in gzip.decompress(blob).decode().splitlines():
        if line and not line.startswith("#"):
            digest, size, name = line.split(" ", 2)
            out[name] = (digest, int(size))
    return out


def parse_sydney(blob: bytes) -> dict[str, dict]:
    """stem -> {split, tokens, size, thumb} from a gzip'd Sydney manifest."""
    return json.loads(gzip.decompress(blob))["images"]


def shipped(name: str) -> bytes:
    return resources.files("convattn.data").joinpath(name).read_bytes()


def summary_digest(blob: bytes) -> str:
    """16 hex digits naming a manifest as a whole (shown in --help and the docs)."""
    return hashlib.sha256(gzip.decompress(blob)).hexdigest()[:16]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("rsicd", "sydney"):
        print(__doc__.split("Rebuild")[1], file=sys.stderr)
        return 2
    from convattn.data import rsicd

    kind, where = argv[0], Path(argv[1])
    if kind == "rsicd":
        blob = rsicd_manifest(where, rsicd.IMAGES_REPO, rsicd.IMAGES_COMMIT, rsicd.IMAGES_FOLDER)
    else:
        blob = sydney_manifest(where)
    target = Path(__file__).parent / (RSICD_MANIFEST if kind == "rsicd" else SYDNEY_MANIFEST)
    target.write_bytes(blob)
    print(f"{target}: {len(blob):,} bytes, digest {summary_digest(blob)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
