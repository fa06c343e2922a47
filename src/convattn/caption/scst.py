"""Self-critical sequence training (Rennie et al., CVPR 2017): the optional second stage
after cross-entropy, with CIDEr-D as the reward.

For each batch of training images the decoder samples K captions per image (search.sample,
dropout on); each caption's reward r is its CIDEr-D against that image's training
references (reward.CiderD, document frequencies of the training references); the
baseline b is either the reward of the image's greedy caption ("greedy", Rennie et al.)
or the mean reward of the image's other K - 1 samples ("mean", the "new self-critical"
variant of self-critical.pytorch). The loss is the REINFORCE estimate

    loss = - sum_{i,t} (r_i - b_i) * log p(w_it) / (number of sampled tokens, <end> included)

so captions better than the baseline are made more likely and worse ones less. Gradients
are clamped to +-grad_clip as in the cross-entropy loop.

    reward = training_reward(data)                  # once per run: the n-gram tables
    start_stage(optimizer, config)                  # before the first SCST epoch
    scst_epoch(decoder, optimizer, data, reward, config, epoch, seed) -> mean sampled reward
"""

from __future__ import annotations

import numpy as np
import torch

from convattn.caption.data import Data
from convattn.caption.reward import CiderD
from convattn.caption.search import greedy, sample
from convattn.common.progress import progress
from convattn.data.captions import END_ID

BASELINES = ("greedy", "mean")


def training_reward(data: Data) -> CiderD:
    """CIDEr-D against the training images' references (position i = training image i)."""
    return CiderD([im.captions for im in data.dataset.split("train")])


def start_stage(optimizer: torch.optim.Optimizer, config) -> None:
    """Turn the cross-entropy optimizer into the SCST one: Adam's moments forgotten (they
    describe another loss), learning rate scst_lr (the tuned encoder blocks' group, run.parameter_groups:
    encoder_lr scaled by scst_lr / lr). The same object, so the run store saves and restores it as
    it does in the first stage."""
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["lr"] = config.scst_lr * (config.encoder_lr / config.lr if group.get("name") == "encoder" else 1)


def sampled_tokens(ids: torch.Tensor) -> torch.Tensor:
    """ids [N, S] from search.sample -> bool [N, S], True up to and including each row's
    first <end> (what was sampled; the <pad> after it was not)."""
    is_end = (ids == END_ID).long()
    return (is_end.cumsum(dim=1) - is_end) == 0


def scst_epoch(decoder, optimizer, data: Data, reward: CiderD, config, epoch: int, seed: int,
               quiet: bool = True) -> float:
    """One pass over the training images in a seeded order -> mean reward of the sampled
    captions. `config` gives scst_batch_size (images per batch), scst_samples (K),
    scst_baseline, grad_clip, max_steps (None: data.max_len) and the epoch counts."""
    decoder.train()
    K, max_steps = config.scst_samples, config.max_steps or data.max_len
    train = data.dataset.split("train")
    rows = torch.tensor([im.index for im in train], device=data.features.device)  # feature rows
    # the order depends only on (seed, epoch), so a resumed run sees the same batches
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    rewards = []
    total = config.epochs + config.scst_epochs
    bar = progress(total=len(order), desc=f"scst epoch {epoch + 1}/{total}", unit="image", quiet=quiet)
    for lo in range(0, len(order), config.scst_batch_size):
        batch = order[lo:lo + config.scst_batch_size]                    # [B] training positions
        features = data.rows(rows[batch.to(rows.device)])   # [B, R, C]
        ids, log_probs = sample(decoder, features, max_steps, K)        # [B*K, S] each
        images = batch.repeat_interleave(K).tolist()
        r = reward.scores(images, [data.vocab.decode(row) for row in ids.tolist()]).reshape(-1, K)
        if config.scst_baseline == "greedy":
            best, _ = greedy(decoder, features, max_steps)              # eval mode, no gradients
            b = reward.scores(batch.tolist(), [data.vocab.decode(row) for row in best.tolist()])[:, None]
        else:  # the mean of the image's other K - 1 samples
            b = (r.sum(axis=1, keepdims=True) - r) / (K - 1)
        advantage = torch.as_tensor((r - b).reshape(-1), dtype=log_probs.dtype, device=log_probs.device)
        mask = sampled_tokens(ids)
        loss = -(advantage[:, None] * log_probs * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        rewards.append(r)
        bar.update(len(batch))
    bar.close()
    return float(np.concatenate(rewards).mean())
