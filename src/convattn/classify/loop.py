"""The training loop of the Fashion-MNIST CNN: augmentation, loss, optimiser and schedule,
one epoch, evaluation.

Why the loop is fast without changing the study's math (same batch size, optimizer and
steps): the shuffled epoch is one gathered tensor that is sliced per step (no DataLoader,
no per-sample collate); the loss is summed on-tensor and read every REFRESH steps, not
with `.item()` per step; the model is channels-last, where oneDNN's convolution and
max-pool kernels are faster than the NCHW ones for these shapes; SGD updates all
parameters with one `foreach` kernel; evaluation runs under inference_mode in batches of
1,000. See bench/classify_speed.py.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from convattn.classify.presets import ClassifyConfig

REFRESH = 250  # steps between loss reads (one sync each) and progress-bar updates
MEMORY_FORMAT = torch.channels_last


def augment(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Random horizontal flips and/or shifts of up to 2 px (zero fill), for a whole epoch
    (N, 1, 28, 28) at once. Uses the global torch RNG, so a resumed run repeats it."""
    n = len(x)
    if "flip" in kind:
        flip = torch.rand(n, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if "shift" in kind:
        padded = F.pad(x, (2, 2, 2, 2))                                  # (N, 1, 32, 32)
        dx, dy = torch.randint(0, 5, (2, n), device=x.device)
        out = torch.empty_like(x)
        for i in range(5):
            for j in range(5):
                sel = (dx == i) & (dy == j)
                out[sel] = padded[sel, :, j:j + 28, i:i + 28]
        x = out
    return x


def training_loss(log_probs: torch.Tensor, y: torch.Tensor,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean NLL of log-probabilities (B, 10) and labels (B,). With smoothing, torch's
    cross-entropy: it takes log_softmax first, which leaves log-probabilities unchanged up
    to rounding. Without, nll_loss itself, so the study's numbers stay bit for bit."""
    if label_smoothing == 0:
        return F.nll_loss(log_probs, y)
    return F.cross_entropy(log_probs, y, label_smoothing=label_smoothing)


def autocast(device: torch.device, amp: str):
    """The forward pass's precision: `bf16` autocasts matmuls and convolutions to bfloat16
    (weights, gradients, log-softmax and loss stay fp32); `off` changes nothing."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def build_optimizer(model, config: ClassifyConfig, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay,
                                 foreach=True)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                           nesterov=config.nesterov, weight_decay=config.weight_decay,
                           foreach=True)


def onecycle(total_steps: int, warmup: float):
    """The lr multiplier of step s (0-based): linear warm-up over the first `warmup` of the
    steps to 1, then cosine decay to 0."""
    warm = int(total_steps * warmup)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    return factor


def build_scheduler(optimizer, config: ClassifyConfig, total_steps: int):
    """A LambdaLR stepped after every optimiser step, or None for a constant lr (then the
    loop does exactly the study's steps)."""
    if config.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, onecycle(total_steps, config.warmup))


def train_one_epoch(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int, *,
                    scheduler=None, label_smoothing: float = 0.0, amp: str = "off",
                    bar=None) -> tuple[float, int]:
    """One pass over the pre-shuffled epoch x (N, 1, 28, 28), y (N,). Returns (sum of batch
    losses, steps); stops early when the loss stops being finite."""
    model.train()
    steps = math.ceil(len(y) / batch_size)
    loss_sum = torch.zeros((), device=x.device)  # summed on-tensor: no sync per step
    for i in range(steps):
        xb = x[i * batch_size:(i + 1) * batch_size]              # a view, no copy
        yb = y[i * batch_size:(i + 1) * batch_size]
        with autocast(x.device, amp):
            log_probs = model(xb)
        loss = training_loss(log_probs.float(), yb, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach()
        if (i + 1) % REFRESH == 0 or i + 1 == steps:
            total = loss_sum.item()
            if bar is not None:
                bar.update(min((i + 1) * batch_size, len(y)) - bar.n)
                bar.set_postfix(loss=f"{total / (i + 1):.4f}", refresh=False)
            if not math.isfinite(total):
                return total, i + 1
    return loss_sum.item(), steps


@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             amp: str = "off") -> float:
    """Accuracy of the model's argmax on (x, y), in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(y), batch_size):
        with autocast(x.device, amp):
            log_probs = model(x[i:i + batch_size])
        correct += (log_probs.argmax(1) == y[i:i + batch_size]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(y))
