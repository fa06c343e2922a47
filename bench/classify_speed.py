"""Speed of convattn's Fashion-MNIST loop against a plain loop in the course skeleton's style.

Training, same math on both sides (the study's CNN, batch 8, SGD lr 0.01, NLL, the same
number of steps):
  reference  DataLoader(TensorDataset, batch_size=8, shuffle=True), zero_grad / forward /
             backward / step, `loss.item()` every step; NCHW; torch's default threads.
  convattn   convattn.classify.loop.train_one_epoch: one pre-shuffled tensor sliced per
             step, loss summed on-tensor, channels-last, foreach SGD, the preset's threads;
             the same under bf16 autocast (--amp bf16); and a stack of one model
             (classify/stacked.py, how --sweep stacked trains a single learning rate).
The last line is the bar of one homework run: the faster fp32 convattn side against the
reference's training steps.
Evaluation of dev + test (20,000 images):
  reference  the skeleton's evaluate(): model.eval(), one forward pass over the whole set
             with autograd on, argmax; and the same in batches of 8 through a DataLoader.
  convattn   convattn.classify.loop.evaluate: inference_mode, batches of 1,000.

The sides alternate (--repeat rounds) and the best round of each is reported, so a burst
of load from another process hurts all alike. With torch's default of one thread per core,
a batch-8 loop ends every op in an OpenMP barrier; when another process holds a core that
costs up to ~100x, so the default-threads reference runs only --default-steps steps and its
time per step is scaled to --steps (printed as such). --profile adds torch.profiler's table
of convattn's training step. --device cuda times both sides on the GPU (threads do not
apply there; the default-threads reference then runs all its steps). Usage:
    .venv/bin/python bench/classify_speed.py [--steps 3000] [--repeat 2] [--data DIR] [--profile]
                                             [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from convattn.classify.loop import MEMORY_FORMAT, CudaGraphStep, evaluate, train_one_epoch
from convattn.classify.model import FashionCNN
from convattn.classify.presets import HOMEWORK
from convattn.classify.stacked import StackedCNN
from convattn.common.errors import UserError
from convattn.common.progress import progress
from convattn.common.runtime import choose_device
from convattn.data.fashion_mnist import load_fashion_mnist

DEVICE = torch.device("cpu")   # set by --device


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def reference_train(data, steps: int, threads: int, timed_steps: int | None = None) -> float:
    """Seconds for `steps` steps; when `timed_steps` is smaller, only that many run and the
    time is scaled up. On CUDA each batch is copied to the GPU, as a plain loop does."""
    timed_steps = min(steps, timed_steps or steps)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = FashionCNN(0.2).to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.NLLLoss()
    loader = DataLoader(TensorDataset(data.train_x, data.train_y), batch_size=8, shuffle=True)
    losses = []
    t0 = time.perf_counter()
    for step, (xb, yb) in enumerate(loader):
        if step == timed_steps:
            break
        xb, yb = xb.to(DEVICE), yb.to(DEVICE)
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return (time.perf_counter() - t0) * steps / timed_steps


def convattn_train(data, steps: int, threads: int, amp: str = "off",
                   cuda_graph: bool = False) -> float:
    """convattn's loop as a run uses it: the training set on the device once, an epoch's
    shuffle gathered there; cuda_graph: each step replayed from a CUDA graph."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = FashionCNN(0.2).to(DEVICE, memory_format=MEMORY_FORMAT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, foreach=True)
    train_x, train_y = data.train_x.to(DEVICE), data.train_y.to(DEVICE)
    synchronize()
    t0 = time.perf_counter()
    order = torch.randperm(len(train_y), device=DEVICE)[:steps * 8]
    x, y = train_x[order], train_y[order]
    with progress(total=len(y), quiet=True) as bar:
        train_one_epoch(model, optimizer, x, y, HOMEWORK.batch_size, amp=amp,
                        cuda_graph=cuda_graph, bar=bar)
    synchronize()
    return time.perf_counter() - t0


def stacked_train(data, steps: int, threads: int, lrs=(0.01,), cuda_graph: bool = False) -> float:
    """convattn.classify.stacked's model stack (--sweep stacked): one member per learning
    rate, the linear layers' SGD update inside their backward pass; a one-lr run is a stack
    of one. cuda_graph: each step replayed from a CUDA graph."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    stack = StackedCNN([FashionCNN(0.2).state_dict()] * len(lrs), list(lrs), 0.2, device=DEVICE)
    train_x, train_y = data.train_x.to(DEVICE), data.train_y.to(DEVICE)
    synchronize()
    t0 = time.perf_counter()
    order = torch.randperm(len(train_y), device=DEVICE)[:steps * 8]
    x, y = train_x[order], train_y[order]
    loss_sum = torch.zeros(len(lrs), device=DEVICE)
    step = CudaGraphStep(stack.train_step) if cuda_graph else stack.train_step
    for i in range(steps):
        loss_sum += step(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8])
    loss_sum.tolist()
    return time.perf_counter() - t0


def reference_eval(model, x, y, threads: int) -> float:
    """The skeleton's evaluate(): one forward pass over the whole set, autograd left on."""
    torch.set_num_threads(threads)
    model, x, y = model.to(DEVICE), x.to(DEVICE), y.to(DEVICE)
    synchronize()
    t0 = time.perf_counter()
    model.eval()
    correct = (model(x).argmax(dim=-1) == y).sum().item()
    model.train()
    assert correct >= 0
    return time.perf_counter() - t0


