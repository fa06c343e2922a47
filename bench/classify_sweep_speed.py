"""Speed of the homework sweep's ways of training: the plain reference, one run in today's
loop, the three runs as processes, and the three runs as one stacked model.

Every side trains --steps steps of batch 8 on the same images, alternating over --repeat
rounds, best round reported (the machine is shared: compare within one run only):
  reference        bench/classify_speed.py's skeleton-style loop, torch's default threads
                   (runs --default-steps steps, time scaled; see that script); the
                   ratios are against it. Also shown on one thread.
  single, 1 thr    convattn.classify.loop.train_one_epoch, one run (lr 0.01)
  single fused     the same with torch.optim.SGD(fused=True)
  stack of 1       StackedCNN with one member (the SGD update inside the backward pass)
  processes 3x1    three single-thread processes at once, as --sweep processes trains
  stacked 3, N thr StackedCNN with lrs 0.001, 0.01, 0.1 on N threads, as --sweep stacked
Printed: images/s per run, and the sweep's throughput against three reference runs
(the homework sweep is 3 x 15 epochs), and one run's against one reference run.
    .venv/bin/python bench/classify_sweep_speed.py [--steps 1000] [--repeat 2] [--profile]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from classify_speed import convattn_train, reference_train
from convattn.classify.loop import MEMORY_FORMAT, train_one_epoch
from convattn.classify.model import FashionCNN
from convattn.classify.stacked import StackedCNN
from convattn.data.fashion_mnist import load_fashion_mnist

LRS = (0.001, 0.01, 0.1)


def single_fused(data, steps: int) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = FashionCNN(0.2).to(memory_format=MEMORY_FORMAT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, fused=True)
    x, y = data.train_x[:steps * 8], data.train_y[:steps * 8]
    t0 = time.perf_counter()
    train_one_epoch(model, optimizer, x, y, 8)
    return time.perf_counter() - t0


def stacked_train(data, steps: int, threads: int, lrs=LRS) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    stack = StackedCNN([FashionCNN(0.2).state_dict()] * len(lrs), list(lrs), 0.2)
    x, y = data.train_x[:steps * 8], data.train_y[:steps * 8]
    t0 = time.perf_counter()
    loss_sum = torch.zeros(len(lrs))
    for i in range(steps):
        loss_sum += stack.train_step(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8])
    loss_sum.tolist()
    return time.perf_counter() - t0


def _process_worker(steps: int) -> tuple[float, float]:
    data = load_fashion_mnist()
    convattn_train(data, 20, 1)                      # warm-up, outside the timing
    t0 = time.time()
    convattn_train(data, steps, 1)
    return t0, time.time()


def processes(steps: int, n: int = len(LRS)) -> float:
    """Wall seconds from the first worker's start to the last one's end."""
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        spans = pool.map(_process_worker, [steps] * n)
    return max(e for _, e in spans) - min(s for s, _ in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per timing")
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds")
    parser.add_argument("--default-steps", type=int, default=300,
                        help="steps actually run by the default-threads reference")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler's table of the stacked step (1 thread)")
    args = parser.parse_args()
    data = load_fashion_mnist()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default threads {threads}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    # (seconds -> runs trained): the stacked and process sides train three runs at once
    sides = {
        f"reference, {threads} threads*": (lambda: reference_train(
            data, args.steps, threads, args.default_steps), 1),
        "reference, 1 thread": (lambda: reference_train(data, args.steps, 1), 1),
        "single, 1 thread": (lambda: convattn_train(data, args.steps, 1), 1),
        "single, fused SGD, 1 thread": (lambda: single_fused(data, args.steps), 1),
        "stack of 1, 1 thread": (lambda: stacked_train(data, args.steps, 1, (0.01,)), 1),
        "processes, 3 x 1 thread": (lambda: processes(args.steps), 3),
        "stacked 3 lrs, 1 thread": (lambda: stacked_train(data, args.steps, 1), 3),
        "stacked 3 lrs, 2 threads": (lambda: stacked_train(data, args.steps, 2), 3),
    }
    best = {name: float("inf") for name in sides}
    for _ in range(args.repeat):
        for name, (side, _) in sides.items():
            best[name] = min(best[name], side())
    ref = best[f"reference, {threads} threads*"] / args.steps        # seconds per step
    print(f"{args.steps} steps of batch 8, best of {args.repeat} rounds "
          f"(* ran {min(args.steps, args.default_steps)} steps, time scaled)")
    print(f"  {'side':<30} {'s':>7} {'ms/step':>8} {'img/s/run':>10} {'vs reference':>13}")
    for name, s in best.items():
        runs = sides[name][1]
        ratio = runs * ref * args.steps / s      # reference runs' time / this side's time
        what = "sweep vs 3x ref" if runs == 3 else "run vs 1x ref"
        print(f"  {name:<30} {s:7.2f} {s / args.steps * 1e3:8.3f} "
              f"{runs * args.steps * 8 / s:10.0f} {ratio:12.2f}x  ({what})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.profile:
        profile_stacked(data)


def profile_stacked(data, steps: int = 200) -> None:
    stacked_train(data, 50, 1)                       # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        stacked_train(data, steps, 1)
    print(f"profile of {steps} stacked steps (3 lrs), 1 thread; times are totals")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=34,
        max_shapes_column_width=60))


if __name__ == "__main__":
    main()
