"""Captions from images: the one inference path of a run's validation and test captions,
`caption predict` and `convattn serve`.

An image becomes region features [R, C] on a (H', W') grid: from the feature cache for a
dataset's images (Data.image_features), or by `encode_image` for any other image, encoded
and rounded as the cache's extraction does, so an image of a run's dataset gets the run's
own features. `caption_features` decodes a batch of them free running (never teacher
forced): greedy for beam 1, else beam search keeping the beam's hypotheses; with a consensus
reranker (rerank.py) the hypothesis the nearest training images' captions agree with most
is chosen. Each image's answer is a `Captioned`: its hypotheses, best first, and the chosen one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convattn.caption.data import Data
from convattn.caption.encoders import EncoderSpec, build_encoder, load_image
from convattn.caption.features import cache_precision, channels_last
from convattn.caption.rerank import pick
from convattn.caption.search import beam_search, greedy
from convattn.data.captions import END_ID, CaptionImage


@dataclass
class Hypothesis:
    ids: list[int]                  # token ids: the words, then <end> when it was generated
    alphas: torch.Tensor | None     # attention [len(ids), R]; None for a decoder without attention
    score: float | None = None      # beam search: the length-normalised log probability it ranks by
    ended: bool = True              # False: cut at the longest caption allowed
    consensus: float | None = None  # reranked: mean CIDEr-D against the neighbours' captions


@dataclass
class Captioned:
    hypotheses: list[Hypothesis]  # greedy: one; beam search: the beam's, best first
    chosen: int = 0               # the reranker's choice; else the first

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[self.chosen]


def caption_features(decoder, features: torch.Tensor, max_steps: int, beam: int, grid, vocab,
                     reranker=None) -> list[Captioned]:
    """Region features [B, R, C] on a (H', W') grid -> one Captioned per image, decoded as one
    batch. A reranker applies to beam search only; it reads the hypotheses' words (`vocab`)."""
    if beam <= 1:
        ids, alphas = greedy(decoder, features, max_steps, grid)
        out = []
        for i, row in enumerate(ids.tolist()):
            row = row[:row.index(END_ID) + 1] if END_ID in row else row
            out.append(Captioned([Hypothesis(row, None if alphas is None else alphas[i, :len(row)],
                                             ended=END_ID in row)]))
        return out
    out = [Captioned([Hypothesis(h["ids"].tolist(), h["alphas"], h["score"], h["ended"]) for h in image])
           for image in beam_search(decoder, features, max_steps, beam, grid)]
    if reranker is not None:
        summed = reranker.scores(features, [[vocab.decode(h.ids) for h in c.hypotheses] for c in out])
        for captioned, scores in zip(out, summed):
            captioned.chosen = pick(scores)
            for h, s in zip(captioned.hypotheses, scores):
                h.consensus = s / reranker.neighbours
    return out


def caption_split(decoder, data: Data, split: str, max_steps: int, beam: int = 1,
                  batch_size: int = 256, with_alphas: bool = False, reranker=None):
    """Free-running captions (word lists) for every image of a split of the run's dataset,
    decoded from its cached features in batches. with_alphas: -> (captions, per image the
    attention [S, R] of its S generated tokens, <end> included; None without attention)."""
    images = data.splits[split]
    words, weights = [], []
    for lo in range(0, len(images), batch_size):
        batch = images[lo:lo + batch_size]
        for c in caption_features(decoder, data.image_features(batch), max_steps, beam, data.grid,
                                  data.vocab, reranker):
            words.append(data.vocab.decode(c.best.ids))
            weights.append(None if c.best.alphas is None else c.best.alphas.cpu().numpy())
    return (words, weights) if with_alphas else words


def caption_images(decoder, data: Data, images: list[CaptionImage], max_steps: int,
                   beam: int = 1, reranker=None) -> list[tuple[list[str], list[str], np.ndarray | None]]:
    """Each image's caption (word list), its S generated tokens (Vocabulary.tokens: <unk>
    kept, <end> when it was generated) and, for an attention decoder, their attention
    weights [S, R]; else None."""
    if not images:
        return []
    out = []
    for c in caption_features(decoder, data.image_features(images), max_steps, beam, data.grid,
                              data.vocab, reranker):
        tokens = data.vocab.tokens(c.best.ids)
        alphas = c.best.alphas
        out.append((data.vocab.decode(c.best.ids), tokens,
                     None if alphas is None else alphas[:len(tokens)].cpu().numpy()))
    return out


def encode_image(encoder, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """One image [1, 3, H, W] on the encoder's device (a `channels_last` encoder) -> (its
    region features [1, R, C], float32 rounded as the cache rounds them, contiguous; its grid
    (H', W')): what predict and serve feed a decoder."""
    f = encoder(x.contiguous(memory_format=torch.channels_last))              # [1, C, H', W']
    return cache_precision(f.flatten(2).transpose(1, 2)).float().contiguous(), tuple(f.shape[2:])


def image_features(paths: list, spec: EncoderSpec, device: torch.device, encoder=None):
    """Features for loose image files (caption predict): a list of [R, C] float32 tensors
    and a list of grids; each image is encoded alone, at its own size unless spec.image_size,
    on the device the cache was made on to get the run's own features."""
    encoder = channels_last(encoder if encoder is not None else build_encoder(spec).to(device))
    feats, grids = [], []
    with torch.inference_mode():
        for path in paths:
            f, grid = encode_image(encoder, load_image(path, spec.image_size)[None].to(device))
            feats.append(f[0])                                                 # [R, C]
            grids.append(grid)
    return feats, grids
