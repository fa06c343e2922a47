"""What the caption runs read, on the device: region features and encoded captions.

    Data(dataset, features [N, R, C], grid, device, variants=None)

Built once per feature layer and shared by every (model, seed) run on it. With `variants`
(augmentation: the features of the images' other 7 flips and quarter turns, encoders.dihedral),
each training pair can be read under any of the 8 symmetries, except the pairs whose caption
names a direction, which stay as they are: a mirrored "on the left" would be false.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from convattn.caption.features import dataset_features
from convattn.common.config import require
from convattn.data.captions import CaptionDataset, CaptionImage, build_vocabulary


# words whose truth depends on the image's orientation: a caption with one keeps its image as it is
DIRECTIONS = frozenset("left right top bottom upper lower above below north south east west northern "
                       "southern eastern western northeast northwest southeast southwest vertical "
                       "horizontal vertically horizontally clockwise".split())


def names_direction(caption: list[str]) -> bool:
    return not DIRECTIONS.isdisjoint(caption)


class Data:
    """Features (float16 [N, R, C], row i = dataset.json's image i), the training pairs as
    (image index, caption ids [max_len]) tensors, and the val/test images with references."""

    def __init__(self, dataset: CaptionDataset, features: np.ndarray, grid, device, variants=None):
        self.dataset = dataset
        self.vocab, self.max_len = build_vocabulary(dataset)
        self.grid = tuple(grid)
        # float16 in memory (half the RAM); each batch is converted to float32
        self.features = torch.from_numpy(np.array(features)).to(device)  # [N, R, C], read into memory
        train = dataset.split("train")
        # one training example per (image, caption) pair
        self.train_images = torch.tensor([im.index for im in train for _ in im.captions], device=device)
        self.train_captions = torch.tensor(
            [self.vocab.encode(c, self.max_len) for im in train for c in im.captions], device=device)
        self.splits = {name: dataset.split(name) for name in ("val", "test")}
        # [8, N, R, C]: symmetry t of every image (t = 0: as it is), or None without augmentation
        self.variants = None if variants is None else torch.stack(
            [self.features, *(torch.from_numpy(np.array(v)).to(device) for v in variants)])
        if self.variants is not None:
            self.features = self.variants[0]  # a view: the images as they are, held once
        self.train_directional = torch.tensor(
            [names_direction(c) for im in train for c in im.captions], dtype=torch.bool, device=device)
        self.rerankers = {}  # neighbours -> rerank.ConsensusReranker, built on first use (reranker_for)

    @property
    def feature_dim(self) -> int:
        return self.features.shape[2]

    def references(self, split: str) -> list[list[list[str]]]:
        return [im.captions for im in self.splits[split]]

    def rows(self, indices: torch.Tensor, symmetries: torch.Tensor | None = None) -> torch.Tensor:
        """indices [B] (dataset rows), symmetries [B] (0-7, with variants) -> float32 features [B, R, C]."""
        if symmetries is None:
            return self.features[indices].float()
        return self.variants[symmetries, indices].float()

    def symmetries(self, seed: int, epoch: int) -> torch.Tensor | None:
        """Each training pair's symmetry for an epoch, drawn from (seed, epoch) alone (so a
        resumed run draws the same), 0 for a caption that names a direction; None without
        variants. A generator of its own: the draw leaves the training's random stream alone."""
        if self.variants is None:
            return None
        generator = torch.Generator().manual_seed(seed * 1000 + epoch + 7_000_000)
        drawn = torch.randint(len(self.variants), (len(self.train_images),), generator=generator)
        return drawn.to(self.train_images.device).masked_fill(self.train_directional, 0)

    def image_features(self, images: list[CaptionImage]) -> torch.Tensor:
        """-> float32 features [len(images), R, C]."""
        return self.rows(torch.tensor([im.index for im in images], device=self.features.device))


def load_data(dataset: CaptionDataset, spec, config, device, quiet: bool) -> tuple[Data, dict]:
    """The runs' Data for `spec` (the features from the cache, extracted when absent, and with
    --augment dihedral those of the 7 other symmetries) -> (data, the extraction's facts)."""
    features, grid, info = dataset_features(dataset, spec, device, quiet=quiet)
    variants = None
    if config.augment == "dihedral":
        require(grid[0] == grid[1], config, "augment", f"quarter turns need square images (the grid is "
                f"{grid[0]}x{grid[1]}): add --image-size N")
        variants = [dataset_features(dataset, replace(spec, transform=t), device, quiet=quiet)[0]
                    for t in range(1, 8)]
    return Data(dataset, features, grid, device, variants), info
