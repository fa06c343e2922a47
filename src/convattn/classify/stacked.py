"""K copies of the study's CNN trained as one model, each with its own SGD learning rate.

The homework sweep's runs share the seed, so they start from the same weights and draw the
same shuffles and dropout masks; only the learning rate differs. Stacked, one step is one
forward and backward pass for all of them, and the step's ops are K times bigger (a batch-8
step of one model is overhead-bound). The layout, member k's slice:

    conv1  one Conv(1 -> K*16): the input is shared           channels k*16 .. k*16+15
    conv2  Conv(K*16 -> K*32, groups=K): member k sees only its own 16 channels
    fc1-3  batched matmuls over weights (K, out, in)

Each member's loss is its own mean NLL and the stack minimises their sum, so member k's
gradient is exactly its run's gradient. The linear layers (99% of the parameters) apply
their SGD update inside their backward pass (`SGDLinear`): W_k -= lr_k * grad_out^T x in one
batched matmul that writes into W, so the weight gradient is never stored and W streams
through memory once less per step. The convolutions use autograd and a plain update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convattn.classify.model import FashionCNN

LINEARS = ("fc1", "fc2", "fc3")


class SGDLinear(torch.autograd.Function):
    """Per member k: y = x W_k^T + b_k; backward returns the input's gradient and, after
    using W to compute it, applies SGD to W and b in place (returning no gradient for them)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lr):
        # x (K, B, in), weight (K, out, in), bias (K, out), lr (K, 1, 1) -> (K, B, out)
        ctx.save_for_backward(x)
        ctx.weight, ctx.bias, ctx.lr = weight, bias, lr   # not saved: updated in place
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        grad_x = torch.bmm(grad, ctx.weight) if ctx.needs_input_grad[0] else None  # (K, B, in)
        step = grad * ctx.lr                                                       # (K, B, out)
        ctx.weight.baddbmm_(step.transpose(1, 2), x, alpha=-1)
        ctx.bias.sub_(step.sum(1))
        return grad_x, None, None, None


