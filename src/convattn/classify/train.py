"""Train the Fashion-MNIST CNN over a learning-rate sweep; resumable, fast at batch 8.

`run(config, out_dir)` trains one model per learning rate in `config.lrs`, picks the best
by final-epoch dev accuracy, scores every run on test, and writes `summary.json`, a
checkpoint per run and the figures. Calling it again on the same folder reuses finished
runs and resumes unfinished ones from their last completed epoch, when the stored
configuration and data match; anything else is recomputed.

Why the loop is fast without changing the study's math (same batch size, optimizer and
steps): the shuffled epoch is one gathered tensor that is sliced per step (no DataLoader,
no per-sample collate); the loss is summed on-tensor and read every REFRESH steps, not
with `.item()` per step; the model is channels-last, where oneDNN's convolution and
max-pool kernels are faster than the NCHW ones for these shapes; SGD updates all
parameters with one `foreach` kernel; evaluation runs under inference_mode in batches of
1,000. At batch 8 a step is a few dozen tiny ops, so one thread per run is faster than
OpenMP across cores; the cores are used by training the learning rates in parallel
processes instead (`jobs`). See bench/classify_speed.py.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convattn.classify.model import FashionCNN, count_parameters
from convattn.classify.presets import ClassifyConfig
from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import log, progress
from convattn.common.runtime import choose_device, environment, seed_everything, torch_threads
from convattn.data.fashion_mnist import FashionMNIST, load_fashion_mnist

CHECKPOINT_FORMAT = "convattn.classify/1"
REFRESH = 250  # steps between loss reads (one sync each) and progress-bar updates
MEMORY_FORMAT = torch.channels_last


# ---------------------------------------------------------------- data for one epoch

def limit(data: FashionMNIST, config: ClassifyConfig) -> FashionMNIST:
    """The smoke preset's subset: the first train_limit / eval_limit images of each split."""
    t, e = config.train_limit or None, config.eval_limit or None
    return FashionMNIST(data.train_x[:t], data.train_y[:t], data.dev_x[:e], data.dev_y[:e],
                        data.test_x[:e], data.test_y[:e], data.folder, data.fingerprint)


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


# ---------------------------------------------------------------- one epoch, evaluation

def nll(log_probs: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """NLL of log-probabilities (B, 10); with smoothing, eps of the target mass is spread
    uniformly (the training objective then differs from plain NLL, as usual)."""
    if label_smoothing == 0:
        return F.nll_loss(log_probs, y)
    target = log_probs.gather(1, y[:, None]).squeeze(1)
    return -((1 - label_smoothing) * target + label_smoothing * log_probs.mean(1)).mean()


def lr_at(step: int, total: int, config: ClassifyConfig, peak: float) -> float:
    """`constant`: peak throughout. `onecycle`: linear warm-up over `warmup` of the steps,
    then cosine decay to 0."""
    if config.schedule == "constant":
        return peak
    warm = int(total * config.warmup)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def train_one_epoch(model, optimizer, x, y, config: ClassifyConfig, lr: float, first_step: int,
                    total_steps: int, bar) -> tuple[float, int]:
    """One pass over the pre-shuffled epoch (x, y). Returns (sum of batch losses, steps);
    stops early when the loss stops being finite."""
    model.train()
    bs = config.batch_size
    steps = math.ceil(len(y) / bs)
    loss_sum = torch.zeros((), device=x.device)  # summed on-tensor: no sync per step
    for i in range(steps):
        if config.schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = lr_at(first_step + i, total_steps, config, lr)
        xb, yb = x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]   # views, no copy
        loss = nll(model(xb), yb, config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        if (i + 1) % REFRESH == 0 or i + 1 == steps:
            total = loss_sum.item()
            bar.update(min((i + 1) * bs, len(y)) - bar.n)
            bar.set_postfix(loss=f"{total / (i + 1):.4f}", refresh=False)
            if not math.isfinite(total):
                return total, i + 1
    return loss_sum.item(), steps


@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of the model's argmax on (x, y), in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(y), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(y))


# ---------------------------------------------------------------- one run (one lr)

def build_optimizer(model, config: ClassifyConfig, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay,
                               foreach=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay,
                                 foreach=True)
    raise UserError(f"--optimizer {config.optimizer}: expected sgd or adamw")


def run_identity(config: ClassifyConfig, lr: float, data: FashionMNIST) -> dict:
    """What makes two runs the same computation: every knob but the sweep list, the lr,
    and the data's fingerprint. A checkpoint is reused only when this matches."""
    ident = config.to_dict()
    del ident["lrs"], ident["preset"], ident["threads"], ident["jobs"]
    return {**ident, "lr": lr, "data": data.fingerprint}


def checkpoint_path(out_dir: Path, lr: float) -> Path:
    return out_dir / "runs" / f"lr-{lr:g}.pt"


def load_matching_checkpoint(path: Path, identity: dict, strict: bool) -> dict | None:
    """The stored checkpoint when it belongs to this computation; None to start afresh."""
    if not path.exists():
        return None
    ckpt = io.load_checkpoint(path)
    if ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("identity") == identity:
        return ckpt
    if strict:
        old = ckpt.get("identity") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in identity.items()
                         if old.get(k) != v) or "format"
        raise UserError(f"--resume: {path} was trained differently ({diff}); pass --fresh to "
                        "start over or choose another --out")
    log(f"{path}: configuration or data changed; recomputing this run")
    return None


