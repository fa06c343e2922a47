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
  stacked 2+1      the stack split over two single-thread processes (lrs 0.001 and 0.01 in
                   one, 0.1 in the other): what a second free core could add
Printed: images/s summed over the runs a side trains at once, each side against the
reference (a sweep side against three reference runs, a one-run side against one), and
the homework sweep's bar: 45 reference epochs (3 lrs x 15) against the fastest sweep side,
training steps only (evaluation adds the same ~2 % to both). --device cuda times the
reference, single and stacked sides on the GPU (processes and threads are CPU sides).
    .venv/bin/python bench/classify_sweep_speed.py [--steps 1000] [--repeat 2] [--profile]
                                                   [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

import classify_speed
from classify_speed import convattn_train, reference_train, stacked_train
from convattn.classify.loop import MEMORY_FORMAT, train_one_epoch
from convattn.classify.model import FashionCNN
from convattn.common.errors import UserError
from convattn.common.runtime import choose_device
from convattn.data.fashion_mnist import load_fashion_mnist

LRS = (0.001, 0.01, 0.1)
EPOCH_STEPS = 6250          # 50,000 training images in batches of 8


def single_fused(data, steps: int) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = FashionCNN(0.2).to(memory_format=MEMORY_FORMAT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, fused=True)
    x, y = data.train_x[:steps * 8], data.train_y[:steps * 8]
    t0 = time.perf_counter()
    train_one_epoch(model, optimizer, x, y, 8)
    return time.perf_counter() - t0


def _process_worker(task: tuple) -> tuple[float, float]:
    steps, lrs = task
    data = load_fashion_mnist()
    train = ((lambda n: convattn_train(data, n, 1)) if lrs is None
             else (lambda n: stacked_train(data, n, 1, lrs)))
    train(20)                                        # warm-up, outside the timing
    t0 = time.time()
    train(steps)
    return t0, time.time()


def processes(steps: int, groups=(None,) * len(LRS)) -> float:
    """Wall seconds from the first worker's start to the last one's end; one worker per
    group: None trains one run in today's loop, a tuple of lrs a stack of them."""
    with multiprocessing.get_context("spawn").Pool(len(groups)) as pool:
        spans = pool.map(_process_worker, [(steps, g) for g in groups])
    return max(e for _, e in spans) - min(s for s, _ in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per timing")
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds")
    parser.add_argument("--default-steps", type=int, default=300,
                        help="steps actually run by the default-threads reference")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler's table of the stacked step (1 thread)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    try:
        device = classify_speed.DEVICE = choose_device(args.device)
    except UserError as e:
        parser.error(str(e))
    cuda = device.type == "cuda"
    if cuda:
        args.default_steps = args.steps
    data = load_fashion_mnist()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default threads {threads}; "
          f"load average before: {os.getloadavg()[0]:.2f}; device "
          f"{torch.cuda.get_device_name() if cuda else 'cpu'}")
    # (seconds -> runs trained): the stacked and process sides train three runs at once
    sides = {
        f"reference, {threads} threads*": (lambda: reference_train(
            data, args.steps, threads, args.default_steps), 1),
        "reference, 1 thread": (lambda: reference_train(data, args.steps, 1), 1),
        "single, 1 thread": (lambda: convattn_train(data, args.steps, 1), 1),
        "single, fused SGD, 1 thread": (lambda: single_fused(data, args.steps), 1),
        "stack of 1, 1 thread": (lambda: stacked_train(data, args.steps, 1, (0.01,)), 1),
        "processes, 3 x 1 thread": (lambda: processes(args.steps), 3),
        "stacked 3 lrs, 1 thread": (lambda: stacked_train(data, args.steps, 1, LRS), 3),
        "stacked 3 lrs, 2 threads": (lambda: stacked_train(data, args.steps, 2, LRS), 3),
        "stacked 2+1 lrs, 2 processes": (lambda: processes(args.steps, (LRS[:2], LRS[2:])), 3),
    }
    if cuda:    # one process, threads do not apply; --cuda-graph replays each step
        sides = {name: side for name, side in sides.items()
                 if name.endswith("threads*") or name in (
                     "single, 1 thread", "stack of 1, 1 thread", "stacked 3 lrs, 1 thread")}
        sides.update({
            "single, CUDA graph": (lambda: convattn_train(data, args.steps, 1, cuda_graph=True), 1),
            "stack of 1, CUDA graph": (lambda: stacked_train(data, args.steps, 1, (0.01,), True), 1),
            "stacked 3 lrs, CUDA graph": (lambda: stacked_train(data, args.steps, 1, LRS, True), 3),
        })
    best = {name: float("inf") for name in sides}
    for _ in range(args.repeat):
        for name, (side, _) in sides.items():
            best[name] = min(best[name], side())
    ref = best[f"reference, {threads} threads*"] / args.steps        # seconds per step
    print(f"{args.steps} steps of batch 8, best of {args.repeat} rounds "
          f"(* ran {min(args.steps, args.default_steps)} steps, time scaled)")
    ref1 = best.get("reference, 1 thread", float("nan")) / args.steps
    print(f"  {'side':<30} {'s':>7} {'ms/step':>8} {'img/s, all':>10} {'vs reference':>13}")
    for name, s in best.items():
        runs = sides[name][1]
        ratio = runs * ref * args.steps / s      # reference runs' time / this side's time
        what = "sweep vs 3x ref" if runs == 3 else "run vs 1x ref"
        print(f"  {name:<30} {s:7.2f} {s / args.steps * 1e3:8.3f} "
              f"{runs * args.steps * 8 / s:10.0f} {ratio:12.2f}x  ({what})")
    sweeps = {name: s for name, s in best.items() if sides[name][1] == 3}
    fastest = min(sweeps, key=sweeps.get)
    ours = sweeps[fastest] / args.steps * EPOCH_STEPS * 15
    print(f"homework sweep, training steps: 45 reference epochs {45 * EPOCH_STEPS * ref:,.0f} s, "
          f"{fastest} {ours:,.0f} s: {45 * EPOCH_STEPS * ref / ours:.2f}x (bar 4x; against "
          f"the 1-thread reference {45 * EPOCH_STEPS * ref1 / ours:.2f}x)")
    singles = {name: s for name, s in best.items()
               if sides[name][1] == 1 and not name.startswith("reference")}
    one = min(singles, key=singles.get)
    print(f"one homework run, training steps: {one} {ref * args.steps / singles[one]:.2f}x the "
          f"reference epoch (bar 1.5x; against the 1-thread reference "
          f"{ref1 * args.steps / singles[one]:.2f}x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.profile:
        profile_stacked(data)


def profile_stacked(data, steps: int = 200) -> None:
    stacked_train(data, 50, 1, LRS)                  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        stacked_train(data, steps, 1, LRS)
    print(f"profile of {steps} stacked steps (3 lrs), 1 thread; times are totals")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=34,
        max_shapes_column_width=60))


if __name__ == "__main__":
    main()