class StackedCNN:
    """K FashionCNNs given as state dicts, with learning rates `lrs`, as stacked tensors
    (not an nn.Module: the linear weights are updated in the backward pass, outside
    autograd). Nothing here draws from the global RNG but the dropout masks."""

    def __init__(self, states: list[dict], lrs: list[float], dropout: float,
                 memory_format=torch.channels_last, device: torch.device | str = "cpu"):
        self.lrs, self.dropout, self.memory_format = list(lrs), dropout, memory_format
        self.device = torch.device(device)
        states = [{k: v.detach().to(self.device) for k, v in s.items()} for s in states]
        cat = lambda name: torch.cat([s[name] for s in states]).clone()  # noqa: E731
        stack = lambda name: torch.stack([s[name] for s in states]).clone()  # noqa: E731
        # empty_like + copy_: .contiguous() would keep conv1's (K*16, 1, 3, 3) weight as it
        # is (with one input channel it counts as channels-last already), and oneDNN would
        # then choose NCHW for the conv's output, where max-pooling is much slower
        # (docs/performance.md)
        layout = lambda w: torch.empty_like(w, memory_format=memory_format).copy_(w)  # noqa: E731
        self.conv = [layout(cat("conv1.weight")), cat("conv1.bias"),
                     layout(cat("conv2.weight")), cat("conv2.bias")]
        for p in self.conv:
            p.requires_grad_(True)
        self.linear = [(stack(f"{n}.weight"), stack(f"{n}.bias")) for n in LINEARS]
        lr = torch.tensor(self.lrs, dtype=self.linear[0][0].dtype, device=self.device)
        self.lr = lr.view(-1, 1, 1)                                            # (K, 1, 1)
        # the conv parameters' learning rate, per output channel of each member
        self.conv_lr = [lr.repeat_interleave(len(p) // len(lr)).view(-1, *[1] * (p.dim() - 1))
                        for p in self.conv]

    def __len__(self) -> int:
        return len(self.lrs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 1, 28, 28), the dropout mask (B, 600) already scaled by 1/(1-p), or None
        in eval mode. Returns log-probabilities (K, B, 10)."""
        k, b = len(self), len(x)
        w1, b1, w2, b2 = self.conv
        # relu(max_pool(.)) == max_pool(relu(.)), gradient included; on 4x fewer values
        h = torch.relu(torch.max_pool2d(F.conv2d(x, w1, b1, padding=1), 2, 2))  # (B, K*16, 14, 14)
        h = torch.relu(torch.max_pool2d(F.conv2d(h, w2, b2, groups=k), 2, 2))   # (B, K*32, 6, 6)
        h = h.reshape(b, k, -1).transpose(0, 1)                                 # (K, B, 1152)
        (fw1, fb1), (fw2, fb2), (fw3, fb3) = self.linear
        h = torch.relu(SGDLinear.apply(h, fw1, fb1, self.lr))                   # (K, B, 600)
        if mask is not None:
            h = h * mask
        h = torch.relu(SGDLinear.apply(h, fw2, fb2, self.lr))                   # (K, B, 120)
        return torch.log_softmax(SGDLinear.apply(h, fw3, fb3, self.lr), dim=2)  # (K, B, 10)

    def draw_mask(self, batch: int) -> torch.Tensor | None:
        """The dropout mask nn.Dropout draws for a (batch, 600) input, from the same global
        RNG in the same way (none at p = 0), shared by every member. On CPU nn.Dropout
        multiplies by a bernoulli_ draw divided by 1-p; on CUDA it calls native_dropout,
        whose draw depends only on the input's size, so it is called on ones."""
        if self.dropout == 0:
            return None
        if self.device.type == "cuda":
            return torch.native_dropout(torch.ones(batch, 600, device=self.device),
                                        self.dropout, True)[0]
        keep = 1 - self.dropout
        return torch.empty(batch, 600).bernoulli_(keep).div_(keep)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step of every member on the batch x (B, 1, 28, 28), y (B,); returns each
        member's mean NLL (K,), detached."""
        log_probs = self.forward(x, self.draw_mask(len(x)))
        picked = log_probs.gather(2, y.view(1, -1, 1).expand(len(self), -1, 1))  # (K, B, 1)
        losses = -picked.squeeze(2).mean(1)                                       # (K,)
        losses.sum().backward()
        with torch.no_grad():
            for p, lr in zip(self.conv, self.conv_lr):
                p.addcmul_(p.grad, lr, value=-1)
                p.grad = None
        return losses.detach()

    @torch.inference_mode()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> list[float]:
        """Each member's accuracy on (x, y), without dropout."""
        correct = torch.zeros(len(self), dtype=torch.long, device=self.device)
        for i in range(0, len(y), batch_size):
            pred = self.forward(x[i:i + batch_size]).argmax(2)                  # (K, b)
            correct += (pred == y[i:i + batch_size]).sum(1)
        return [c / max(1, len(y)) for c in correct.tolist()]

    def member_state(self, k: int) -> dict:
        """Member k's weights as a FashionCNN state_dict (copies on the stack's device,
        NCHW-contiguous)."""
        state = {}
        for i, name in enumerate(("conv1", "conv2")):
            w, b = self.conv[2 * i].detach(), self.conv[2 * i + 1].detach()
            n = len(w) // len(self)
            state[f"{name}.weight"] = w[k * n:(k + 1) * n].contiguous().clone()
            state[f"{name}.bias"] = b[k * n:(k + 1) * n].clone()
        for name, (w, b) in zip(LINEARS, self.linear):
            state[f"{name}.weight"], state[f"{name}.bias"] = w[k].clone(), b[k].clone()
        return state

    def member(self, k: int) -> FashionCNN:
        with torch.random.fork_rng(devices=[]):    # its initialisation must not move the RNG
            model = FashionCNN(self.dropout)
        model.load_state_dict(self.member_state(k))
        return model

    def keep(self, members: list[int]) -> StackedCNN:
        """A stack of the given members only (e.g. without a diverged one)."""
        return StackedCNN([self.member_state(k) for k in members], [self.lrs[k] for k in members],
                          self.dropout, self.memory_format, self.device)
