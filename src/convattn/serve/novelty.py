"""The out-of-domain warning: is an uploaded image unlike every image the model trained on?

An image's global feature is its L2-normalised mean region feature (caption.rerank's
`global_features`, with which the consensus reranker finds neighbours); the upload's score
is its cosine similarity to the nearest training image. The threshold is calibrated on the
validation images (never test), which are in the training images' domain by construction:
it is the PERCENTILE-th percentile (numpy's linear interpolation) of their nearest-training
similarities, so about PERCENTILE % of in-domain images would be flagged. An upload below it
is "unlike every training image", and the page says the caption is likely wrong.

Where the features come from: the training images' from the model.pt's reranker block
(`ckpt["rerank"]["globals"]`, runs trained with --rerank N), else from the run's dataset's
feature cache (caption/features.py); the validation images' from that cache. A `Calibration`
reads each (dataset, encoder spec, split) once while a ModelStore loads its models, and is
dropped after; each model keeps its own `NoveltyCheck`. A model whose dataset or cache is
not on this machine gets no check, and its API answers say why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from convattn.caption.encoders import EncoderSpec
from convattn.caption.features import cache_folder, cache_key, find_cache
from convattn.caption.rerank import global_features
from convattn.common.errors import UserError
from convattn.data.captions import CaptionDataset, load_dataset
from convattn.serve.images import without_paths

PERCENTILE = 1    # the threshold: this percentile of the validation images' similarities
CHUNK = 256       # images per read from the memory-mapped cache

@dataclass(frozen=True)
class Novelty:
    """One image's check, as /api/caption answers it ("novelty")."""
    similarity: float | None        # cosine similarity to the nearest training image
    threshold: float | None         # the PERCENTILE-th percentile of validation images' similarities
    percentile: int
    unlike_training: bool | None    # similarity < threshold; None: no check (see reason)
    message: str                    # what the page shows beside the caption: the warning, a
                                    # note with the numbers, or the reason
    reason: str | None = None       # why there is no check

    def to_dict(self) -> dict:
        return asdict(self)


class NoveltyCheck:
    """A model's training images' global features [N_train, C] and its calibrated
    threshold; or, without them, the reason there is no check."""

    def __init__(self, train_globals: torch.Tensor | None = None, threshold: float | None = None,
                 validation_images: int = 0, reason: str | None = None):
        self.train_globals = None if train_globals is None else train_globals.float().cpu()
        self.threshold = threshold
        self.validation_images = validation_images
        self.reason = reason

    @classmethod
    def calibrated(cls, train_globals: torch.Tensor, val_globals: torch.Tensor) -> NoveltyCheck:
        """train_globals [N_train, C], val_globals [N_val, C], both L2-normalised."""
        nearest = nearest_similarity(val_globals.float(), train_globals.float())   # [N_val]
        return cls(train_globals, float(np.percentile(nearest.numpy(), PERCENTILE)), len(val_globals))

    @classmethod
    def unavailable(cls, reason: str) -> NoveltyCheck:
        return cls(reason=reason)

    @property
    def shown_reason(self) -> str | None:
        """The reason as the page shows it: folders by their last part only (the server's log
        has the whole reason)."""
        return None if self.reason is None else without_paths(self.reason)

    def info(self) -> dict:
        """What GET /api/models says of the check."""
        return {"percentile": PERCENTILE, "threshold": self.threshold,
                "training_images": None if self.train_globals is None else len(self.train_globals),
                "validation_images": self.validation_images, "reason": self.shown_reason}

    def check(self, features: torch.Tensor) -> Novelty:
        """Region features [1, R, C] of one image (rounded as the cache rounds them)."""
        if self.train_globals is None:
            return Novelty(None, None, PERCENTILE, None, self.shown_reason, self.shown_reason)
        query = global_features(features).cpu()                                  # [1, C]
        similarity = float(nearest_similarity(query, self.train_globals)[0])
        unlike = similarity < self.threshold
        if unlike:
            message = (f"this image is unlike every training image (nearest training image similarity "
                       f"{similarity:.3f}, below the {ordinal(PERCENTILE)} percentile of validation "
                       f"images, {self.threshold:.3f}): the caption is likely wrong")
        else:
            message = (f"like the training images: nearest training image similarity {similarity:.3f} "
                       f"(the {ordinal(PERCENTILE)} percentile of validation images: {self.threshold:.3f})")
        return Novelty(similarity, self.threshold, PERCENTILE, unlike, message)


