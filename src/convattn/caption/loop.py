"""The training loop and free-running captioning of a split (the study's protocol).

Training is teacher forcing with cross-entropy over non-<pad> targets, Adam, and every
gradient entry clamped to +-grad_clip. With `attention_reg` > 0 the loss adds Show-Attend-
Tell's doubly stochastic regularisation (see `attention_penalty`). Captions for validation and test are decoded free
running (greedy or beam), batched over images, never teacher forced.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convattn.caption.data import Data
from convattn.caption.decode import beam_search_all, decode
from convattn.common import distributed
from convattn.common.progress import progress
from convattn.data.captions import END_ID, PAD_ID, CaptionImage


def train_one_epoch(decoder, optimizer, data: Data, config, epoch: int, seed: int,
                    quiet: bool = True) -> float:
    """One pass over the (image, caption) pairs in a seeded order -> mean batch loss.
    `config` gives epochs (for the bar), batch_size and grad_clip."""
    decoder.train()
    # the order depends only on (seed, epoch), so a resumed run sees the same batches
    order = torch.randperm(len(data.train_images), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    order = order.to(data.train_images.device)
    losses = []
    bar = progress(total=len(order), desc=f"epoch {epoch + 1}/{config.epochs}", unit="caption", quiet=quiet)
    ranks = distributed.size()
    for lo in range(0, len(order), config.batch_size):
        batch = order[lo:lo + config.batch_size]
        # data parallel: this rank's slice of the global batch; a rank the last batch is too
        # small for runs one pair with weight 0, so that it still joins the gradient all-reduce
        pairs = distributed.shard(batch)
        weight = 1.0 if len(pairs) else 0.0
        pairs = pairs if len(pairs) else batch[:1]
        captions = data.train_captions[pairs]                        # [B, max_len]
        length = int((captions != PAD_ID).sum(1).max())
        captions = captions[:, :length]                              # no steps over pure padding
        logits, alphas = decoder(data.region_features(data.train_images[pairs]), captions)  # [B, T-1, V]
        if ranks == 1:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), captions[:, 1:].reshape(-1),
                                   ignore_index=PAD_ID)
            if config.attention_reg > 0 and alphas is not None:  # off: the study's loss, untouched
                loss = loss + config.attention_reg * attention_penalty(alphas, captions[:, 1:] != PAD_ID)
        else:
            tokens = int((data.train_captions[batch, 1:] != PAD_ID).sum())
            loss = weight * shard_loss(logits, alphas, captions[:, 1:], tokens, len(pairs) / len(batch), config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item() / ranks)  # data parallel: summed over ranks below
        bar.update(len(batch))
    bar.close()
    return float(np.mean(distributed.sum_over_ranks(losses)))


def shard_loss(logits: torch.Tensor, alphas, targets: torch.Tensor, tokens: int, share: float,
               config) -> torch.Tensor:
    """One rank's part of a data-parallel batch's loss: logits [b, T-1, V] and targets
    [b, T-1] of its b pairs, `tokens` the non-<pad> targets of the whole global batch,
    `share` = b / B. Cross-entropy summed over the rank's tokens over the global count (and
    the attention penalty weighted by b / B), so the ranks' parts add up to the one-process
    loss of the global batch, not a mean of per-rank means (ranks hold different numbers
    of tokens); times the world size because DistributedDataParallel averages gradients."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=PAD_ID, reduction="sum") / tokens
    if config.attention_reg > 0 and alphas is not None:
        loss = loss + config.attention_reg * share * attention_penalty(alphas, targets != PAD_ID)
    return loss * distributed.size()


def attention_penalty(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Show-Attend-Tell's doubly stochastic regularisation: alphas [B, T-1, R], mask [B, T-1]
    (True where the step predicts a real token, <end> included) -> the mean over images and
    regions of (1 - sum_t alpha_ti)^2, padding steps left out of the sum. It pushes every
    region to receive about one word's worth of attention over the caption."""
    received = (alphas * mask[:, :, None]).sum(dim=1)   # [B, R]
    return ((1.0 - received) ** 2).mean()


def decode_features(decoder, features: torch.Tensor, max_steps: int, beam: int, grid, vocab,
                    reranker=None) -> tuple[list[list[int]], list]:
    """Token ids (per image a list: words, then <end> when generated) and attention weights
    ([S, R] tensors, or None) of region features [B, R, C] on a (H', W') grid, decoded as
    one batch: greedy or beam search; with a `reranker` (rerank.ConsensusReranker) the
    beam's hypotheses are decoded and the reranker picks each image's (their words from
    `vocab`). A run's splits (decode_images) and predict's image files decode through it."""
    if reranker is None:
        ids, alphas = decode(decoder, features, max_steps, beam, grid)
        rows = [row[:row.index(END_ID) + 1] if END_ID in row else row for row in ids.tolist()]
        return rows, [None if alphas is None else alphas[i, :len(row)] for i, row in enumerate(rows)]
    hyps = beam_search_all(decoder, features, max_steps, beam, grid)
    candidates = [[h["ids"].tolist() for h in image] for image in hyps]
    picks = reranker.choose(features, [[vocab.decode(ids) for ids in image] for image in candidates])
    return ([candidates[i][k] for i, k in enumerate(picks)],
            [hyps[i][k]["alphas"] for i, k in enumerate(picks)])


def decode_images(decoder, data: Data, images: list[CaptionImage], max_steps: int, beam: int = 1,
                  reranker=None) -> tuple[list[list[int]], list]:
    """`decode_features` for images of the run's dataset, from its cached features."""
    return decode_features(decoder, data.image_features(images), max_steps, beam, data.grid,
                           data.vocab, reranker)


def caption_split(decoder, data: Data, split: str, max_steps: int, beam: int = 1,
                  batch_size: int = 256, with_alphas: bool = False, reranker=None):
    """Free-running captions (word lists) for every image of a split, decoded in batches
    (`decode_images`). with_alphas: -> (captions, per image the attention [S, R] of its
    S = words + 1 generated tokens, <end> included; None without attention)."""
    images = data.splits[split]
    words, weights = [], []
    for lo in range(0, len(images), batch_size):
        ids, alphas = decode_images(decoder, data, images[lo:lo + batch_size], max_steps, beam, reranker)
        words += [data.vocab.decode(row) for row in ids]
        weights += [None if a is None else a.cpu().numpy() for a in alphas]
    return (words, weights) if with_alphas else words


def caption_images(decoder, data: Data, images: list[CaptionImage], max_steps: int,
                   beam: int = 1, reranker=None) -> list[tuple[list[str], list[str], np.ndarray | None]]:
    """Each image's caption (word list), its S generated tokens (Vocabulary.tokens: <unk>
    kept, <end> when it was generated) and, for an attention decoder, their attention
    weights [S, R]; else None."""
    if not images:
        return []
    ids, alphas = decode_images(decoder, data, images, max_steps, beam, reranker)
    out = []
    for row, a in zip(ids, alphas):
        tokens = data.vocab.tokens(row)
        out.append((data.vocab.decode(row), tokens, None if a is None else a[:len(tokens)].cpu().numpy()))
    return out
