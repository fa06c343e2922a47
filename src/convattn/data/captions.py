"""Karpathy-style captioning datasets (`dataset.json` + an images folder) and the vocabulary.

The format (Sydney-Captions, RSICD, UCM-Captions, Flickr8k/30k and COCO "Karpathy splits"
all use it):

    {"dataset": "Sydney",
     "images": [{"filename": "1.jpg", "split": "train" | "val" | "test",
                 "sentences": [{"tokens": ["A", "residential", ...], "raw": "..."}, ...]}, ...]}

Tokens are lower-cased here. A caption without tokens (RSICD has one, "<start_seq>
<end_seq>" for bridge_59) is skipped with one warning naming each as "FILE #j" (j counts
the image's sentences from 0); an image left without captions is an error.

The vocabulary and the maximum caption length come from the training captions only, so
validation and test words never leak into the model (a word seen only there becomes <unk>
in the model's input, but stays itself in the references that BLEU compares against).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runtime import cache_dir
from convattn.data.karpathy import caption_tokens, read_dataset_json
from convattn.data.splits import OFFICIAL, split_names

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # indices 0, 1, 2, 3 in every vocabulary
PAD_ID, START_ID, END_ID, UNK_ID = range(4)
SPLITS = ("train", "val", "test")


@dataclass
class CaptionImage:
    """One image and its reference captions (lists of lower-cased tokens)."""

    index: int          # position in dataset.json's image list: the row of the feature cache
    filename: str
    split: str
    captions: list[list[str]]
    label: str | None = None  # dataset.json's scene class, where it has one (RSICD's "label")

    @property
    def name(self) -> str:
        """The file name without its suffix ("219" for 219.jpg): how the report names images."""
        return Path(self.filename).stem


@dataclass
class CaptionDataset:
    root: Path
    images_dir: Path
    name: str
    images: list[CaptionImage]
    fingerprint: str = ""  # changes whenever dataset.json or any image's bytes change
    sizes: dict = field(default_factory=dict)  # (width, height) -> number of images

    def split(self, name: str) -> list[CaptionImage]:
        return [im for im in self.images if im.split == name]

    def path(self, image: CaptionImage) -> Path:
        return self.images_dir / image.filename

    def by_name(self, name: str) -> CaptionImage:
        for im in self.images:
            if im.name == name or im.filename == name:
                return im
        raise KeyError(name)


def load_dataset(data_dir: str | os.PathLike, images_dir: str | os.PathLike | None = None,
                 check_images: bool = True, scheme: str = OFFICIAL) -> CaptionDataset:
    """Read and validate a Karpathy-style dataset; every problem is a one-line UserError.

    `check_images` opens every image header (cheap) to find missing and unreadable files
    and to record the image sizes. `scheme`: dataset.json's own split, or a named re-split
    (data/splits.py); the fingerprint is of the files, whatever the split.
    """
    root = Path(data_dir)
    json_path, raw, raw_bytes = read_dataset_json(root, "--data")
    images_dir = Path(images_dir) if images_dir is not None else root / "images"
    if not images_dir.is_dir():
        raise UserError(f"--images {images_dir}: no such folder; pass the folder holding the "
                        "image files with --images DIR")

    images, skipped = [], []
    for i, entry in enumerate(raw["images"]):
        where = f"{json_path}: images[{i}]"
        if not isinstance(entry, dict) or "filename" not in entry or "split" not in entry:
            raise UserError(f"{where}: each image needs \"filename\", \"split\" and \"sentences\"")
        # COCO's Karpathy split calls the extra training images "restval"
        split = "train" if entry["split"] == "restval" else entry["split"]
        if split not in SPLITS:
            raise UserError(f"{where} ({entry['filename']}): split {split!r} is not one of "
                            f"{', '.join(SPLITS)}")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise UserError(f"{where} ({entry['filename']}): no captions (\"sentences\" is empty "
                            "or missing)")
        captions = []
        for j, sentence in enumerate(sentences):
            tokens = sentence.get("tokens") if isinstance(sentence, dict) else None
            if not isinstance(tokens, list):
                raise UserError(f"{where} ({entry['filename']}): caption {j} has no \"tokens\" "
                                "list; remove it or give it one")
            words = list(caption_tokens(tokens))
            if words:
                captions.append(words)
            else:
                skipped.append(f"{entry['filename']} #{j}")
        if not captions:
            raise UserError(f"{where} ({entry['filename']}): every caption is empty; give it at "
                            "least one caption with tokens, or remove the image")
        label = entry.get("label")
        images.append(CaptionImage(index=i, filename=str(entry["filename"]), split=split,
                                   captions=captions, label=None if label is None else str(label)))
    if skipped:
        log(f"{json_path}: skipped {len(skipped)} empty caption{'s' if len(skipped) > 1 else ''} "
            f"({_listed(skipped)})")

    for im, name in zip(images, split_names([im.split for im in images], scheme)):
        im.split = name
    for name in SPLITS:
        if not any(im.split == name for im in images):
            under = "" if scheme == OFFICIAL else f" under --split {scheme}"
            raise UserError(f"{json_path}: the {name} split is empty{under}; every image needs a "
                            "\"split\" of train, val or test and each split at least one image")

    dataset = CaptionDataset(root=root, images_dir=images_dir,
                             name=str(raw.get("dataset") or root.name), images=images)
    dataset.fingerprint = _fingerprint(raw_bytes, dataset)
    if check_images:
        dataset.sizes = _check_images(dataset)
    return dataset


def _fingerprint(raw_json: bytes, dataset: CaptionDataset) -> str:
    """SHA-256 of dataset.json and every image's (name, SHA-256 of its bytes): the same files
    give the same fingerprint wherever they lie and whatever their dates (a copy, a restore,
    a new mount), and an edited, renamed or missing image changes it."""
    digests = _image_digests(dataset)
    h = hashlib.sha256(raw_json)
    for im in dataset.images:
        h.update(f"{im.filename}\0{digests.get(im.filename, 'missing')}\n".encode())
    return h.hexdigest()


# A file modified within this long before it is hashed is not remembered: a second write in
# the same timestamp tick could leave (size, mtime) unchanged (git's "racy" index entries).
RACY_NS = 2_000_000_000
MEMO_VERSION = 1  # bump when the memo's layout changes: an old memo is then ignored


def _image_digests(dataset: CaptionDataset) -> dict[str, str]:
    """{filename: SHA-256 of its bytes} for every image file that exists.

    Hashing 94 MB of images on every load would be slow, so, like git's index, a memo in the
    cache folder maps each file's stat (size, mtime, ctime, inode, device) to its digest;
    a file whose stat still matches reuses it, any other is read and hashed again. A missing,
    corrupt or unwritable memo only means hashing everything."""
    folder = dataset.images_dir.resolve()
    memo_name = hashlib.sha256(str(folder).encode()).hexdigest()[:24]
    memo_path = cache_dir() / "image-digests" / f"{memo_name}.json"
    memo = _read_memo(memo_path, folder)
    digests, changed = {}, False
    for im in dataset.images:
        if im.filename in digests:
            continue
        try:
            st = os.stat(folder / im.filename)
            stat = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
            entry = memo.get(im.filename)
            if entry is not None and entry[:5] == stat:
                digests[im.filename] = entry[5]
                continue
            started = time.time_ns()
            digests[im.filename] = _file_sha256(folder / im.filename)
        except OSError:  # missing or unreadable: named as missing; _check_images reports it
            continue
        if started - st.st_mtime_ns > RACY_NS:
            memo[im.filename] = stat + [digests[im.filename]]
        else:
            memo.pop(im.filename, None)
        changed = True
    if changed:
        try:
            io.write_json(memo_path, {"version": MEMO_VERSION, "folder": str(folder),
                                      "files": memo})
        except OSError:
            pass  # a read-only cache: the next load hashes again
    return digests


def _read_memo(path: Path, folder: Path) -> dict[str, list]:
    """The memo's {filename: [size, mtime_ns, ctime_ns, inode, device, digest]}; {} when it is
    missing, corrupt, of another version or for another folder."""
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if (not isinstance(raw, dict) or raw.get("version") != MEMO_VERSION
            or raw.get("folder") != str(folder) or not isinstance(raw.get("files"), dict)):
        return {}
    return {name: entry for name, entry in raw["files"].items()
            if isinstance(entry, list) and len(entry) == 6
            and all(type(x) is int for x in entry[:5]) and isinstance(entry[5], str)}


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _listed(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_images(dataset: CaptionDataset) -> dict:
    missing, unreadable, sizes = [], [], Counter()
    for im in dataset.images:
        path = dataset.path(im)
        if not path.is_file():
            missing.append(im.filename)
            continue
        try:
            with Image.open(path) as img:
                sizes[img.size] += 1
        except (UnidentifiedImageError, OSError):
            unreadable.append(im.filename)
    for problem, names in (("missing", missing), ("unreadable", unreadable)):
        if names:
            raise UserError(f"--images {dataset.images_dir}: {len(names)} {problem} image file(s): "
                            f"{_listed(names)}; restore them or fix dataset.json")
    return dict(sizes)


class Vocabulary:
    """Words of the training captions plus the four specials at fixed indices 0..3."""

    def __init__(self, words: list[str]):
        if tuple(words[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_captions(cls, captions: list[list[str]]) -> "Vocabulary":
        # sorted, so the same training captions always give the same indices
        return cls(list(SPECIALS) + sorted({t for c in captions for t in c}))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str], max_len: int) -> list[int]:
        """<start> tokens <end>, padded with <pad> (or cut) to exactly max_len ids."""
        ids = [START_ID] + [self.index.get(t, UNK_ID) for t in tokens][: max_len - 2] + [END_ID]
        return ids + [PAD_ID] * (max_len - len(ids))

    def decode(self, ids) -> list[str]:
        """Words up to the first <end>, specials dropped: what BLEU sees as the hypothesis."""
        words = []
        for i in ids:
            i = int(i)
            if i == END_ID:
                break
            if i >= len(SPECIALS):
                words.append(self.words[i])
        return words

    def tokens(self, ids) -> list[str]:
        """Every generated token up to and including <end>, specials by name (<unk> kept):
        one per decoding step, so token t goes with the attention weights of step t."""
        out = []
        for i in ids:
            i = int(i)
            if i == PAD_ID:
                break
            out.append(self.words[i])
            if i == END_ID:
                break
        return out


def build_vocabulary(dataset: CaptionDataset) -> tuple[Vocabulary, int]:
    """The vocabulary and maximum length (with <start> and <end>) of the training captions."""
    train = [c for im in dataset.split("train") for c in im.captions]
    return Vocabulary.from_captions(train), max(len(c) for c in train) + 2
