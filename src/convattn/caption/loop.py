"""The training loop (the study's protocol); captions are decoded by inference.py.

Training is teacher forcing with cross-entropy over non-<pad> targets, Adam, and every
gradient entry clamped to +-grad_clip. With `attention_reg` > 0 the loss adds Show-Attend-
Tell's doubly stochastic regularisation (see `attention_penalty`), with `attention_entropy`
> 0 the maps' mean entropy (see `entropy_penalty`): both off in the study's loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from convattn.caption.data import Data
from convattn.common import distributed
from convattn.common.progress import progress
from convattn.data.captions import PAD_ID


def train_one_epoch(decoder, optimizer, data: Data, config, epoch: int, seed: int,
                    quiet: bool = True) -> float:
    """One pass over the (image, caption) pairs in a seeded order -> mean batch loss.
    `config` gives epochs (for the bar), batch_size and grad_clip."""
    decoder.train()
    # the order depends only on (seed, epoch), so a resumed run sees the same batches
    order = torch.randperm(len(data.train_images), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    order = order.to(data.train_images.device)
    symmetries = data.symmetries(seed, epoch)  # augmentation: each pair's flip or turn; None: off
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
        features = data.rows(data.train_images[pairs], None if symmetries is None else symmetries[pairs])
        logits, alphas = decoder(features, captions)                 # [B, T-1, V]
        if ranks == 1:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), captions[:, 1:].reshape(-1),
                                   ignore_index=PAD_ID)
            loss = loss + regularisers(alphas, captions[:, 1:] != PAD_ID, config)
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
    return (loss + share * regularisers(alphas, targets != PAD_ID, config)) * distributed.size()


def regularisers(alphas, mask: torch.Tensor, config):
    """The attention terms the config turns on, summed (0 when none is, or without alphas:
    the study's loss untouched). alphas [B, T-1, R] or None, mask [B, T-1]."""
    loss = 0.0
    if alphas is not None and config.attention_reg > 0:
        loss = loss + config.attention_reg * attention_penalty(alphas, mask)
    if alphas is not None and config.attention_entropy > 0:
        loss = loss + config.attention_entropy * entropy_penalty(alphas, mask)
    return loss


def entropy_penalty(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The attention maps' mean entropy over log R: alphas [B, T-1, R], mask [B, T-1] (True
    where the step predicts a real token) -> 1 for uniform maps, 0 for maps on one region.
    Each map is renormalised over the image first (a sentinel's weight is not a region).
    It pushes every word to look at few regions rather than spread over the whole grid."""
    maps = alphas / alphas.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    # over log R (one region: no entropy, whatever the divisor)
    entropy = -(maps * maps.clamp_min(1e-12).log()).sum(dim=-1) / max(math.log(alphas.shape[-1]), 1e-12)
    return (entropy * mask).sum() / mask.sum().clamp_min(1)


def attention_penalty(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Show-Attend-Tell's doubly stochastic regularisation: alphas [B, T-1, R], mask [B, T-1]
    (True where the step predicts a real token, <end> included) -> the mean over images and
    regions of (1 - sum_t alpha_ti)^2, padding steps left out of the sum. It pushes every
    region to receive about one word's worth of attention over the caption."""
    received = (alphas * mask[:, :, None]).sum(dim=1)   # [B, R]
    return ((1.0 - received) ** 2).mean()
