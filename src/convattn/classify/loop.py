"""The training loop of the Fashion-MNIST CNN: augmentation, loss, optimiser and schedule,
one epoch, evaluation.

Why the loop is fast without changing the study's math (same batch size, optimizer and
steps): the shuffled epoch is one gathered tensor that is sliced per step (no DataLoader,
no per-sample collate); the loss is summed on-tensor and read every REFRESH steps, not
with `.item()` per step; the model is channels-last, where oneDNN's convolution and
max-pool kernels are faster than the NCHW ones for these shapes; SGD updates all
parameters with one `foreach` kernel; evaluation runs under inference_mode in batches of
1,000. On a GPU a batch-8 step is kernel-launch bound: with --cuda-graph the step is
captured once per epoch as a CUDA graph and replayed (CudaGraphStep). See
bench/classify_speed.py.
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


def train_step(model, optimizer, *, scheduler=None, label_smoothing: float = 0.0,
               amp: str = "off"):
    """-> step(xb, yb): one optimiser step on a batch, returning its loss as a detached
    tensor (no sync)."""
    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with autocast(xb.device, amp):
            log_probs = model(xb)
        loss = training_loss(log_probs.float(), yb, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss.detach()
    return step


class CudaGraphStep:
    """A training step `step(x, y) -> tensor` replayed from a CUDA graph: a batch-8 step is
    dozens of tiny kernels, each launched from Python; a graph launches them all at once.

    The first WARMUP calls run eagerly on a side stream (real steps: they train), the next
    one is captured (capture records without running, so the graph is replayed for that
    batch too), and every later call copies its batch into the captured input buffers and
    replays. A batch of another shape (an epoch's short last batch) runs eagerly. The
    returned tensor is the graph's own output: read or accumulate it before the next call.
    Nothing in the step may sync with the host or change between steps outside tensors
    (a learning-rate schedule would be frozen at its captured value)."""

    WARMUP = 3

    def __init__(self, step):
        self.step, self.calls, self.graph = step, 0, None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.calls < self.WARMUP:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.x, self.y = x.clone(), y.clone()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.step(self.x, self.y)
        elif x.shape != self.x.shape:
            return self.step(x, y)
        else:
            self.x.copy_(x)
            self.y.copy_(y)
        self.graph.replay()
        return self.out


def graphable(config: ClassifyConfig) -> bool:
    """Whether --cuda-graph applies to the recipe: a graph freezes the learning rate (no
    schedule) and autocast's casts (fp32 only)."""
    return config.cuda_graph and config.schedule == "constant" and config.amp == "off"


def train_one_epoch(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int, *,
                    scheduler=None, label_smoothing: float = 0.0, amp: str = "off",
                    cuda_graph: bool = False, bar=None) -> tuple[float, int]:
    """One pass over the pre-shuffled epoch x (N, 1, 28, 28), y (N,). Returns (sum of batch
    losses, steps); stops early when the loss stops being finite. cuda_graph: replay the
    step from a CUDA graph (CudaGraphStep) when x is on a GPU."""
    model.train()
    steps = math.ceil(len(y) / batch_size)
    step = train_step(model, optimizer, scheduler=scheduler, label_smoothing=label_smoothing,
                      amp=amp)
    if cuda_graph and x.is_cuda:
        step = CudaGraphStep(step)
    loss_sum = torch.zeros((), device=x.device)  # summed on-tensor: no sync per step
    for i in range(steps):
        xb = x[i * batch_size:(i + 1) * batch_size]              # a view, no copy
        yb = y[i * batch_size:(i + 1) * batch_size]
        loss_sum += step(xb, yb)
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