def train_run(data: FashionMNIST, config: ClassifyConfig, lr: float, out_dir: Path,
              device: torch.device, quiet: bool, fresh: bool, strict: bool,
              on_epoch=lambda record: None) -> dict:
    """Train (or reuse, or resume) the run for one learning rate; return its record."""
    identity = run_identity(config, lr, data)
    path = checkpoint_path(out_dir, lr)
    ckpt = None if fresh else load_matching_checkpoint(path, identity, strict)
    if ckpt is not None and ckpt["status"] != "running":
        log(f"lr {lr:g}: reusing the finished run in {path}")
        return make_record(ckpt, out_dir)

    seed_everything(config.seed)
    model = FashionCNN(config.dropout).to(device, memory_format=MEMORY_FORMAT)
    optimizer = build_optimizer(model, config, lr)
    history = {"train_loss_sum": [], "steps": [], "val_acc": [], "train_seconds": [],
               "epoch_seconds": []}
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        history, start = ckpt["history"], ckpt["epoch"]
        log(f"lr {lr:g}: resuming {path} after epoch {start}/{config.epochs}")

    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    dev_x, dev_y = data.dev_x.to(device), data.dev_y.to(device)
    steps_per_epoch = math.ceil(len(train_y) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    status = "running"

    def checkpoint(epoch: int, test_acc: float | None = None) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        ckpt = {"format": CHECKPOINT_FORMAT, "identity": identity, "config": config.to_dict(),
                "lr": lr, "epoch": epoch, "status": status, "test_acc": test_acc,
                "params": count_parameters(model),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": rng, "history": history}
        io.save_checkpoint(path, ckpt)
        return ckpt

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(train_y), device=device)
        x, y = train_x[order], train_y[order]               # (N, 1, 28, 28), (N,)
        if config.augment != "none":
            x = augment(x, config.augment)
        bar = progress(total=len(y), desc=f"lr {lr:g} epoch {epoch + 1}/{config.epochs}",
                       unit="img", quiet=quiet)
        with bar:
            loss_sum, steps = train_one_epoch(model, optimizer, x, y, config, lr,
                                              epoch * steps_per_epoch, total_steps, bar)
        t1 = time.perf_counter()
        if not math.isfinite(loss_sum):
            status = "diverged"
            history["train_loss_sum"].append(loss_sum)
            history["steps"].append(steps)
            history["val_acc"].append(None)
            history["train_seconds"].append(t1 - t0)
            history["epoch_seconds"].append(t1 - t0)
            log(f"lr {lr:g} epoch {epoch + 1}/{config.epochs}: loss is {loss_sum} after "
                f"{steps} steps; run marked diverged")
            ckpt = checkpoint(epoch + 1)
            on_epoch(make_record(ckpt, out_dir))
            return make_record(ckpt, out_dir)
        val_acc = evaluate(model, dev_x, dev_y, config.eval_batch_size)
        history["train_loss_sum"].append(loss_sum)
        history["steps"].append(steps)
        history["val_acc"].append(val_acc)
        history["train_seconds"].append(t1 - t0)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        log(f"lr {lr:g} epoch {epoch + 1}/{config.epochs}: train loss {loss_sum / steps:.4f}, "
            f"dev acc {val_acc:.4f}, {len(y) / (t1 - t0):,.0f} img/s, {t1 - t0:.1f} s")
        if epoch + 1 < config.epochs:
            on_epoch(make_record(checkpoint(epoch + 1), out_dir))

    t0 = time.perf_counter()
    test_acc = evaluate(model, data.test_x.to(device), data.test_y.to(device),
                        config.eval_batch_size)
    history["epoch_seconds"][-1] += time.perf_counter() - t0
    status = "ok"
    ckpt = checkpoint(config.epochs, test_acc)
    log(f"lr {lr:g}: test acc {test_acc:.4f}")
    return make_record(ckpt, out_dir)


def _finite_or_none(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def make_record(ckpt: dict, out_dir: Path) -> dict:
    """A run's entry in summary.json, derived from its checkpoint alone."""
    h = ckpt["history"]
    train_loss = [s / n for s, n in zip(h["train_loss_sum"], h["steps"])]
    # the course skeleton printed the mean of every batch loss since epoch 1
    running = [sum(h["train_loss_sum"][:k + 1]) / sum(h["steps"][:k + 1])
               for k in range(len(train_loss))]
    train_seconds = sum(h["train_seconds"])
    images = sum(h["steps"]) * ckpt["config"]["batch_size"]
    return {
        "lr": ckpt["lr"],
        "status": ckpt["status"],
        "epochs_done": ckpt["epoch"],
        "train_loss": [_finite_or_none(v) for v in train_loss],
        "train_loss_running_mean": [_finite_or_none(v) for v in running],
        "val_acc": h["val_acc"],
        "test_acc": ckpt["test_acc"],
        "seconds": round(sum(h["epoch_seconds"]), 3),
        "train_seconds": round(train_seconds, 3),
        "train_images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        "checkpoint": str(checkpoint_path(out_dir, ckpt["lr"]).relative_to(out_dir)),
    }


# ---------------------------------------------------------------- the sweep

def best_run(records: list[dict]) -> dict | None:
    """Highest final-epoch dev accuracy among finished runs; ties go to the earlier lr."""
    ok = [r for r in records if r["status"] == "ok"]
    return max(ok, key=lambda r: r["val_acc"][-1], default=None)


def make_summary(config: ClassifyConfig, data: FashionMNIST, records: list[dict],
                 params: int, figures: dict, device: torch.device, wall: float) -> dict:
    best = best_run(records)
    complete = len(records) == len(config.lrs) and all(
        r["status"] in ("ok", "diverged") for r in records)
    return {
        "command": "classify",
        "preset": config.preset,
        "complete": complete,
        "params": params,
        "best_lr": best["lr"] if best else None,
        "best": None if best is None else {
            "lr": best["lr"], "val_acc": best["val_acc"][-1], "test_acc": best["test_acc"],
            "train_loss": best["train_loss"][-1], "epochs": best["epochs_done"],
        },
        "selection": "best final-epoch dev accuracy among runs with status ok",
        "train_loss_is": "mean NLL of the epoch's batches (the objective, with label smoothing "
                         "when set); train_loss_running_mean is the course skeleton's running "
                         "mean of every batch since epoch 1",
        "runs": records,
        "figures": figures,
        "config": config.to_dict(),
        "data": {"folder": str(data.folder), "fingerprint": data.fingerprint, **data.sizes()},
        "device": str(device),
        "wall_seconds_this_call": round(wall, 3),
        "environment": environment(),
    }


def run(config: ClassifyConfig, out_dir, data_dir=None, device: str = "auto",
        quiet: bool = False, fresh: bool = False, pdf: bool = False,
        strict: bool = False) -> dict:
    """Run the sweep into `out_dir` and return the summary (also in out_dir/summary.json).

    Finished runs are reused and unfinished ones resumed unless `fresh`; a run whose stored
    configuration or data differ is recomputed (`strict`: a UserError instead). `device`:
    auto, cpu or cuda. `pdf`: PDF copies of the figures."""
    with torch_threads(config.threads):
        return _run(config, Path(out_dir), data_dir, choose_device(device), quiet, fresh, pdf,
                    strict)


def _run(config, out_dir, data_dir, dev, quiet, fresh, pdf, strict) -> dict:
    from convattn.classify import plots  # matplotlib is only needed once training is done

    wall0 = time.perf_counter()
    data = limit(load_fashion_mnist(data_dir), config)
    params = count_parameters(FashionCNN(config.dropout))
    records: dict[float, dict] = {}

    def write_summary(figures: dict | None = None) -> dict:
        done = [records[lr] for lr in config.lrs if lr in records]
        summary = make_summary(config, data, done, params, figures or {}, dev,
                               time.perf_counter() - wall0)
        io.write_json(out_dir / "summary.json", summary)
        return summary

    # default: every lr at once, up to two per core. Three single-threaded runs on two
    # cores took 9.2 minutes for the homework sweep here; two at a time, 11.6; one, ~17.
    jobs = min(config.jobs or 2 * (os.cpu_count() or 1), len(config.lrs))
    if jobs > 1 and dev.type == "cpu":
        # One process per learning rate, each on config.threads threads: the runs are
        # independent, so each gives the same numbers as it would alone.
        log(f"training {len(config.lrs)} learning rates in {jobs} parallel processes")
        tasks = [(config, lr, str(out_dir), data_dir, fresh, strict) for lr in config.lrs]
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for record in pool.imap_unordered(_train_run_in_worker, tasks):
                records[record["lr"]] = record
                write_summary()
    else:
        for lr in config.lrs:
            def on_epoch(record, lr=lr):
                records[lr] = record
                write_summary()
            records[lr] = train_run(data, config, lr, out_dir, dev, quiet, fresh, strict,
                                    on_epoch)
            write_summary()

    summary = write_summary()
    figures = plots.draw_all(summary, out_dir, pdf=pdf)
    return write_summary(figures)


def _train_run_in_worker(task: tuple) -> dict:
    """One learning rate in a worker process (no progress bar: bars would interleave)."""
    config, lr, out_dir, data_dir, fresh, strict = task
    if config.threads:
        torch.set_num_threads(config.threads)
    data = limit(load_fashion_mnist(data_dir), config)
    return train_run(data, config, lr, Path(out_dir), torch.device("cpu"), True, fresh, strict)