def nearest_similarity(queries: torch.Tensor, train_globals: torch.Tensor) -> torch.Tensor:
    """queries [B, C], train_globals [N, C], L2-normalised -> [B]: each query's cosine
    similarity to its nearest training image."""
    return (queries @ train_globals.T).max(dim=1).values


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 5 -> "5th", 11 -> "11th"."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Calibration:
    """The global features of the datasets' cached splits, read once per (dataset folder,
    encoder spec, split) while a ModelStore loads its models: models of one run share them."""

    def __init__(self):
        self._datasets: dict = {}   # data_dir -> CaptionDataset, or the reason it cannot be read
        self._features: dict = {}   # (data_dir, spec) -> memory-mapped cache, or why it is not here
        self._globals: dict = {}    # (data_dir, spec, split) -> [N, C], or why they are not here

    def check_for(self, data_dir: Path | None, spec: EncoderSpec, ckpt: dict) -> NoveltyCheck:
        """The check of a model trained on `data_dir` (None: unknown) with `spec`'s features."""
        if data_dir is None:
            return NoveltyCheck.unavailable(
                "no out-of-domain check: this model.pt is not in a run folder with a summary.json "
                "naming its dataset (serve the run with --report DIR)")
        val = self.split_globals(Path(data_dir), spec, "val")
        train = ckpt["rerank"]["globals"] if "rerank" in ckpt else self.split_globals(Path(data_dir), spec, "train")
        for got in (val, train):
            if isinstance(got, str):
                return NoveltyCheck.unavailable(got)
        return NoveltyCheck.calibrated(train, val)

    def dataset(self, data_dir: Path) -> CaptionDataset | str:
        if data_dir not in self._datasets:
            try:  # headers unread: only the fingerprint, for the cache's key
                self._datasets[data_dir] = load_dataset(data_dir, check_images=False)
            except UserError as exc:
                self._datasets[data_dir] = (f"no out-of-domain check: the run's dataset cannot be "
                                            f"read here ({exc})")
        return self._datasets[data_dir]

    def features(self, data_dir: Path, spec: EncoderSpec) -> np.ndarray | str:
        if (data_dir, spec) not in self._features:
            dataset = self.dataset(data_dir)
            self._features[data_dir, spec] = dataset if isinstance(dataset, str) else cached_features(dataset, spec)
        return self._features[data_dir, spec]

    def split_globals(self, data_dir: Path, spec: EncoderSpec, split: str) -> torch.Tensor | str:
        """The global features [N_split, C] of a split, or why they cannot be had here."""
        key = (data_dir, spec, split)
        if key not in self._globals:
            features = self.features(data_dir, spec)
            self._globals[key] = features if isinstance(features, str) else \
                split_globals(features, self.dataset(data_dir), split)
        return self._globals[key]


def split_globals(features: np.ndarray, dataset: CaptionDataset, split: str) -> torch.Tensor:
    """Cached region features [N, R, C] of the whole dataset -> the split's global features
    [N_split, C], read CHUNK images at a time."""
    rows = [im.index for im in dataset.split(split)]
    return torch.cat([global_features(torch.from_numpy(np.asarray(features[rows[lo:lo + CHUNK]])))
                      for lo in range(0, len(rows), CHUNK)])


def cached_features(dataset: CaptionDataset, spec: EncoderSpec) -> np.ndarray | str:
    """The dataset's cached region features for `spec` (float16 [N, R, C], memory-mapped),
    never extracting: a sentence when the cache is not complete on this machine."""
    found = find_cache(dataset, spec)
    if found is not None:
        return found[0]
    return (f"no out-of-domain check: the {spec.name}/{spec.layer} features of {dataset.root} are not "
            f"cached on this machine ({cache_folder(cache_key(dataset, spec))}); "
            f"`convattn caption --data {dataset.root}` writes them")
