"""Consensus reranking: of the beam's hypotheses, keep the one the nearest training images'
captions agree with most (Devlin et al., "Exploring Nearest Neighbor Approaches for Image
Captioning", 2015; Mao et al., m-RNN, 2015).

    reranker = ConsensusReranker.from_data(data, neighbours=20)   # a run's (reranker_for)
    reranker = ConsensusReranker.from_block(ckpt["rerank"])       # a model.pt's (predict, serve)
    scores = reranker.scores(features, candidates)  # per image, each candidate's summed CIDEr-D

For an image, its k nearest training images are those whose mean region feature (the
frozen encoder's, L2-normalised) has the highest cosine similarity with its own; each
candidate caption is scored by its CIDEr-D against those images' references (5 k captions),
with the document frequencies of the training references (reward.CiderD, the self-critical
reward's scorer), and the highest mean wins (ties: the beam's order). Only training
captions are read: the test references never enter the choice.

A run trained with --rerank N stores what this needs in its model.pt (`block`: N, the
training images' global features and references, nothing of val or test), so `caption
predict` and `convattn serve` rerank an image of one's own as the run reranked its test
images, through the same `scores` and `pick` (inference.caption_features).

Why: remote-sensing captions are written to a few templates per scene type, so the captions
of visually similar training scenes say which of the decoder's near-equal hypotheses uses
the annotators' words. On Sydney-Captions (attention decoder, seed 42, beam 5) it raised
validation CIDEr-D from 2.63 (the beam's best by log-probability) to 2.89 with 20
neighbours (docs/results.md, "The best recipe").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convattn.caption.data import Data
from convattn.caption.features import cache_precision
from convattn.caption.reward import CiderD


def global_features(features: torch.Tensor) -> torch.Tensor:
    """Region features [B, R, C] -> each image's L2-normalised mean region feature [B, C].
    The features are first rounded to the feature cache's precision, so that features of any
    precision get the global feature the run computed from the cache (the cache's, and
    predict's and serve's, already are: the rounding changes nothing)."""
    return F.normalize(cache_precision(features).float().mean(dim=1), dim=1)


def image_globals(data: Data, images) -> torch.Tensor:
    """The global features (global_features) of `images` from a run's Data, in chunks of 64
    images -> [len(images), C]."""
    rows = torch.tensor([im.index for im in images], device=data.features.device)
    return torch.cat([global_features(data.features[rows[lo:lo + 64]]) for lo in range(0, len(rows), 64)])


class ConsensusReranker:
    """The training images' global features [N_train, C] and references (per image its
    token lists); `neighbours` of them are consulted per image (at most N_train)."""

    def __init__(self, train_globals: torch.Tensor, references: list[list[list[str]]], neighbours: int):
        self.requested = neighbours
        self.neighbours = min(neighbours, len(references))
        self.train_globals = train_globals.float()                         # [N_train, C]
        self.references = references
        self.cider = CiderD(references)

    @classmethod
    def from_data(cls, data: Data, neighbours: int) -> ConsensusReranker:
        """The training split of a run's Data (its cached features, in chunks of 64 images)."""
        train = data.dataset.split("train")
        return cls(image_globals(data, train), [im.captions for im in train], neighbours)

    @classmethod
    def from_block(cls, block: dict, neighbours: int | None = None) -> ConsensusReranker:
        """The reranker a model.pt stores (`block`), with its own number of neighbours unless
        `neighbours` is given."""
        return cls(block["globals"], block["references"], neighbours or block["neighbours"])

    def block(self) -> dict:
        """What a model.pt stores to rebuild this reranker: {neighbours, globals float32
        [N_train, C] on the CPU, references}; float32 so that the rebuilt one ranks the
        neighbours exactly as this one does."""
        return {"neighbours": self.requested, "globals": self.train_globals.cpu(),
                "references": [[list(ref) for ref in refs] for refs in self.references]}

    @property
    def label(self) -> str:
        """How captions were chosen, in a few words (serve's "decoding", predict's log)."""
        return f"consensus rerank over {self.neighbours} training images"

    def nearest(self, features: torch.Tensor) -> list[list[int]]:
        """Region features [B, R, C] of B images -> per image, its k nearest training images
        (indices into the training split), most similar first."""
        queries = global_features(features).to(self.train_globals.device)  # [B, C]
        similarity = queries @ self.train_globals.T                         # [B, N_train]
        return similarity.topk(self.neighbours, dim=1).indices.tolist()

    def scores(self, features: torch.Tensor, candidates: list[list[list[str]]]) -> list[list[float]]:
        """features [B, R, C]; candidates: per image, its hypotheses (word lists, in the
        beam's order) -> per image, each hypothesis' summed CIDEr-D against its neighbours'
        references (the mean times k)."""
        return [[sum(self.cider.score_vector(j, vector) for j in near)
                 for vector in map(self.cider.vector, hyps)]
                for near, hyps in zip(self.nearest(features), candidates)]


def decoding_label(beam: int, reranker: ConsensusReranker | None = None) -> str:
    """How captions decoded with `beam` (and a reranker, which applies to beams only) are
    chosen, in a few words: "greedy", "beam 5", "beam 5 + consensus rerank over 20 training
    images" (serve's "decoding", predict's log)."""
    if beam <= 1:
        return "greedy"
    return f"beam {beam}" + (f" + {reranker.label}" if reranker is not None else "")


def pick(scores: list[float]) -> int:
    """The index of the highest score; a tie keeps the beam's order (the first)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def reranker_for(data: Data, neighbours: int) -> ConsensusReranker | None:
    """The Data's reranker with `neighbours` neighbours (built once per Data and k, kept in
    the Data's own `rerankers`), or None for 0 (reranking off)."""
    if not neighbours:
        return None
    if neighbours not in data.rerankers:
        data.rerankers[neighbours] = ConsensusReranker.from_data(data, neighbours)
    return data.rerankers[neighbours]
