"""One learning rate of the sweep: train it, or reuse or resume its stored run.

A run keeps one checkpoint, runs/lr-<lr>.pt, written through the common run store
(common/runs.py) after every epoch: model, optimizer, scheduler, CPU and CUDA random
state, and the per-epoch history. Its key is the recipe minus the sweep list, plus the
learning rate and the data's fingerprint; a stored run with another key is trained again.
A run's entry in summary.json (`make_record`) is derived from its checkpoint alone.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from convattn.classify.loop import (MEMORY_FORMAT, augment, build_optimizer, build_scheduler,
                                    evaluate, graphable, train_one_epoch)
from convattn.classify.model import FashionCNN, count_parameters
from convattn.classify.presets import ClassifyConfig
from convattn.common.progress import log, progress
from convattn.common.runs import load_state, restore, save_state
from convattn.common.runtime import seed_everything
from convattn.data.fashion_mnist import FashionMNIST

# the store's statuses, as summary.json (and the report) name them
RECORD_STATUS = {"running": "running", "finished": "ok", "diverged": "diverged"}


def run_key(config: ClassifyConfig, lr: float, data: FashionMNIST) -> dict:
    """What makes two runs the same computation: every knob that changes the numbers but
    the sweep list, the learning rate, and the data's fingerprint."""
    key = config.run_key()
    del key["lrs"]
    if key["amp"] == "off":     # fp32 runs keep the key they had before --amp existed
        del key["amp"]
    return {**key, "lr": lr, "data": data.fingerprint}


def checkpoint_path(out_dir: Path, lr: float) -> Path:
    return Path(out_dir) / "runs" / f"lr-{lr:g}.pt"


def train_run(data: FashionMNIST, config: ClassifyConfig, lr: float, out_dir: Path,
              device: torch.device, *, policy: str = "resume", quiet: bool = False,
              on_epoch=None) -> dict:
    """Train, reuse or resume the run of one learning rate (policy: see common/runs.py);
    return its summary record. `on_epoch(record)` is called after every stored epoch."""
    out_dir = Path(out_dir)
    key, path, label = run_key(config, lr, data), checkpoint_path(out_dir, lr), f"lr {lr:g}"
    stored = load_state(path, key, policy, label)
    if stored is not None and stored["status"] != "running":
        return make_record(stored, out_dir)

    seed_everything(config.seed)
    model = FashionCNN(config.dropout).to(device, memory_format=MEMORY_FORMAT)
    steps_per_epoch = math.ceil(len(data.train_y) / config.batch_size)
    optimizer = build_optimizer(model, config, lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch * config.epochs)
    history = {"train_loss_sum": [], "steps": [], "val_acc": [], "train_seconds": [],
               "epoch_seconds": []}
    start = 0
    if stored is not None:
        restore(stored, model, optimizer, scheduler)
        history, start = stored["history"], stored["epoch"]

    def save(epoch: int, status: str, test_acc: float | None = None) -> dict:
        state = save_state(path, key=key, epoch=epoch, status=status, history=history,
                           model=model, optimizer=optimizer, scheduler=scheduler,
                           result=None if test_acc is None else {"test_acc": test_acc},
                           lr=lr, config=config.to_dict(), params=count_parameters(model))
        record = make_record(state, out_dir)
        if on_epoch is not None:
            on_epoch(record)
        return record

    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    dev_x, dev_y = data.dev_x.to(device), data.dev_y.to(device)
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(train_y), device=device)
        x, y = train_x[order], train_y[order]               # (N, 1, 28, 28), (N,)
        if config.augment != "none":
            x = augment(x, config.augment)
        desc = f"{label} epoch {epoch + 1}/{config.epochs}"
        with progress(total=len(y), desc=desc, unit="img", quiet=quiet) as bar:
            loss_sum, steps = train_one_epoch(model, optimizer, x, y, config.batch_size,
                                              scheduler=scheduler,
                                              label_smoothing=config.label_smoothing,
                                              amp=config.amp, cuda_graph=graphable(config),
                                              bar=bar)
        t1 = time.perf_counter()
        diverged = not math.isfinite(loss_sum)
        val_acc = None if diverged else evaluate(model, dev_x, dev_y, config.eval_batch_size,
                                                 config.amp)
        history["train_loss_sum"].append(loss_sum)
        history["steps"].append(steps)
        history["val_acc"].append(val_acc)
        history["train_seconds"].append(t1 - t0)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        if diverged:
            log(f"{desc}: loss is {loss_sum} after {steps} steps; run marked diverged")
            return save(epoch + 1, "diverged")
        log(f"{desc}: train loss {loss_sum / steps:.4f}, dev acc {val_acc:.4f}, "
            f"{len(y) / (t1 - t0):,.0f} img/s, {t1 - t0:.1f} s")
        if epoch + 1 < config.epochs:
            save(epoch + 1, "running")

    t0 = time.perf_counter()
    test_acc = evaluate(model, data.test_x.to(device), data.test_y.to(device),
                        config.eval_batch_size, config.amp)
    history["epoch_seconds"][-1] += time.perf_counter() - t0
    log(f"{label}: test acc {test_acc:.4f}")
    return save(config.epochs, "finished", test_acc)


def _finite_or_none(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def make_record(state: dict, out_dir: Path) -> dict:
    """A run's entry in summary.json, derived from its checkpoint alone."""
    h, lr = state["history"], state["key"]["lr"]
    train_loss = [s / n for s, n in zip(h["train_loss_sum"], h["steps"])]
    # the course skeleton printed the mean of every batch loss since epoch 1
    running = [sum(h["train_loss_sum"][:k + 1]) / sum(h["steps"][:k + 1])
               for k in range(len(train_loss))]
    train_seconds = sum(h["train_seconds"])
    images = sum(h["steps"]) * state["key"]["batch_size"]
    return {
        "lr": lr,
        "status": RECORD_STATUS[state["status"]],
        "epochs_done": state["epoch"],
        "train_loss": [_finite_or_none(v) for v in train_loss],
        "train_loss_running_mean": [_finite_or_none(v) for v in running],
        "val_acc": h["val_acc"],
        "test_acc": (state["result"] or {}).get("test_acc"),
        "seconds": round(sum(h["epoch_seconds"]), 3),
        "train_seconds": round(train_seconds, 3),
        "train_images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        "checkpoint": str(checkpoint_path(out_dir, lr).relative_to(out_dir)),
    }
