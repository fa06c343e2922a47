"""The learning-rate sweep: one run per learning rate, the best chosen on dev, summary.json
and the figures.

`run(config, out_dir)` trains one model per learning rate in `config.lrs`, picks the best
by final-epoch dev accuracy, scores every run on test, and writes `summary.json`, a
checkpoint per run and the figures. Calling it again on the same folder reuses finished
runs and resumes unfinished ones (`policy`, common/runs.py).

At batch 8 a step is a few dozen tiny ops, so one thread per run is faster than OpenMP
across cores; the cores are used by training the learning rates in parallel processes
instead (`jobs`). Each run seeds itself, so it gives the same numbers either way.
`--sweep stacked` trains them as one model stack in one process instead (stacked_run.py):
the same numbers up to float rounding, one forward/backward pass per step for all.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import torch

from convattn.classify import plots
from convattn.classify.model import FashionCNN, count_parameters
from convattn.classify.presets import ClassifyConfig
from convattn.classify.run import train_run
from convattn.classify.stacked_run import load_runs, stackable, train_stacked
from convattn.common import io
from convattn.common.progress import log
from convattn.common.runs import check_policy, summary_base
from convattn.common.runtime import choose_device, torch_threads
from convattn.data.fashion_mnist import FashionMNIST, load_fashion_mnist

SELECTION = "best final-epoch dev accuracy among runs with status ok"
TRAIN_LOSS_IS = ("mean NLL of the epoch's batches (the objective, with label smoothing when "
                 "set); train_loss_running_mean is the course skeleton's running mean of every "
                 "batch since epoch 1")


def load_data(config: ClassifyConfig, data_dir=None) -> FashionMNIST:
    """Fashion-MNIST, cut to the first train_limit / eval_limit images of each split."""
    data = load_fashion_mnist(data_dir)
    t, e = config.train_limit or None, config.eval_limit or None
    return FashionMNIST(data.train_x[:t], data.train_y[:t], data.dev_x[:e], data.dev_y[:e],
                        data.test_x[:e], data.test_y[:e], data.folder, data.fingerprint)


def best_run(records: list[dict]) -> dict | None:
    """Highest final-epoch dev accuracy among finished runs; ties go to the earlier lr."""
    ok = [r for r in records if r["status"] == "ok"]
    return max(ok, key=lambda r: r["val_acc"][-1], default=None)


def make_summary(config: ClassifyConfig, data: FashionMNIST, records: list[dict],
                 params: int, figures: dict, device: torch.device, wall: float) -> dict:
    best = best_run(records)
    timing = {"runs_seconds": round(sum(r["seconds"] for r in records), 3),
              "train_seconds": round(sum(r["train_seconds"] for r in records), 3),
              "total_seconds": round(wall, 3)}
    data_facts = {"folder": str(data.folder), "fingerprint": data.fingerprint, **data.sizes()}
    base = summary_base("classify", config, data_facts, device, timing)
    return {
        "command": base["command"],
        "preset": base["preset"],
        "complete": len(records) == len(config.lrs)
                    and all(r["status"] in ("ok", "diverged") for r in records),
        "params": params,
        "best_lr": best["lr"] if best else None,
        "best": None if best is None else {
            "lr": best["lr"], "val_acc": best["val_acc"][-1], "test_acc": best["test_acc"],
            "train_loss": best["train_loss"][-1], "epochs": best["epochs_done"],
        },
        "selection": SELECTION,
        "train_loss_is": TRAIN_LOSS_IS,
        "runs": records,
        "figures": figures,
        "config": base["config"],
        "data": base["data"],
        "device": base["device"],
        "wall_seconds_this_call": round(wall, 3),
        "timing": base["timing"],
        "environment": base["environment"],
    }


def run(config: ClassifyConfig, out_dir, *, data_dir=None, device: str = "auto",
        quiet: bool = False, policy: str = "resume", pdf: bool = False) -> dict:
    """Run the sweep into `out_dir` and return the summary (also in out_dir/summary.json).

    `policy`: resume, reuse or fresh (common/runs.py); a stored run trained with other
    settings or data is trained again. `device`: auto, cpu or cuda. `pdf`: PDF copies of
    the figures."""
    check_policy(policy)
    with torch_threads(config.threads):
        return _sweep(config, Path(out_dir), data_dir, choose_device(device), quiet, policy,
                      pdf)


def _sweep(config, out_dir, data_dir, device, quiet, policy, pdf) -> dict:
    wall0 = time.perf_counter()
    data = load_data(config, data_dir)
    params = count_parameters(FashionCNN(config.dropout))
    records: dict[float, dict] = {}

    def write_summary(figures: dict | None = None) -> dict:
        done = [records[lr] for lr in config.lrs if lr in records]
        summary = make_summary(config, data, done, params, figures or {}, device,
                               time.perf_counter() - wall0)
        io.write_json(out_dir / "summary.json", summary)
        return summary

    def store(record: dict) -> None:
        records[record["lr"]] = record
        write_summary()

    if config.sweep == "stacked":
        stored = load_runs(data, config, out_dir, policy)
        if stackable(config, stored):
            groups = stack_groups(config, device)
            if len(groups) > 1:  # one stack per core: on a quiet 2-core machine a stack of two
                # and a stack of one in two processes beat one stack (docs/performance.md)
                log(f"training learning rates as {len(groups)} stacks in parallel processes: "
                    + "; ".join(", ".join(f"{lr:g}" for lr in g) for g in groups))
                tasks = [(config.replace(lrs=g), str(out_dir), data_dir, policy) for g in groups]
                with multiprocessing.get_context("spawn").Pool(len(groups)) as pool:
                    for group_records in pool.imap_unordered(_train_stack_in_worker, tasks):
                        for record in group_records:
                            store(record)
            else:
                for record in train_stacked(data, config, out_dir, stored, device=device,
                                            quiet=quiet, on_epoch=store):
                    store(record)
            summary = write_summary()
            return write_summary(draw_figures(summary, out_dir, pdf))
        log("--sweep stacked: this recipe or its stored runs cannot be stacked; training "
            "each learning rate on its own")
    # default: every lr at once, up to two per core: three single-threaded runs on two cores
    # finished the homework sweep sooner than two at a time or one (docs/performance.md)
    jobs = min(config.jobs or 2 * (os.cpu_count() or 1), len(config.lrs))
    if jobs > 1 and device.type == "cpu":
        log(f"training {len(config.lrs)} learning rates in {jobs} parallel processes")
        tasks = [(config, lr, str(out_dir), data_dir, policy) for lr in config.lrs]
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for record in pool.imap_unordered(_train_run_in_worker, tasks):
                store(record)
    else:
        for lr in config.lrs:
            store(train_run(data, config, lr, out_dir, device, policy=policy, quiet=quiet,
                            on_epoch=store))

    summary = write_summary()
    return write_summary(draw_figures(summary, out_dir, pdf))


def draw_figures(summary: dict, out_dir: Path, pdf: bool) -> dict:
    """The curves from the summary's records; the kernels from the best run's checkpoint."""
    best = next((r for r in summary["runs"] if r["lr"] == summary["best_lr"]), None)
    kernels = None
    if best is not None:
        model = io.load_checkpoint(out_dir / best["checkpoint"])["model"]
        kernels = {name: model[f"{name}.weight"].float().numpy() for name in ("conv1", "conv2")}
    return plots.draw_all(summary["runs"], summary["best_lr"], out_dir, kernels=kernels,
                          scheduled=summary["config"]["schedule"] != "constant", pdf=pdf)


def stack_groups(config: ClassifyConfig, device) -> list[tuple[float, ...]]:
    """The learning rates split into consecutive groups, one stack per process: --jobs
    groups (0: one per CPU core), at most one per learning rate; one group on a GPU."""
    n = 1 if device.type != "cpu" else min(config.jobs or os.cpu_count() or 1, len(config.lrs))
    size, extra = divmod(len(config.lrs), n)
    groups, lo = [], 0
    for i in range(n):  # the first `extra` groups one larger: 3 lrs on 2 cores -> 2 + 1
        hi = lo + size + (i < extra)
        groups.append(tuple(config.lrs[lo:hi]))
        lo = hi
    return groups


def _train_stack_in_worker(task: tuple) -> list[dict]:
    """One group of learning rates as one stack in a worker process (no progress bar)."""
    config, out_dir, data_dir, policy = task
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load_data(config, data_dir)
    stored = load_runs(data, config, Path(out_dir), policy)
    return train_stacked(data, config, Path(out_dir), stored, device=torch.device("cpu"), quiet=True)


def _train_run_in_worker(task: tuple) -> dict:
    """One learning rate in a worker process (no progress bar: bars would interleave)."""
    config, lr, out_dir, data_dir, policy = task
    if config.threads:
        torch.set_num_threads(config.threads)
    return train_run(load_data(config, data_dir), config, lr, Path(out_dir),
                     torch.device("cpu"), policy=policy, quiet=True)
