"""Fashion-MNIST on disk, and `convattn download fashion-mnist | rsicd | sydney-captions`.

Search order for the four IDX files: `--data DIR`, then the Debian package's folder
(`apt-get install dataset-fashion-mnist`), then the download cache
($CONVATTN_CACHE/fashion-mnist). `convattn download fashion-mnist` fills the cache from
the dataset's official release; every file is checked by the SHA-256 of its
*decompressed* IDX bytes, so a re-compressed mirror (Debian's is one) verifies too.
RSICD and Sydney-Captions are laid out by rsicd.py and sydney.py; this module is their
command line.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runtime import cache_dir

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# file name -> SHA-256 of the decompressed IDX file (the official release's contents)
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_FILES = tuple(FASHION_MNIST_SHA256)


def fashion_mnist_cache() -> Path:
    return cache_dir() / "fashion-mnist"


def _has_all(folder: Path) -> bool:
    return all((folder / f).exists() or (folder / f[:-3]).exists() for f in FASHION_MNIST_FILES)


def find_fashion_mnist(data: str | os.PathLike | None = None) -> Path:
    """The folder holding the four IDX files (.gz or raw), or a UserError saying how to get them."""
    if data is not None:
        folder = Path(data)
        if not folder.is_dir():
            raise UserError(f"--data {folder}: no such folder; pass the folder holding the "
                            "Fashion-MNIST IDX files")
        return folder
    for folder in (DEBIAN_DIR, fashion_mnist_cache()):
        if _has_all(folder):
            return folder
    raise UserError("Fashion-MNIST not found in --data, /usr/share/datasets/fashion-mnist or "
                    f"{fashion_mnist_cache()}; install the Debian package dataset-fashion-mnist, "
                    "run `convattn download fashion-mnist`, or pass --data DIR")


def idx_sha256(gz_bytes: bytes) -> str:
    """SHA-256 of the decompressed content of a gzip file."""
    try:
        raw = gzip.decompress(gz_bytes)
    except (OSError, EOFError) as exc:
        raise ValueError(f"not a valid gzip file ({exc})") from None
    return hashlib.sha256(raw).hexdigest()


def download_fashion_mnist(dest: Path | None = None, base_url: str | None = None,
                           checksums: dict[str, str] | None = None, timeout: float = 60) -> Path:
    """Download and verify every file missing from `dest`; a file that fails is not kept."""
    dest = Path(dest or fashion_mnist_cache())
    base_url = base_url or os.environ.get("CONVATTN_FASHION_MNIST_URL") or OFFICIAL_URL
    checksums = checksums or FASHION_MNIST_SHA256
    for name, expected in checksums.items():
        target = dest / name
        if target.exists() and idx_sha256(target.read_bytes()) == expected:
            continue
        url = base_url.rstrip("/") + "/" + name
        log(f"downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"{url}: download failed ({exc}); check the network or set "
                            "CONVATTN_FASHION_MNIST_URL to a mirror") from None
        try:
            got = idx_sha256(payload)
        except ValueError as exc:
            raise UserError(f"{url}: {exc}; the download is corrupt, retry or use another mirror") from None
        if got != expected:
            raise UserError(f"{url}: SHA-256 of the contents is {got[:12]}..., expected "
                            f"{expected[:12]}...; the file is corrupt or not Fashion-MNIST, "
                            "retry or use another mirror")
        io.write_bytes(target, payload)
    return dest


DATASETS = ("fashion-mnist", "rsicd", "sydney-captions")
DESCRIPTION = """\
Download a dataset into the cache ($CONVATTN_CACHE, default ~/.cache/convattn), or --to DIR,
checking every file before it is kept. Interrupted downloads continue where they stopped
(an HTTP range request where the server allows one, else file by file); verified files are
never deleted; a failure is one line naming the file and the fix. Prints the folder.

fashion-mnist    the official release, {fashion},
                 every file by the SHA-256 of its decompressed contents. Not needed where the
                 Debian package is installed.
rsicd            10,921 images from {rsicd_images}
                 at {rsicd_commit}, each by the SHA-256 manifest shipped with convattn
                 (--from: another base URL, a folder, a git directory holding that commit, or
                 a zip/tar; the official RSICD_images.zip of 201528014227051/RSICD_optimal is
                 verified by its Git LFS SHA-256 {zip_sha}...); captions and the official
                 split from {rsicd_captions} {captions_commit} metadata/RSICD/RSICD.csv, by its
                 SHA-256 {captions_sha}... (--captions: a path, URL or clone). About 570 MB.
                 Then: convattn reproduce --rsicd download, or --rsicd DIR.
sydney-captions  Sydney_captions.zip of the Hugging Face dataset {sydney} at revision
                 {sydney_rev} (about 355 MB). Verified against the original dataset.json and
                 images: each image's split and captions' tokens (lower-cased), and every image
                 decoded as 500x500 RGB with its 8x8 grey thumbnail within {tolerance} levels of
                 the original's. Not verified: the zip's bytes, the images' bytes, the captions'
                 raw text. convattn reproduce fetches it itself when it is not found.
"""


def register(subparsers) -> None:
    from convattn.data import rsicd, sydney

    parser = subparsers.add_parser(
        "download", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION.format(
            fashion=OFFICIAL_URL, rsicd_images=rsicd.IMAGES_REPO, rsicd_commit=rsicd.IMAGES_COMMIT[:12],
            zip_sha=rsicd.OFFICIAL_ZIP_SHA256[:12], rsicd_captions=rsicd.CAPTIONS_REPO,
            captions_commit=rsicd.CAPTIONS_COMMIT[:12], captions_sha=rsicd.CAPTIONS_SHA256[:12],
            sydney=sydney.REPO, sydney_rev=sydney.REVISION[:12], tolerance=sydney.TOLERANCE))
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--to", "--dest", dest="to", default=None, metavar="DIR",
                        help="target folder (default: $CONVATTN_CACHE/DATASET, where reproduce looks)")
    parser.add_argument("--from", "--url", dest="source", default=None, metavar="URL_OR_PATH",
                        help="a mirror, a proxy or a local copy instead of the default source, "
                             "verified the same way")
    parser.add_argument("--captions", default=None, metavar="URL_OR_PATH",
                        help="rsicd: RSICD.csv from elsewhere (a path, a URL or a clone of "
                             f"{rsicd.CAPTIONS_REPO}), verified by its SHA-256")
    parser.add_argument("--jobs", type=int, default=8,
                        help="rsicd from a base URL: requests at a time (default: 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    if args.captions and args.dataset != "rsicd":
        raise UserError(f"--captions: only for rsicd, not {args.dataset}")
    to = Path(args.to) if args.to else None
    if args.dataset == "fashion-mnist":
        dest = download_fashion_mnist(to, args.source)
    elif args.dataset == "rsicd":
        from convattn.data.rsicd import download_rsicd

        dest = download_rsicd(to, args.source, args.captions, jobs=args.jobs, quiet=args.quiet)
    else:
        from convattn.data.sydney import download_sydney

        dest = download_sydney(to, args.source, quiet=args.quiet)
    print(dest)
    return 0
