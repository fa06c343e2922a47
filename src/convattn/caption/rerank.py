"""Consensus reranking: of the beam's hypotheses, keep the one the nearest training images'
captions agree with most (Devlin et al., "Exploring Nearest Neighbor Approaches for Image
Captioning", 2015; Mao et al., m-RNN, 2015).

    reranker = ConsensusReranker(data, neighbours=20)
    picks = reranker.choose(rows, candidates)   # per image, the index of the chosen candidate

For an image, its k nearest training images are those whose mean region feature (the
frozen encoder's, L2-normalised) has the highest cosine similarity with its own; each
candidate caption is scored by its CIDEr-D against those images' references (5 k captions),
with the document frequencies of the training references (reward.CiderD, the self-critical
reward's scorer), and the highest mean wins (ties: the beam's order). Only training
captions are read: the test references never enter the choice.

Why: remote-sensing captions are written to a few templates per scene type, so the captions
of visually similar training scenes say which of the decoder's near-equal hypotheses uses
the annotators' words. On Sydney-Captions (attention decoder, seed 42, beam 5) it raised
validation CIDEr-D from 2.63 (the beam's best by log-probability) to 2.89 with 20
neighbours (README, "The best recipe").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convattn.caption.data import Data
from convattn.caption.reward import CiderD


class ConsensusReranker:
    """The training images' global features and references, built once per Data."""

    def __init__(self, data: Data, neighbours: int):
        train = data.dataset.split("train")
        self.neighbours = min(neighbours, len(train))
        # mean region feature per image [N, C], in chunks (the features are float16 [N, R, C])
        means = torch.cat([data.features[lo:lo + 64].float().mean(dim=1)
                           for lo in range(0, data.features.shape[0], 64)])
        self.globals = F.normalize(means, dim=1)                          # [N, C]
        self.train_globals = self.globals[[im.index for im in train]]     # [N_train, C]
        self.cider = CiderD([im.captions for im in train])

    def nearest(self, rows: list[int]) -> list[list[int]]:
        """Dataset rows of B images -> per image, its k nearest training images (indices
        into the training split), most similar first."""
        similarity = self.globals[rows] @ self.train_globals.T            # [B, N_train]
        return similarity.topk(self.neighbours, dim=1).indices.tolist()

    def choose(self, rows: list[int], candidates: list[list[list[str]]]) -> list[int]:
        """rows: dataset rows of B images; candidates: per image, its hypotheses (word lists,
        in the beam's order) -> per image the index of the hypothesis with the highest mean
        CIDEr-D against its neighbours' references."""
        picks = []
        for near, hyps in zip(self.nearest(rows), candidates):
            scores = [sum(self.cider.score(j, words) for j in near) for words in hyps]
            picks.append(max(range(len(hyps)), key=lambda i: (scores[i], -i)))
        return picks


def reranker_for(data: Data, neighbours: int) -> ConsensusReranker | None:
    """The Data's reranker with `neighbours` neighbours (built once per Data and k), or None
    for 0 (reranking off)."""
    if not neighbours:
        return None
    cache = data.__dict__.setdefault("_rerankers", {})
    if neighbours not in cache:
        cache[neighbours] = ConsensusReranker(data, neighbours)
    return cache[neighbours]
