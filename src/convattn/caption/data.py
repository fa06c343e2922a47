"""What the caption runs read, on the device: region features and encoded captions.

    Data(dataset, features [N, R, C], grid, device)

Built once per feature layer and shared by every (model, seed) run on it.
"""

from __future__ import annotations

import numpy as np
import torch

from convattn.data.captions import CaptionDataset, CaptionImage, build_vocabulary


class Data:
    """Features (float16 [N, R, C], row i = dataset.json's image i), the training pairs as
    (image index, caption ids [max_len]) tensors, and the val/test images with references."""

    def __init__(self, dataset: CaptionDataset, features: np.ndarray, grid, device):
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
        self.rerankers = {}  # neighbours -> rerank.ConsensusReranker, built on first use (reranker_for)

    @property
    def feature_dim(self) -> int:
        return self.features.shape[2]

    def references(self, split: str) -> list[list[list[str]]]:
        return [im.captions for im in self.splits[split]]

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B] (dataset rows) -> float32 features [B, R, C]."""
        return self.features[indices].float()

    def image_features(self, images: list[CaptionImage]) -> torch.Tensor:
        """-> float32 features [len(images), R, C]."""
        return self.rows(torch.tensor([im.index for im in images], device=self.features.device))
