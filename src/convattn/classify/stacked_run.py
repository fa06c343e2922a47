"""The sweep's learning rates trained together as one StackedCNN (`--sweep stacked`).

Every member keeps the run of its own learning rate in the run store, exactly as a run
trained alone does (run.py): runs/lr-<lr>.pt with its model and optimizer state dicts, the
random state, the per-epoch history and its status, rewritten after every epoch. So
resume, reuse, summary records and the kernel figures do not know how a run was trained.

The members stay identical to their separate runs because they draw the same random
numbers in the same order: one seed, one initialisation (copied K times), one shuffle per
epoch and one dropout mask per step, shared. A member whose loss stops being finite is
stored as diverged and dropped from the stack at that step (when a separate run would stop
too), so its NaNs never reach the others.

Only what the stack implements is stacked: SGD without momentum at a constant learning
rate, in fp32 (no --amp). `stackable` says whether a recipe and its stored runs fit; the
sweep falls back to separate runs when they do not.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from convattn.classify.loop import REFRESH, CudaGraphStep, augment, build_optimizer, graphable
from convattn.classify.model import FashionCNN, count_parameters
from convattn.classify.presets import ClassifyConfig
from convattn.classify.run import checkpoint_path, make_record, run_key
from convattn.classify.stacked import StackedCNN
from convattn.common.progress import log, progress
from convattn.common.runs import load_state, set_rng_state, save_state
from convattn.common.runtime import seed_everything
from convattn.data.fashion_mnist import FashionMNIST


def recipe_is_stackable(config: ClassifyConfig) -> bool:
    return (config.optimizer == "sgd" and config.momentum == 0 and config.weight_decay == 0
            and config.schedule == "constant" and config.label_smoothing == 0
            and config.amp == "off")


def load_runs(data: FashionMNIST, config: ClassifyConfig, out_dir: Path,
              policy: str) -> dict[float, dict | None]:
    """Each learning rate's stored run as the policy allows it (None: train from scratch)."""
    return {lr: load_state(checkpoint_path(out_dir, lr), run_key(config, lr, data), policy,
                           f"lr {lr:g}") for lr in config.lrs}


def stackable(config: ClassifyConfig, stored: dict[float, dict | None]) -> bool:
    """Whether the unfinished runs can train as one stack: a recipe the stack implements,
    and all of them at the same epoch (they then hold the same random state)."""
    epochs = {0 if s is None else s["epoch"] for s in stored.values()
              if s is None or s["status"] == "running"}
    return recipe_is_stackable(config) and len(epochs) <= 1