def reference_eval_batched(model, x, y, threads: int) -> float:
    """A plain loop: DataLoader batches of 8 (the training batch), autograd on, `.item()`
    per batch."""
    torch.set_num_threads(threads)
    model = model.to(DEVICE)
    t0 = time.perf_counter()
    model.eval()
    correct = 0
    for xb, yb in DataLoader(TensorDataset(x, y), batch_size=8):
        xb, yb = xb.to(DEVICE), yb.to(DEVICE)
        correct += (model(xb).argmax(dim=-1) == yb).sum().item()
    model.train()
    return time.perf_counter() - t0


def convattn_eval(model, x, y, threads: int) -> float:
    torch.set_num_threads(threads)
    model, x, y = model.to(DEVICE, memory_format=MEMORY_FORMAT), x.to(DEVICE), y.to(DEVICE)
    synchronize()
    t0 = time.perf_counter()
    evaluate(model, x, y, HOMEWORK.eval_batch_size)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per timing")
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--default-steps", type=int, default=300,
                        help="steps actually run by the default-threads reference")
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: auto)")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler's op table for convattn's training step")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    global DEVICE
    try:
        DEVICE = choose_device(args.device)
    except UserError as e:
        parser.error(str(e))
    if DEVICE.type == "cuda":
        args.default_steps = args.steps    # no OpenMP stalls to spare it from

    data = load_fashion_mnist(args.data)
    default_threads = torch.get_num_threads()
    ours = HOMEWORK.threads or default_threads
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default threads "
          f"{default_threads}; load average before: {os.getloadavg()[0]:.2f}; device "
          f"{torch.cuda.get_device_name() if DEVICE.type == 'cuda' else 'cpu'}")
    print(f"training: {args.steps} steps of batch 8 ({args.steps * 8} images), best of "
          f"{args.repeat} alternating rounds")
    scaled = min(args.steps, args.default_steps)
    train_sides = {
        f"reference, {default_threads} threads*": lambda: reference_train(
            data, args.steps, default_threads, args.default_steps),
        "reference, 1 thread": lambda: reference_train(data, args.steps, 1),
        f"convattn, {ours} thread(s)": lambda: convattn_train(data, args.steps, ours),
        f"convattn stack of 1, {ours} thr": lambda: stacked_train(data, args.steps, ours),
        f"convattn bf16 autocast, {ours} thr": lambda: convattn_train(data, args.steps, ours,
                                                                     "bf16"),
    }
    if DEVICE.type == "cuda":   # --cuda-graph: the step's kernels launched as one graph
        train_sides["convattn, CUDA graph"] = lambda: convattn_train(data, args.steps, ours,
                                                                     cuda_graph=True)
        train_sides["convattn stack of 1, CUDA graph"] = lambda: stacked_train(
            data, args.steps, ours, cuda_graph=True)
    best = {name: float("inf") for name in train_sides}
    for _ in range(args.repeat):
        for name, side in train_sides.items():
            best[name] = min(best[name], side())
    images = args.steps * 8
    ref = best[f"reference, {default_threads} threads*"]
    ref1 = best["reference, 1 thread"]
    for name, s in best.items():
        print(f"  {name:<32} {s:7.2f} s  {images / s:8.0f} img/s  "
              f"{s / args.steps * 1e3:6.3f} ms/step  {ref / s:5.2f}x the reference, "
              f"{ref1 / s:5.2f}x on 1 thread")
    print(f"  * ran {scaled} steps, time scaled to {args.steps}")
    run = min(s for name, s in best.items() if name.startswith("convattn") and "bf16" not in name)
    print(f"one homework run (lr 0.01) against the reference epoch, training steps: "
          f"{ref / run:.2f}x (bar 1.5x; against the 1-thread reference {ref1 / run:.2f}x)")

    x = torch.cat([data.dev_x, data.test_x])
    y = torch.cat([data.dev_y, data.test_y])
    torch.manual_seed(0)
    model = FashionCNN(0.2)
    print(f"evaluation: dev + test, {len(y)} images, best of {args.repeat} rounds")
    eval_sides = {
        f"skeleton evaluate(), {default_threads} thr": lambda: reference_eval(model, x, y, default_threads),
        "skeleton evaluate(), 1 thread": lambda: reference_eval(model, x, y, 1),
        "batch-8 loop, 1 thread": lambda: reference_eval_batched(model, x, y, 1),
        f"convattn, {ours} thread(s)": lambda: convattn_eval(FashionCNN(0.2), x, y, ours),
        f"convattn, {default_threads} threads": lambda: convattn_eval(FashionCNN(0.2), x, y, default_threads),
    }
    best = {name: float("inf") for name in eval_sides}
    for _ in range(args.repeat):
        for name, side in eval_sides.items():
            best[name] = min(best[name], side())
    ours_s = best[f"convattn, {ours} thread(s)"]
    for name, s in best.items():
        print(f"  {name:<28} {s:7.2f} s  {len(y) / s:8.0f} img/s  "
              f"convattn ({ours} thread(s)) is {s / ours_s:.2f}x faster")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.profile:
        profile_step(data, ours)


def profile_step(data, threads: int, steps: int = 400) -> None:
    """Where a convattn training step spends its time, op by op (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    convattn_train(data, 100, threads)  # warm-up: oneDNN primitives, allocator
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        convattn_train(data, steps, threads)
    print(f"profile of {steps} convattn steps, {threads} thread(s); times are totals")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=40,
        max_shapes_column_width=60))


if __name__ == "__main__":
    main()
