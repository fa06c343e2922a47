"""What to check in a caption benchmark before trusting its scores: `convattn data audit DIR`.

Reads only DIR/dataset.json (Karpathy format, as data/captions.py documents it), never the
images, so a 55,000-caption set takes well under a second. Per split and overall: images,
captions, empty captions, distinct captions, captions repeated within an image or shared
between images, vocabulary, caption lengths; and how many validation and test reference
captions appear word for word among the training captions (a model that recalls training
captions scores on those for free).

What is counted: tokens are lower-cased and blank tokens dropped, as load_dataset does. An
empty caption (no tokens left) counts in `captions` and `empty_captions` only; every other
number is over the non-empty captions. References are counted with their repeats, as BLEU
sees them: a test caption written twice counts twice.

Under a split scheme (`official`, or `random-N`: data/splits.py) the same numbers for the
images that scheme puts in each split, and the test scores of the captioners that never look
at the image (`prior`, `class-prior`: data/priors.py), which say what the split gives away.

Stdlib only, but for pycocoevalcap when the priors are scored, and not built on
load_dataset: that imports torch (through common.runtime), drops empty captions and hashes
every image, which is what an audit must not do.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from convattn.common.errors import UserError
from convattn.data import priors
from convattn.data.karpathy import caption_tokens, read_dataset_json
from convattn.data.splits import OFFICIAL, check_scheme, split_names

SPLITS = ("train", "val", "test")  # the order of data/captions.py's SPLITS
SPLIT_ALIASES = {"restval": "train"}  # COCO's Karpathy split: the extra training images
FREQUENT = 5  # a word seen at least this often counts as frequent (the usual vocabulary cut)

Caption = tuple[str, ...]  # lower-cased tokens; () for an empty caption


@dataclass(frozen=True)
class AuditImage:
    filename: str
    split: str                     # train, val or test (restval read as train)
    captions: tuple[Caption, ...]  # every sentence, empty ones included
    label: str | None = None       # the scene class, where dataset.json has one


@dataclass(frozen=True)
class SplitStats:
    """One split (or all of them); every field but captions and empty_captions is over the
    non-empty captions."""

    images: int
    captions: int
    empty_captions: int
    unique_captions: int               # distinct token sequences
    images_with_repeated_captions: int  # images holding one caption twice or more
    captions_shared_across_images: int  # captions whose words another image also has
    vocabulary: int                    # distinct words
    vocabulary_min5: int               # distinct words seen >= FREQUENT times
    length_mean: float | None          # tokens per caption; None without captions
    length_median: float | None
    length_p95: int | None             # nearest rank: 95 % of captions are no longer
    length_max: int | None


@dataclass(frozen=True)
class RefOverlap:
    """Held-out reference captions that appear word for word among the training captions."""

    refs: int       # non-empty captions of the split, repeats included
    in_train: int
    fraction: float | None  # in_train / refs; None without references


@dataclass(frozen=True)
class Audit:
    dataset: str
    path: str
    splits: dict[str, SplitStats]
    overall: SplitStats
    test_overlap: RefOverlap
    val_overlap: RefOverlap
    split: str = OFFICIAL           # the split scheme audited (data/splits.py)
    # test scores of the captioners that never look at the image (data/priors.py):
    # {name: {"cider", "bleu4", "caption" (prior only)}} or {name: {"skipped": reason}}
    priors: dict | None = None

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "path": self.path,
            "split": self.split,
            "priors": self.priors,
            "test_refs_in_train": self.test_overlap.fraction,
            "test_refs": self.test_overlap.refs,
            "test_refs_in_train_count": self.test_overlap.in_train,
            "val_refs_in_train": self.val_overlap.fraction,
            "val_refs": self.val_overlap.refs,
            "val_refs_in_train_count": self.val_overlap.in_train,
            "splits": {name: asdict(stats) for name, stats in self.splits.items()},
            "overall": asdict(self.overall),
        }


def audit(data_dir: str | Path, scheme: str = OFFICIAL, score_priors: bool = False) -> Audit:
    """The audit of DIR/dataset.json under split `scheme`; a missing or malformed file is a
    one-line UserError. `score_priors`: also the prior captioners' test scores
    (pycocoevalcap, as caption/metrics.py scores; about a second on RSICD)."""
    root = Path(data_dir)
    json_path, raw, _ = read_dataset_json(root)
    images = parse_images(json_path, raw)
    check_scheme(scheme)
    images = [replace(im, split=name) for im, name in zip(images, split_names([im.split for im in images], scheme))]
    by_split = {name: [im for im in images if im.split == name] for name in SPLITS}
    train = {" ".join(caption) for im in by_split["train"] for caption in im.captions if caption}
    return Audit(
        dataset=str(raw.get("dataset") or root.name),
        path=str(root),
        splits={name: split_stats(split) for name, split in by_split.items()},
        overall=split_stats(images),
        test_overlap=ref_overlap(by_split["test"], train),
        val_overlap=ref_overlap(by_split["val"], train),
        split=scheme,
        priors=prior_scores(by_split["train"], by_split["test"]) if score_priors else None,
    )


def prior_scores(train: list[AuditImage], test: list[AuditImage]) -> dict:
    """CIDEr-D and BLEU-4 on `test` of the prior and class-prior captions (data/priors.py),
    scored with pycocoevalcap as caption/metrics.py scores (tokens joined by spaces)."""
    from pycocoevalcap.bleu.bleu import Bleu  # the scorers only when asked: the audit stays fast
    from pycocoevalcap.cider.cider import Cider

    test = [im for im in test if any(im.captions)]
    if not test or not any(c for im in train for c in im.captions):
        return {name: {"skipped": "no captioned training or test images"} for name in ("prior", "class-prior")}
    gts = {i: [" ".join(c) for c in im.captions if c] for i, im in enumerate(test)}

    def scores(captions) -> dict:
        res = {i: [" ".join(c)] for i, c in enumerate(captions)}
        return {"cider": float(Cider().compute_score(gts, res)[0]),
                "bleu4": float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])}

    out = {"prior": {**scores(priors.prior(train, test)), "caption": " ".join(priors.prior(train, [None])[0])}}
    missing = priors.missing_labels(train + test)
    out["class-prior"] = (scores(priors.class_prior(train, test)) if not missing else
                          {"skipped": f"{missing} images have no scene \"label\""})
    return out


def parse_images(json_path: Path, raw: dict) -> list[AuditImage]:
    return [parse_image(f"{json_path}: images[{i}]", entry) for i, entry in enumerate(raw["images"])]


def parse_image(where: str, entry) -> AuditImage:
    if not isinstance(entry, dict) or "filename" not in entry or "split" not in entry:
        raise UserError(f"{where}: each image needs \"filename\", \"split\" and \"sentences\"; "
                        "fix the entry")
    where = f"{where} ({entry['filename']})"
    split = SPLIT_ALIASES.get(entry["split"], entry["split"])
    if split not in SPLITS:
        raise UserError(f"{where}: split {entry['split']!r} is not one of "
                        f"{', '.join(SPLITS)} (or restval); fix its \"split\"")
    sentences = entry.get("sentences", [])
    if not isinstance(sentences, list):
        raise UserError(f"{where}: \"sentences\" is not a list; fix the entry")
    label = entry.get("label")
    return AuditImage(filename=str(entry["filename"]), split=split,
                      captions=tuple(sentence_tokens(where, j, s) for j, s in enumerate(sentences)),
                      label=None if label is None else str(label))


def sentence_tokens(where: str, j: int, sentence) -> Caption:
    """Lower-cased tokens with blank ones dropped: the rule of captions.load_dataset."""
    tokens = sentence.get("tokens") if isinstance(sentence, dict) else None
    if not isinstance(tokens, list):
        raise UserError(f"{where}: caption {j} has no \"tokens\" list; remove it or give it one")
    return caption_tokens(tokens)


def split_stats(images: list[AuditImage]) -> SplitStats:
    captions = [c for im in images for c in im.captions if c]
    words = Counter(word for c in captions for word in c)
    return SplitStats(
        images=len(images),
        captions=sum(len(im.captions) for im in images),
        empty_captions=sum(1 for im in images for c in im.captions if not c),
        unique_captions=len(set(captions)),
        images_with_repeated_captions=sum(1 for im in images if has_repeat(im)),
        captions_shared_across_images=shared_across_images(images),
        vocabulary=len(words),
        vocabulary_min5=sum(1 for n in words.values() if n >= FREQUENT),
        **length_stats([len(c) for c in captions]),
    )


def has_repeat(image: AuditImage) -> bool:
    captions = [c for c in image.captions if c]
    return len(set(captions)) < len(captions)


def shared_across_images(images: list[AuditImage]) -> int:
    """How many captions have words that at least one other image's captions also have."""
    owners = Counter(c for im in images for c in set(im.captions) if c)
    return sum(1 for im in images for c in im.captions if c and owners[c] > 1)


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return dict(length_mean=None, length_median=None, length_p95=None, length_max=None)
    ordered = sorted(lengths)
    return dict(length_mean=statistics.fmean(ordered), length_median=float(statistics.median(ordered)),
                length_p95=ordered[math.ceil(0.95 * len(ordered)) - 1], length_max=ordered[-1])


def ref_overlap(held_out: list[AuditImage], train: set[str]) -> RefOverlap:
    """`train` holds the training captions as their tokens joined by spaces: the text that
    BLEU and CIDEr compare."""
    refs = [" ".join(c) for im in held_out for c in im.captions if c]
    found = sum(1 for ref in refs if ref in train)
    return RefOverlap(refs=len(refs), in_train=found, fraction=found / len(refs) if refs else None)