def train_stacked(data: FashionMNIST, config: ClassifyConfig, out_dir: Path,
                  stored: dict[float, dict | None], *, device: torch.device | str = "cpu",
                  quiet: bool = False, on_epoch=None) -> list[dict]:
    """Train every unfinished run of `stored` (see load_runs) as one stack and return all
    runs' summary records in config.lrs order. `on_epoch(record)` after every stored epoch."""
    out_dir = Path(out_dir)
    records = {lr: make_record(s, out_dir) for lr, s in stored.items()
               if s is not None and s["status"] != "running"}
    todo = [lr for lr in config.lrs if lr not in records]
    if not todo:
        return [records[lr] for lr in config.lrs]

    seed_everything(config.seed)
    init = FashionCNN(config.dropout)   # one initialisation, as each run draws it, for all
    states, start, history = [], 0, {}
    for lr in todo:
        history[lr] = {"train_loss_sum": [], "steps": [], "val_acc": [], "train_seconds": [],
                       "epoch_seconds": []}
        states.append(init.state_dict())
        if stored[lr] is not None:
            states[-1] = stored[lr]["model"]
            history[lr], start = stored[lr]["history"], stored[lr]["epoch"]
    if start:
        set_rng_state(stored[todo[0]]["rng"])
    device = torch.device(device)
    stack = StackedCNN(states, todo, config.dropout, device=device)
    params = count_parameters(init)

    def save(lr: float, model: FashionCNN, epoch: int, status: str,
             test_acc: float | None = None) -> None:
        state = save_state(checkpoint_path(out_dir, lr), key=run_key(config, lr, data),
                           epoch=epoch, status=status, history=history[lr], model=model,
                           optimizer=build_optimizer(model, config, lr),
                           result=None if test_acc is None else {"test_acc": test_acc},
                           lr=lr, config=config.to_dict(), params=params)
        records[lr] = make_record(state, out_dir)
        if on_epoch is not None:
            on_epoch(records[lr])

    log(f"training learning rates {', '.join(f'{lr:g}' for lr in todo)} as one stacked model")
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    dev_x, dev_y = data.dev_x.to(device), data.dev_y.to(device)
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(train_y), device=device)   # as run.py draws it
        x, y = train_x[order], train_y[order]                 # (N, 1, 28, 28), (N,)
        if config.augment != "none":
            x = augment(x, config.augment)
        desc = f"lr {'/'.join(f'{lr:g}' for lr in stack.lrs)} epoch {epoch + 1}/{config.epochs}"
        with progress(total=len(y), desc=desc, unit="img", quiet=quiet) as bar:
            stack, sums, diverged = train_stacked_epoch(stack, x, y, config.batch_size, bar,
                                                        graphable(config))
        t1 = time.perf_counter()
        val_acc = {} if stack is None else dict(
            zip(stack.lrs, stack.accuracy(dev_x, dev_y, config.eval_batch_size)))
        seconds = time.perf_counter() - t0
        for lr, (loss_sum, steps) in sums.items():    # the stack's time, shared by its runs
            h = history[lr]
            h["train_loss_sum"].append(loss_sum)
            h["steps"].append(steps)
            h["val_acc"].append(val_acc.get(lr))
            h["train_seconds"].append((t1 - t0) / len(sums))
            h["epoch_seconds"].append(seconds / len(sums))
        for lr, model in diverged.items():
            log(f"lr {lr:g} epoch {epoch + 1}: loss is {sums[lr][0]} after {sums[lr][1]} "
                "steps; run marked diverged")
            save(lr, model, epoch + 1, "diverged")
        if stack is None:
            return [records[lr] for lr in config.lrs]
        log(f"{desc}: " + ", ".join(f"lr {lr:g} train loss {sums[lr][0] / sums[lr][1]:.4f} dev "
                                    f"acc {val_acc[lr]:.4f}" for lr in stack.lrs)
            + f", {len(y) / (t1 - t0):,.0f} img/s per run, {t1 - t0:.1f} s")
        if epoch + 1 < config.epochs:
            for k, lr in enumerate(stack.lrs):
                save(lr, stack.member(k), epoch + 1, "running")

    t0 = time.perf_counter()
    tests = stack.accuracy(data.test_x.to(device), data.test_y.to(device),
                           config.eval_batch_size)
    share = (time.perf_counter() - t0) / len(stack)
    for k, (lr, test_acc) in enumerate(zip(stack.lrs, tests)):
        history[lr]["epoch_seconds"][-1] += share
        log(f"lr {lr:g}: test acc {test_acc:.4f}")
        save(lr, stack.member(k), config.epochs, "finished", test_acc)
    return [records[lr] for lr in config.lrs]


def train_stacked_epoch(stack: StackedCNN, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                        bar=None, cuda_graph: bool = False) -> tuple[StackedCNN | None, dict, dict]:
    """One pass of every member over the pre-shuffled epoch x (N, 1, 28, 28), y (N,).

    The losses are read every REFRESH steps, as in loop.train_one_epoch; a member whose
    summed loss is no longer finite leaves the stack there. Returns (the stack of the
    members left, None when none is; {lr: (sum of batch losses, steps)} for every member
    that started; {lr: FashionCNN} with the weights of each member that diverged).
    cuda_graph: replay the stack's step from a CUDA graph (loop.CudaGraphStep) on a GPU."""
    def graphed(stack: StackedCNN):
        return CudaGraphStep(stack.train_step) if cuda_graph and x.is_cuda else stack.train_step

    step = graphed(stack)
    steps = math.ceil(len(y) / batch_size)
    sums, diverged = {}, {}
    loss_sum = torch.zeros(len(stack), device=x.device)      # (K,), no sync per step
    for i in range(steps):
        xb = x[i * batch_size:(i + 1) * batch_size]          # a view, no copy
        yb = y[i * batch_size:(i + 1) * batch_size]
        loss_sum += step(xb, yb)
        if (i + 1) % REFRESH == 0 or i + 1 == steps:
            totals = loss_sum.tolist()
            if bar is not None:
                bar.update(min((i + 1) * batch_size, len(y)) - bar.n)
            bad = [k for k, t in enumerate(totals) if not math.isfinite(t)]
            for k in bad:
                sums[stack.lrs[k]] = (totals[k], i + 1)
                diverged[stack.lrs[k]] = stack.member(k)
            if bad:
                keep = [k for k in range(len(stack)) if k not in bad]
                if not keep:
                    return None, sums, diverged
                stack, loss_sum = stack.keep(keep), loss_sum[keep]
                step = graphed(stack)
    for lr, total in zip(stack.lrs, loss_sum.tolist()):
        sums[lr] = (total, steps)
    return stack, sums, diverged
